"""Statistics for the level-2 and level-3 comparisons, in the form a reviewer would accept.

The question is the resampling unit, not the sampled answer; two settings are
compared paired, by the interval of their difference (never by overlapping
intervals); proportions get Wilson or Clopper–Pearson intervals, never zero width
(a percentile bootstrap of 0/450 gives [0, 0]); one Holm correction per page; a
verdict between settings counts only when it holds across training seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import beta, fisher_exact, norm

EXACT_SIGN_FLIP_MAX_N = 20  # up to this many units the sign-flip test enumerates all 2^n patterns
N_PERM = 20000  # Monte-Carlo sign patterns above that


class Verdict:
    """The verdict strings shared by the lessons."""

    BETTER = "better"
    WORSE = "worse"
    WORSE_ON_SOME = "worse_on_some"
    NO_CLEAR_DIFFERENCE = "no_clear_difference"
    MIXED_ACROSS_SEEDS = "mixed_across_seeds"


BETTER, WORSE, WORSE_ON_SOME = Verdict.BETTER, Verdict.WORSE, Verdict.WORSE_ON_SOME
NO_CLEAR_DIFFERENCE, MIXED_ACROSS_SEEDS = Verdict.NO_CLEAR_DIFFERENCE, Verdict.MIXED_ACROSS_SEEDS
_NAN2 = (float("nan"), float("nan"))
_VERDICTS = frozenset({BETTER, WORSE, WORSE_ON_SOME, NO_CLEAR_DIFFERENCE, MIXED_ACROSS_SEEDS})


def _tail(level: float) -> float:
    """Probability in each tail of a two-sided interval at ``level``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    return (1 - level) / 2


def _check_counts(k: int, n: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n.

    Covers the answer-sampling noise of one proportion (e.g. accuracy of one
    question over its n answers). Never zero width for n > 0; 0/n gives a lower
    end of exactly 0 and n/n an upper end of exactly 1. n = 0 gives (nan, nan).
    """
    _check_counts(k, n)
    z = float(norm.ppf(1 - _tail(level)))
    if n == 0:
        return _NAN2
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return (lo, hi)


def _wilson_from(p: float, n: float, z: float) -> tuple[float, float]:
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def clustered_wilson_interval(k_per_question: Sequence[int], n_per_question: Sequence[int],
                              level: float = 0.95) -> tuple[float, float]:
    """Wilson interval for a pooled proportion whose answers come in questions (clusters).

    Answers to one question are not independent: a question the model cannot answer
    fails all its N samples. The pooled k/n is kept, but the sample size is shrunk by
    the design effect (Kish): ``deff = var(cluster estimate) / var(independent answers)``,
    ``n_eff = n / deff`` with deff at least 1. The interval then covers which answers
    were sampled *and* how much questions differ — not training-seed variance. Never
    zero width (0 of n gives [0, > 0]).
    """
    k = np.asarray(k_per_question, dtype=float)
    n = np.asarray(n_per_question, dtype=float)
    if k.shape != n.shape or k.size == 0:
        raise ValueError(f"need one count and one size per question, got {k.size} and {n.size}")
    if np.any(k < 0) or np.any(k > n) or np.any(n <= 0):
        raise ValueError("each question needs 0 <= k <= n and n > 0")
    total, size = float(k.sum()), float(n.sum())
    p = total / size
    deff = 1.0
    if 0 < p < 1 and k.size > 1:
        var_cluster = k.size / (k.size - 1) * float(((k - p * n) ** 2).sum()) / size ** 2
        deff = max(1.0, var_cluster / (p * (1 - p) / size))
    lo, hi = _wilson_from(p, size / deff, float(norm.ppf(1 - _tail(level))))
    return (0.0 if total == 0 else lo, 1.0 if total == size else hi)


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a proportion k/n, from beta quantiles.

    Covers the same thing as :func:`wilson_interval`, conservatively (coverage is
    at least ``level``). n = 0 gives (nan, nan).
    """
    _check_counts(k, n)
    a = _tail(level)
    if n == 0:
        return _NAN2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return (lo, hi)


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence, n_boot: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the pooled mean of ``values``, resampling whole clusters.

    ``clusters`` gives each value its question id; a resample draws questions with
    replacement and keeps all answers of each. The interval covers which questions
    were asked, and the answer-sampling noise within them. It does *not* cover
    training-seed variance: for that, repeat the run per seed. Empty input gives
    (nan, nan).
    """
    x = np.asarray(values, dtype=float)
    labels = np.asarray(list(clusters), dtype=object)
    if labels.shape[0] != x.size:
        raise ValueError(f"clusters has {labels.shape[0]} labels for {x.size} values")
    tail = _tail(level) * 100
    if x.size == 0:
        return _NAN2
    _, inverse = np.unique(labels.astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse).astype(float)
    draws = np.random.default_rng(seed).integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class PairedDifference:
    """Mean per-unit difference (after − before); ``lo``/``hi``: bootstrap over units of that
    mean (covers which questions were asked, not training-seed variance); ``p_value``:
    two-sided sign-flip permutation test of mean difference = 0."""
    mean_diff: float
    lo: float
    hi: float
    n_units: int
    p_value: float
    level: float


def _common_units(before: Mapping, after: Mapping) -> list[str]:
    only_before, only_after = set(before) - set(after), set(after) - set(before)
    if only_before or only_after:
        raise ValueError(f"units differ: missing after {sorted(map(str, only_before))}, "
                         f"missing before {sorted(map(str, only_after))}")
    return sorted(before, key=str)


def _sign_sums(d: np.ndarray) -> np.ndarray:
    """All 2^len(d) signed sums of ``d`` (len(d) small)."""
    bits = (np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1
    return (1 - 2 * bits) @ d


def _sign_flip_p(d: np.ndarray, seed: int = 0) -> float:
    """Two-sided sign-flip p-value of mean(d) = 0: exact for n <= 20, else Monte Carlo."""
    observed = abs(d.sum())
    eps = 1e-12 * max(1.0, float(np.abs(d).sum()))
    if observed <= eps:
        return 1.0
    if d.size <= EXACT_SIGN_FLIP_MAX_N:  # meet in the middle: 2 x 2^10 sums, not 2^20 rows
        left, right = _sign_sums(d[: d.size // 2]), np.sort(_sign_sums(d[d.size // 2:]))
        upper = right.size - np.searchsorted(right, observed - left - eps, side="left")
        lower = np.searchsorted(right, -observed - left + eps, side="right")
        return float((upper + lower).sum() / 2 ** d.size)
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(N_PERM, d.size))
    hits = int((np.abs(signs @ d) >= observed - eps).sum())
    return (hits + 1) / (N_PERM + 1)


def paired_difference(before: Mapping[str, float], after: Mapping[str, float], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> PairedDifference:
    """Paired difference after − before over units (questions) that both mappings hold.

    The key sets must match (ValueError naming the missing units otherwise). If
    every difference is exactly 0 the interval is legitimately degenerate:
    lo = hi = 0.0 and p = 1.0.
    """
    units = _common_units(before, after)
    if not units:
        raise ValueError("no units to compare")
    tail = _tail(level) * 100
    d = np.array([float(after[u]) - float(before[u]) for u in units])
    if np.all(d == 0):
        return PairedDifference(0.0, 0.0, 0.0, d.size, 1.0, level)
    draws = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    lo, hi = np.percentile(d[draws].mean(axis=1), [tail, 100 - tail])
    return PairedDifference(float(d.mean()), float(lo), float(hi), int(d.size), _sign_flip_p(d, seed), level)


@dataclass(frozen=True)
class ProportionChange:
    """One question's change ``diff`` = p2 − p1 between two stages (independent answers);
    ``lo``/``hi``: 95% Newcombe hybrid score interval of it; ``p_value``: two-sided Fisher exact."""
    p1: float
    p2: float
    diff: float
    lo: float
    hi: float
    p_value: float


def two_proportion_change(k1: int, n1: int, k2: int, n2: int) -> ProportionChange:
    """Change from k1/n1 (before) to k2/n2 (after), with Newcombe interval and Fisher p."""
    if n1 == 0 or n2 == 0:
        raise ValueError("both stages need at least one answer")
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    diff = p2 - p1
    lo = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    p = float(fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided").pvalue)
    return ProportionChange(p1, p2, diff, max(-1.0, lo), min(1.0, hi), p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values in input order; NaN stays NaN and is not counted."""
    p = [float(v) for v in pvalues]
    ok = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, i in enumerate(ok):
        running = max(running, min(1.0, (len(ok) - rank) * p[i]))
        out[i] = running
    return out


def difference_verdict(lo: float, hi: float, higher_is_better: bool = True) -> str:
    """BETTER / WORSE when the whole interval of the difference lies strictly on one side of 0."""
    if lo > 0:
        return BETTER if higher_is_better else WORSE
    if hi < 0:
        return WORSE if higher_is_better else BETTER
    return NO_CLEAR_DIFFERENCE


@dataclass(frozen=True)
class StageVerdict:
    """Verdict of one stage against the previous one, and the questions that moved significantly."""
    verdict: str
    improved: list[str]
    worsened: list[str]


def stage_verdict(overall: PairedDifference, per_question: Mapping[str, ProportionChange], alpha: float = 0.05,
                  adjusted_p: Mapping[str, float] | None = None) -> StageVerdict:
    """Combine the overall paired difference with per-question changes.

    A question moved when its Holm-adjusted p < ``alpha`` (Holm over ``per_question``
    unless ``adjusted_p`` is given, so a page can correct once over all it tests).
    Any worsened question gives WORSE_ON_SOME whatever the mean does, except that
    an overall WORSE stays WORSE; otherwise the verdict is that of the overall interval.
    """
    ids = sorted(per_question, key=str)
    if adjusted_p is None:
        adjusted_p = dict(zip(ids, holm([per_question[q].p_value for q in ids])))
    missing = [q for q in ids if q not in adjusted_p]
    if missing:
        raise ValueError(f"adjusted_p lacks {missing}")
    moved = [q for q in ids if adjusted_p[q] < alpha]
    improved = [q for q in moved if per_question[q].diff > 0]
    worsened = [q for q in moved if per_question[q].diff < 0]
    verdict = difference_verdict(overall.lo, overall.hi)
    if worsened and verdict != WORSE:
        verdict = WORSE_ON_SOME
    return StageVerdict(verdict, improved, worsened)


def across_seeds_verdict(verdicts: Sequence[str]) -> str:
    """The verdict every training seed agrees on, else MIXED_ACROSS_SEEDS.

    Fewer than 3 seeds is accepted, but the lessons use at least 3 in full runs.
    """
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("need the verdict of at least one seed")
    unknown = set(verdicts) - _VERDICTS
    if unknown:
        raise ValueError(f"unknown verdict(s): {sorted(unknown)}")
    return verdicts[0] if len(set(verdicts)) == 1 else MIXED_ACROSS_SEEDS


def forgotten_questions(before_pass: Mapping[str, bool], after_pass: Mapping[str, bool]) -> list[str]:
    """Sorted ids that passed before and fail after."""
    return [q for q in _common_units(before_pass, after_pass) if before_pass[q] and not after_pass[q]]


def newly_solved_questions(before_pass: Mapping[str, bool], after_pass: Mapping[str, bool]) -> list[str]:
    """Sorted ids that failed before and pass after."""
    return [q for q in _common_units(before_pass, after_pass) if after_pass[q] and not before_pass[q]]


__all__ = [
    "Verdict", "BETTER", "WORSE", "WORSE_ON_SOME", "NO_CLEAR_DIFFERENCE", "MIXED_ACROSS_SEEDS", "wilson_interval",
    "clopper_pearson_interval", "cluster_bootstrap_ci", "PairedDifference", "paired_difference", "ProportionChange",
    "two_proportion_change", "holm", "difference_verdict", "StageVerdict", "stage_verdict", "across_seeds_verdict",
    "forgotten_questions", "newly_solved_questions",
]
