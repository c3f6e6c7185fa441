"""course_lib.stats on inputs small enough to check by hand (expected values never come from the code under test)."""
from __future__ import annotations

import math

import pytest

from course_lib import stats
from course_lib.stats import (
    BETTER, MIXED_ACROSS_SEEDS, NO_CLEAR_DIFFERENCE, WORSE, WORSE_ON_SOME, PairedDifference, ProportionChange,
    Verdict, across_seeds_verdict, clopper_pearson_interval, cluster_bootstrap_ci, difference_verdict,
    forgotten_questions, holm, newly_solved_questions, paired_difference, stage_verdict, two_proportion_change,
    wilson_interval,
)

Z95 = 1.959964  # norm.ppf(0.975), from a printed table


# --------------------------------------------------------------------------- Wilson


def test_wilson_zero_successes_has_exact_zero_lower_and_closed_form_upper():
    lo, hi = wilson_interval(0, 450)
    assert lo == 0.0
    # k = 0: upper = z^2 / (n + z^2)
    assert hi == pytest.approx(Z95 ** 2 / (450 + Z95 ** 2), rel=1e-5)
    assert hi == pytest.approx(0.008464, abs=1e-6)


def test_wilson_all_successes_mirrors_zero_successes():
    lo, hi = wilson_interval(450, 450)
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.008464, abs=1e-6)


def test_wilson_7_of_20_matches_closed_form():
    # p = 0.35, z^2 = 3.841459; centre = (p + z^2/40) / (1 + z^2/20); half = z/(1 + z^2/20) * sqrt(p q/20 + z^2/1600)
    denom = 1 + 3.841459 / 20
    centre = (0.35 + 3.841459 / 40) / denom
    half = 1.959964 / denom * math.sqrt(0.35 * 0.65 / 20 + 3.841459 / 1600)
    lo, hi = wilson_interval(7, 20)
    assert lo == pytest.approx(centre - half, abs=1e-6)
    assert hi == pytest.approx(centre + half, abs=1e-6)
    assert (lo, hi) == pytest.approx((0.1812, 0.5671), abs=1e-4)  # published value for 7/20


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 5), (3, 5), (5, 5), (0, 10000), (10000, 10000)])
def test_wilson_never_zero_width_and_contains_estimate(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo < hi <= 1.0
    assert lo <= k / n <= hi


def test_wilson_empty_and_invalid():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    for k, n in [(-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson_interval(k, n)
    with pytest.raises(ValueError):
        wilson_interval(1, 5, level=1.5)


# --------------------------------------------------------------------------- Clopper–Pearson


def test_clopper_pearson_extremes_closed_form():
    lo, hi = clopper_pearson_interval(0, 17)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 17), rel=1e-9)
    assert hi == pytest.approx(0.1951, abs=1e-4)
    lo, hi = clopper_pearson_interval(17, 17)
    assert hi == 1.0
    assert lo == pytest.approx(0.025 ** (1 / 17), rel=1e-9)


def test_clopper_pearson_is_at_least_as_wide_as_wilson_here():
    lo_cp, hi_cp = clopper_pearson_interval(7, 20)
    lo_w, hi_w = wilson_interval(7, 20)
    assert lo_cp < lo_w and hi_cp > hi_w
    assert all(math.isnan(v) for v in clopper_pearson_interval(0, 0))


@pytest.mark.parametrize("fn", [wilson_interval, clopper_pearson_interval])
def test_level_default_is_95_and_90_is_narrower(fn):
    lo95, hi95 = fn(7, 20, level=0.95)
    assert fn(7, 20) == (lo95, hi95)
    lo90, hi90 = fn(7, 20, level=0.90)
    assert lo90 > lo95 and hi90 < hi95


# --------------------------------------------------------------------------- cluster bootstrap


def test_cluster_bootstrap_sees_between_question_spread_without_within_noise():
    values = [0.1] * 10 + [0.5] * 10 + [0.9] * 10
    clusters = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    lo, hi = cluster_bootstrap_ci(values, clusters, n_boot=1000)
    assert hi - lo > 0.2
    assert lo < 0.5 < hi


def test_cluster_bootstrap_identical_clusters_contains_mean():
    values = [0.2, 0.8] * 5
    clusters = [f"q{i // 2}" for i in range(10)]
    lo, hi = cluster_bootstrap_ci(values, clusters, n_boot=500)
    assert lo <= 0.5 <= hi


def test_cluster_bootstrap_resamples_whole_questions():
    values = [0.0] * 50 + [1.0] * 50
    lo, hi = cluster_bootstrap_ci(values, ["a"] * 50 + ["b"] * 50, n_boot=2000)
    assert (lo, hi) == (0.0, 1.0)  # 1 in 4 resamples is (a, a) -> 0, 1 in 4 is (b, b) -> 1
    # every value its own cluster = value-level bootstrap: SE 0.5 / sqrt(100) = 0.05, width about 0.2
    lo_v, hi_v = cluster_bootstrap_ci(values, range(100), n_boot=2000)
    assert 0.1 < hi_v - lo_v < 0.3
    assert lo_v < 0.5 < hi_v


def test_cluster_bootstrap_pools_values_rather_than_averaging_question_means():
    # a = three 1s, b = one 0; half the resamples are {a, b}: pooled mean 3/4 (mean of question means would be 1/2)
    lo, hi = cluster_bootstrap_ci([1, 1, 1, 0], ["a", "a", "a", "b"], n_boot=2000, level=0.2)
    assert lo == pytest.approx(0.75) and hi == pytest.approx(0.75)


def test_cluster_bootstrap_empty_and_mismatched():
    assert all(math.isnan(v) for v in cluster_bootstrap_ci([], []))
    with pytest.raises(ValueError):
        cluster_bootstrap_ci([1.0, 2.0], ["a"])


# --------------------------------------------------------------------------- paired difference


def test_paired_difference_asymmetric_negative_change():
    before = {"q1": 0.9, "q2": 0.8, "q3": 0.7, "q4": 0.6}
    after = {"q1": 0.1, "q2": 0.7, "q3": 0.7, "q4": 0.5}
    # differences -0.8, -0.1, 0.0, -0.1 -> mean -1.0 / 4
    res = paired_difference(before, after, n_boot=1000)
    assert isinstance(res, PairedDifference)
    assert res.mean_diff == pytest.approx(-0.25)
    assert res.n_units == 4 and res.level == 0.95
    assert res.lo <= res.mean_diff <= res.hi
    assert res.hi <= 0.0
    # swapping the roles flips the sign
    assert paired_difference(after, before, n_boot=200).mean_diff == pytest.approx(0.25)


def test_paired_difference_exact_sign_flip_p_n5():
    before = {f"q{i}": 0.0 for i in range(5)}
    after = {f"q{i}": d for i, d in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])}
    res = paired_difference(before, after, n_boot=200)
    assert res.p_value == pytest.approx(2 / 32)  # only all-plus and all-minus reach |sum| = 1.5
    assert res.lo > 0


def test_paired_difference_exact_p_with_ties_in_signed_sums():
    # d = 1, 1, 2 (sum 4): |sum| >= 4 only for +++ and ---; d = 1, 1, -2 (sum 0) -> p = 1
    res = paired_difference({"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 1, "c": 2}, n_boot=100)
    assert res.p_value == pytest.approx(2 / 8)
    assert paired_difference({"a": 0, "b": 0, "c": 0}, {"a": 1, "b": 1, "c": -2}, n_boot=100).p_value == 1.0


def test_paired_difference_large_n_uses_monte_carlo():
    before = {f"q{i:02d}": 0.0 for i in range(30)}
    after = {f"q{i:02d}": 1.0 for i in range(30)}
    res = paired_difference(before, after, n_boot=200)
    assert res.mean_diff == 1.0 and res.lo == res.hi == 1.0
    assert 0 < res.p_value < 1e-3  # exact 2 / 2^30; Monte Carlo gives 1 / (N + 1)


def test_paired_difference_all_zero_is_degenerate():
    res = paired_difference({"a": 0.5, "b": 0.2}, {"a": 0.5, "b": 0.2})
    assert (res.mean_diff, res.lo, res.hi, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_names_missing_units():
    with pytest.raises(ValueError, match="q3"):
        paired_difference({"q1": 1, "q2": 1, "q3": 1}, {"q1": 1, "q2": 0})
    with pytest.raises(ValueError):
        paired_difference({}, {})


# --------------------------------------------------------------------------- two proportions


def test_two_proportion_change_collapse():
    res = two_proportion_change(27, 30, 0, 30)
    assert isinstance(res, ProportionChange)
    assert (res.p1, res.p2) == (0.9, 0.0)
    assert res.diff == pytest.approx(-0.9)
    # table [[27, 3], [0, 30]]: only x = 27 and its mirror x = 0 are this extreme
    fisher = 2 * math.comb(30, 27) * math.comb(30, 0) / math.comb(60, 27)
    assert res.p_value == pytest.approx(fisher, rel=1e-6)
    assert res.p_value < 1e-10
    assert res.lo < res.diff < res.hi < 0


def test_two_proportion_change_newcombe_hand_value():
    # 0/10 -> 5/10: Wilson(0/10) = [0, z^2/(10+z^2)] = [0, 0.277533]; Wilson(5/10) = 0.5 -+ 0.312860
    res = two_proportion_change(0, 10, 5, 10)
    u1 = 3.841459 / 13.841459
    l2 = 0.5 - 1.959964 / (1 + 0.3841459) * math.sqrt(0.025 + 3.841459 / 400)
    u2 = 1 - l2
    assert res.lo == pytest.approx(0.5 - math.sqrt((0.5 - l2) ** 2 + u1 ** 2), abs=1e-5)
    assert res.hi == pytest.approx(0.5 + math.sqrt((u2 - 0.5) ** 2), abs=1e-5)
    assert res.lo > 0  # this change excludes zero


def test_two_proportion_no_change():
    res = two_proportion_change(15, 30, 15, 30)
    assert res.diff == 0.0 and res.p_value == pytest.approx(1.0)
    assert res.lo < 0 < res.hi
    with pytest.raises(ValueError):
        two_proportion_change(0, 0, 1, 2)


# --------------------------------------------------------------------------- Holm


def test_holm_hand_values_and_monotone():
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09, 0.5
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_caps_at_one_and_passes_nan():
    out = holm([0.4, float("nan"), 0.01])
    assert out[0] == pytest.approx(0.4)  # m = 2, not 3: 0.4 * 1
    assert math.isnan(out[1])
    assert out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


# --------------------------------------------------------------------------- verdicts


def test_verdict_constants():
    assert (BETTER, WORSE, WORSE_ON_SOME, NO_CLEAR_DIFFERENCE, MIXED_ACROSS_SEEDS) == (
        "better", "worse", "worse_on_some", "no_clear_difference", "mixed_across_seeds")
    assert Verdict.BETTER == BETTER


def test_difference_verdict():
    assert difference_verdict(0.01, 0.2) == BETTER
    assert difference_verdict(-0.2, -0.01) == WORSE
    assert difference_verdict(-0.1, 0.1) == NO_CLEAR_DIFFERENCE
    assert difference_verdict(0.0, 0.2) == NO_CLEAR_DIFFERENCE  # touching 0 is not strictly better
    assert difference_verdict(0.01, 0.2, higher_is_better=False) == WORSE
    assert difference_verdict(-0.2, -0.01, higher_is_better=False) == BETTER


def _three_rise_three_collapse():
    before, after = {}, {}
    for i in range(15):
        q = f"q{i:02d}"
        if i < 3:  # collapse 0.9 -> 0.0
            before[q], after[q] = 27, 0
        elif i < 6:  # rise 0.1 -> 0.9
            before[q], after[q] = 3, 27
        else:
            before[q] = after[q] = 15
    per_q = {q: two_proportion_change(before[q], 30, after[q], 30) for q in before}
    overall = paired_difference({q: k / 30 for q, k in before.items()}, {q: k / 30 for q, k in after.items()})
    return overall, per_q


def test_three_rise_three_collapse_is_worse_on_some():
    overall, per_q = _three_rise_three_collapse()
    # mean change (3 * -0.9 + 3 * 0.8) / 15 = -0.02
    assert overall.mean_diff == pytest.approx(-0.02)
    assert overall.lo < 0 < overall.hi
    assert difference_verdict(overall.lo, overall.hi) == NO_CLEAR_DIFFERENCE
    res = stage_verdict(overall, per_q)
    assert res.verdict == WORSE_ON_SOME
    assert res.worsened == ["q00", "q01", "q02"]
    assert res.improved == ["q03", "q04", "q05"]


def test_worsened_question_overrides_a_better_mean_but_not_worse():
    _, per_q = _three_rise_three_collapse()
    better = PairedDifference(0.3, 0.1, 0.5, 15, 0.001, 0.95)
    assert stage_verdict(better, per_q).verdict == WORSE_ON_SOME
    worse = PairedDifference(-0.3, -0.5, -0.1, 15, 0.001, 0.95)
    assert stage_verdict(worse, per_q).verdict == WORSE
    no_collapse = {q: c for q, c in per_q.items() if c.diff >= 0}
    assert stage_verdict(better, no_collapse).verdict == BETTER


def test_stage_verdict_applies_holm():
    # raw p = 0.02 on each of 15 questions: significant alone, Holm gives 15 * 0.02 = 0.3
    per_q = {f"q{i}": ProportionChange(0.9, 0.5, -0.4, -0.6, -0.1, 0.02) for i in range(15)}
    flat = PairedDifference(0.0, -0.1, 0.1, 15, 1.0, 0.95)
    res = stage_verdict(flat, per_q)
    assert res.verdict == NO_CLEAR_DIFFERENCE and res.worsened == [] and res.improved == []
    assert stage_verdict(flat, {"q0": per_q["q0"]}).worsened == ["q0"]  # one test: no correction


def test_stage_verdict_uses_page_wide_adjusted_p():
    overall, per_q = _three_rise_three_collapse()
    page_p = {q: 1.0 for q in per_q}
    page_p["q01"] = 0.001
    res = stage_verdict(overall, per_q, adjusted_p=page_p)
    assert res.worsened == ["q01"] and res.improved == []
    with pytest.raises(ValueError):
        stage_verdict(overall, per_q, adjusted_p={"q00": 0.5})


def test_across_seeds_verdict():
    assert across_seeds_verdict([BETTER, BETTER, BETTER]) == BETTER
    assert across_seeds_verdict(["better", "no_clear_difference", "better"]) == MIXED_ACROSS_SEEDS
    assert across_seeds_verdict([NO_CLEAR_DIFFERENCE] * 3) == NO_CLEAR_DIFFERENCE
    assert across_seeds_verdict([WORSE_ON_SOME, WORSE_ON_SOME, WORSE]) == MIXED_ACROSS_SEEDS
    assert across_seeds_verdict([WORSE]) == WORSE
    with pytest.raises(ValueError, match="^need the verdict of at least one seed$"):
        across_seeds_verdict([])
    with pytest.raises(ValueError, match=r"unknown verdict\(s\): \['beter'\]"):
        across_seeds_verdict(["beter"])


def test_forgotten_and_newly_solved_differ():
    before = {"a": True, "b": True, "c": False, "d": False, "e": True}
    after = {"a": False, "b": True, "c": True, "d": False, "e": False}
    assert forgotten_questions(before, after) == ["a", "e"]
    assert newly_solved_questions(before, after) == ["c"]
    with pytest.raises(ValueError):
        forgotten_questions({"a": True}, {"b": True})


def test_clustered_wilson_shrinks_n_by_the_design_effect():
    # k = [0, 0, 10] of n = [10, 10, 10]: p = 1/3, N = 30.
    # cluster variance = 3/2 * (3.333^2 + 3.333^2 + 6.667^2) / 900 = 0.11111; independent = (1/3)(2/3)/30
    # design effect = 15, so n_eff = 2: the Wilson interval of p = 1/3 with n = 2, by hand:
    z = 1.959963984540054
    p, n = 1 / 3, 2.0
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = stats.clustered_wilson_interval([0, 0, 10], [10, 10, 10])
    assert lo == pytest.approx(center - half, abs=1e-9) and hi == pytest.approx(center + half, abs=1e-9)
    # far wider than treating the 30 answers as independent
    ind_lo, ind_hi = stats.wilson_interval(10, 30)
    assert hi - lo > 2 * (ind_hi - ind_lo)


def test_clustered_wilson_is_plain_wilson_when_questions_agree_and_never_zero_width():
    # every question at the same rate: no extra variance, deff = 1
    assert stats.clustered_wilson_interval([3, 3, 3], [10, 10, 10]) == pytest.approx(stats.wilson_interval(9, 30))
    lo, hi = stats.clustered_wilson_interval([0] * 15, [30] * 15)  # 0 of 450
    assert lo == 0.0 and hi == pytest.approx(stats.wilson_interval(0, 450)[1]) and hi > 0
    lo, hi = stats.clustered_wilson_interval([30] * 15, [30] * 15)
    assert hi == 1.0 and lo < 1.0
    with pytest.raises(ValueError):
        stats.clustered_wilson_interval([5], [3])
