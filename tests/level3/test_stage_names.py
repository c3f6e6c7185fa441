"""One vocabulary for the level-3 stages: tables, plots and the report name them through tables.stage_names."""
from __future__ import annotations

import inspect

import pandas as pd

from course_lib.level3 import plots, tables
from course_lib.level3.config import LoopConfig


def test_stage_names_full_and_short_come_from_the_stage_plan():
    config = LoopConfig.for_profile("tiny", quick=True, iterations=2)
    assert tables.stage_names(config) == {"baseline": "学習前", "iter0": "反復0（初回SFT）", "iter1": "反復1",
                                          "iter2": "反復2", "control": "対照（同計算量SFT）"}
    assert tables.stage_names(config, short=True) == {"baseline": "学習前", "iter0": "反復0", "iter1": "反復1",
                                                      "iter2": "反復2", "control": "対照"}


def test_the_plan_has_a_control_only_after_iterations():
    """With K = 0 the control would repeat iteration 0 (same data, steps and seed), so it is not planned."""
    assert LoopConfig.for_profile("tiny", iterations=2).stages == ["baseline", "iter0", "iter1", "iter2", "control"]
    assert LoopConfig.for_profile("tiny", iterations=1).stages == ["baseline", "iter0", "iter1", "control"]
    assert LoopConfig.for_profile("tiny", iterations=0).stages == ["baseline", "iter0"]
    assert LoopConfig.for_profile("tiny", iterations=2, control=False).stages == ["baseline", "iter0", "iter1", "iter2"]


def test_plots_use_the_tables_stage_names_and_keep_no_table_of_their_own():
    source = inspect.getsource(plots)
    assert "from .tables import stage_names" in source
    assert not hasattr(plots, "STAGE_JA") and not hasattr(plots, "STAGE_JA_SHORT")
    assert '"iter0"' not in source.replace('["baseline", "iter0"]', "")  # no stage id spelled out as a label


def test_training_table_has_japanese_headers_and_stage_names():
    config = LoopConfig.for_profile("tiny", quick=True, iterations=1)
    raw = pd.DataFrame([{"stage": "iter0", "examples": 50, "corrective": None, "replay": None, "failed": None,
                         "steps": 130, "seconds": 1.0, "final_loss": 0.5},
                        {"stage": "control", "examples": 80, "corrective": None, "replay": None, "failed": None,
                         "steps": 150, "seconds": 1.2, "final_loss": 0.4}])
    table = tables.training_table(raw, config)
    assert list(table.columns) == ["段階", "学習例の数", "修正データ", "リプレイ", "不合格だった質問", "ステップ数", "秒数",
                                   "最後の学習損失"]
    assert list(table["段階"]) == ["反復0（初回SFT）", "対照（同計算量SFT）"]


def test_every_paraphrase_style_has_a_japanese_name():
    from course_lib.level3.data import LoopData

    styles = {p["style"] for p in LoopData.load().paraphrases}
    assert styles <= set(tables.PARAPHRASE_STYLES_JA), styles - set(tables.PARAPHRASE_STYLES_JA)
