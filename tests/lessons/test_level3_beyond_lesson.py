"""The level-3 'beyond the loop' lesson as the runner executes it in CI (tiny model, rubric judge, quick)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from _cells import text as page_text


@pytest.mark.notebook
def test_level3_beyond_notebook_runs_without_noise(executed_lesson):
    result, nb = executed_lesson("level3_beyond")  # after level3_loop in _toc.yml: its stages are reused
    assert result.parameters == {"model_profile": "tiny", "judge": "rubric", "quick": True, "seed": 0}
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not streams, "stderr in the book: " + " | ".join(o["text"][:200] for o in streams)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3  # arms' accuracy, paired differences, the DPO loss
    text = page_text(nb)
    assert "医療上の助言ではありません" in text and "../original_experiment.md" in text
    assert "seed 000" not in text.lower()
    assert "Qwen3-0.6B の結果**ではありません**" in text  # the tiny model is labelled as such


@pytest.mark.notebook
def test_level3_beyond_arms_share_a_step_budget_and_glue_every_claim(executed_lesson):
    _, nb = executed_lesson("level3_beyond")
    text = page_text(nb)
    for rule in ("修正SFT（元の実験）", "自己蒸留（自分の正解で SFT）", "DPO（選好ペア）"):
        assert rule in text, f"{rule} is not on the page"
    intervals = re.findall(r"\[(-?\d+\.\d)%, (-?\d+\.\d)%\]", text)
    assert intervals and not [i for i in intervals if i[0] == i[1]], "a zero-width interval is on the page"
    used = set(re.findall(r"\{glue:text\}`([a-z0-9_]+)`", text))
    glued = {o["metadata"]["scrapbook"]["name"] for c in nb.cells for o in c.get("outputs", [])
             if "scrapbook" in o.get("metadata", {})}
    assert used and used <= glued, f"glue keys used but not produced by the run: {sorted(used - glued)}"
    hidden = [c for c in nb.cells if "hide-cell" in c.metadata.get("tags", [])]
    assert len(hidden) >= 2
    for c in hidden:
        assert c.get("outputs") and not any(o.get("output_type") == "error" for o in c["outputs"])


@pytest.mark.notebook
def test_level3_beyond_training_table_spends_the_same_steps(executed_lesson):
    """Every arm's iteration trains for the corrective budget: the page checks it and says so."""
    _, nb = executed_lesson("level3_beyond")
    text = page_text(nb)
    assert "すべての反復で、ステップ数は予算（修正 SFT のステップ数）と同じです。" in text
    assert "予算と違うステップ数の反復があります" not in text.replace('"予算と違うステップ数の反復があります。"', "")


@pytest.mark.notebook
def test_level3_beyond_writes_its_section_of_the_execution_report(executed_lesson):
    """The arms' tables and figures reach the execution report (issue #15: "on the executed page and in the report")."""
    result, _ = executed_lesson("level3_beyond")
    assert "level3_beyond_report.md" in result.sections
    out = Path(result.output).parent
    md = (out / "level3_beyond_report.md").read_text(encoding="utf-8")
    assert "医療上の助言ではありません" in md and "Qwen3-0.6B の結果ではありません" in md
    for rule in ("修正SFT（元の実験）", "自己蒸留（自分の正解で SFT）", "DPO（選好ペア）"):
        assert f"| {rule} | 0 | 反復" in md, f"no row for {rule}"
    for png in ("level3_arms_accuracy.png", "level3_arms_differences.png"):
        assert f"]({png})" in md and (out / png).stat().st_size > 1000
