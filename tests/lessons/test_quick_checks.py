"""Quick checks (確認クイズ) in the level-2 and level-3 lessons, read from the sources (fast, nothing executed).

Same mechanism as levels 0 and 1: a MyST ``{admonition} 確認クイズ`` box after a main section, followed in the
same cell by a ``{admonition} 答え`` box with ``:class: dropdown`` (hidden in the book, a box in JupyterLab).
A run-dependent number in a quiz comes from glue, and the glued name must be produced by a code cell.
Levels 0 and 1 check theirs on the executed pages (``test_level0_lesson.py``, ``test_level1_lesson.py``).
"""
from __future__ import annotations

import re

import jupytext
import pytest

from course_lib.paths import NOTEBOOKS_DIR

QUIZ = "```{admonition} 確認クイズ\n:class: note\n"
ANSWER = re.compile(r"```\{admonition\} 答え\n:class: dropdown\n")
GLUE_ROLE = re.compile(r"\{glue(?::text)?\}`([A-Za-z0-9_]+)`")
GLUE_CALL = re.compile(r"\bglue(?:_text)?\(\s*\"([A-Za-z0-9_]+)\"")

# the main sections that end with a quick check (the start of their H2 heading)
SECTIONS = {
    "level2_parameters": ["0. 準備", "実験1", "実験2", "実験3", "実験4", "実験5", "実験6", "コストの増え方", "最後に一度だけ"],
    "level3_loop": ["2. 課題とデータ", "4. ループを実行する", "6. 段階ごとの指標", "7. グラフで見る", "8. 段階を比べる",
                    "9. リプレイの効果", "10. 採点者はどこまで信頼できるか"],
}


def _sections(nb) -> list[tuple[str, str]]:
    """(H2 heading, the Markdown under it up to the next H2)."""
    out: list[tuple[str, list[str]]] = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("## "):
                out.append((line[3:].strip(), []))
            elif out:
                out[-1][1].append(line)
    return [(h, "\n".join(body)) for h, body in out]


@pytest.mark.parametrize("lesson", sorted(SECTIONS))
def test_every_main_section_ends_with_a_quick_check(lesson):
    nb = jupytext.read(NOTEBOOKS_DIR / f"{lesson}.py")
    sections = _sections(nb)
    for start in SECTIONS[lesson]:
        matching = [body for heading, body in sections if heading.startswith(start)]
        assert len(matching) == 1, f"{lesson}: one section whose heading starts with {start!r}"
        quizzes = matching[0].count(QUIZ)
        assert 1 <= quizzes, f"{lesson}: section {start!r} has no 確認クイズ box"


@pytest.mark.parametrize("lesson", sorted(SECTIONS))
def test_each_quiz_has_two_or_three_questions_and_a_hidden_answer(lesson):
    nb = jupytext.read(NOTEBOOKS_DIR / f"{lesson}.py")
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and QUIZ in c.source]
    assert len(cells) >= len(SECTIONS[lesson])
    for src in cells:
        question_box = src.split(QUIZ, 1)[1].split("\n```", 1)[0]
        questions = re.findall(r"^\d+\. ", question_box, flags=re.M)
        assert 2 <= len(questions) <= 3, question_box
        answers = ANSWER.split(src, 1)
        assert len(answers) == 2, f"the answer box follows the quiz in the same cell:\n{src}"
        answer_box = answers[1].split("\n```", 1)[0]
        assert len(re.findall(r"^\d+\. ", answer_box, flags=re.M)) == len(questions), src


@pytest.mark.parametrize("lesson", sorted(SECTIONS))
def test_run_numbers_in_quizzes_are_glued_by_the_lesson(lesson):
    nb = jupytext.read(NOTEBOOKS_DIR / f"{lesson}.py")
    produced = set(GLUE_CALL.findall("\n".join(c.source for c in nb.cells if c.cell_type == "code")))
    quizzes = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown" and QUIZ in c.source)
    referenced = set(GLUE_ROLE.findall(quizzes))
    assert referenced <= produced, referenced - produced
