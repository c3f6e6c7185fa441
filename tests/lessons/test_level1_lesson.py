"""The executed level-1 lesson page (tiny model, quick=True, run once per session by the runner).

The lesson checks its own learning outcome; the CI thresholds live in its closing cell tagged
``remove-input``. Here: the page ran cleanly, the exercise solutions are executed cells tagged
``hide-cell`` that ran without error, and the closing check cell exists and ran. Then the pieces
a learner must see: the hand-written LoRA layer matching PEFT, the LoRA vs full fine-tuning table,
the final score on the test split only, the memorisation count, cross-entropy against ln(V),
and a quiz with a hidden answer after each main section (every glued number defined by the run).
Unit tests of ``course_lib.level1`` are in ``tests/test_level1.py``.
"""
from __future__ import annotations

import re

import pytest
from _cells import errors as _errors, is_timing_cell, lesson_code_cells, ran as _ran, tags as _tags

pytestmark = pytest.mark.notebook

LESSON = "level1_basics"
SOLUTION_CELLS = 5  # 基本1, 基本2, 発展の準備, 発展1, 発展2
CI_ONLY_NAMES = ("rate_before", "rate_after", "exact[", "loss_summary", "ex_rows[")


def _text(cell) -> str:
    """Everything a code cell shows as text: printed lines, tables (plain text) and Markdown."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        for key in ("text/markdown", "text/plain"):
            if key in out.get("data", {}):
                parts.append(out["data"][key])
    return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)


def _code_cell(nb, needle: str):
    """The one code cell whose source contains ``needle``; it must have run cleanly."""
    found = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    assert len(found) == 1, f"expected one code cell containing {needle!r}, found {len(found)}"
    assert _ran(found[0]) and not _errors(found[0]), found[0].source
    return found[0]


def _glued_names(nb) -> set[str]:
    return {out.get("metadata", {}).get("scrapbook", {}).get("name")
            for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", [])} - {None}


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
    code = lesson_code_cells(nb)  # the hidden time-breakdown cell comes after it (machinery, not the lesson)
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1]
    assert is_timing_cell(nb.cells[-1]) and _ran(nb.cells[-1]) and not nb.cells[-1].get("outputs")
    assert _ran(closing[0]) and not _errors(closing[0])
    assert "assert rate_after" in closing[0].source
    # the regression thresholds are only there, not in the cells a learner sees
    for cell in code[:-1]:
        for line in cell.source.splitlines():
            if line.lstrip().startswith("assert"):
                assert not any(name in line for name in CI_ONLY_NAMES), line


def test_hand_written_lora_layer_matches_peft_within_tolerance(executed_lesson):
    _, nb = executed_lesson(LESSON)
    _code_cell(nb, "class LinearWithLoRA(torch.nn.Module)")
    text = _text(_code_cell(nb, "scratch_max_diff = "))
    found = re.search(r"最大差: ([0-9.e+-]+)（許容誤差 ([0-9.e+-]+)）", text)
    assert found, text
    max_diff, tolerance = float(found.group(1)), float(found.group(2))
    assert max_diff <= tolerance < 1e-2
    change = float(re.search(r"元のモデルからの変化（最大）: ([0-9.]+)", text).group(1))
    assert change > 100 * tolerance, "B must be non-zero, or the comparison proves nothing"
    # the assert cell right after it ran, and the diagram shows the model's real shapes
    diagram = _text(_code_cell(nb, "up_proj = model.model.layers[0].mlp.up_proj"))
    assert "h = W·x + (α/r)·B·A·x" in diagram and "384×128" in diagram and "16×128" in diagram


def test_full_fine_tuning_is_compared_with_lora_side_by_side(executed_lesson):
    _, nb = executed_lesson(LESSON)
    table = _text(_code_cell(nb, "comparison = pd.DataFrame("))
    for row in ("学習前（元のモデル）", "LoRA", "全体のファインチューニング"):
        assert row in table, row
    for column in ("学習可能パラメータ", "ピークメモリ", "1ステップの秒数", "最後の学習損失", "テスト用の形式一致率", "パープレキシティ"):
        assert column in table, column
    cell = _code_cell(nb, "conclusion = [")
    conclusion = "".join("".join(out["data"]["text/markdown"]) for out in cell.outputs
                         if "text/markdown" in out.get("data", {}))  # the sentences built from the numbers
    assert re.search(r"より多く忘れたのは ?(LoRA|全体のファインチューニング) ?です", conclusion), conclusion
    assert "  " not in conclusion and "、 " not in conclusion


def test_final_score_is_on_the_test_split_only(executed_lesson):
    _, nb = executed_lesson(LESSON)
    rates = _text(_code_cell(nb, "rate_after = {"))
    assert "テスト用" in rates and "評価用" not in rates
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # nothing is trained or chosen on the test split
    for line in code.splitlines():
        if re.search(r"\btrain\(", line) or "run_variant(" in line:
            assert "test_" not in line, line
    assert "ex_answers = greedy_answers(ex_model, train_prompts + val_prompts)" in code
    assert "load_level1_test()" in code


def test_memorised_answers_are_counted_and_shown(executed_lesson):
    _, nb = executed_lesson(LESSON)
    text = _text(_code_cell(nb, "def copied_from_training("))
    assert re.search(r"学習で見ていない 40 問のうち、学習用の答えを丸ごと写したもの: \d+ 問、【結論】の行だけ写したもの: \d+ 問", text), text


def test_cross_entropy_is_compared_with_a_uniform_guess_from_the_run(executed_lesson):
    _, nb = executed_lesson(LESSON)
    text = _text(_code_cell(nb, "uniform_loss = math.log(vocab_size)"))
    assert "当て推量の損失 ln V = 8.318" in text  # ln(4096), the tiny model's vocabulary
    assert re.search(r"最初のステップの学習損失 = \d+\.\d{3}", text)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "交差エントロピー（cross-entropy）" in prose
    assert "見本とどれだけ同じトークンを出せるか" not in prose  # the old definition (that is accuracy)


def test_quizzes_with_hidden_answers_follow_the_main_sections(executed_lesson):
    _, nb = executed_lesson(LESSON)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    quizzes = sum(src.count("```{admonition} 確認クイズ") for src in markdown)
    answers = sum(len(re.findall(r"```\{admonition\} 答え\n:class: dropdown", src)) for src in markdown)
    assert quizzes >= 8 and answers == quizzes
    referenced = set(re.findall(r"\{glue:text\}`([^`]+)`", "\n".join(markdown)))
    assert referenced, "run numbers in the prose come from glue"
    assert referenced <= _glued_names(nb), referenced - _glued_names(nb)
