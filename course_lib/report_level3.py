"""Level-3 results for people: the plots, the generated analysis text, and the report
section (markdown + PNG + JSON) that the runner's execution report shows.

The lesson draws every figure with the functions here, and :func:`write_level3_report`
saves the same figures for the report. Prose is Japanese (it goes into the book).

Where the report goes (:func:`report_dir`): the folder in the environment variable
``COURSE_REPORT_DIR`` when the runner sets it (the book's ``book/executed/``), else
``<run folder>/report``.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .loop import LoopResult, _json_default, _write_json
from .metrics import ACCURACY_THRESHOLD, Comparison

REPORT_ENV = "COURSE_REPORT_DIR"
REPORT_STEM = "level3_report"
DISCLAIMER = "教育目的の実験結果です。医療上の助言ではありません。薬の使用は医師・薬剤師に相談してください。"
SPLIT_JA = {"original": "元の質問（15問）", "paraphrase": "言い換え（未学習）"}
STAGE_JA = {"baseline": "学習前", "control": "対照（同計算量SFT）"}
STAGE_JA_SHORT = {"baseline": "学習前", "control": "対照"}
PLOTS = {
    "accuracy": "level3_accuracy.png",
    "heatmap": "level3_heatmap.png",
    "scores": "level3_scores.png",
    "gap": "level3_paraphrase_gap.png",
    "control": "level3_loop_vs_control.png",
}


def stage_label(stage: str) -> str:
    """"学習前", "iter0", ..., "対照（同計算量SFT）"."""
    return STAGE_JA.get(stage, stage)


def stage_tick(stage: str) -> str:
    """Short stage names for plot axes."""
    return STAGE_JA_SHORT.get(stage, stage)


def symptom_titles() -> dict[str, str]:
    """Symptom id -> short Japanese title (the ids themselves when the data is missing)."""
    try:
        from .medical import load_symptoms

        return {s["id"]: s["title"] for s in load_symptoms()}
    except Exception:  # the data is optional for the plots
        return {}


def symptom_texts() -> dict[str, str]:
    try:
        from .medical import load_symptoms

        return {s["id"]: s["text"] for s in load_symptoms()}
    except Exception:
        return {}


def _pct(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


# --------------------------------------------------------------------------- plots


def _ax(ax, size=(8, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size)
    return ax


def plot_score_distribution(result: LoopResult, split: str = "original", ax=None):
    """Distribution of overall_score per stage (violins), with the 0.8 threshold."""
    import seaborn as sns

    ax = _ax(ax)
    g = result.grades[result.grades["split"] == split].copy()
    g["段階"] = g["stage"].map(stage_tick)
    order = [stage_tick(s) for s in result.stages]
    sns.violinplot(data=g, x="段階", y="score", order=order, cut=0, inner="quartile", density_norm="width",
                   color="#9ecae1", ax=ax)
    ax.axhline(ACCURACY_THRESHOLD, color="#d62728", ls="--", lw=1)
    ax.text(len(order) - 0.5, ACCURACY_THRESHOLD + 0.02, "正答の閾値 0.8", color="#d62728", ha="right", va="bottom", fontsize=9)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("")
    ax.set_ylabel("スコア（overall_score）")
    ax.set_title(f"スコアの分布（{SPLIT_JA[split]}）")
    return ax


def plot_question_heatmap(result: LoopResult, split: str = "original", value: str = "mean", ax=None):
    """Per-question mean score (or accuracy) across stages."""
    import seaborn as sns

    pq = result.per_question(split)
    titles = symptom_titles()
    pq["質問"] = pq["symptom_id"].map(lambda s: f"{s} {titles.get(s, '')}".strip())
    pq["段階"] = pq["stage"].astype(str).map(stage_tick)
    table = pq.pivot(index="質問", columns="段階", values=value)
    table = table[[stage_tick(s) for s in result.stages if stage_tick(s) in table.columns]]
    ax = _ax(ax, (1.6 + 1.25 * table.shape[1], 0.42 * table.shape[0] + 1.4))
    what = "平均スコア" if value == "mean" else "正答率"
    sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdYlGn", cbar_kws={"label": what}, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set_title(f"質問ごとの{what}（{SPLIT_JA[split]}）")
    ax.set_xlabel("")
    ax.set_ylabel("")
    return ax


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
    ax.set_xticks(range(len(result.stages)), [stage_tick(s) for s in result.stages])
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("正答率（スコア0.8以上）")
    ax.set_title("段階ごとの正答率と95%信頼区間（bootstrap）")
    ax.legend(loc="best", fontsize=9)
    return ax


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
    ax.set_title(f"言い換えとのギャップ（{stage_label(stage)}、平均差 {gap:+.3f}）")
    return ax


def plot_loop_vs_control(result: LoopResult, ax=None):
    """The last loop iteration against the same-compute control: accuracy with intervals."""
    ax = _ax(ax, (7, 4))
    last = result.loop_stages[-1]
    stages = [last] + (["control"] if "control" in result.stages else [])
    ov = result.overall()
    ov = ov[ov["stage"].isin(stages)]
    width = 0.38
    steps = result.training.set_index("stage")["steps"] if len(result.training) else pd.Series(dtype=float)
    loop_steps = int(steps[[s for s in steps.index if s.startswith("iter")]].sum()) if len(steps) else 0
    for i, st in enumerate(stages):
        part = ov[ov["stage"] == st].set_index("split").reindex(["original", "paraphrase"])
        y = part["accuracy"].to_numpy()
        err = np.vstack([y - part["accuracy_lo"].to_numpy(), part["accuracy_hi"].to_numpy() - y])
        label = f"ループ（{last}まで、{loop_steps}ステップ）" if st != "control" else f"対照：同じデータで通常SFT（{int(steps.get('control', 0))}ステップ）"
        ax.bar(np.arange(2) + (i - 0.5) * width, y, width, yerr=err, capsize=4, label=label,
               color=["#1f77b4", "#8c564b"][i])
    ax.set_xticks(range(2), [SPLIT_JA["original"], SPLIT_JA["paraphrase"]])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("正答率（スコア0.8以上）")
    ax.set_title("自己改善ループ vs 同じ計算量の通常SFT")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_training_loss(result: LoopResult, ax=None):
    """Training loss of every training stage, on one step axis per stage."""
    import seaborn as sns

    ax = _ax(ax)
    h = result.history.copy()
    if h.empty:
        return ax
    h["段階"] = h["stage"].map(stage_tick)
    sns.lineplot(data=h, x="step", y="loss", hue="段階", ax=ax)
    ax.set_xlabel("ステップ（step）")
    ax.set_ylabel("学習損失（train loss）")
    ax.set_title("段階ごとの学習損失")
    return ax


# --------------------------------------------------------------------------- generated text


def describe_changes(cmp: Comparison, prev: str, curr: str, top: int = 5) -> str:
    """Markdown lists of the questions that improved / worsened between two stages, with
    their numbers (what seed 000 §6.2–6.3 wrote by hand). Significant changes (Holm-adjusted
    Mann–Whitney p < alpha) first; if there are none, the largest movements, marked as not
    significant."""
    titles = symptom_texts()
    pq = cmp.per_question.copy()
    alpha = cmp.overall.get("alpha", 0.05)

    def line(r) -> str:
        name = titles.get(r["symptom_id"], r["symptom_id"])
        return (f"- **{r['symptom_id']}「{name}」**: 平均スコア {r['mean_prev']:.2f} → {r['mean_curr']:.2f}"
                f"（{r['delta']:+.2f}）、正答率 {r['acc_prev']:.0%} → {r['acc_curr']:.0%}、"
                f"p（Holm補正後）= {r['p_adj']:.3g}")

    out = [f"**{stage_label(prev)} → {stage_label(curr)}**"]
    for kind, ja, asc in (("improved", "改善した質問", False), ("worsened", "悪化した質問", True)):
        sig = pq[pq["change"] == kind].sort_values("delta", ascending=asc)
        out.append(f"\n{ja}（有意、{len(sig)}問）:\n")
        if len(sig):
            out += [line(r) for _, r in sig.head(top).iterrows()]
            if len(sig) > top:
                out.append(f"- ほか {len(sig) - top} 問")
        else:
            moved = pq[(pq["delta"] > 0) if kind == "improved" else (pq["delta"] < 0)]
            moved = moved.sort_values("delta", ascending=asc).head(3)
            if len(moved):
                out.append("- 有意な変化なし。変化が大きかった質問（有意ではない）:")
                out += ["  " + line(r) for _, r in moved.iterrows()]
            else:
                out.append("- なし")
    o = cmp.overall
    out.append(f"\n全体: 質問ごとの平均スコアの変化の平均 {o['delta']:+.3f}"
               f"（95%信頼区間 {o['delta_lo']:+.3f} 〜 {o['delta_hi']:+.3f}）、"
               f"Wilcoxon 符号順位検定 p = {o['p_wilcoxon']:.3g}、符号反転の並べ替え検定 p = {o['p_sign_flip']:.3g}。"
               f"新たに解けた質問 {o['newly_solved']} 問、解けなくなった質問 {o['forgotten']} 問。")
    return "\n".join(out)


def consistent_questions(result: LoopResult, split: str = "original") -> tuple[list[str], list[str]]:
    """(always solved, never solved) symptom ids across the loop's trained stages (seed §6.4)."""
    pq = result.per_question(split)
    trained = [s for s in result.loop_stages if s != "baseline"]
    pq = pq[pq["stage"].isin(trained)]
    solved = pq.groupby("symptom_id")["solved"].agg(["all", "any"])
    return sorted(solved.index[solved["all"]]), sorted(solved.index[~solved["any"]])


def key_numbers(result: LoopResult, no_replay: LoopResult | None = None) -> dict:
    """The numbers the discussion and the report quote, in one dict."""
    ov = result.overall()
    acc = {(r.stage, r.split): r for r in ov.itertuples()}
    out: dict = {"stages": {}}
    for (stage, split), r in acc.items():
        out["stages"].setdefault(stage, {})[split] = {
            "mean": r.mean, "mean_lo": r.mean_lo, "mean_hi": r.mean_hi, "accuracy": r.accuracy,
            "accuracy_lo": r.accuracy_lo, "accuracy_hi": r.accuracy_hi, "harmful_rate": r.harmful_rate,
            "solved": r.solved, "questions": r.questions, "n": r.n}
    out["comparisons"] = {f"{a}->{b}": c.overall for (a, b), c in result.comparisons("original").items()}
    out["paraphrase_gap"] = {
        s: out["stages"][s]["original"]["accuracy"] - out["stages"][s]["paraphrase"]["accuracy"]
        for s in out["stages"] if "paraphrase" in out["stages"][s]}
    if len(result.training):
        out["steps"] = {r.stage: int(r.steps) for r in result.training.itertuples()}
    if no_replay is not None:
        out["no_replay"] = {s: no_replay.summaries[(s, "original")].overall["accuracy"]
                            for s in no_replay.loop_stages if (s, "original") in no_replay.summaries}
        out["no_replay_forgotten"] = {f"{a}->{b}": c.overall["forgotten"]
                                      for (a, b), c in no_replay.comparisons("original").items() if b != "control"}
    return out


def _pt(x: float) -> str:
    """A difference of two rates, in percentage points."""
    return f"{x * 100:+.1f}ポイント"


def _ci(d: dict, key: str = "accuracy") -> str:
    return f"{d[key]:.1%}（95%信頼区間 {d[key + '_lo']:.1%}〜{d[key + '_hi']:.1%}）"


def _overlap(a: dict, b: dict, key: str = "accuracy") -> bool:
    return not (a[key + "_lo"] > b[key + "_hi"] or b[key + "_lo"] > a[key + "_hi"])


def _first_sft_share(st: dict, loop: Sequence[str]) -> str:
    """Whether iteration 0 or the later iterations moved accuracy more."""
    b, i0 = st["baseline"]["original"]["accuracy"], st["iter0"]["original"]["accuracy"]
    later = [st[s]["original"]["accuracy"] for s in loop[2:] if s in st]
    if not later:
        return ""
    best = max(later)
    if i0 - b >= best - i0:
        return (f"この上がり幅（{_pt(i0 - b)}）は、その後の反復で得られた最大の上がり幅（{_pt(best - i0)}）以上で、"
                "変化の大部分は最初の SFT で起きました。")
    return (f"その後の反復では最大 {_pt(best - i0)} 上がり、最初の SFT（{_pt(i0 - b)}）より大きな変化でした。"
            "最初の SFT だけでは学習が足りていなかったことを示しています。")


def _conclusion(result: LoopResult, st: dict, cmps: dict) -> str:
    """One sentence: did the loop's iterations help, and did they beat the same-compute control?"""
    loop = result.loop_stages
    iters = [s for s in loop if s not in ("baseline", "iter0")]
    if not iters or "iter0" not in st:
        return ""
    ups, downs, dips = [], [], []
    for a, b in zip(loop[1:], loop[2:]):
        c = cmps.get(f"{a}->{b}")
        if c is None:
            continue
        acc_a, acc_b = st[a]["original"]["accuracy"], st[b]["original"]["accuracy"]
        if c["p_wilcoxon"] < c["alpha"] and c["delta"] > 0:
            ups.append(b)
        elif c["delta"] < 0 and (c["p_wilcoxon"] < c["alpha"] or c["forgotten"] > c["newly_solved"]):
            downs.append(b)
        elif acc_b < acc_a:
            dips.append(f"{b}（正答率 {acc_a:.1%} → {acc_b:.1%}）")
    parts = []
    if ups:
        parts.append(f"反復は {'・'.join(ups)} で有意に改善し")
    else:
        parts.append("反復で有意に改善した段階はなく")
    if downs:
        parts.append(f"{'・'.join(downs)} では解けなくなった質問のほうが多いか、有意に悪化しました")
    else:
        parts.append("有意に悪化した段階はありませんでした")
    text = "- **結論**: この設定では、" + "、".join(parts) + "。"
    if dips:
        text += f"{'・'.join(dips)}は下がりましたが、質問単位の検定では偶然の揺れと区別できない大きさです。"
    if "control" in st:
        last = loop[-1]
        L, C = st[last]["original"], st["control"]["original"]
        if _overlap(L, C):
            text += "最後の段階と同計算量の対照とは区別できず、ループの手間（評価と誤答の選別）に見合う利点は示されませんでした。"
        elif L["accuracy"] > C["accuracy"]:
            text += "最後の段階は同計算量の対照を上回り、誤答に絞って学習し直すことに利点がありました。"
        else:
            text += ("同じステップ数を全データの通常 SFT に使った対照のほうが高く、"
                     "誤答だけに絞って学習し直すより、同じ計算量で全体を学習し続けるほうが効果的でした。")
    return text


def discussion(result: LoopResult, no_replay: LoopResult | None = None, agreement: Mapping | None = None) -> str:
    """Japanese paragraphs stating, from the measured numbers, when the loop helped and when not."""
    k = key_numbers(result, no_replay)
    st = k["stages"]
    cmps = k["comparisons"]
    loop = result.loop_stages
    lines = []
    if "baseline" in st and "iter0" in st:
        b, i0 = st["baseline"]["original"], st["iter0"]["original"]
        c = cmps.get("baseline->iter0", {})
        lines.append(
            f"- **初回学習（iteration 0）の効果**: 正答率は {_ci(b)}から {_ci(i0)}へ"
            f"{'上がりました' if i0['accuracy'] > b['accuracy'] else '上がりませんでした'}"
            f"（解けた質問 {b['solved']}/{b['questions']} → {i0['solved']}/{i0['questions']}、"
            f"質問単位の Wilcoxon p = {c.get('p_wilcoxon', float('nan')):.3g}）。"
            + _first_sft_share(st, loop))
    for a, bb in zip(loop[1:], loop[2:]):
        c = cmps.get(f"{a}->{bb}")
        if c is None:
            continue
        pa, pb = st[a]["original"], st[bb]["original"]
        sig = c["p_wilcoxon"] < c["alpha"]
        verdict = ("有意に改善しました" if sig and c["delta"] > 0 else "有意に悪化しました" if sig and c["delta"] < 0
                   else "統計的に区別できる変化はありませんでした")
        info = result.stage_info.get(bb, {})
        lines.append(
            f"- **{a} → {bb}**（誤答 {len(info.get('failed', []))} 問の修正例 {info.get('n_corrective', 0)} 件"
            f" + リプレイ {info.get('n_replay', 0)} 件で学習）: 正答率 {pa['accuracy']:.1%} → {pb['accuracy']:.1%}、"
            f"平均スコアの変化 {c['delta']:+.3f}（95%信頼区間 {c['delta_lo']:+.3f}〜{c['delta_hi']:+.3f}）で、{verdict}。"
            f"改善 {c['improved']} 問・悪化 {c['worsened']} 問（質問ごとの検定で有意なもの）、"
            f"新たに解けた質問 {c['newly_solved']} 問、解けなくなった質問 {c['forgotten']} 問。")
    if "control" in st:
        last = loop[-1]
        L, C = st[last]["original"], st["control"]["original"]
        steps = k.get("steps", {})
        loop_steps = sum(v for s, v in steps.items() if s.startswith("iter"))
        same = _overlap(L, C)
        better = "ループ" if L["accuracy"] > C["accuracy"] else "対照（通常のSFT）"
        lines.append(
            f"- **同じ計算量の対照**: 同じデータ・同じ {loop_steps} ステップで通常の SFT をした対照は正答率 {_ci(C)}、"
            f"ループ（{last}）は {_ci(L)}。"
            + ("信頼区間が重なっており、この条件ではループの優位は示されませんでした。" if same else
               f"信頼区間が重ならず、{better}のほうが高い結果でした。"))
    if last_para := st.get(loop[-1], {}).get("paraphrase"):
        o = st[loop[-1]]["original"]
        gap = o["accuracy"] - last_para["accuracy"]
        lines.append(
            f"- **言い換えへの汎化**: {loop[-1]} の正答率は元の質問で {o['accuracy']:.1%}、学習に使っていない言い換えで "
            f"{last_para['accuracy']:.1%}（差 {_pt(gap)}）。"
            + ("元の文面に合わせて覚えた分だけ、言い換えでは下がっています。" if gap > 0.05 else
               "言い換えでもほぼ同じ水準です。" if abs(gap) <= 0.05 else "言い換えのほうが高い結果でした。"))
    if no_replay is not None and "no_replay" in k:
        last = loop[-1]
        with_r = st[last]["original"]["accuracy"]
        without = k["no_replay"].get(last)
        forgot_with = sum(c["forgotten"] for key, c in cmps.items() if not key.startswith("baseline") and "control" not in key)
        forgot_without = sum(k["no_replay_forgotten"].get(key, 0) for key in k["no_replay_forgotten"] if not key.startswith("baseline"))
        if without is not None:
            lines.append(
                f"- **リプレイ（replay）**: {last} の正答率はリプレイあり {with_r:.1%}、リプレイなし {without:.1%}。"
                f"反復中に解けなくなった質問はリプレイあり {forgot_with} 問、なし {forgot_without} 問でした。")
    conclusion = _conclusion(result, st, cmps)
    if conclusion:
        lines.append(conclusion)
    if agreement:
        lines.append(
            f"- **採点者の信頼性**: `{agreement.get('judge')}` の人手ラベルとの一致率 {agreement['label_accuracy']:.1%}、"
            f"Cohen の κ = {agreement['cohen_kappa']:.2f}、有害回答の再現率 {agreement['harmful_recall']:.1%}。"
            "ここでの数値はすべてこの採点者の目を通したものです。")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the report


def report_dir(result: LoopResult) -> Path:
    """``$COURSE_REPORT_DIR`` when the runner sets it, else ``<run folder>/report``."""
    env = os.environ.get(REPORT_ENV)
    return Path(env) if env else result.run_dir / "report"


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in r.tolist()) + " |")
    return "\n".join(lines)


def save_plots(result: LoopResult, out_dir: Path, no_replay: LoopResult | None = None) -> dict[str, Path]:
    """Draw the report's figures into ``out_dir`` as PNG files."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "accuracy": lambda ax: plot_accuracy(result, ax=ax, extra={"リプレイなし": no_replay} if no_replay else None),
        "heatmap": lambda ax: plot_question_heatmap(result, ax=ax),
        "scores": lambda ax: plot_score_distribution(result, ax=ax),
        "gap": lambda ax: plot_paraphrase_gap(result, ax=ax),
    }
    if "control" in result.stages:
        makers["control"] = lambda ax: plot_loop_vs_control(result, ax=ax)
    sizes = {"heatmap": (2 + 1.3 * len(result.stages), 7.5), "gap": (5.5, 5.5)}
    paths = {}
    for key, make in makers.items():
        fig, ax = plt.subplots(figsize=sizes.get(key, (8, 4)))
        make(ax)
        fig.tight_layout()
        path = out_dir / PLOTS[key]
        tmp = path.with_name(path.stem + ".tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        paths[key] = path
    return paths


def write_level3_report(result: LoopResult, out_dir: Path | str | None = None, no_replay: LoopResult | None = None,
                        agreement: Mapping | None = None, notebook_seconds: float | None = None) -> dict[str, Path]:
    """Write ``level3_report.md`` (a section for the execution report), ``level3_report.json``
    and the PNG plots into ``out_dir`` (default :func:`report_dir`). Returns the paths."""
    out = Path(out_dir) if out_dir is not None else report_dir(result)
    out.mkdir(parents=True, exist_ok=True)
    plots = save_plots(result, out, no_replay)
    cfg = result.config
    ident = result.identity
    judge = ident.get("judge", {})
    model = ident.get("model", {})
    numbers = key_numbers(result, no_replay)
    payload = {
        "run": result.run_dir.name, "model": model, "judge": judge, "config": cfg.to_dict(),
        "data": ident.get("data"), "loop_version": ident.get("loop_version"), "machine": ident.get("machine"),
        "stages": result.stages, "numbers": numbers,
        "table_original": result.table("original", formatted=False).to_dict(orient="records"),
        "table_paraphrase": result.table("paraphrase", formatted=False).to_dict(orient="records"),
        "training": result.training.to_dict(orient="records"),
        "agreement": dict(agreement) if agreement else None,
        "notebook_seconds": notebook_seconds, "plots": {k: p.name for k, p in plots.items()},
    }
    js = _write_json(out / f"{REPORT_STEM}.json", json.loads(json.dumps(payload, default=_json_default)))
    versions = (ident.get("machine") or {}).get("packages", {})
    judge_desc = judge.get("name", "?") + (f"（{judge['model']}）" if judge.get("model") else
                                           f"（{judge['version']}）" if judge.get("version") else "")
    lines = [
        "## レベル3：自己改善ループの結果",
        "",
        f"> {DISCLAIMER}",
        "",
        f"- モデル: `{model.get('label')}`（`{model.get('source')}`）"
        + ("。コース内蔵の小さなモデルの結果で、Qwen3-0.6B の結果ではありません。" if model.get("profile") == "tiny" else ""),
        f"- 採点者（judge）: `{judge_desc}`",
        f"- サンプル数: 元の質問 {len(set(result.grades['item_id'][result.grades['split'] == 'original']))} 問 × N = {cfg.n_samples}、"
        f"言い換え × {cfg.n_paraphrase}（温度 {cfg.temperature}、top_p {cfg.top_p}）",
        f"- LoRA: r = {cfg.lora_r}, α = {cfg.lora_alpha}, dropout = {cfg.lora_dropout}, 対象 = {', '.join(cfg.target_modules)}",
        f"- 学習: lr = {cfg.lr:g}, batch = {cfg.batch_size}, 初回 {cfg.epochs_initial:g} エポック、反復 {cfg.epochs_iter:g} エポック、"
        f"反復回数 K = {cfg.iterations}、リプレイ比率 = {cfg.replay_ratio}、シード = {cfg.seed}",
        f"- 実行: run `{result.run_dir.name}`、loop v{ident.get('loop_version')}、"
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        + (f"、ノートブック {notebook_seconds:.0f} 秒" if notebook_seconds else ""),
        "",
        "### 段階ごとの指標（元の質問）",
        "",
        _md_table(result.table("original")),
        "",
        "### 段階ごとの指標（言い換え、学習に未使用）",
        "",
        _md_table(result.table("paraphrase")),
        "",
        "### 要点（測定値から自動生成）",
        "",
        discussion(result, no_replay, agreement),
        "",
    ]
    captions = {"accuracy": "段階ごとの正答率と95%信頼区間", "heatmap": "質問ごとの平均スコア",
                "scores": "スコアの分布", "gap": "元の質問と言い換えのギャップ", "control": "ループ vs 同計算量の対照"}
    for key, path in plots.items():
        lines += [f"![{captions[key]}]({path.name})", ""]
    md = out / f"{REPORT_STEM}.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(md)
    return {"markdown": md, "json": js, **plots}


__all__ = [
    "REPORT_ENV", "REPORT_STEM", "DISCLAIMER", "stage_label", "symptom_titles", "plot_score_distribution",
    "plot_question_heatmap", "plot_accuracy", "plot_paraphrase_gap", "plot_loop_vs_control", "plot_training_loss",
    "describe_changes", "consistent_questions", "key_numbers", "discussion", "report_dir", "save_plots",
    "write_level3_report",
]
