"""Japanese tables for the level-3 page and report: stage names, verdict labels, comparisons.

Labels only: the sentences that interpret the numbers live in the lesson.
"""
from __future__ import annotations

from typing import Mapping

import pandas as pd

from .config import BASELINE, CONTROL, LoopConfig
from .metrics import Comparison

VERDICT_JA = {
    "better": "良くなった",
    "worse": "悪くなった",
    "worse_on_some": "一部の質問で悪くなった",
    "no_clear_difference": "はっきりした差はない",
    "mixed_across_seeds": "シードによって結果が違う",
}


def stage_names(config: LoopConfig, short: bool = False) -> dict[str, str]:
    """Japanese stage names from the stage plan, the one vocabulary of tables, plots and report.

    Full: 学習前, 反復0（初回SFT）, 反復1, …, 対照（同計算量SFT）.
    ``short=True`` (plot ticks and legends): 学習前, 反復0, 反復1, …, 対照.
    A *stage* is any evaluated model (baseline, each iteration, the control); an *iteration*
    (反復) is one round of the loop that trains, so iterations are the stages between the two.
    """
    names = {}
    for st in config.plan():
        if st.kind == BASELINE:
            names[st.name] = "学習前"
        elif st.kind == CONTROL:
            names[st.name] = "対照" if short else "対照（同計算量SFT）"
        else:
            names[st.name] = f"反復{st.k}" + ("（初回SFT）" if st.k == 0 and not short else "")
    return names


TRAINING_COLUMNS_JA = {"stage": "段階", "examples": "学習例の数", "corrective": "修正データ", "replay": "リプレイ",
                       "failed": "不合格だった質問", "steps": "ステップ数", "seconds": "秒数", "final_loss": "最後の学習損失"}


def training_table(training: pd.DataFrame, config: LoopConfig) -> pd.DataFrame:
    """The per-stage training table (``LoopResult.training``) with Japanese headers and stage names."""
    names = stage_names(config)
    table = training.assign(stage=training["stage"].map(lambda s: names.get(s, s)))
    for count in ("examples", "corrective", "replay", "failed", "steps"):  # counts, not 30.000
        if count in table:
            table[count] = pd.to_numeric(table[count]).round().astype("Int64")
    return table.rename(columns=TRAINING_COLUMNS_JA)


PARAPHRASE_STYLES_JA = {"colloquial": "くだけた言い方", "clinical": "専門的な言い方", "reordered": "語順の入れ替え",
                        "first_person": "本人の言葉", "brief": "短い言い方"}


def comparison_table(comparisons: Mapping[tuple[str, str], Comparison], config: LoopConfig,
                     replayed: Mapping[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per compared pair: the paired accuracy difference with its interval, the questions
    that changed significantly (Holm over the whole table), forgetting with replay marks, the verdict."""
    names = stage_names(config)
    rows = []
    for (a, b), c in comparisons.items():
        rep = set((replayed or {}).get(b, []))
        forgot = [f"{q}{'（リプレイ済み）' if q in rep else ''}" for q in c.forgotten]
        rows.append({
            "比較": f"{names.get(a, a)} → {names.get(b, b)}",
            "正答率の差（質問の平均）": f"{c.overall.mean_diff:+.1%} [{c.overall.lo:+.1%}, {c.overall.hi:+.1%}]",
            "有意に改善": len(c.verdict.improved),
            "有意に悪化": len(c.verdict.worsened),
            "解けていたのに悪化（忘却）": "、".join(forgot) or "なし",
            "判定": VERDICT_JA[c.verdict.verdict],
        })
    return pd.DataFrame(rows)
