"""Reading an executed lesson notebook's cells: their tags, whether papermill ran them, their errors.

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
