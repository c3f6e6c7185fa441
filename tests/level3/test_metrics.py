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
