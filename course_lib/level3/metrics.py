"""Level-3 metrics: mean score, accuracy (score >= 0.8), harmful rate and label
counts per question and overall, with bootstrap confidence intervals, and a paired
comparison between two checkpoints.

Pure functions over a *grades frame*: one row per graded answer with the columns

* ``symptom_id`` (the question; the default grouping key) and optionally ``item_id``
  (a paraphrase id, when several wordings share one symptom),
* ``score`` (``overall_score``, 0..1), ``label`` (``overall_label``), ``harmful``
  (``overall_is_harmful``).

Seed 000 §4.3 defines the three headline numbers; it sampled each question once,
so it could not give an interval or a test. With N samples per question both
become possible, and this module computes them.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .judge.schema import ACCURACY_THRESHOLD, LABELS

DEFAULT_N_BOOT = 2000
CI_LEVEL = 0.95


# --------------------------------------------------------------------------- bootstrap


def _apply_stat(stat: Callable, samples: np.ndarray) -> np.ndarray:
    """``stat`` over each row of ``samples``; vectorised when ``stat`` takes ``axis``."""
    try:
        out = np.asarray(stat(samples, axis=1), dtype=float)
        if out.shape == (samples.shape[0],):
            return out
    except TypeError:
        pass
    return np.array([stat(row) for row in samples], dtype=float)


def bootstrap_ci(values: Sequence[float], stat: Callable = np.mean, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 level: float = CI_LEVEL, strata: Sequence | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval for ``stat(values)``.

    With ``strata`` (one label per value, e.g. the question id) each resample draws
    with replacement *within* every stratum and keeps its size: the interval then
    describes sampling noise for a fixed question set, which is what a table over
    the same 15 questions needs. Empty input gives ``(nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = rng.integers(0, x.size, size=(n_boot, x.size))
    else:
        labels = np.asarray(list(strata), dtype=object)
        if labels.shape[0] != x.size:
            raise ValueError(f"strata has {labels.shape[0]} labels for {x.size} values")
        parts = []
        for key in pd.unique(labels):
            members = np.flatnonzero(labels == key)
            parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
        idx = np.hstack(parts)
    stats = _apply_stat(stat, x[idx])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return (float(low), float(high))


# --------------------------------------------------------------------------- summaries


def _check_frame(df: pd.DataFrame, by: str) -> None:
    missing = {by, "score", "label", "harmful"} - set(df.columns)
    if missing:
        raise KeyError(f"grades frame lacks column(s): {', '.join(sorted(missing))}")


def _row(scores: np.ndarray, labels: pd.Series, harmful: np.ndarray, threshold: float) -> dict:
    correct = scores >= threshold
    row = {
        "n": int(scores.size),
        "mean": float(scores.mean()) if scores.size else float("nan"),
        "std": float(scores.std(ddof=1)) if scores.size > 1 else float("nan"),
        "accuracy": float(correct.mean()) if scores.size else float("nan"),
        "harmful_rate": float(harmful.mean()) if scores.size else float("nan"),
    }
    counts = labels.value_counts()
    for lab in LABELS:
        row[lab] = int(counts.get(lab, 0))
    return row


@dataclass
class Summary:
    """Metrics of one checkpoint: ``per_question`` (one row per question) and ``overall``."""

    per_question: pd.DataFrame
    overall: dict = field(default_factory=dict)


def summarise(grades: pd.DataFrame, by: str = "symptom_id", threshold: float = ACCURACY_THRESHOLD,
              n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Summary:
    """Mean score, standard deviation, accuracy, harmful rate and label counts.

    ``per_question`` has one row per value of ``by`` with the columns n, mean, std
    (sample standard deviation over the N answers), accuracy (share of answers with
    score >= ``threshold``), harmful_rate, a count per label, ``solved`` (the
    question's mean score >= ``threshold``: the seed's one-answer-per-question
    accuracy, as N grows) and 95% bootstrap intervals ``mean_lo``/``mean_hi`` and
    ``accuracy_lo``/``accuracy_hi`` over that question's answers.

    ``overall`` pools every answer (so each question weighs by its N) and adds
    intervals from a bootstrap stratified by question, plus ``questions`` and
    ``solved`` (how many questions are solved) and ``solved_rate``.
    """
    _check_frame(grades, by)
    rows = []
    for key, g in grades.groupby(by, sort=True):
        s = g["score"].to_numpy(dtype=float)
        row = {by: key, **_row(s, g["label"], g["harmful"].to_numpy(dtype=bool), threshold)}
        row["solved"] = bool(row["mean"] >= threshold)
        row["mean_lo"], row["mean_hi"] = bootstrap_ci(s, np.mean, n_boot, seed)
        row["accuracy_lo"], row["accuracy_hi"] = bootstrap_ci((s >= threshold).astype(float), np.mean, n_boot, seed)
        rows.append(row)
    columns = [by, "n", "mean", "std", "accuracy", "harmful_rate", *LABELS, "solved",
               "mean_lo", "mean_hi", "accuracy_lo", "accuracy_hi"]
    per_question = pd.DataFrame(rows, columns=columns)

    s = grades["score"].to_numpy(dtype=float)
    harmful = grades["harmful"].to_numpy(dtype=bool)
    overall = _row(s, grades["label"], harmful, threshold)
    strata = grades[by].to_numpy()
    overall["mean_lo"], overall["mean_hi"] = bootstrap_ci(s, np.mean, n_boot, seed, strata=strata)
    overall["accuracy_lo"], overall["accuracy_hi"] = bootstrap_ci((s >= threshold).astype(float), np.mean, n_boot, seed, strata=strata)
    overall["harmful_lo"], overall["harmful_hi"] = bootstrap_ci(harmful.astype(float), np.mean, n_boot, seed, strata=strata)
    overall["questions"] = int(len(per_question))
    overall["solved"] = int(per_question["solved"].sum())
    overall["solved_rate"] = overall["solved"] / overall["questions"] if overall["questions"] else float("nan")
    return Summary(per_question, overall)


# --------------------------------------------------------------------------- paired comparison


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN): many questions, one alpha."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Mann–Whitney U p-value; 1.0 when both samples are the same constant."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    both = np.concatenate([a, b])
    if np.all(both == both[0]):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def fisher_p(correct_a: int, n_a: int, correct_b: int, n_b: int) -> float:
    """Two-sided Fisher exact test on the 2x2 table of correct / not correct answers."""
    from scipy.stats import fisher_exact

    if n_a == 0 or n_b == 0:
        return float("nan")
    return float(fisher_exact([[correct_a, n_a - correct_a], [correct_b, n_b - correct_b]]).pvalue)


def sign_flip_p(deltas: Sequence[float], n_perm: int = 20000, seed: int = 0) -> float:
    """Two-sided paired permutation test (sign flips) on the mean of ``deltas``.

    Exact (all 2^n sign patterns) for up to 16 pairs, else Monte Carlo.
    """
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return float("nan")
    if np.allclose(d, 0):
        return 1.0
    observed = abs(d.mean())
    if d.size <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_perm, d.size))
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= observed - 1e-12))


def wilcoxon_p(deltas: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zero differences dropped); 1.0 when all are zero."""
    from scipy.stats import wilcoxon

    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return float("nan")
    if np.allclose(d, 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass
class Comparison:
    """``per_question`` changes between two checkpoints and an ``overall`` paired test."""

    per_question: pd.DataFrame
    overall: dict = field(default_factory=dict)

    def improved(self) -> pd.DataFrame:
        return self.per_question[self.per_question["change"] == "improved"]

    def worsened(self) -> pd.DataFrame:
        return self.per_question[self.per_question["change"] == "worsened"]


def paired_comparison(prev: pd.DataFrame, curr: pd.DataFrame, by: str = "symptom_id",
                      threshold: float = ACCURACY_THRESHOLD, alpha: float = 0.05,
                      n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Comparison:
    """Compare two checkpoints graded on the same questions.

    Per question (the N answers of one checkpoint are independent of the other's,
    so the tests are two-sample): mean and accuracy before/after, their change,
    a Mann–Whitney U test on the scores and a Fisher exact test on correct counts,
    the Mann–Whitney p-value Holm-adjusted over the questions (``p_adj``), and
    ``change``: "improved" / "worsened" when ``p_adj < alpha``, else "unchanged".
    ``status_prev``/``status_curr`` say whether the question was solved (mean >= threshold).

    Overall (paired by question): the mean of the per-question changes, its
    bootstrap interval over questions, a Wilcoxon signed-rank test and an exact
    sign-flip permutation test on the per-question mean changes.
    """
    _check_frame(prev, by)
    _check_frame(curr, by)
    keys = sorted(set(prev[by]) & set(curr[by]))
    if not keys:
        raise ValueError("the two grade frames share no question")
    pg, cg = dict(tuple(prev.groupby(by))), dict(tuple(curr.groupby(by)))
    rows = []
    for k in keys:
        a = pg[k]["score"].to_numpy(dtype=float)
        b = cg[k]["score"].to_numpy(dtype=float)
        ca, cb = int((a >= threshold).sum()), int((b >= threshold).sum())
        rows.append({
            by: k, "n_prev": a.size, "n_curr": b.size,
            "mean_prev": a.mean(), "mean_curr": b.mean(), "delta": b.mean() - a.mean(),
            "acc_prev": ca / a.size, "acc_curr": cb / b.size, "acc_delta": cb / b.size - ca / a.size,
            "p_mannwhitney": mann_whitney_p(a, b), "p_fisher": fisher_p(ca, a.size, cb, b.size),
            "status_prev": "solved" if a.mean() >= threshold else "unsolved",
            "status_curr": "solved" if b.mean() >= threshold else "unsolved",
        })
    df = pd.DataFrame(rows)
    df["p_adj"] = holm(df["p_mannwhitney"])
    sig = df["p_adj"] < alpha
    df["change"] = np.where(sig & (df["delta"] > 0), "improved", np.where(sig & (df["delta"] < 0), "worsened", "unchanged"))
    deltas = df["delta"].to_numpy()
    lo, hi = bootstrap_ci(deltas, np.mean, n_boot, seed)
    overall = {
        "questions": len(df),
        "mean_prev": float(df["mean_prev"].mean()), "mean_curr": float(df["mean_curr"].mean()),
        "delta": float(deltas.mean()), "delta_lo": lo, "delta_hi": hi,
        "acc_delta": float(df["acc_delta"].mean()),
        "p_wilcoxon": wilcoxon_p(deltas), "p_sign_flip": sign_flip_p(deltas, seed=seed),
        "improved": int((df["change"] == "improved").sum()),
        "worsened": int((df["change"] == "worsened").sum()),
        "newly_solved": int(((df["status_prev"] == "unsolved") & (df["status_curr"] == "solved")).sum()),
        "forgotten": int(((df["status_prev"] == "solved") & (df["status_curr"] == "unsolved")).sum()),
        "alpha": alpha,
    }
    return Comparison(df, overall)


# --------------------------------------------------------------------------- tables

TABLE_COLUMNS = {
    "stage": "イテレーション",
    "mean": "平均スコア",
    "std": "標準偏差",
    "accuracy": "正答率 (≥0.8)",
    "harmful_rate": "有害率",
    "correct": "Correct",
    "partially_correct": "Partially Correct",
    "incorrect": "Incorrect",
    "unsafe": "Unsafe",
}


def iteration_table(overall_by_stage: Mapping[str, Mapping], formatted: bool = True) -> pd.DataFrame:
    """The table of the original experiment (book: original_experiment, §6.1), one row per checkpoint, from ``Summary.overall`` dicts.

    Formatted: accuracy and harmful rate as percentages with their 95% interval
    and the answer count, plus the seed's question-level accuracy ("solved x/15").
    """
    rows = []
    for stage, o in overall_by_stage.items():
        if not formatted:
            rows.append({"stage": stage, **{k: o.get(k) for k in TABLE_COLUMNS if k != "stage"},
                         "accuracy_lo": o.get("accuracy_lo"), "accuracy_hi": o.get("accuracy_hi"),
                         "solved": o.get("solved"), "questions": o.get("questions"), "n": o.get("n")})
            continue
        n_correct = round(o["accuracy"] * o["n"])
        rows.append({
            "stage": stage,
            "mean": f"{o['mean']:.3f} [{o['mean_lo']:.3f}, {o['mean_hi']:.3f}]",
            "std": f"{o['std']:.3f}",
            "accuracy": f"{o['accuracy']:.1%} ({n_correct}/{o['n']}) [{o['accuracy_lo']:.1%}, {o['accuracy_hi']:.1%}]",
            "harmful_rate": f"{o['harmful_rate']:.1%}",
            **{lab: o[lab] for lab in LABELS},
            "solved": f"{o['solved']}/{o['questions']}",
        })
    df = pd.DataFrame(rows)
    names = dict(TABLE_COLUMNS, solved="解けた質問 (平均≥0.8)")
    return df.rename(columns=names) if formatted else df


__all__ = [
    "ACCURACY_THRESHOLD", "LABELS", "bootstrap_ci", "Summary", "summarise", "holm", "mann_whitney_p",
    "fisher_p", "sign_flip_p", "wilcoxon_p", "Comparison", "paired_comparison", "iteration_table",
]
