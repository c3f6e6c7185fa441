"""Japanese sentences composed from a run's numbers, for the lesson's discussion and the report.

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from .metrics import Comparison
from .plots import stage_label, symptom_texts
from .runs import LoopResult

def describe_changes(cmp: Comparison, prev: str, curr: str, top: int = 5) -> str:
    """Markdown lists of the questions that improved / worsened between two stages, with
    their numbers (what the original experiment (book: original_experiment, §6.2–6.3) wrote by hand). Significant changes (Holm-adjusted
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
        loop_steps = sum(v for s, v in steps.items() if s in result.config.iteration_stages)
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
