"""Metrics on inputs small enough to compute by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from course_lib.level3.metrics import (
    ACCURACY_THRESHOLD, bootstrap_ci, fisher_p, holm, iteration_table, mann_whitney_p, paired_comparison, sign_flip_p,
    summarise, wilcoxon_p,
)


def frame(rows):
    """rows: (symptom_id, score, label, harmful)."""
    return pd.DataFrame(rows, columns=["symptom_id", "score", "label", "harmful"])


@pytest.fixture
def two_questions():
    # q1: 0.9, 0.8, 0.5, 0.0(unsafe) ; q2: 1.0, 1.0
    return frame([
        ("q1", 0.9, "correct", False), ("q1", 0.8, "correct", False),
        ("q1", 0.5, "partially_correct", False), ("q1", 0.0, "unsafe", True),
        ("q2", 1.0, "correct", False), ("q2", 1.0, "correct", False),
    ])


def test_threshold_is_the_seeds():
    assert ACCURACY_THRESHOLD == 0.8


def test_summarise_per_question_by_hand(two_questions):
    s = summarise(two_questions, n_boot=200)
    q1 = s.per_question.set_index("symptom_id").loc["q1"]
    assert q1["n"] == 4
    assert q1["mean"] == pytest.approx(0.55)
    # sample standard deviation of 0.9, 0.8, 0.5, 0.0
    assert q1["std"] == pytest.approx(math.sqrt(((0.35) ** 2 + 0.25 ** 2 + 0.05 ** 2 + 0.55 ** 2) / 3))
    assert q1["accuracy"] == pytest.approx(0.5)  # 0.8 counts as correct (>=)
    assert q1["harmful_rate"] == pytest.approx(0.25)
    assert (q1["correct"], q1["partially_correct"], q1["incorrect"], q1["unsafe"]) == (2, 1, 0, 1)
    assert not q1["solved"]
    q2 = s.per_question.set_index("symptom_id").loc["q2"]
    assert q2["solved"] and q2["accuracy"] == 1.0
    # a constant sample has a zero-width interval
    assert (q2["mean_lo"], q2["mean_hi"]) == (1.0, 1.0)


def test_summarise_overall_by_hand(two_questions):
    o = summarise(two_questions, n_boot=200).overall
    assert o["n"] == 6
    assert o["mean"] == pytest.approx((0.9 + 0.8 + 0.5 + 0.0 + 1.0 + 1.0) / 6)
    assert o["accuracy"] == pytest.approx(4 / 6)
    assert o["harmful_rate"] == pytest.approx(1 / 6)
    assert (o["correct"], o["partially_correct"], o["incorrect"], o["unsafe"]) == (4, 1, 0, 1)
    assert (o["questions"], o["solved"], o["solved_rate"]) == (2, 1, 0.5)
    assert o["mean_lo"] <= o["mean"] <= o["mean_hi"]
    assert o["accuracy_lo"] <= o["accuracy"] <= o["accuracy_hi"]


def test_summarise_names_a_missing_column():
    with pytest.raises(KeyError, match="harmful"):
        summarise(pd.DataFrame({"symptom_id": ["a"], "score": [1.0], "label": ["correct"]}))


def test_bootstrap_two_points_by_hand():
    # resampling [0, 1] gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5th and 97.5th percentiles are 0 and 1
    assert bootstrap_ci([0.0, 1.0], n_boot=4000, seed=1) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_approximation():
    values = np.array([0.0, 1.0] * 200)  # p = 0.5, n = 400: se = 0.025
    lo, hi = bootstrap_ci(values, n_boot=4000, seed=0)
    assert lo == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
    assert hi == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


def test_bootstrap_is_seeded_and_handles_edges():
    x = np.random.default_rng(3).random(50)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci([0.3], n_boot=50) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_with_a_non_vectorised_statistic():
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0], stat=lambda v: float(np.median(v)), n_boot=300)
    assert 1.0 <= lo <= hi <= 4.0


def test_stratified_bootstrap_keeps_each_stratum():
    # Stratum a is all 0, stratum b all 1: every stratified resample has mean exactly 0.5,
    # while a plain bootstrap of the same 8 values varies.
    values = [0.0] * 4 + [1.0] * 4
    strata = ["a"] * 4 + ["b"] * 4
    assert bootstrap_ci(values, strata=strata, n_boot=500) == (0.5, 0.5)
    lo, hi = bootstrap_ci(values, n_boot=500)
    assert lo < 0.5 < hi


def test_holm_by_hand():
    # sorted p: 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adj = holm([float("nan"), 0.01])
    assert math.isnan(adj[0]) and adj[1] == pytest.approx(0.01)


def test_two_sample_tests():
    assert mann_whitney_p([0.2] * 5, [0.2] * 5) == 1.0
    assert mann_whitney_p([0.0] * 10, [1.0] * 10) < 0.001
    # Fisher on 0/10 vs 10/10 correct: p = 2 / C(20, 10)
    assert fisher_p(0, 10, 10, 10) == pytest.approx(2 / math.comb(20, 10))
    assert fisher_p(5, 10, 5, 10) == pytest.approx(1.0)


def test_paired_tests_by_hand():
    # three positive differences: exact sign-flip p = 2/8 (all +, all -)
    assert sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    assert sign_flip_p([0.0, 0.0]) == 1.0
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    # exact Wilcoxon with 5 positive ranks: p = 2 / 2^5
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)


def test_paired_comparison_finds_the_changes():
    rng = np.random.default_rng(0)
    prev_rows, curr_rows = [], []
    for q, (a, b) in {"up": (0.1, 0.95), "down": (0.95, 0.1), "same": (0.5, 0.5)}.items():
        for _ in range(30):
            sa = float(np.clip(a + rng.normal(0, 0.03), 0, 1))
            sb = float(np.clip(b + rng.normal(0, 0.03), 0, 1))
            prev_rows.append((q, sa, "correct" if sa >= 0.8 else "incorrect", False))
            curr_rows.append((q, sb, "correct" if sb >= 0.8 else "incorrect", False))
    cmp = paired_comparison(frame(prev_rows), frame(curr_rows))
    pq = cmp.per_question.set_index("symptom_id")
    assert pq.loc["up", "change"] == "improved"
    assert pq.loc["down", "change"] == "worsened"
    assert pq.loc["same", "change"] == "unchanged"
    assert pq.loc["up", "acc_prev"] == 0.0 and pq.loc["up", "acc_curr"] == 1.0
    assert (pq.loc["up", "status_prev"], pq.loc["up", "status_curr"]) == ("unsolved", "solved")
    assert list(cmp.improved()["symptom_id"]) == ["up"]
    assert list(cmp.worsened()["symptom_id"]) == ["down"]
    o = cmp.overall
    assert (o["improved"], o["worsened"], o["newly_solved"], o["forgotten"]) == (1, 1, 1, 1)
    assert o["delta"] == pytest.approx(pq["delta"].mean())
    assert o["delta_lo"] <= o["delta"] <= o["delta_hi"]


def test_paired_comparison_needs_shared_questions():
    with pytest.raises(ValueError, match="share no question"):
        paired_comparison(frame([("a", 1.0, "correct", False)]), frame([("b", 1.0, "correct", False)]))


def test_iteration_table_has_the_seeds_columns(two_questions):
    o = summarise(two_questions, n_boot=100).overall
    table = iteration_table({"iter0": o, "iter1": o})
    for col in ("イテレーション", "平均スコア", "標準偏差", "正答率 (≥0.8)", "有害率", "Correct", "Partially Correct", "Incorrect", "Unsafe"):
        assert col in table.columns
    assert list(table["イテレーション"]) == ["iter0", "iter1"]
    assert table.loc[0, "正答率 (≥0.8)"].startswith("66.7% (4/6)")
    assert table.loc[0, "解けた質問 (平均≥0.8)"] == "1/2"
    raw = iteration_table({"iter0": o}, formatted=False)
    assert raw.loc[0, "accuracy"] == pytest.approx(4 / 6)
