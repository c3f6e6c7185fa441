"""The executed level-1 lesson page (tiny model, quick=True, run once per session by the runner).

The lesson checks its own learning outcome; the CI thresholds live in its closing cell tagged
``remove-input``. Here: the page ran cleanly, the exercise solutions are executed cells tagged
``hide-cell`` that ran without error, and the closing check cell exists and ran.
Unit tests of ``course_lib.level1`` are in ``tests/test_level1.py``.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook

LESSON = "level1_basics"
SOLUTION_CELLS = 5  # 基本1, 基本2, 発展の準備, 発展1, 発展2
CI_ONLY_NAMES = ("rate_before", "rate_after", "exact[", "loss_summary", "ex_rows[")


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _ran(cell) -> bool:
    """papermill executed the cell and it raised nothing."""
    pm = cell.get("metadata", {}).get("papermill", {})
    return cell.get("execution_count") is not None and pm.get("status") == "completed" and not pm.get("exception")


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def test_level1_notebook_executes_with_tiny_profile(executed_lesson):
    result, nb = executed_lesson(LESSON)
    assert result.parameters == {"model_profile": "tiny", "quick": True, "seed": 0}
    # The notebook asserts its learning outcome (format match before/after, reload == trained);
    # here: nothing on stderr and no error output reaches the book page.
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error"
            assert not (out.get("output_type") == "stream" and out.get("name") == "stderr"), out.get("text")


def test_parameters_cell_is_kept(executed_lesson):
    _, nb = executed_lesson(LESSON)
    assert sum("parameters" in _tags(c) for c in nb.cells) == 1


def test_exercise_solutions_are_executed_hidden_cells(executed_lesson):
    _, nb = executed_lesson(LESSON)
    solutions = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "hide-cell" in _tags(c)]
    assert len(solutions) == SOLUTION_CELLS
    for i in solutions:
        cell = nb.cells[i]
        assert _ran(cell), f"solution cell {i} did not run:\n{cell.source}"
        assert cell.get("outputs"), f"solution cell {i} shows nothing:\n{cell.source}"
        assert not _errors(cell), _errors(cell)
        # each solution follows a Markdown cell titled 解答例 (only code cells in between)
        before = next(c for c in reversed(nb.cells[:i]) if c.cell_type == "markdown")
        assert any(line.lstrip("#").strip() == "解答例" for line in before.source.splitlines() if line.startswith("#")), before.source
    # no inert solution code left in Markdown
    assert not any("```python" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_closing_ci_check_cell_is_the_last_code_cell_and_ran(executed_lesson):
    _, nb = executed_lesson(LESSON)
    code = [c for c in nb.cells if c.cell_type == "code"]
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1]
    assert _ran(closing[0]) and not _errors(closing[0])
    assert "assert rate_after" in closing[0].source
    # the regression thresholds are only there, not in the cells a learner sees
    for cell in code[:-1]:
        for line in cell.source.splitlines():
            if line.lstrip().startswith("assert"):
                assert not any(name in line for name in CI_ONLY_NAMES), line
