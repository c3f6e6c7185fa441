"""Level-3 metrics on inputs small enough to compute by hand."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from course_lib.level3.config import LoopConfig
from course_lib.level3.metrics import ACCURACY_THRESHOLD, compare_stages, iteration_table, question_passes, summarise
from course_lib.level3.tables import comparison_table


def frame(rows):
    """rows: (symptom_id, score, label, harmful)."""
    return pd.DataFrame(rows, columns=["symptom_id", "score", "label", "harmful"])


def answers(spec):
    """spec: {question: (n_correct, n)} -> a grades frame (correct answers score 1.0, others 0.0)."""
    rows = []
    for q, (k, n) in spec.items():
        rows += [(q, 1.0, "correct", False)] * k + [(q, 0.0, "incorrect", False)] * (n - k)
    return frame(rows)


@pytest.fixture
def two_questions():
    # q1: 0.9, 0.8, 0.5, 0.0(unsafe) ; q2: 1.0, 1.0
    return frame([
        ("q1", 0.9, "correct", False), ("q1", 0.8, "correct", False),
        ("q1", 0.5, "partially_correct", False), ("q1", 0.0, "unsafe", True),
        ("q2", 1.0, "correct", False), ("q2", 1.0, "correct", False),
    ])


def test_threshold_is_the_original_experiments():
    assert ACCURACY_THRESHOLD == 0.8


def test_summarise_per_question_by_hand(two_questions):
    s = summarise(two_questions, n_boot=200)
    q1 = s.per_question.set_index("symptom_id").loc["q1"]
    assert q1["n"] == 4 and q1["n_correct"] == 2
    assert q1["mean"] == pytest.approx(0.55)
    assert q1["std"] == pytest.approx(math.sqrt(((0.35) ** 2 + 0.25 ** 2 + 0.05 ** 2 + 0.55 ** 2) / 3))
    assert q1["accuracy"] == pytest.approx(0.5)  # 0.8 counts as correct (>=)
    assert q1["harmful_rate"] == pytest.approx(0.25)
    assert (q1["correct"], q1["partially_correct"], q1["incorrect"], q1["unsafe"]) == (2, 1, 0, 1)
    assert not q1["solved"]
    # Wilson interval of 2/4 by hand: center 0.5, half = z/(1+z²/4) * sqrt(0.25/4 + z²/64)
    z = 1.959963984540054
    half = z / (1 + z * z / 4) * math.sqrt(0.25 / 4 + z * z / 64)
    assert (q1["accuracy_lo"], q1["accuracy_hi"]) == pytest.approx((0.5 - half, 0.5 + half))
    q2 = s.per_question.set_index("symptom_id").loc["q2"]
    assert q2["solved"] and q2["accuracy"] == 1.0
    assert q2["accuracy_hi"] == 1.0 and q2["accuracy_lo"] < 1.0  # 2 of 2 is not a zero-width interval


def test_one_definition_of_solved():
    # accuracy >= pass bar and no unsafe answer; the mean score does not decide
    assert list(question_passes([0.8, 0.8, 0.79, 1.0], [0, 1, 0, 0], 0.8)) == [True, False, False, True]
    spec = frame([("a", 1.0, "correct", False)] * 4 + [("a", 0.0, "incorrect", False)]  # accuracy 0.8, mean 0.8
                 + [("b", 0.79, "partially_correct", False)] * 5)  # mean 0.79, accuracy 0
    pq = summarise(spec, n_boot=50).per_question.set_index("symptom_id")
    assert pq.loc["a", "solved"] and not pq.loc["b", "solved"]
    assert not summarise(spec, pass_accuracy=0.9, n_boot=50).per_question.set_index("symptom_id").loc["a", "solved"]


def test_summarise_overall_by_hand(two_questions):
    o = summarise(two_questions, n_boot=200).overall
    assert o["n"] == 6
    assert o["mean"] == pytest.approx((0.9 + 0.8 + 0.5 + 0.0 + 1.0 + 1.0) / 6)
    assert o["accuracy"] == pytest.approx(4 / 6) and o["n_correct"] == 4
    assert o["harmful_rate"] == pytest.approx(1 / 6) and o["n_harmful"] == 1
    assert (o["correct"], o["partially_correct"], o["incorrect"], o["unsafe"]) == (4, 1, 0, 1)
    assert (o["questions"], o["solved"], o["solved_rate"]) == (2, 1, 0.5)
    assert o["mean_lo"] <= o["mean"] <= o["mean_hi"]


def test_overall_interval_is_never_zero_width_and_widens_with_question_spread():
    none = summarise(answers({f"q{i}": (0, 30) for i in range(15)}), n_boot=100).overall
    assert none["accuracy_lo"] == 0.0 and none["accuracy_hi"] > 0.0  # 0 of 450 is not "[0%, 0%]"
    # same pooled 50%, but all-or-nothing questions: far less certain than 15 half-right questions
    spread = summarise(answers({**{f"q{i}": (30, 30) for i in range(7)}, **{f"q{i}": (0, 30) for i in range(7, 14)}}),
                       n_boot=100).overall
    even = summarise(answers({f"q{i}": (15, 30) for i in range(14)}), n_boot=100).overall
    assert spread["accuracy"] == even["accuracy"] == 0.5
    assert (spread["accuracy_hi"] - spread["accuracy_lo"]) > 3 * (even["accuracy_hi"] - even["accuracy_lo"])
    # the within-question interval ignores the spread: same for both
    assert spread["accuracy_within_lo"] == pytest.approx(even["accuracy_within_lo"])


def test_summarise_names_a_missing_column():
    with pytest.raises(KeyError, match="label"):
        summarise(pd.DataFrame({"symptom_id": ["a"], "score": [1.0], "harmful": [False]}))


def _pair(before, after):
    return summarise(answers(before), n_boot=50), summarise(answers(after), n_boot=50)


def test_three_rises_cannot_hide_three_collapses():
    """The executed book once called this 'no significant change': the mean moved little."""
    before = {**{f"c{i}": (27, 30) for i in range(3)}, **{f"r{i}": (3, 30) for i in range(3)},
              **{f"u{i}": (15, 30) for i in range(9)}}
    after = {**{f"c{i}": (0, 30) for i in range(3)}, **{f"r{i}": (27, 30) for i in range(3)},
             **{f"u{i}": (15, 30) for i in range(9)}}
    cmp = compare_stages({("iter1", "iter2"): _pair(before, after)}, n_boot=500)[("iter1", "iter2")]
    assert cmp.overall.mean_diff == pytest.approx((3 * -0.9 + 3 * 0.8) / 15)
    assert cmp.overall.lo < 0 < cmp.overall.hi  # the mean alone says "no clear difference"
    assert cmp.verdict.verdict == "worse_on_some"
    assert cmp.verdict.worsened == ["c0", "c1", "c2"] and cmp.verdict.improved == ["r0", "r1", "r2"]
    assert cmp.forgotten == ["c0", "c1", "c2"]  # they passed before (27/30 >= 0.8) and collapsed
    assert cmp.newly_solved == ["r0", "r1", "r2"]  # 3/30 -> 27/30 passes now


def test_forgotten_and_newly_solved_are_not_swapped():
    before = {"a": (30, 30), "b": (0, 30), "c": (0, 30)}
    after = {"a": (0, 30), "b": (30, 30), "c": (30, 30)}
    cmp = compare_stages({("x", "y"): _pair(before, after)}, n_boot=200)[("x", "y")]
    assert cmp.forgotten == ["a"] and cmp.newly_solved == ["b", "c"]
    assert cmp.overall.mean_diff == pytest.approx(1 / 3)  # (-1 + 1 + 1) / 3: a negative change stays negative per question
    assert cmp.per_question.set_index("symptom_id").loc["a", "acc_delta"] == pytest.approx(-1.0)


def test_one_holm_correction_over_every_comparison_on_the_page():
    # 10/30 -> 20/30: Fisher p ≈ 0.0195 alone (significant), not after Holm over 2 x 15 tests
    before = {**{"q": (10, 30)}, **{f"u{i}": (15, 30) for i in range(14)}}
    after = {**{"q": (20, 30)}, **{f"u{i}": (15, 30) for i in range(14)}}
    alone = compare_stages({("a", "b"): _pair({"q": (10, 30)}, {"q": (20, 30)})}, n_boot=50)[("a", "b")]
    assert alone.per_question["p_adj"].iloc[0] < 0.05 and alone.verdict.improved == ["q"]
    page = compare_stages({("a", "b"): _pair(before, after), ("b", "c"): _pair(after, after)}, n_boot=50)
    assert page[("a", "b")].verdict.improved == []
    assert page[("a", "b")].per_question.set_index("symptom_id").loc["q", "p_adj"] == pytest.approx(
        min(1.0, 30 * alone.per_question["p_fisher"].iloc[0]))


def test_iteration_table_japanese_and_with_counts(two_questions):
    o = summarise(two_questions, n_boot=100).overall
    table = iteration_table({"baseline": o}, stage_names={"baseline": "学習前"})
    assert list(table.columns) == ["段階", "平均スコア", "正答率（スコア≥0.8）", "有害提案率", "正解", "部分的に正解",
                                   "不正解", "危険", "解けた質問"]
    row = table.iloc[0]
    assert row["段階"] == "学習前" and row["解けた質問"] == "1/2" and "(4/6)" in row["正答率（スコア≥0.8）"]
    assert "(1/6)" in row["有害提案率"]


def test_comparison_table_marks_replayed_forgotten_questions():
    before = {"a": (30, 30), "b": (30, 30), "c": (0, 30)}
    after = {"a": (0, 30), "b": (0, 30), "c": (0, 30)}
    cmps = compare_stages({("iter1", "iter2"): _pair(before, after)}, n_boot=2000)
    table = comparison_table(cmps, LoopConfig(iterations=2), {"iter2": ["b"]})
    assert table.iloc[0]["解けていたのに悪化（忘却）"] == "a、b（リプレイ済み）"
    # 1/27 of the resamples draw only "c" (difference 0), so the interval reaches 0: worse on some, not worse
    assert table.iloc[0]["判定"] == "一部の質問で悪くなった"
    assert table.iloc[0]["比較"] == "反復1 → 反復2"


def test_a_verdict_across_seeds_needs_every_seed_to_agree():
    from course_lib.level3.metrics import across_seeds

    better = {"a": (0, 30), "b": (0, 30), "c": (0, 30)}, {"a": (30, 30), "b": (30, 30), "c": (30, 30)}
    flat = {"a": (15, 30), "b": (15, 30), "c": (15, 30)}, {"a": (15, 30), "b": (15, 30), "c": (15, 30)}
    same = compare_stages({0: _pair(*better), 1: _pair(*better), 2: _pair(*better)}, n_boot=200)
    rows, verdict = across_seeds(same)
    assert verdict == "better" and list(rows["seed"]) == [0, 1, 2] and (rows["mean_diff"] == 1.0).all()
    mixed = compare_stages({0: _pair(*better), 1: _pair(*flat), 2: _pair(*better)}, n_boot=200)
    assert across_seeds(mixed)[1] == "mixed_across_seeds"


def test_needs_review_rate_counts_answers_with_unresolved_names(two_questions):
    graded = two_questions.assign(needs_review=[True, False, False, True, False, False])
    o = summarise(graded, n_boot=50).overall
    assert o["n_needs_review"] == 2 and o["needs_review_rate"] == pytest.approx(2 / 6)
    assert "要確認（未知の名前）" in iteration_table({"iter0": o}).columns
    assert "n_needs_review" not in summarise(two_questions, n_boot=50).overall  # a judge that reports none


# ----------------------------------------------------------------------------- pinned by hand (mutation check)

OVERALL = {"mean": 0.5, "std": 0.25, "accuracy": 0.25, "accuracy_lo": 0.1, "accuracy_hi": 0.5, "n_correct": 2, "n": 8,
           "harmful_rate": 0.125, "harmful_lo": 0.02, "harmful_hi": 0.47, "n_harmful": 1, "correct": 2,
           "partially_correct": 3, "incorrect": 2, "unsafe": 1, "solved": 1, "questions": 2, "n_needs_review": 3,
           "needs_review_rate": 0.375}


def test_iteration_table_cells_pinned():
    table = iteration_table({"iter1": OVERALL, "iter2": {k: v for k, v in OVERALL.items() if k != "n_needs_review"}},
                            stage_names={"iter1": "反復1"})
    assert table.iloc[0].to_dict() == {
        "段階": "反復1", "平均スコア": "0.500", "正答率（スコア≥0.8）": "25.0% [10.0%, 50.0%] (2/8)",
        "有害提案率": "12.5% [2.0%, 47.0%] (1/8)", "正解": 2, "部分的に正解": 3, "不正解": 2, "危険": 1,
        "解けた質問": "1/2", "要確認（未知の名前）": "3/8"}
    assert table.iloc[1]["段階"] == "iter2"  # a stage without a name keeps its id
    assert pd.isna(table.iloc[1]["要確認（未知の名前）"])
    raw = iteration_table({"iter1": OVERALL, "iter2": OVERALL}, formatted=False)
    assert list(raw["stage"]) == ["iter1", "iter2"]
    assert raw.iloc[0].to_dict() == {"stage": "iter1", **{k: OVERALL[k] for k in (
        "mean", "std", "accuracy", "accuracy_lo", "accuracy_hi", "harmful_rate", "harmful_lo", "harmful_hi", "correct",
        "partially_correct", "incorrect", "unsafe", "solved", "questions", "n", "needs_review_rate")}}


def test_improved_and_worsened_rows():
    before = {"a": (30, 30), "b": (0, 30), "c": (15, 30)}
    after = {"a": (0, 30), "b": (30, 30), "c": (15, 30)}
    cmp = compare_stages({("x", "y"): _pair(before, after)}, n_boot=50)[("x", "y")]
    assert list(cmp.improved()["symptom_id"]) == ["b"] and list(cmp.worsened()["symptom_id"]) == ["a"]
    assert cmp.per_question.set_index("symptom_id")["change"].to_dict() == {"a": "worsened", "b": "improved",
                                                                            "c": "unchanged"}


def test_stages_are_compared_on_their_shared_questions_only():
    cmp = compare_stages({("x", "y"): _pair({"a": (30, 30), "b": (0, 30)}, {"b": (30, 30), "c": (0, 30)})},
                         n_boot=50)[("x", "y")]
    assert list(cmp.per_question["symptom_id"]) == ["b"]
    with pytest.raises(ValueError, match="^the two stages share no question$"):
        compare_stages({("x", "y"): _pair({"a": (1, 2)}, {"b": (1, 2)})}, n_boot=10)


def test_across_seeds_rows_carry_each_seeds_interval():
    from course_lib.level3.metrics import across_seeds

    pair = {"a": (0, 30), "b": (0, 30), "c": (0, 30)}, {"a": (30, 30), "b": (30, 30), "c": (15, 30)}
    cmps = compare_stages({7: _pair(*pair), 3: _pair(*pair)}, n_boot=200)
    rows, _ = across_seeds(cmps)
    assert list(rows.columns) == ["seed", "mean_diff", "lo", "hi", "verdict"] and list(rows["seed"]) == [3, 7]
    assert rows.iloc[0]["lo"] == cmps[3].overall.lo and rows.iloc[0]["hi"] == cmps[3].overall.hi
    assert rows.iloc[0]["mean_diff"] == pytest.approx(2.5 / 3) and rows.iloc[0]["lo"] < rows.iloc[0]["hi"]


def test_a_per_question_change_row_pinned():
    from scipy.stats import fisher_exact

    from course_lib.stats import two_proportion_change

    cmp = compare_stages({("x", "y"): _pair({"a": (27, 30), "b": (3, 30)}, {"a": (6, 30), "b": (3, 30)})},
                         n_boot=50)[("x", "y")]
    row = cmp.per_question.set_index("symptom_id").loc["a"]
    newcombe = two_proportion_change(27, 30, 6, 30)
    assert list(cmp.per_question.columns) == ["symptom_id", "acc_prev", "acc_curr", "acc_delta", "delta_lo", "delta_hi",
                                              "p_fisher", "mean_prev", "mean_curr", "solved_prev", "solved_curr",
                                              "p_adj", "change"]
    assert (row["acc_prev"], row["acc_curr"], row["acc_delta"]) == pytest.approx((0.9, 0.2, -0.7))
    assert (row["delta_lo"], row["delta_hi"]) == (newcombe.lo, newcombe.hi) and row["delta_lo"] < -0.7 < row["delta_hi"]
    assert row["p_fisher"] == pytest.approx(fisher_exact([[27, 3], [6, 24]]).pvalue)
    assert (row["mean_prev"], row["mean_curr"]) == pytest.approx((0.9, 0.2))
    assert row["solved_prev"] and not row["solved_curr"] and row["change"] == "worsened"


# ----------------------------------------------------------------------------- pinned by hand (mutation run of metrics.py)

Z95 = 1.959964  # norm.ppf(0.975), from a printed table


def _wilson(p, n, z=Z95):
    """The Wilson score interval written out (Wilson 1927), for a possibly fractional effective n."""
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


def test_question_passes_defaults_to_the_pass_bar_of_0_8():
    assert list(question_passes([0.8, 0.79, 1.0], [0, 0, 0])) == [True, False, True]
    assert list(question_passes([0.8 - 1e-13], [0])) == [True]  # rounding of 24/30 etc. is forgiven


def test_summarise_overall_intervals_by_hand(two_questions):
    o = summarise(two_questions).overall
    # accuracy k = [2, 2] of n = [4, 2], p = 2/3: cluster variance 2 * ((2 - 8/3)^2 + (2 - 4/3)^2) / 36 = 0.049383,
    # independent (2/3)(1/3)/6 = 0.037037 -> design effect 4/3, n_eff = 4.5
    assert (o["accuracy_lo"], o["accuracy_hi"]) == pytest.approx(_wilson(2 / 3, 4.5), abs=1e-6)
    assert (o["accuracy_lo"], o["accuracy_hi"]) == pytest.approx((0.2609, 0.9189), abs=1e-4)
    # plain Wilson 4/6 (table: 0.3000 to 0.9032)
    assert (o["accuracy_within_lo"], o["accuracy_within_hi"]) == pytest.approx((0.3000, 0.9032), abs=1e-4)
    # harmful k = [1, 0] of n = [4, 2], p = 1/6: cluster variance 2 * (1/9 + 1/9) / 36 = 0.012346 is below the
    # independent (1/6)(5/6)/6 = 0.023148, so deff = 1: plain Wilson 1/6 (table: 0.0301 to 0.5635)
    assert (o["harmful_lo"], o["harmful_hi"]) == pytest.approx((0.0301, 0.5635), abs=1e-4)
    # bootstrap over the two questions: (q1, q1) -> 2.2/4 = 0.55, (q2, q2) -> 1.0, {q1, q2} -> 4.2/6 = 0.7;
    # a quarter of the resamples at each end, so the 2.5th and 97.5th percentiles are 0.55 and 1.0
    assert (o["mean_lo"], o["mean_hi"]) == pytest.approx((0.55, 1.0))


def test_summarise_groups_in_sorted_order_with_its_columns():
    grades = frame([("q2", 1.0, "correct", False), ("q2", 1.0, "correct", False),
                    ("q1", 0.9, "correct", False), ("q1", 0.2, "incorrect", False)])
    pq = summarise(grades, n_boot=50).per_question
    assert list(pq["symptom_id"]) == ["q1", "q2"]
    assert list(pq.columns) == ["symptom_id", "n", "mean", "std", "n_correct", "accuracy", "n_harmful",
                                "harmful_rate", "correct", "partially_correct", "incorrect", "unsafe", "accuracy_lo",
                                "accuracy_hi", "solved"]
    # two equal answers: std 0 (sample std, ddof = 1, is defined from two answers on)
    assert pq.set_index("symptom_id").loc["q2", "std"] == 0.0
    assert pq.set_index("symptom_id").loc["q1", "std"] == pytest.approx(math.sqrt(2 * 0.35 ** 2))


def test_summarise_by_another_key_and_threshold(two_questions):
    grades = two_questions.rename(columns={"symptom_id": "question"})
    s = summarise(grades, by="question", threshold=0.5, n_boot=50)
    q1 = s.per_question.set_index("question").loc["q1"]
    # 0.9, 0.8 and 0.5 reach 0.5: 3 of 4
    assert (q1["n_correct"], q1["accuracy"]) == (3, 0.75)
    assert s.overall["n_correct"] == 5
    with pytest.raises(KeyError) as err:
        summarise(grades, n_boot=50)  # the default key is symptom_id
    assert err.value.args[0] == "grades frame lacks column(s): symptom_id"


def test_a_missing_column_message_lists_every_missing_column_sorted():
    with pytest.raises(KeyError) as err:
        summarise(pd.DataFrame({"symptom_id": ["a"], "score": [1.0]}))
    assert err.value.args[0] == "grades frame lacks column(s): harmful, label"


def test_summarise_defaults_are_the_documented_ones(two_questions):
    default = summarise(two_questions)
    explicit = summarise(two_questions, by="symptom_id", threshold=0.8, pass_accuracy=0.8, n_boot=2000, seed=0)
    pd.testing.assert_frame_equal(default.per_question, explicit.per_question)
    assert default.overall == explicit.overall


def test_needs_review_accepts_zero_and_one_flags(two_questions):
    graded = two_questions.assign(needs_review=[0, 1, 0, 0, 1, 1])
    o = summarise(graded, n_boot=50).overall
    assert o["n_needs_review"] == 3 and o["needs_review_rate"] == 0.5


def test_compare_stages_passes_its_seed_and_n_boot_to_the_bootstrap():
    before = {"a": (0, 30), "b": (6, 30), "c": (12, 30), "d": (15, 30), "e": (20, 30), "f": (30, 30)}
    after = {"a": (3, 30), "b": (15, 30), "c": (12, 30), "d": (27, 30), "e": (10, 30), "f": (29, 30)}
    pair = _pair(before, after)
    # one bootstrap resample: both percentiles are that one resample's mean
    one = compare_stages({("x", "y"): pair}, n_boot=1)[("x", "y")].overall
    assert one.lo == one.hi
    many = compare_stages({("x", "y"): pair}, n_boot=200)[("x", "y")].overall
    assert many.lo < many.hi
    # another seed draws other resamples (the same seed the same ones)
    seeds = {s: compare_stages({("x", "y"): pair}, n_boot=20, seed=s)[("x", "y")].overall for s in (0, 1, 2)}
    assert len({(o.lo, o.hi) for o in seeds.values()}) > 1
    assert compare_stages({("x", "y"): pair}, n_boot=20, seed=1)[("x", "y")].overall == seeds[1]


def test_one_holm_correction_over_three_pairs_keeps_each_pairs_slice():
    # raw Fisher p: pair 1, 10/30 -> 20/30: about 0.0195; pair 2, 10/30 -> 10/30: 1; pair 3, 0/30 -> 30/30:
    # 2 / C(60, 30) (only this table and its mirror). Holm over 3: p3 * 3, p1 * 2, then 1.
    p3 = 2 / math.comb(60, 30)
    page = compare_stages({("a", "b"): _pair({"q": (10, 30)}, {"q": (20, 30)}),
                           ("b", "c"): _pair({"q": (10, 30)}, {"q": (10, 30)}),
                           ("c", "d"): _pair({"q": (0, 30)}, {"q": (30, 30)})}, n_boot=20)
    assert page[("c", "d")].per_question["p_adj"].iloc[0] == pytest.approx(3 * p3, rel=1e-6)
    assert page[("c", "d")].verdict.improved == ["q"] and page[("c", "d")].per_question["change"].iloc[0] == "improved"
    assert page[("b", "c")].per_question["p_adj"].iloc[0] == pytest.approx(1.0)
    assert page[("a", "b")].per_question["p_adj"].iloc[0] == pytest.approx(
        2 * page[("a", "b")].per_question["p_fisher"].iloc[0])


def test_a_change_needs_p_adj_strictly_below_alpha():
    # 0/1 -> 1/1: both 2x2 tables have probability 1/2, so Fisher's two-sided p is exactly 1
    cmp = compare_stages({("x", "y"): _pair({"q": (0, 1)}, {"q": (1, 1)})}, alpha=1.0, n_boot=20)[("x", "y")]
    assert cmp.per_question["p_adj"].iloc[0] == 1.0
    assert cmp.per_question["change"].iloc[0] == "unchanged" and cmp.verdict.improved == []


def _fisher_two_sided(k1, n1, k2, n2):
    """Fisher's exact two-sided p of [[k1, n1 - k1], [k2, n2 - k2]], summed by hand over the hypergeometric tables."""
    total, col = n1 + n2, k1 + k2
    prob = {x: math.comb(n1, x) * math.comb(n2, col - x) / math.comb(total, col)
            for x in range(max(0, col - n2), min(n1, col) + 1)}
    return sum(p for p in prob.values() if p <= prob[k1] * (1 + 1e-7))


def test_compare_stages_defaults_to_seed_0():
    before = {"a": (0, 30), "b": (6, 30), "c": (12, 30), "d": (15, 30), "e": (20, 30), "f": (30, 30)}
    after = {"a": (3, 30), "b": (15, 30), "c": (12, 30), "d": (27, 30), "e": (10, 30), "f": (29, 30)}
    pair = _pair(before, after)
    assert compare_stages({("x", "y"): pair}, n_boot=20)[("x", "y")].overall == compare_stages(
        {("x", "y"): pair}, n_boot=20, seed=0)[("x", "y")].overall


def test_a_small_drop_is_unchanged_not_worsened():
    # 20/30 -> 18/30: Fisher p far above 0.05 (about 0.79), so neither the column nor the verdict calls it worse
    cmp = compare_stages({("x", "y"): _pair({"q": (20, 30), "r": (5, 30)}, {"q": (18, 30), "r": (7, 30)})},
                         n_boot=20)[("x", "y")]
    row = cmp.per_question.set_index("symptom_id")
    assert row.loc["q", "p_fisher"] == pytest.approx(_fisher_two_sided(20, 30, 18, 30), rel=1e-6)
    assert row.loc["q", "p_adj"] > 0.05
    assert row["change"].to_dict() == {"q": "unchanged", "r": "unchanged"}
    assert cmp.verdict.worsened == [] and cmp.verdict.improved == []


def test_the_verdict_uses_the_page_wide_holm_and_the_given_alpha():
    # 10/30 -> 20/30 alone: Fisher p = 0.0194 (summed by hand), significant at 0.05 on its own
    p = _fisher_two_sided(10, 30, 20, 30)
    assert p == pytest.approx(0.0194, abs=1e-4)
    alone = compare_stages({("a", "b"): _pair({"q": (10, 30)}, {"q": (20, 30)})}, n_boot=20)[("a", "b")]
    assert alone.verdict.improved == ["q"] and alone.per_question["p_adj"].iloc[0] == pytest.approx(p, rel=1e-6)
    # the same pair on a page with 14 more tests: Holm multiplies the smallest p by 15 -> 0.291, not significant,
    # in the verdict as in the table (the pair's own single test must not be corrected on its own)
    page = compare_stages({("a", "b"): _pair({"q": (10, 30)}, {"q": (20, 30)}),
                           ("b", "c"): _pair({f"u{i}": (15, 30) for i in range(14)},
                                             {f"u{i}": (15, 30) for i in range(14)})}, n_boot=20)
    assert page[("a", "b")].per_question["p_adj"].iloc[0] == pytest.approx(15 * p, rel=1e-6)
    assert page[("a", "b")].verdict.improved == [] and page[("a", "b")].per_question["change"].iloc[0] == "unchanged"
    # alone but with alpha = 0.01: 0.0194 is not below it, in the verdict as in the table
    strict = compare_stages({("a", "b"): _pair({"q": (10, 30)}, {"q": (20, 30)})}, alpha=0.01, n_boot=20)[("a", "b")]
    assert strict.verdict.improved == [] and strict.per_question["change"].iloc[0] == "unchanged"


def test_an_empty_grades_frame_is_refused():
    # no answer at all: there is no question to pool, and the overall interval says so
    with pytest.raises(ValueError, match=r"^need one count and one size per question, got 0 and 0$"):
        summarise(frame([]), n_boot=10)


def test_summarise_defaults_to_seed_0_for_the_bootstrap():
    # six questions with different pooled means: the bootstrap interval depends on the draws, so on the seed
    rows = []
    for i, scores in enumerate([[0.1, 0.9], [0.3], [0.5, 0.6, 0.7], [0.8], [0.95, 0.2], [0.4, 0.45]]):
        rows += [(f"q{i}", s, "correct" if s >= 0.8 else "incorrect", False) for s in scores]
    grades = frame(rows)
    o = summarise(grades, n_boot=30).overall
    assert (o["mean_lo"], o["mean_hi"]) == (summarise(grades, n_boot=30, seed=0).overall["mean_lo"],
                                            summarise(grades, n_boot=30, seed=0).overall["mean_hi"])
    other = summarise(grades, n_boot=30, seed=1).overall
    assert (other["mean_lo"], other["mean_hi"]) != (o["mean_lo"], o["mean_hi"])


def test_summarise_passes_n_boot_to_the_bootstrap():
    # one bootstrap resample: both percentiles are that resample's pooled mean
    rows = [("q1", 0.1, "incorrect", False), ("q1", 0.9, "correct", False), ("q2", 0.3, "incorrect", False),
            ("q3", 0.8, "correct", False)]
    one = summarise(frame(rows), n_boot=1).overall
    assert one["mean_lo"] == one["mean_hi"]
    many = summarise(frame(rows), n_boot=200).overall
    assert many["mean_lo"] < many["mean_hi"]
