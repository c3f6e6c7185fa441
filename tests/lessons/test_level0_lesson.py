"""The executed level-0 lesson page (tiny model, quick=True, run once per session by the runner):
it ran cleanly, its exercise solution is an executed cell tagged ``hide-cell``, and the closing
check cell tagged ``remove-input`` exists and ran."""
from __future__ import annotations

import re

import pytest
from _cells import errors as _errors, is_timing_cell, lesson_code_cells, ran as _ran, tags as _tags

pytestmark = pytest.mark.notebook

LESSON = "level0_setup"


def test_level0_notebook_executes_with_tiny_profile(executed_lesson):
    result, nb = executed_lesson(LESSON)
    assert result.parameters == {"model_profile": "tiny", "quick": True, "seed": 0}
    assert sum("parameters" in _tags(c) for c in nb.cells) == 1
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error"
            assert not (out.get("output_type") == "stream" and out.get("name") == "stderr"), out.get("text")


def test_exercise_solution_is_an_executed_hidden_cell(executed_lesson):
    _, nb = executed_lesson(LESSON)
    solutions = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "hide-cell" in _tags(c)]
    assert len(solutions) == 1
    for i in solutions:
        cell = nb.cells[i]
        assert _ran(cell), f"solution cell {i} did not run:\n{cell.source}"
        assert cell.get("outputs"), f"solution cell {i} shows nothing:\n{cell.source}"
        assert not _errors(cell), _errors(cell)
        before = next(c for c in reversed(nb.cells[:i]) if c.cell_type == "markdown")
        assert any(line.lstrip("#").strip() == "解答例" for line in before.source.splitlines() if line.startswith("#")), before.source


def test_closing_ci_check_cell_is_the_last_code_cell_and_ran(executed_lesson):
    _, nb = executed_lesson(LESSON)
    code = lesson_code_cells(nb)  # the hidden time-breakdown cell comes after it (machinery, not the lesson)
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1]
    assert is_timing_cell(nb.cells[-1]) and _ran(nb.cells[-1]) and not nb.cells[-1].get("outputs")
    assert _ran(closing[0]) and not _errors(closing[0])
    assert "assert" in closing[0].source


def test_quizzes_with_hidden_answers_and_glued_numbers(executed_lesson):
    _, nb = executed_lesson(LESSON)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    quizzes = sum(src.count("```{admonition} 確認クイズ") for src in markdown)
    answers = sum(len(re.findall(r"```\{admonition\} 答え\n:class: dropdown", src)) for src in markdown)
    assert quizzes >= 3 and answers == quizzes
    glued = {out.get("metadata", {}).get("scrapbook", {}).get("name")
             for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", [])}
    referenced = set(re.findall(r"\{glue:text\}`([^`]+)`", "\n".join(markdown)))
    assert referenced and referenced <= glued, referenced - glued
