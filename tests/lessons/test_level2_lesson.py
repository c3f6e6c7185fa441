"""The level-2 lesson (``notebooks/level2_parameters.py``).

Its source: the level-1 format and loaders come from ``course_lib.level1`` (no copy),
per-profile settings are one visible table, solutions are code cells tagged
``hide-cell`` and the CI thresholds one closing cell tagged ``remove-input``.
Its executed page (tiny model, quick=True, run once per session by the runner): it ran
cleanly, with every figure, no widget, the solutions ran, and the closing check ran; every
number and verdict the prose quotes is glued from the run, the comparisons ran under two
training seeds with one verdict word each, and every bar chart starts at 0.
Unit tests of ``course_lib.level2`` are in ``tests/test_level2_*.py``.
"""
from __future__ import annotations

import re

import pytest
from _cells import errors as _errors, is_timing_cell, lesson_code_cells, ran as _ran, tags as _tags

from course_lib.paths import NOTEBOOKS_DIR

LESSON = "level2_parameters"
SOLUTION_CELLS = 4  # 基本1, 基本2, 発展1, 発展2
# values only the CI thresholds compare (tiny-tuned); the visible cells must not assert on them
CI_ONLY_NAMES = ("best_rank[", "spread_alpha <", "vals[\"q,v\"]", "best_lr not in", "best_epoch <", "final[",
                 "stopped_early", "sched_range <", "final_val[", "d.loc[", "by_len.loc[", "rank_mean", "overfit[",
                 ".verdict ==", "scale_verdicts[", "mean_diff <")
GLUE_ROLE = re.compile(r"\{glue(?::text)?\}`([a-z0-9_]+)`")
VERDICT_WORDS = {"良くなる", "悪くなる", "はっきりした差はない", "シードによって違う"}
BAR_CALL = re.compile(r"\.barplot\(|\.bar\(|\.barh\(|kind=\"bar")


def _glued(nb) -> dict[str, str]:
    """Every value the run glued (myst-nb ``glue``), by key, as the text the page shows."""
    out = {}
    for c in nb.cells:
        for o in c.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                text = next((v for k, v in o.get("data", {}).items() if k.endswith("text/plain")), "")
                out[name] = text.strip("'\"") if isinstance(text, str) else "".join(text).strip("'\"")
    return out


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
    lesson = lesson_code_cells(source)  # without the hidden time-breakdown cell, the very last cell
    assert len(closing) == 1 and closing[0] is lesson[-1] and is_timing_cell(source.cells[-1])
    assert "if TINY:" in closing[0].source
    for cell in lesson[:-1]:
        assert not ("if TINY:" in cell.source and "assert" in cell.source), cell.source
        for line in cell.source.splitlines():
            if line.lstrip().startswith("assert"):
                assert not any(name in line for name in CI_ONLY_NAMES), line


def test_bar_charts_start_at_zero_in_the_source(source):
    """A bar's height is read as its size: every cell that draws bars checks its axes with
    ``bars_start_at_zero`` (which raises otherwise), and no lower y limit above 0 is set anywhere."""
    code = [c.source for c in source.cells if c.cell_type == "code"]
    bar_cells = [c for c in code if BAR_CALL.search(c)]
    assert bar_cells, "the A/B comparison draws bars"
    for cell in bar_cells:
        assert "bars_start_at_zero(fig)" in cell, cell
    for cell in code:
        for low in re.findall(r"set_ylim\(\s*([^,)]+)", cell):
            assert low.strip() in ("0", "0.0", "bottom=0"), f"a y axis that starts at {low}: {cell}"


def test_comparisons_run_under_several_training_seeds_in_the_source(source):
    code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
    assert "SEEDS = [seed + i for i in range(2 if quick else 3)]" in code, "full runs use 3 seeds, quick at least 2"
    for name in ("rank_seeds", "alpha_seeds", "fixed_alpha_seeds", "sched_seeds", "dropout_seeds"):
        assert re.search(rf"{name} = run_seeds\(sweep, .*SEEDS", code, re.S), f"{name} runs under SEEDS"


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
    code = lesson_code_cells(nb)  # the hidden time-breakdown cell comes after it (machinery, not the lesson)
    closing = [c for c in code if "remove-input" in _tags(c)]
    assert len(closing) == 1 and closing[0] is code[-1]
    assert is_timing_cell(nb.cells[-1]) and _ran(nb.cells[-1]) and not nb.cells[-1].get("outputs")
    assert _ran(closing[0]) and not _errors(closing[0]) and not closing[0].get("outputs"), "the checks pass silently"
    assert "if TINY:" in closing[0].source and "assert" in closing[0].source


@pytest.mark.notebook
def test_level2_every_glue_key_in_the_prose_is_produced_by_the_run(executed_lesson):
    _, nb = executed_lesson(LESSON)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    used = set(GLUE_ROLE.findall(prose))
    glued = _glued(nb)
    assert len(used) >= 40, f"the prose takes its numbers and verdicts from the run, found only {sorted(used)}"
    assert used <= set(glued), f"glue keys used but not produced by the run: {sorted(used - set(glued))}"
    assert all(glued[k].strip() for k in used), [k for k in used if not glued[k].strip()]


@pytest.mark.notebook
def test_level2_seed_results_and_verdicts_are_on_the_page(executed_lesson):
    _, nb = executed_lesson(LESSON)
    glued = _glued(nb)
    assert glued["l2_seeds"] == "0, 1" and glued["l2_n_seeds"] == "2", "quick runs use training seeds 0 and 1"
    # the verdicts the prose quotes are the four words, with one difference per seed
    for key in ("l2_rank_small", "l2_rank_large", "l2_alpha_low", "l2_alpha_high", "l2_sched_linear",
                "l2_drop_val", "l2_es_small", "l2_drop_vs_es", "l2_ab_val", "l2_es_vs_final"):
        word = glued[key].split("」")[0].lstrip("「")
        assert word in VERDICT_WORDS, (key, glued[key])
        assert "シード0:" in glued[key] and "シード1:" in glued[key], (key, glued[key])
    # tables per seed: the seed columns and the verdict column
    html = "".join(o.get("data", {}).get("text/html", "") if isinstance(o.get("data", {}).get("text/html", ""), str)
                   else "".join(o["data"]["text/html"]) for c in nb.cells for o in c.get("outputs", []))
    assert html.count("シード1") >= 10 and "判定" in html
    assert "幅（最大−最小）" in html, "each seed table shows how far the seeds spread"


@pytest.mark.notebook
def test_level2_bar_check_ran_without_error(executed_lesson):
    _, nb = executed_lesson(LESSON)
    cells = [c for c in nb.cells if c.cell_type == "code" and "bars_start_at_zero(fig)" in c.source]
    assert cells and all(_ran(c) and not _errors(c) for c in cells), "every bar chart was checked and starts at 0"


# --------------------------------------------------------------------------- the test split (issue 17)

FINAL_HEADING = "## 最後に一度だけ：推奨の設定をテスト用で測る"


def _file_ids(split: str) -> list[str]:
    """Ids of a level-1 split, read straight from its JSONL file (not through the course's loaders)."""
    import json

    from course_lib.paths import DATASETS_DIR

    with open(DATASETS_DIR / "level1" / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f if line.strip()]


def _sweep_calls(cells):
    """(cell index, validation argument) of every ``sweep(...)`` and ``run_seeds(sweep, ...)`` call."""
    import ast

    for i, cell in cells:
        tree = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                position = {"sweep": 2, "run_seeds": 3}.get(node.func.id)
                if position is not None:
                    yield i, ast.unparse(node.args[position])


@pytest.mark.notebook
def test_level2_test_split_is_measured_once_at_the_end_and_the_sweeps_used_validation(executed_lesson):
    _, nb = executed_lesson(LESSON)
    heading = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and FINAL_HEADING in c.source]
    assert len(heading) == 1, "the page has one section that measures the recommended setting on the test split"
    start = heading[0]
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]

    # the source: the test split is loaded once, in that section, after the recommendation was made;
    # every sweep on the page (the experiments, the exercises and the final run) validates on val_set
    loads = [i for i, c in code if "load_level1_test" in c.source]
    assert len(loads) == 1 and loads[0] > start, "the test split is read only in the final section"
    assert not any("test_records" in c.source for i, c in code if i < start)
    assert next(i for i, c in code if "recommended = dict(" in c.source) < start, "chosen before the test split is read"
    calls = list(_sweep_calls(code))
    assert len(calls) >= 10 and {v for _, v in calls} == {"val_set"}, calls
    final_cell = nb.cells[loads[0]]
    assert _ran(final_cell) and not _errors(final_cell), "the section's checks (no test id given to a sweep) passed"

    # the run: the sweeps were given training and validation records of train.jsonl only, never a test or
    # level-1 validation record, and the final run measured exactly the 20 test ids
    glued = _glued(nb)
    test_ids, train_ids = _file_ids("test"), set(_file_ids("train"))
    seen = set(glued["l2_final_seen_ids"].split(","))
    assert glued["l2_final_test_ids"].split(",") == test_ids and len(test_ids) == 20
    assert seen <= train_ids and len(seen) == len(train_ids), "the sweeps saw the 48 training + 12 validation records"
    assert not seen & set(test_ids) and not seen & set(_file_ids("heldout"))
    assert glued["l2_final_seen"] == str(len(seen))

    # the page: the table beside the validation numbers, and the sentence that the test split chose nothing
    html = "".join(o.get("data", {}).get("text/html", "") if isinstance(o.get("data", {}).get("text/html", ""), str)
                   else "".join(o["data"]["text/html"]) for o in final_cell.get("outputs", []))
    for header in ("データ", "件数", "このページでの使い道", "損失", "2行目【理由】", "形式どおり",
                   "テスト用（test.jsonl）", "検証データ（学習用から取り分け）"):
        assert header in html, header
    assert glued["l2_final_test_loss"] in html, "the prose quotes the table's test loss"
    section = "\n".join(c.source for c in nb.cells[start:] if c.cell_type == "markdown")
    assert "どの設定選びも早期終了も、テスト用を見ていません" in section
