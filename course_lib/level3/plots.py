"""The level-3 figures (seaborn, Japanese labels), drawn by the lesson and saved by :mod:`.report`.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..timing import timed_function
from .data import load_symptoms
from .judge.schema import ACCURACY_THRESHOLD
from .runs import LoopResult
from .tables import stage_names

SPLIT_JA = {"original": "元の質問（15問）", "paraphrase": "言い換え（未学習）"}


def stage_label(result: LoopResult, stage: str) -> str:
    """The stage's name in the tables (:func:`.tables.stage_names`): 学習前, 反復0（初回SFT）, …, 対照（同計算量SFT）."""
    return stage_names(result.config).get(stage, stage)


def stage_tick(result: LoopResult, stage: str) -> str:
    """The same name, short, for axes and legends: 学習前, 反復0, 反復1, …, 対照."""
    return stage_names(result.config, short=True).get(stage, stage)


def symptom_titles() -> dict[str, str]:
    """Symptom id -> short Japanese title."""
    return {s["id"]: s["title"] for s in load_symptoms()}


# --------------------------------------------------------------------------- plots


def _ax(ax, size=(8, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


@timed_function("plot")
def plot_score_distribution(result: LoopResult, split: str = "original", ax=None):
    """Distribution of overall_score per stage (violins), with the 0.8 threshold."""
    import seaborn as sns

    ax = _ax(ax)
    g = result.grades[result.grades["split"] == split].copy()
    g["段階"] = g["stage"].map(lambda s: stage_tick(result, s))
    order = [stage_tick(result, s) for s in result.stages]
    sns.violinplot(data=g, x="段階", y="score", order=order, cut=0, inner="quartile", density_norm="width",
                   color="#9ecae1", ax=ax)
    ax.axhline(ACCURACY_THRESHOLD, color="#d62728", ls="--", lw=1)
    ax.text(len(order) - 0.5, ACCURACY_THRESHOLD + 0.02, "正答の閾値 0.8", color="#d62728", ha="right", va="bottom", fontsize=9)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("")
    ax.set_ylabel("スコア（overall_score）")
    ax.set_title(f"スコアの分布（{SPLIT_JA[split]}）")
    return ax


@timed_function("plot")
def plot_question_heatmap(result: LoopResult, split: str = "original", value: str = "mean", ax=None):
    """Per-question mean score (or accuracy) across stages."""
    import seaborn as sns

    pq = result.per_question(split)
    titles = symptom_titles()
    pq["質問"] = pq["symptom_id"].map(lambda s: f"{s} {titles.get(s, '')}".strip())
    pq["段階"] = pq["stage"].astype(str).map(lambda s: stage_tick(result, s))
    table = pq.pivot(index="質問", columns="段階", values=value)
    table = table[[stage_tick(result, s) for s in result.stages if stage_tick(result, s) in table.columns]]
    ax = _ax(ax, (1.6 + 1.25 * table.shape[1], 0.42 * table.shape[0] + 1.4))
    what = "平均スコア" if value == "mean" else "正答率"
    sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdYlGn", cbar_kws={"label": what}, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set_title(f"質問ごとの{what}（{SPLIT_JA[split]}）")
    ax.set_xlabel("")
    ax.set_ylabel("")
    return ax


@timed_function("plot")
def plot_accuracy(result: LoopResult, ax=None, extra: Mapping[str, LoopResult] | None = None):
    """Accuracy per stage with 95% bootstrap intervals, originals and paraphrases.

    ``extra``: other runs to overlay, e.g. ``{"リプレイなし": no_replay_result}``
    (originals only, their loop stages)."""
    ax = _ax(ax)
    ov = result.overall()
    xs = {s: i for i, s in enumerate(result.stages)}
    styles = {"original": ("o", "#1f77b4", -0.08), "paraphrase": ("s", "#ff7f0e", 0.08)}
    for split, (marker, color, dx) in styles.items():
        part = ov[ov["split"] == split]
        if part.empty:
            continue
        x = np.array([xs[s] for s in part["stage"]]) + dx
        y = part["accuracy"].to_numpy()
        err = np.vstack([y - part["accuracy_lo"].to_numpy(), part["accuracy_hi"].to_numpy() - y])
        ax.errorbar(x, y, yerr=err, fmt=marker + "-", color=color, capsize=4, label=SPLIT_JA[split])
    for name, other in (extra or {}).items():
        o = other.overall("original")
        o = o[o["stage"].isin(other.loop_stages) & ~o["stage"].isin(["baseline", "iter0"])]
        if o.empty:
            continue
        x = np.array([xs.get(s, np.nan) for s in o["stage"]]) + 0.2
        y = o["accuracy"].to_numpy()
        err = np.vstack([y - o["accuracy_lo"].to_numpy(), o["accuracy_hi"].to_numpy() - y])
        ax.errorbar(x, y, yerr=err, fmt="^--", color="#2ca02c", capsize=4, label=f"{name}（元の質問）")
    ax.set_xticks(range(len(result.stages)), [stage_tick(result, s) for s in result.stages])
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("正答率（スコア0.8以上）")
    ax.set_title("段階ごとの正答率と95%信頼区間（質問単位）")
    ax.legend(loc="best", fontsize=9)
    return ax


@timed_function("plot")
def plot_paraphrase_gap(result: LoopResult, stage: str | None = None, ax=None):
    """Per question: mean score on the original wording (x) vs on its paraphrases (y)."""
    import seaborn as sns

    stage = stage or result.loop_stages[-1]
    a = result.per_question("original")
    b = result.per_question("paraphrase")
    a = a[a["stage"] == stage][["symptom_id", "mean"]]
    b = b[b["stage"] == stage][["symptom_id", "mean"]]
    m = a.merge(b, on="symptom_id", suffixes=("_original", "_paraphrase"))
    ax = _ax(ax, (5.5, 5.5))
    sns.scatterplot(data=m, x="mean_original", y="mean_paraphrase", s=60, ax=ax)
    for _, r in m.iterrows():
        ax.annotate(r["symptom_id"], (r["mean_original"], r["mean_paraphrase"]), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("元の質問の平均スコア")
    ax.set_ylabel("言い換えの平均スコア")
    gap = float((m["mean_original"] - m["mean_paraphrase"]).mean()) if len(m) else float("nan")
    ax.set_title(f"言い換えとのギャップ（{stage_label(result, stage)}、平均差 {gap:+.3f}）")
    return ax


@timed_function("plot")
def plot_loop_vs_control(result: LoopResult, ax=None):
    """The last loop iteration against the same-compute control: accuracy with intervals."""
    ax = _ax(ax, (7, 4))
    last = result.loop_stages[-1]
    stages = [last] + (["control"] if "control" in result.stages else [])
    ov = result.overall()
    ov = ov[ov["stage"].isin(stages)]
    width = 0.38
    steps = result.training.set_index("stage")["steps"] if len(result.training) else pd.Series(dtype=float)
    loop_steps = int(steps[[s for s in steps.index if s in result.config.iteration_stages]].sum()) if len(steps) else 0
    for i, st in enumerate(stages):
        part = ov[ov["stage"] == st].set_index("split").reindex(["original", "paraphrase"])
        y = part["accuracy"].to_numpy()
        err = np.vstack([y - part["accuracy_lo"].to_numpy(), part["accuracy_hi"].to_numpy() - y])
        label = f"ループ（{stage_tick(result, last)}まで、{loop_steps}ステップ）" if st != "control" else f"対照：同じデータで通常SFT（{int(steps.get('control', 0))}ステップ）"
        ax.bar(np.arange(2) + (i - 0.5) * width, y, width, yerr=err, capsize=4, label=label,
               color=["#1f77b4", "#8c564b"][i])
    ax.set_xticks(range(2), [SPLIT_JA["original"], SPLIT_JA["paraphrase"]])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("正答率（スコア0.8以上）")
    ax.set_title("自己改善ループ vs 同じ計算量の通常SFT")
    ax.legend(loc="upper right", fontsize=8)
    return ax


@timed_function("plot")
def plot_training_loss(result: LoopResult, ax=None):
    """Training loss of every training stage, on one step axis per stage."""
    import seaborn as sns

    ax = _ax(ax)
    h = result.history.copy()
    if h.empty:
        return ax
    h["段階"] = h["stage"].map(lambda s: stage_tick(result, s))
    sns.lineplot(data=h, x="step", y="loss", hue="段階", ax=ax)
    ax.set_xlabel("ステップ（step）")
    ax.set_ylabel("学習損失（train loss）")
    ax.set_title("段階ごとの学習損失")
    return ax
