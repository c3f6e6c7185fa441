"""The level-2 lesson (``notebooks/level2_parameters.py``).

Its source: the level-1 format and loaders come from ``course_lib.level1`` (no copy),
per-profile settings are one visible table, solutions are code cells tagged
``hide-cell`` and the CI thresholds one closing cell tagged ``remove-input``.
Its executed page (tiny model, quick=True, run once per session by the runner): it ran
cleanly, with every figure, no widget, the solutions ran, and the closing check ran.
Unit tests of ``course_lib.level2`` are in ``tests/test_level2_*.py``.
"""
from __future__ import annotations

import re

import pytest

from course_lib.paths import NOTEBOOKS_DIR

LESSON = "level2_parameters"
SOLUTION_CELLS = 4  # 基本1, 基本2, 発展1, 発展2
# values only the CI thresholds compare (tiny-tuned); the visible cells must not assert on them
CI_ONLY_NAMES = ("best_rank[", "spread_alpha <", "vals[\"q,v\"]", "best_lr not in", "best_epoch <", "final[",
                 "stopped_early", "sched_range <", "final_val[", "d.loc[", "by_len.loc[")


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _ran(cell) -> bool:
    """papermill executed the cell and it raised nothing."""
    pm = cell.get("metadata", {}).get("papermill", {})
    return cell.get("execution_count") is not None and pm.get("status") == "completed" and not pm.get("exception")


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _solution_indices(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "hide-cell" in _tags(c)]


def _follows_answer_heading(nb, i) -> bool:
    """The nearest Markdown cell before cell ``i`` has a line that is the heading 解答例."""
    before = next(c for c in reversed(nb.cells[:i]) if c.cell_type == "markdown")
    return any(line.lstrip("#").strip() == "解答例" for line in before.source.splitlines() if line.startswith("#"))


@pytest.fixture(scope="module")
def source():
    import jupytext

    return jupytext.read(NOTEBOOKS_DIR / f"{LESSON}.py")


# --------------------------------------------------------------------------- the source (fast)

def test_lesson_uses_the_level1_format_rule_and_no_copy_of_it(source):
    code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    assert "from course_lib.level1 import" in code
    assert not re.search(r"re\.compile|Field\(|SCHEMA\s*=|load_jsonl\(", code), \
        "the level-1 format, schema and loader live in course_lib.level1"
    assert "PROFILE_SETTINGS = {" in code and "SETTINGS = PROFILE_SETTINGS[loaded.profile]" in code
    assert " if TINY else " not in code.split("SETTINGS = PROFILE_SETTINGS")[0], "per-profile values live in the table"


def test_source_has_hidden_solutions_and_one_closing_ci_cell(source):
    code = [c for c in source.cells if c.cell_type == "code"]
    assert sum("parameters" in _tags(c) for c in code) == 1
    solutions = _solution_indices(source)
    assert len(solutions) == SOLUTION_CELLS
    assert all(_follows_answer_heading(source, i) for i in solutions)
    exercises = next(i for i, c in enumerate(source.cells) if "## 練習問題" in c.source)
    assert not any("```python" in c.source for c in source.cells[exercises:] if c.cell_type == "markdown"), \
        "no inert solution code left in Markdown"
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1] and source.cells[-1] is code[-1]
    assert "if TINY:" in closing[0].source
    for cell in code[:-1]:
        assert not ("if TINY:" in cell.source and "assert" in cell.source), cell.source
        for line in cell.source.splitlines():
            if line.lstrip().startswith("assert"):
                assert not any(name in line for name in CI_ONLY_NAMES), line


# --------------------------------------------------------------------------- the executed page (slow)

@pytest.mark.notebook
def test_level2_notebook_executes_with_tiny_profile(executed_lesson):
    result, nb = executed_lesson(LESSON)  # run once per session by the runner (tests/conftest.py)
    assert result.parameters == {"model_profile": "tiny", "quick": True, "seed": 0}
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    stderr = [o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"stray stderr in the lesson: {stderr[:3]}"
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), \
        "headless run must not leave widgets (they render blank in the book)"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 12, f"every experiment draws a figure, got {images}"


@pytest.mark.notebook
def test_level2_exercise_solutions_are_executed_hidden_cells(executed_lesson):
    _, nb = executed_lesson(LESSON)
    solutions = _solution_indices(nb)
    assert len(solutions) == SOLUTION_CELLS
    for i in solutions:
        cell = nb.cells[i]
        assert _ran(cell), f"solution cell {i} did not run:\n{cell.source}"
        assert cell.get("outputs"), f"solution cell {i} shows nothing:\n{cell.source}"
        assert not _errors(cell), _errors(cell)
        assert _follows_answer_heading(nb, i), cell.source
    first = "".join(o.get("text", "") for o in nb.cells[solutions[0]].outputs)
    assert "trainable params: 40,370,176" in first, "基本1: 64 × 22,528 × 28"


@pytest.mark.notebook
def test_level2_closing_ci_check_cell_is_the_last_code_cell_and_ran(executed_lesson):
    _, nb = executed_lesson(LESSON)
    code = [c for c in nb.cells if c.cell_type == "code"]
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1]
    assert _ran(closing[0]) and not _errors(closing[0]) and not closing[0].get("outputs"), "the checks pass silently"
    assert "if TINY:" in closing[0].source and "assert" in closing[0].source
