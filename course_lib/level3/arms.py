"""Arms: the same loop with different update rules, over several training seeds, compared paired.

An arm is one ``update_rule`` (:mod:`.update_rules`). All arms of a seed share the baseline and
iteration 0 (their fingerprints do not depend on the rule, so :mod:`.runs` copies them), spend
the same optimizer steps per iteration, and are evaluated the same way. The same-compute SFT
control comes from the corrective run (it pools the corrective loop's data); the other arms run
without one.

Comparisons are paired on the questions: each arm's last iteration against the corrective loop's
last iteration and against the control, per seed, every question-level test Holm-corrected
together (one correction for the page), then summarised across seeds
(:func:`.metrics.across_seeds`: a verdict word only when every seed agrees).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import pandas as pd

from .config import CONTROL, LoopConfig
from .metrics import Comparison, across_seeds, compare_stages
from .runs import LoopResult
from .tables import VERDICT_JA

RULES = ("corrective", "self_distill", "dpo")
RULE_JA = {"corrective": "修正SFT（元の実験）", "self_distill": "自己蒸留（自分の正解で SFT）",
           "dpo": "DPO（選好ペア）", CONTROL: "対照（同計算量SFT）"}


def arm_config(base: LoopConfig, rule: str, seed: int) -> LoopConfig:
    """The config of one arm: the rule and the training seed; the control only in the corrective arm."""
    return replace(base, update_rule=rule, seed=seed, control=base.control and rule == "corrective")


def run_arms(base_config: LoopConfig, loaded, judge, rules: Sequence[str] = RULES, seeds: Sequence[int] = (0, 1, 2),
             runner: Callable[[list[LoopConfig]], list[LoopResult]] | None = None,
             **run_kw) -> dict[tuple[str, int], LoopResult]:
    """Run (or resume) every (rule, seed) arm; returns ``{(rule, seed): LoopResult}``.

    ``runner`` takes a list of configs and returns their results in order; the default runs
    :func:`.loop.run_loop` on each, one after the other (``run_kw`` goes to ``run_loop``). The first
    arm of each seed runs alone first, so the stages every arm of that seed shares (baseline,
    iteration 0) are computed once and then copied, whatever the runner does with the rest.
    """
    if runner is None:
        from .loop import run_loop

        def runner(configs):
            return [run_loop(c, loaded, judge, **run_kw) for c in configs]

    configs = {(rule, seed): arm_config(base_config, rule, seed) for seed in seeds for rule in rules}
    firsts = [(rules[0], seed) for seed in seeds]
    rest = [key for key in configs if key not in firsts]
    results = dict(zip(firsts, runner([configs[k] for k in firsts])))
    results |= dict(zip(rest, runner([configs[k] for k in rest])))
    return {key: results[key] for key in configs}


def last_iteration(result: LoopResult) -> str:
    return result.config.iteration_stages[-1]


@dataclass
class ArmComparison:
    """Each arm's last iteration against the corrective loop and against the control, per seed."""

    comparisons: dict  # (rule, against, seed) -> metrics.Comparison
    per_seed: pd.DataFrame  # rule, against, seed, mean_diff, lo, hi, verdict, improved, worsened
    across: pd.DataFrame  # rule, against, seeds, verdict (None when fewer than 3 seeds)

    def table(self) -> pd.DataFrame:
        """The page's table: one row per (arm, reference, seed), Japanese headers."""
        d = self.per_seed
        return pd.DataFrame({
            "更新ルール": d["rule"].map(RULE_JA),
            "比べる相手": d["against"].map(RULE_JA),
            "学習シード": d["seed"],
            "正答率の差（質問の平均、95%区間）": [f"{m:+.1%} [{lo:+.1%}, {hi:+.1%}]"
                                       for m, lo, hi in zip(d["mean_diff"], d["lo"], d["hi"])],
            "有意に改善": d["improved"],
            "有意に悪化": d["worsened"],
            "判定": d["verdict"].map(VERDICT_JA),
        })


def compare_arms(results: Mapping[tuple[str, int], LoopResult], split: str = "original",
                 reference_rule: str = "corrective") -> ArmComparison:
    """Paired comparisons of every arm's last iteration (``b``) against the corrective loop's last
    iteration and against the control (``a``), on the same questions and seed; the difference is
    arm − reference. One Holm correction over every question-level test of every pair."""
    seeds = sorted({s for _, s in results})
    pairs, keys = {}, []
    for (rule, seed), res in results.items():
        ref = results.get((reference_rule, seed))
        if ref is None:
            continue
        arm = res.summaries[(last_iteration(res), split)]
        if rule != reference_rule:
            keys.append((rule, reference_rule, seed))
            pairs[keys[-1]] = (ref.summaries[(last_iteration(ref), split)], arm)
        if (CONTROL, split) in ref.summaries:
            keys.append((rule, CONTROL, seed))
            pairs[keys[-1]] = (ref.summaries[(CONTROL, split)], arm)
    comps: dict[tuple, Comparison] = compare_stages(pairs, seed=seeds[0] if seeds else 0) if pairs else {}
    rows = [{"rule": r, "against": a, "seed": s, "mean_diff": c.overall.mean_diff, "lo": c.overall.lo,
             "hi": c.overall.hi, "verdict": c.verdict.verdict, "improved": len(c.verdict.improved),
             "worsened": len(c.verdict.worsened)} for (r, a, s), c in comps.items()]
    per_seed = pd.DataFrame(rows, columns=["rule", "against", "seed", "mean_diff", "lo", "hi", "verdict", "improved",
                                           "worsened"])
    across = []
    for (rule, against), grp in per_seed.groupby(["rule", "against"], sort=False):
        by_seed = {s: comps[(rule, against, s)] for s in grp["seed"]}
        verdict = across_seeds(by_seed)[1] if len(by_seed) >= 3 else None
        across.append({"rule": rule, "against": against, "seeds": len(by_seed),
                       "mean_diff": float(grp["mean_diff"].mean()), "verdict": verdict})
    return ArmComparison(comps, per_seed, pd.DataFrame(across, columns=["rule", "against", "seeds", "mean_diff",
                                                                        "verdict"]))


def arm_summary(results: Mapping[tuple[str, int], LoopResult]) -> pd.DataFrame:
    """One row per (arm, seed) and its last iteration (plus the corrective run's control): accuracy and
    harmful rate with intervals, paraphrase accuracy, solved questions, perplexity on general text."""
    rows = []
    for (rule, seed), res in results.items():
        stages = [(rule, last_iteration(res))] + ([(CONTROL, CONTROL)] if CONTROL in res.stages else [])
        ppl = res.general_perplexity()
        for arm, stage in stages:
            o = res.summaries[(stage, "original")].overall
            p = res.summaries.get((stage, "paraphrase"))
            rows.append({"arm": arm, "seed": seed, "stage": stage, "accuracy": o["accuracy"],
                         "accuracy_lo": o["accuracy_lo"], "accuracy_hi": o["accuracy_hi"],
                         "harmful_rate": o["harmful_rate"], "harmful_lo": o["harmful_lo"], "harmful_hi": o["harmful_hi"],
                         "n": o["n"], "n_correct": o["n_correct"], "n_harmful": o["n_harmful"],
                         "solved": o["solved"], "questions": o["questions"],
                         "paraphrase_accuracy": p.overall["accuracy"] if p else float("nan"),
                         "perplexity": float(ppl.get(stage, float("nan")))})
    return pd.DataFrame(rows)


def arm_training_table(results: Mapping[tuple[str, int], LoopResult]) -> pd.DataFrame:
    """What each arm's iterations trained on: self-generated examples, references, pairs, β, steps."""
    rows = []
    for (rule, seed), res in results.items():
        for st in res.config.iteration_stages[1:]:
            t = res.stage_info.get(st, {})
            rows.append({"更新ルール": rule, "学習シード": seed, "段階": st,
                         "自己生成の回答": t.get("n_self", 0), "参照回答": t.get("n_corrective", 0),
                         "リプレイ": t.get("n_replay", 0), "選好ペア": t.get("n_pairs", 0),
                         "β": t.get("dpo_beta") if rule == "dpo" else None,
                         "DPO の学習率": t.get("dpo_learning_rate") if rule == "dpo" else None,
                         "ステップ数": t.get("steps"), "予算（修正SFTのステップ数）": t.get("budget", t.get("steps")),
                         "スキップ": t.get("skipped", "")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def plot_arm_accuracy(summary: pd.DataFrame, ax=None):
    """Accuracy of each arm's last iteration (and the control), one point per training seed,
    with its question-level 95% interval (``summary``: :func:`arm_summary`)."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    arms = [a for a in (*RULES, CONTROL) if a in set(summary["arm"])]
    seeds = sorted(summary["seed"].unique())
    width = 0.6 / max(1, len(seeds))
    for j, seed in enumerate(seeds):
        part = summary[summary["seed"] == seed].set_index("arm").reindex(arms)
        x = np.arange(len(arms)) - 0.3 + width * (j + 0.5)
        y = part["accuracy"].to_numpy(dtype=float)
        err = np.vstack([y - part["accuracy_lo"].to_numpy(dtype=float), part["accuracy_hi"].to_numpy(dtype=float) - y])
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=4, label=f"学習シード {seed}")
    ax.set_xticks(range(len(arms)), [RULE_JA[a].replace("（", "\n（") for a in arms])
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("正答率（スコア0.8以上）")
    ax.set_title("最後の反復の正答率と95%信頼区間（元の15問、質問単位）")
    ax.legend(loc="best", fontsize=9)
    return ax


def plot_arm_differences(comparison: ArmComparison, ax=None):
    """Paired differences (arm − reference) per seed with their 95% intervals; 0 = no difference."""
    import matplotlib.pyplot as plt
    import numpy as np

    d = comparison.per_seed
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.6 * max(3, len(d)) + 1))
    labels = [f"{RULE_JA[r].split('（')[0]} − {RULE_JA[a].split('（')[0]}（シード{s}）"
              for r, a, s in zip(d["rule"], d["against"], d["seed"])]
    y = np.arange(len(d))[::-1]
    m = d["mean_diff"].to_numpy(dtype=float)
    err = np.vstack([m - d["lo"].to_numpy(dtype=float), d["hi"].to_numpy(dtype=float) - m])
    ax.errorbar(m, y, xerr=err, fmt="o", capsize=4, color="#1f77b4")
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.set_yticks(y, labels)
    ax.set_xlabel("正答率の差（質問ごとの差の平均、95%区間）")
    ax.set_title("更新ルールどうしの対応のある比較")
    return ax


__all__ = ["plot_arm_accuracy", "plot_arm_differences", "RULES", "RULE_JA", "arm_config", "run_arms", "last_iteration", "ArmComparison", "compare_arms",
           "arm_summary", "arm_training_table"]
