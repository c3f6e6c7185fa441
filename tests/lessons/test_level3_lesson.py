"""The level-3 lesson as the runner executes it in CI (tiny model, rubric judge, quick)."""
from __future__ import annotations

import json

import pytest


@pytest.mark.notebook
def test_level3_notebook_runs(executed_book, executed_lesson):
    result, nb = executed_lesson("level3_loop")  # run once per session by the runner (tests/conftest.py)
    assert result.parameters == {"model_profile": "tiny", "judge": "rubric", "quick": True, "seed": 0}
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not streams, "stderr in the book: " + " | ".join(o["text"][:200] for o in streams)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 6
    # the lesson writes its section of the execution report next to the executed notebooks
    report = executed_book[0] / "book" / "executed"
    assert (report / "level3_report.md").exists() and (report / "level3_accuracy.png").exists()
    numbers = json.loads((report / "level3_report.json").read_text(encoding="utf-8"))["numbers"]["stages"]
    assert numbers["iter0"]["original"]["accuracy"] > numbers["baseline"]["original"]["accuracy"]
    assert "```{include} level3_report.md" in (report / "report.md").read_text(encoding="utf-8")
