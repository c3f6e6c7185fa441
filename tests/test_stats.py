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


# --------------------------------------------------------------------------- pinned by hand (mutation run of stats.py)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5])
def test_level_must_lie_strictly_between_0_and_1(level):
    for fn in (wilson_interval, clopper_pearson_interval):
        with pytest.raises(ValueError, match=rf"^level must be between 0 and 1, got {level}$"):
            fn(1, 5, level=level)


def test_invalid_counts_are_named_in_the_message():
    with pytest.raises(ValueError, match=r"^need 0 <= k <= n, got k=6, n=5$"):
        wilson_interval(6, 5)
    with pytest.raises(ValueError, match=r"^need 0 <= k <= n, got k=-1, n=5$"):
        clopper_pearson_interval(-1, 5)


@pytest.mark.parametrize("k,n,lo,hi", [
    # exact binomial (Clopper-Pearson) 95% limits from the printed tables: 1/10, 3/10, 5/10, 7/20
    (1, 10, 0.0025, 0.4450), (3, 10, 0.0667, 0.6525), (5, 10, 0.1871, 0.8129), (7, 20, 0.1539, 0.5922),
])
def test_clopper_pearson_matches_the_table(k, n, lo, hi):
    got_lo, got_hi = clopper_pearson_interval(k, n)
    assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=1e-4)
    # the defining property: P(X >= k | lo) = P(X <= k | hi) = 0.025
    pmf = lambda p, i: math.comb(n, i) * p ** i * (1 - p) ** (n - i)  # noqa: E731
    assert sum(pmf(got_lo, i) for i in range(k, n + 1)) == pytest.approx(0.025, abs=1e-9)
    assert sum(pmf(got_hi, i) for i in range(0, k + 1)) == pytest.approx(0.025, abs=1e-9)


def test_clopper_pearson_at_90_percent():
    # 3/10 at 90%: P(X >= 3 | lo) = P(X <= 3 | hi) = 0.05 -> 0.0873, 0.6066
    assert clopper_pearson_interval(3, 10, level=0.90) == pytest.approx((0.0873, 0.6066), abs=1e-4)


def test_wilson_3_of_10_matches_the_table():
    # Wilson 95% for 3/10 (Newcombe 1998, Table I): 0.1078 to 0.6032
    assert wilson_interval(3, 10) == pytest.approx((0.1078, 0.6032), abs=1e-4)


def test_clustered_wilson_of_one_question_is_its_plain_wilson():
    # one cluster: no between-question variance can be estimated, deff = 1 -> Wilson 3/10 = 0.1078 to 0.6032
    assert stats.clustered_wilson_interval([3], [10]) == pytest.approx((0.1078, 0.6032), abs=1e-4)


def test_clustered_wilson_level_and_design_effect_floor():
    # k = [3, 3, 3] of 10 each: every question at 0.3, deff = 1, so the 90% interval is Wilson 9/30 at z = 1.644854
    z, p, n = 1.644854, 0.3, 30
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.clustered_wilson_interval([3, 3, 3], [10, 10, 10], level=0.90) == pytest.approx(
        (center - half, center + half), abs=1e-6)
    # under-dispersed questions (2, 3, 4 of 10 scatter less than binomial answers would) still get deff = 1
    z = 1.959964
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.clustered_wilson_interval([2, 3, 4], [10, 10, 10]) == pytest.approx(
        (center - half, center + half), abs=1e-6)


def test_clustered_wilson_refuses_bad_input_with_its_message():
    with pytest.raises(ValueError, match=r"^need one count and one size per question, got 2 and 1$"):
        stats.clustered_wilson_interval([1, 2], [3])
    with pytest.raises(ValueError, match=r"^need one count and one size per question, got 0 and 0$"):
        stats.clustered_wilson_interval([], [])
    for k, n in [([0], [0]), ([-1], [3]), ([1, 4], [3, 3])]:
        with pytest.raises(ValueError, match=r"^each question needs 0 <= k <= n and n > 0$"):
            stats.clustered_wilson_interval(k, n)


def test_clustered_wilson_ends_at_exactly_0_and_1_only_at_the_extremes():
    # 1 of 20 in two questions: (1 - 0.5)^2 + (0 - 0.5)^2 = 0.5, var_cluster = 2 * 0.5 / 400 = 0.0025;
    # independent: 0.05 * 0.95 / 20 = 0.002375 -> deff = 1.0526, n_eff = 19; the lower end is above 0
    lo, hi = stats.clustered_wilson_interval([1, 0], [10, 10])
    z, p, n = 1.959964, 0.05, 20 / (0.0025 / 0.002375)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (lo, hi) == pytest.approx((center - half, center + half), abs=1e-6)
    assert 0.0 < lo < 0.05 < hi < 1.0


def test_cluster_bootstrap_names_the_mismatch_and_uses_its_defaults():
    with pytest.raises(ValueError, match=r"^clusters has 1 labels for 2 values$"):
        cluster_bootstrap_ci([1.0, 2.0], ["a"])
    values, clusters = [0.0] * 3 + [1.0], ["a", "a", "a", "b"]
    # documented defaults: n_boot 2000, seed 0, level 0.95
    assert cluster_bootstrap_ci(values, clusters) == cluster_bootstrap_ci(values, clusters, n_boot=2000, seed=0,
                                                                         level=0.95)
    # a = three 0s, b = one 1: resamples (a, a) -> 0, (b, b) -> 1, {a, b} -> 1/4; a quarter each at the ends
    assert cluster_bootstrap_ci(values, clusters) == (0.0, 1.0)
    assert cluster_bootstrap_ci(values, clusters, level=0.4) == (0.25, 0.25)


def test_paired_difference_messages_and_degenerate_fields():
    with pytest.raises(ValueError, match=r"^units differ: missing after \['q3'\], missing before \[\]$"):
        paired_difference({"q1": 1, "q3": 1}, {"q1": 1})
    with pytest.raises(ValueError, match=r"^units differ: missing after \[\], missing before \['a', 'b'\]$"):
        paired_difference({"q1": 1}, {"q1": 1, "b": 0, "a": 0})
    with pytest.raises(ValueError, match=r"^no units to compare$"):
        paired_difference({}, {})
    res = paired_difference({"a": 0.5, "b": 0.2, "c": 0.1}, {"a": 0.5, "b": 0.2, "c": 0.1}, level=0.9)
    assert res == PairedDifference(0.0, 0.0, 0.0, 3, 1.0, 0.9)


def test_paired_difference_bootstrap_percentiles_by_hand():
    # d = 0 and 1: a resample of two units has mean 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4
    res = paired_difference({"a": 0, "b": 0}, {"a": 0, "b": 1})
    assert (res.mean_diff, res.lo, res.hi, res.n_units, res.level) == (0.5, 0.0, 1.0, 2, 0.95)
    res = paired_difference({"a": 0, "b": 0}, {"a": 0, "b": 1}, level=0.4)  # 30th and 70th percentiles
    assert (res.lo, res.hi, res.level) == (0.5, 0.5, 0.4)
    # sign flips of (0, 1): |sum| >= 1 for every pattern -> p = 1
    assert res.p_value == 1.0


def test_sign_flip_exact_with_mixed_signs():
    # d = 3, 1, -1 (sum 3): the 8 signed sums are +-3, +-5, +-1, +-3 -> |sum| >= 3 in 6 of 8
    res = paired_difference({"a": 0, "b": 0, "c": 0}, {"a": 3, "b": 1, "c": -1}, n_boot=100)
    assert res.p_value == pytest.approx(6 / 8)
    # 11 ones and 9 minus ones (n = 20, still exact): p = P(|S| >= 2) = 1 - C(20, 10) / 2^20
    units = [f"q{i:02d}" for i in range(20)]
    res = paired_difference({u: 0 for u in units}, {u: (1 if i < 11 else -1) for i, u in enumerate(units)}, n_boot=100)
    assert res.p_value == pytest.approx(1 - math.comb(20, 10) / 2 ** 20, abs=1e-12)


def test_sign_flip_is_exact_up_to_20_units_and_monte_carlo_above():
    # 20 equal differences: only all-plus and all-minus reach the observed sum -> exactly 2 / 2^20
    units = [f"q{i:02d}" for i in range(20)]
    res = paired_difference({u: 0 for u in units}, {u: 1 for u in units}, n_boot=100)
    assert res.p_value == pytest.approx(2 / 2 ** 20, rel=1e-9)
    # 21 or 30 equal differences: Monte Carlo over 20000 patterns, which (almost surely) hits neither extreme,
    # so p = (0 + 1) / (20000 + 1), never the exact 2 / 2^n
    for n in (21, 30):
        units = [f"q{i:02d}" for i in range(n)]
        res = paired_difference({u: 0 for u in units}, {u: 1 for u in units}, n_boot=100)
        assert res.p_value == pytest.approx(1 / 20001, rel=1e-9)


def test_monte_carlo_sign_flip_counts_ties_and_is_seeded():
    # 30 units, 16 at +1 and 14 at -1: sum 2; p = P(|S| >= 2) for S a sum of 30 random signs
    # = 1 - C(30, 15) / 2^30 = 0.8555 (P(|S| > 2) would be 0.5847); Monte Carlo SE about 0.0025
    units = [f"q{i:02d}" for i in range(30)]
    before, after = {u: 0 for u in units}, {u: (1 if i < 16 else -1) for i, u in enumerate(units)}
    res = paired_difference(before, after, n_boot=100)
    assert res.p_value == pytest.approx(1 - math.comb(30, 15) / 2 ** 30, abs=0.01)
    assert paired_difference(before, after, n_boot=100).p_value == res.p_value  # seeded: the same draw again


def test_two_proportion_change_matches_newcombe_1998():
    # Newcombe (1998), method 10 (hybrid score): 56/70 - 48/80 = 0.2, 95% CI 0.0524 to 0.3339;
    # 9/10 - 3/10 = 0.6, 95% CI 0.1705 to 0.8090. Here "before" is the subtracted proportion.
    res = two_proportion_change(48, 80, 56, 70)
    assert (res.p1, res.p2, res.diff) == pytest.approx((0.6, 0.8, 0.2))
    assert (res.lo, res.hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    res = two_proportion_change(3, 10, 9, 10)
    assert (res.lo, res.hi) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    # the same change seen the other way round: the interval mirrors
    res = two_proportion_change(9, 10, 3, 10)
    assert (res.diff, res.lo, res.hi) == pytest.approx((-0.6, -0.8090, -0.1705), abs=1e-4)
    # Fisher two-sided for [[9, 1], [3, 7]]: tables as or less likely than x = 9 are x = 9, 10, 3, 2
    total = math.comb(20, 12)
    fisher = sum(math.comb(10, x) * math.comb(10, 12 - x) for x in (9, 10, 3, 2)) / total
    assert res.p_value == pytest.approx(fisher, rel=1e-9)


def test_two_proportion_change_needs_answers_in_both_stages():
    for args in [(0, 0, 1, 2), (1, 2, 0, 0)]:
        with pytest.raises(ValueError, match=r"^both stages need at least one answer$"):
            two_proportion_change(*args)


def test_difference_verdict_touching_zero_from_below_is_not_worse():
    assert difference_verdict(-0.2, 0.0) == NO_CLEAR_DIFFERENCE
    assert difference_verdict(-0.2, 0.0, higher_is_better=False) == NO_CLEAR_DIFFERENCE
    assert difference_verdict(0.0, 0.2, higher_is_better=False) == NO_CLEAR_DIFFERENCE


def test_stage_verdict_alpha_is_strict_and_defaults_to_5_percent():
    flat = PairedDifference(0.0, -0.1, 0.1, 3, 1.0, 0.95)
    per_q = {"up": ProportionChange(0.2, 0.6, 0.4, 0.1, 0.7, 0.001),
             "down": ProportionChange(0.6, 0.2, -0.4, -0.7, -0.1, 0.001),
             "same": ProportionChange(0.5, 0.5, 0.0, -0.3, 0.3, 0.001)}
    # adjusted p exactly 0.05 is not below alpha = 0.05
    res = stage_verdict(flat, per_q, adjusted_p={"up": 0.05, "down": 0.05, "same": 0.05})
    assert (res.verdict, res.improved, res.worsened) == (NO_CLEAR_DIFFERENCE, [], [])
    # 0.049 is, with the default alpha; a significant question that did not move is neither improved nor worsened
    res = stage_verdict(flat, per_q, adjusted_p={"up": 0.049, "down": 0.049, "same": 0.049})
    assert (res.verdict, res.improved, res.worsened) == (WORSE_ON_SOME, ["up"], ["down"])
    # Holm over the three raw p = 0.001: 0.003 each, all below 0.05
    assert stage_verdict(flat, per_q).worsened == ["down"]
    # a custom alpha
    res = stage_verdict(flat, per_q, alpha=0.01, adjusted_p={"up": 0.02, "down": 0.005, "same": 0.5})
    assert (res.improved, res.worsened) == ([], ["down"])


def test_stage_verdict_names_the_missing_adjusted_p():
    per_q = {"b": ProportionChange(0.2, 0.6, 0.4, 0.1, 0.7, 0.001),
             "a": ProportionChange(0.6, 0.2, -0.4, -0.7, -0.1, 0.001)}
    with pytest.raises(ValueError, match=r"^adjusted_p lacks \['b'\]$"):
        stage_verdict(PairedDifference(0.0, -0.1, 0.1, 2, 1.0, 0.95), per_q, adjusted_p={"a": 0.5})


def test_forgotten_and_newly_solved_come_back_sorted():
    before = {"e": True, "a": True, "c": False, "b": False}
    after = {"e": False, "a": False, "c": True, "b": True}
    assert forgotten_questions(before, after) == ["a", "e"]
    assert newly_solved_questions(before, after) == ["b", "c"]


def test_question_ids_are_sorted_by_their_text_so_mixed_types_work():
    # ids are ordered as text ("10" < "9" < "a"), so int and str ids can be mixed without a TypeError
    up = ProportionChange(0.2, 0.6, 0.4, 0.1, 0.7, 0.001)
    down = ProportionChange(0.6, 0.2, -0.4, -0.7, -0.1, 0.001)
    flat = PairedDifference(0.0, -0.1, 0.1, 3, 1.0, 0.95)
    res = stage_verdict(flat, {"a": up, 9: up, 10: down})
    assert (res.improved, res.worsened) == ([9, "a"], [10])
    res = stage_verdict(flat, {"a": up, 9: up, 10: up}, adjusted_p={"a": 0.01, 9: 0.01, 10: 0.01})
    assert res.improved == [10, 9, "a"]
    assert forgotten_questions({"a": True, 9: True, 10: True}, {"a": False, 9: False, 10: False}) == [10, 9, "a"]
    assert newly_solved_questions({"a": False, 9: False}, {"a": True, 9: True}) == [9, "a"]
    assert paired_difference({"a": 0.0, 9: 0.0}, {"a": 1.0, 9: 0.5}, n_boot=50).mean_diff == 0.75


def test_a_sum_within_the_rounding_tolerance_counts_as_zero():
    # |sum| = 1e-12 is at the tolerance 1e-12 * max(1, sum |d|): treated as no difference, p = 1 exactly
    assert paired_difference({"a": 0.0}, {"a": 1e-12}, n_boot=10).p_value == 1.0
    # the same with two halves of 0.5e-12: the patterns +-, -+ (sum 0) must not be counted twice (p stays 1)
    assert paired_difference({"a": 0.0, "b": 0.0}, {"a": 0.5e-12, "b": 0.5e-12}, n_boot=10).p_value == 1.0


def test_sign_flip_ties_survive_rounding_of_large_differences():
    # 1000.1 + 1000.2 - 2000.3 is 0 on paper (a float sum is off by about 1e-13) and 5 is the total, so every one
    # of the 16 sign patterns has |sum| >= 5 (flipping {5} or {1000.1, 1000.2, -2000.3} ties): p = 1
    res = paired_difference({"a": 0, "b": 0, "c": 0, "d": 0}, {"a": 1000.1, "b": 1000.2, "c": -2000.3, "d": 5.0},
                            n_boot=10)
    assert res.p_value == 1.0


def test_paired_difference_defaults_are_the_documented_ones():
    before = {f"q{i}": 0.0 for i in range(6)}
    after = {f"q{i}": d for i, d in enumerate([0.31, -0.17, 0.53, 0.29, 0.07, 0.41])}
    assert paired_difference(before, after) == paired_difference(before, after, n_boot=2000, seed=0, level=0.95)


@pytest.mark.parametrize("level,hi", [(0.89, 0.5), (0.91, 0.75)])
def test_paired_difference_upper_percentile_by_hand(level, hi):
    # d = 0, 0, 0, 1: a resample's mean is (times the 1 is drawn) / 4, Binomial(4, 1/4):
    # P(3 or 4 times) = 13/256 = 5.08 %, P(4 times) = 1/256 = 0.39 %, P(0 times) = 81/256 = 31.6 %.
    # At 89 % the upper end is the 94.5th percentile (top 5.5 % > 5.08 %): 2 of 4 -> 0.5;
    # at 91 % it is the 95.5th (top 4.5 %): 3 of 4 -> 0.75. The lower end is 0 in both.
    res = paired_difference({u: 0 for u in "abcd"}, {"a": 0, "b": 0, "c": 0, "d": 1}, n_boot=40000, level=level)
    assert (res.lo, res.hi) == (0.0, hi)


def test_paired_difference_lower_percentile_by_hand():
    # d = 0, 0, 0, 1 as above: 81/256 = 31.64 % of the resamples have mean 0, 108/256 = 42.19 % have 1/4.
    # At level 0.37 the ends are the 31.5th and 68.5th percentiles: 0 and 1/4 (a million resamples keep the
    # 0.14-point margin to the 31.64 % edge at three standard errors).
    res = paired_difference({u: 0 for u in "abcd"}, {"a": 0, "b": 0, "c": 0, "d": 1}, n_boot=1_000_000, level=0.37)
    assert (res.lo, res.hi) == (0.0, 0.25)


def test_cluster_bootstrap_of_one_value_is_that_value():
    assert cluster_bootstrap_ci([0.7], ["a"]) == (0.7, 0.7)


def test_cluster_bootstrap_defaults_are_the_documented_ones():
    values = [0.31, -0.17, 0.53, 0.29, 0.07, 0.41, 0.12]
    clusters = ["a", "a", "b", "c", "d", "e", "f"]
    assert cluster_bootstrap_ci(values, clusters) == cluster_bootstrap_ci(values, clusters, n_boot=2000, seed=0,
                                                                         level=0.95)


@pytest.mark.parametrize("level,expected", [(0.89, (0.0, 0.5)), (0.91, (0.0, 0.75)), (0.37, (0.0, 0.25))])
def test_cluster_bootstrap_percentiles_by_hand(level, expected):
    # four questions of one answer each, 0, 0, 0, 1: the pooled mean of a resample is (times "d" is drawn) / 4,
    # Binomial(4, 1/4) as in test_paired_difference_upper_percentile_by_hand / _lower_percentile_by_hand
    got = cluster_bootstrap_ci([0, 0, 0, 1], ["a", "b", "c", "d"], n_boot=1_000_000, level=level)
    assert got == expected


def test_monte_carlo_p_follows_the_seed():
    # 30 units: Monte Carlo; another seed draws other sign patterns, so p moves a little around 0.8555
    units = [f"q{i:02d}" for i in range(30)]
    before, after = {u: 0 for u in units}, {u: (1 if i < 16 else -1) for i, u in enumerate(units)}
    p = {s: paired_difference(before, after, n_boot=10, seed=s).p_value for s in (0, 1, 2)}
    assert len(set(p.values())) > 1
    assert all(v == pytest.approx(1 - math.comb(30, 15) / 2 ** 30, abs=0.01) for v in p.values())


def test_clustered_wilson_ends_are_exactly_0_and_1_for_none_and_all():
    # 0 of 7 and 7 of 7 (one question each), 10 of 10: closed forms z^2 / (n + z^2) and n / (n + z^2),
    # with the ends at exactly 0.0 and 1.0 (the formula alone leaves a rounding error there for these n)
    z2 = Z95 ** 2
    lo, hi = stats.clustered_wilson_interval([0], [7])
    assert lo == 0.0 and hi == pytest.approx(z2 / (7 + z2), rel=1e-6)
    lo, hi = stats.clustered_wilson_interval([10], [10])
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + z2), rel=1e-6)
    lo, hi = stats.clustered_wilson_interval([0, 0], [3, 4])
    assert lo == 0.0 and hi == pytest.approx(z2 / (7 + z2), rel=1e-6)


def test_wilson_ends_are_exactly_0_and_1_for_none_and_all():
    # closed forms: 0 of n -> [0, z^2 / (n + z^2)], n of n -> [n / (n + z^2), 1]; the ends exactly 0.0 and 1.0
    z2 = Z95 ** 2
    for n in (7, 9, 10, 13):
        lo, hi = wilson_interval(0, n)
        assert lo == 0.0 and hi == pytest.approx(z2 / (n + z2), rel=1e-6)
        lo, hi = wilson_interval(n, n)
        assert hi == 1.0 and lo == pytest.approx(n / (n + z2), rel=1e-6)
