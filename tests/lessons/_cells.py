"""Reading an executed lesson notebook's cells: their tags, whether papermill ran them, their errors, their text.

Shared by the lesson tests (``from _cells import ...``: pytest puts this folder on ``sys.path``)."""
from __future__ import annotations


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def ran(cell) -> bool:
    """papermill executed the cell and it raised nothing."""
    pm = cell.get("metadata", {}).get("papermill", {})
    return cell.get("execution_count") is not None and pm.get("status") == "completed" and not pm.get("exception")


def errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def is_timing_cell(cell) -> bool:
    """The hidden last cell that writes the lesson's time breakdown for the execution report
    (``course_lib.timing.write_breakdown``): machinery, not part of the lesson a learner reads."""
    return cell.cell_type == "code" and "remove-cell" in tags(cell) and "write_breakdown(" in cell.source


def lesson_code_cells(nb) -> list:
    """The lesson's code cells in order, without the time-breakdown cell."""
    return [c for c in nb.cells if c.cell_type == "code" and not is_timing_cell(c)]


def text(nb) -> str:
    """Everything a reader sees on the page, as text: each cell's source and its outputs
    (streams, and the plain-text, HTML and Markdown forms of displayed values), in order."""
    out = []
    for cell in nb.cells:
        out.append(cell.source)
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            else:
                out.append("".join(str(o.get("data", {}).get(k, "")) for k in ("text/plain", "text/html", "text/markdown")))
    return "\n".join(out)
