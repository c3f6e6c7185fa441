"""agreement_report, cohen_kappa and self_consistency on a scripted judge: every number below is counted
by hand from the five records (issue 19: mutation-checked). No model, no knowledge-base grading."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from course_lib.level3.judge import DrugGrade, Grade, JudgeError, agreement_report, cohen_kappa, self_consistency


class Scripted:
    """A judge that returns prepared results, in order, and records how it was called."""

    name = "scripted"

    def __init__(self, results):
        self.results = list(results)
        self.calls = []

    def grade_many(self, items, **kw):
        items = list(items)
        self.calls.append((items, kw))
        return self.results[: len(items)]


def _grade(label, harmful, score, drugs=(), meta=None):
    return Grade("q", "a", label, harmful, score, "理由", [DrugGrade(n, l, l == "unsafe", 0.0, "r") for n, l in drugs],
                 meta=meta or {})


def _rec(i, cat, label, harmful, band=None, drugs=None):
    r = {"id": f"g{i}", "category": cat, "symptom_id": "s01", "question": f"q{i}", "answer": f"a{i}",
         "expected_label": label, "expected_harmful": harmful}
    if band is not None:
        r["score_min"], r["score_max"] = band
    if drugs is not None:
        r["expected_drugs"] = [{"name": n, "label": l} for n, l in drugs]
    return r


GOLD = [
    _rec(1, "A", "correct", False, (0.8, 1.0), [("アセトアミノフェン", "correct"), ("イブ", "correct"), ("ロキソプロフェン", "correct")]),
    _rec(2, "A", "unsafe", True, (0.0, 0.2), [("ゲンキナール", "incorrect")]),
    _rec(3, "B", "unsafe", True, (0.0, 0.2)),
    _rec(4, "B", "incorrect", False, (0.0, 0.3)),
    _rec(5, "B", "correct", False),
]
RESULTS = [
    # same drugs under other names: one label agrees, one does not; the third names another drug (not compared)
    _grade("correct", False, 0.9, [("カロナール", "correct"), ("イブプロフェン", "incorrect"), ("アスピリン", "correct")]),
    _grade("unsafe", True, 0.2, [("ゲンキナール", "incorrect")], meta={"unrecognised": ["ゲンキナール"]}),  # band edge
    _grade("partially_correct", False, 0.5),  # a missed harmful answer, outside its band
    _grade("unsafe", True, 0.1),  # a false harmful, inside its band
    JudgeError("no valid reply", kind="invalid_reply"),
]


@pytest.fixture(scope="module")
def report():
    return agreement_report(Scripted(RESULTS), GOLD)


def test_counts_and_rates(report):
    r = report
    assert (r.judge, r.n, r.n_errors) == ("scripted", 5, 1)
    assert (r.n_label_agree, r.label_accuracy) == (2, 0.5)  # g1, g2 of the 4 graded
    assert (r.n_harmful, r.n_harmful_caught, r.harmful_recall) == (2, 1, 0.5)  # g2 caught, g3 missed
    assert r.harmful_precision == 0.5  # judged harmful: g2 (right), g4 (wrong)
    assert (r.n_false_harmful, r.n_not_harmful) == (1, 2)
    assert r.score_band_agreement == 0.75  # g1 0.9 in [0.8, 1], g2 0.2 in [0, 0.2], g4 0.1 in [0, 0.3]; g3 not
    assert r.drug_label_accuracy == pytest.approx(2 / 3)  # acetaminophen agrees, ibuprofen not, genkinaru agrees
    assert r.cohen_kappa == pytest.approx(3 / 11)  # po 1/2, pe (1x1 + 2x2) / 16: (1/2 - 5/16) / (11/16)
    assert r.n_needs_review == 1 and len(r.grades) == 4
    assert r.label_accuracy_ci == pytest.approx((0.0676, 0.9324), abs=1e-4)  # exact interval of 2/4
    assert r.harmful_recall_ci == pytest.approx((1 - math.sqrt(0.975), math.sqrt(0.975)), abs=1e-9)  # 1/2


def test_the_judge_is_asked_for_question_and_answer_pairs():
    judge = Scripted(RESULTS)
    agreement_report(judge, GOLD, progress=True, use_cache=False)
    items, kw = judge.calls[0]
    assert items == [{"question": f"q{i}", "answer": f"a{i}"} for i in range(1, 6)]
    assert kw == {"progress": True, "use_cache": False}
    agreement_report(judge, GOLD)
    assert judge.calls[1][1] == {"progress": False}


def test_confusion_matrix_rows_gold_columns_judge(report):
    labels = ["correct", "partially_correct", "incorrect", "unsafe"]
    expected = pd.DataFrame([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 1]], index=labels, columns=labels)
    c = report.confusion
    assert (c.index.name, c.columns.name) == ("gold", "judge")
    assert [list(row) for row in c.values] == expected.values.tolist()
    assert list(c.index) == labels and list(c.columns) == labels
    ja = report.confusion_ja()
    assert list(ja.index) == ["正解", "部分的に正解", "不正解", "危険"] and list(ja.columns) == list(ja.index)
    assert (ja.index.name, ja.columns.name) == ("人手の正解ラベル", "採点者のラベル")
    assert ja.values.tolist() == expected.values.tolist()


def test_item_rows_and_disagreements(report):
    items = report.items
    assert list(items["id"]) == ["g1", "g2", "g3", "g4", "g5"]
    assert list(items["gold_label"]) == ["correct", "unsafe", "unsafe", "incorrect", "correct"]
    assert list(items["judge_label"][:4]) == ["correct", "unsafe", "partially_correct", "unsafe"]
    assert all(pd.isna(items[c][4]) for c in ("judge_label", "judge_harmful", "judge_score"))
    assert items["error"][4] == "no valid reply" and items["judge_reason"][4] == "" and items["needs_review"][4] is None
    assert items["error"][:4].isna().all() and list(items["judge_reason"][:4]) == ["理由"] * 4
    assert list(items["needs_review"][:4]) == [False, True, False, False]
    assert list(items["judge_score"][:4]) == [0.9, 0.2, 0.5, 0.1]
    assert list(items["category"]) == ["A", "A", "B", "B", "B"] and set(items["symptom_id"]) == {"s01"}
    assert list(items["gold_harmful"]) == [False, True, True, False, False]
    assert math.isnan(items["score_min"][4]) and math.isnan(items["score_max"][4]) and items["score_max"][3] == 0.3
    assert items["label_agrees"].tolist()[:4] == [True, True, False, False] and items["label_agrees"].isna()[4]
    assert items["in_band"].tolist()[:4] == [True, True, False, True] and items["in_band"].isna()[4]
    d = report.disagreements
    assert list(d["id"]) == ["g3", "g4", "g5"] and list(d.index) == [0, 1, 2]


def test_by_category_leaves_out_errors(report):
    t = report.by_category()
    assert list(t.columns) == ["category", "n", "n_label_agree", "label_accuracy", "ci_low", "ci_high", "n_harmful",
                               "n_harmful_caught", "n_false_harmful"]
    a, b = t.to_dict("records")
    assert {k: a[k] for k in ("category", "n", "n_label_agree", "label_accuracy", "n_harmful", "n_harmful_caught",
                              "n_false_harmful")} == {"category": "A", "n": 2, "n_label_agree": 2, "label_accuracy": 1.0,
                                                      "n_harmful": 1, "n_harmful_caught": 1, "n_false_harmful": 0}
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((math.sqrt(0.025), 1.0))  # exact interval of 2/2
    assert {k: b[k] for k in ("category", "n", "n_label_agree", "label_accuracy", "n_harmful", "n_harmful_caught",
                              "n_false_harmful")} == {"category": "B", "n": 2, "n_label_agree": 0, "label_accuracy": 0.0,
                                                      "n_harmful": 1, "n_harmful_caught": 0, "n_false_harmful": 1}
    assert (b["ci_low"], b["ci_high"]) == pytest.approx((0.0, 1 - math.sqrt(0.025)))  # 0/2


def test_summary_and_text(report):
    s = report.summary()
    assert list(s) == ["judge", "n", "n_errors", "label_accuracy", "label_accuracy_ci", "n_label_agree", "cohen_kappa",
                       "harmful_recall", "harmful_recall_ci", "n_harmful", "n_harmful_caught", "harmful_precision",
                       "n_false_harmful", "n_not_harmful", "score_band_agreement", "drug_label_accuracy", "n_needs_review"]
    assert (s["n_label_agree"], s["n_needs_review"], s["n_false_harmful"]) == (2, 1, 1)
    assert str(report) == ("scripted: n=5 (errors 1), label accuracy 0.500 (2/4, 95% CI 0.068-0.932), kappa 0.273, "
                           "harmful recall 0.500 (1/2, 95% CI 0.013-0.987), harmful precision 0.500, false harmful 1/2, "
                           "score band 0.750, drug labels 0.667")


def test_records_without_bands_drugs_or_any_valid_grade():
    plain = [_rec(1, "A", "correct", False), _rec(2, "A", "unsafe", True)]
    r = agreement_report(Scripted([_grade("correct", False, 1.0), _grade("incorrect", False, 0.0)]), plain)
    assert math.isnan(r.score_band_agreement) and math.isnan(r.drug_label_accuracy)
    assert (r.harmful_recall, r.n_harmful_caught) == (0.0, 0)
    assert math.isnan(r.harmful_precision)  # nothing judged harmful
    errors = agreement_report(Scripted([JudgeError("x"), "not a grade"]), plain)
    assert (errors.n, errors.n_errors, errors.n_label_agree) == (2, 2, 0)
    assert math.isnan(errors.label_accuracy) and math.isnan(errors.cohen_kappa) and math.isnan(errors.harmful_recall)
    assert list(errors.items["error"]) == ["x", "not a grade"]
    assert len(errors.disagreements) == 2 and errors.by_category().empty
    assert errors.confusion.values.sum() == 0


def test_cohen_kappa_by_hand():
    assert cohen_kappa(["a", "b"], ["a", "b"], labels=["a", "b"]) == 1.0
    # po = 3/4; pe = (2x1 + 2x3) / 16 = 1/2; kappa = (3/4 - 1/2) / (1 - 1/2)
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "b", "b"], labels=["a", "b"]) == 0.5
    assert cohen_kappa(["a", "b", "a", "b"], ["b", "a", "b", "a"], labels=["a", "b"]) == -1.0
    assert cohen_kappa(["correct", "unsafe"], ["unsafe", "correct"]) == -1.0  # default labels
    # a label outside ``labels`` still counts for chance agreement: pe = (1x1 + 1x1) / 4 = 0.5, po = 1
    assert cohen_kappa(["x", "y"], ["x", "y"], labels=[]) == 1.0
    assert cohen_kappa(["x", "x", "y"], ["x", "y", "y"], labels=[]) == pytest.approx((2 / 3 - 4 / 9) / (5 / 9))
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(cohen_kappa(["a"], ["a", "b"]))
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # chance agreement 1


def test_self_consistency_counts_the_most_common_label():
    ok = [_grade("correct", False, 1.0), _grade("incorrect", False, 0.0), _grade("correct", False, 1.0), JudgeError("x")]
    judge = Scripted(ok)
    assert self_consistency(judge, "q", "a", k=4, extra=1) == pytest.approx(2 / 3)  # the error is left out
    items, kw = judge.calls[0]
    assert items == [("q", "a")] * 4 and kw == {"use_cache": False, "progress": False, "extra": 1}
    assert self_consistency(Scripted(ok), "q", "a", k=1) == 1.0
    assert math.isnan(self_consistency(Scripted([JudgeError("x")] * 5), "q", "a"))
    judge = Scripted([_grade("incorrect", False, 0.0)] * 5)
    assert self_consistency(judge, "q", "a") == 1.0 and len(judge.calls[0][0]) == 5  # k defaults to 5
    with pytest.raises(ValueError, match="k must be >= 1"):
        self_consistency(Scripted(ok), "q", "a", k=0)


def test_self_consistency_refuses_k_below_one_with_its_message():
    with pytest.raises(ValueError) as info:
        self_consistency(Scripted([]), "q", "a", k=-1)
    assert str(info.value) == "k must be >= 1"


def test_item_rows_of_a_report_built_in_the_test():
    # mutmut runs only the tests that called a function when it collected its stats; the module fixture
    # ``report`` calls ``agreement_report`` in the first test only, so these rows are checked here again
    items = agreement_report(Scripted(RESULTS), GOLD).items
    assert list(items["symptom_id"]) == ["s01"] * 5
    assert list(items["judge_reason"]) == ["理由", "理由", "理由", "理由", ""]  # an error has an empty reason
    assert list(items["needs_review"]) == [False, True, False, False, None]  # g2's grade lists an unrecognised name
    assert items["score_min"].tolist()[:4] == [0.8, 0.0, 0.0, 0.0] and items["score_max"].tolist()[:4] == [1.0, 0.2, 0.2, 0.3]
    assert all(isinstance(x, float) and math.isnan(x) for x in (items["score_min"][4], items["score_max"][4]))


def test_records_without_bands_get_nan_bands_and_an_empty_table_keeps_its_columns():
    plain = [_rec(1, "A", "correct", False), _rec(2, "A", "unsafe", True)]
    r = agreement_report(Scripted([_grade("correct", False, 1.0), _grade("incorrect", False, 0.0)]), plain)
    for column in ("score_min", "score_max"):
        assert all(isinstance(x, float) and math.isnan(x) for x in r.items[column])
    errors = agreement_report(Scripted([JudgeError("x"), JudgeError("y")]), plain)
    assert list(errors.by_category().columns) == ["category", "n", "n_label_agree", "label_accuracy", "ci_low",
                                                  "ci_high", "n_harmful", "n_harmful_caught", "n_false_harmful"]


def test_by_category_keeps_the_order_categories_first_appear_in():
    gold = [_rec(1, "B", "correct", False), _rec(2, "A", "correct", False), _rec(3, "B", "incorrect", False)]
    r = agreement_report(Scripted([_grade("correct", False, 1.0)] * 3), gold)
    t = r.by_category()
    assert list(t["category"]) == ["B", "A"] and list(t["n"]) == [2, 1] and list(t["n_label_agree"]) == [1, 1]


def test_the_fixture_checks_again_on_a_report_built_in_the_test():
    # the same hand-counted expectations as the tests above, on a report this test builds (see
    # test_item_rows_of_a_report_built_in_the_test for why)
    r = agreement_report(Scripted(RESULTS), GOLD)
    test_counts_and_rates(r)
    test_confusion_matrix_rows_gold_columns_judge(r)
    test_item_rows_and_disagreements(r)
    test_by_category_leaves_out_errors(r)
    test_summary_and_text(r)
    assert list(r.disagreements.columns) == list(r.items.columns)  # the old index is dropped, not kept as a column


def test_disagreements_bands_and_one_sided_bands():
    gold = [_rec(1, "A", "correct", False, (0.8, 1.0)),  # label differs, harm agrees: a disagreement
            _rec(2, "A", "correct", False),  # no band: in_band stays NA
            _rec(3, "A", "correct", False)]
    gold[2]["score_min"] = 0.5  # only one end of a band: not banded
    results = [_grade("partially_correct", False, 0.5), _grade("correct", False, 1.0), _grade("correct", False, 0.9)]
    r = agreement_report(Scripted(results), gold)
    assert list(r.disagreements["id"]) == ["g1"]
    assert r.items["in_band"].tolist()[0] is False and r.items["in_band"].isna().tolist() == [False, True, True]
    assert r.score_band_agreement == 0.0  # 0.5 is below [0.8, 1.0]; the others have no band


def test_label_agreement_is_counted_when_agreeing_and_disagreeing_labels_are_not_equally_many():
    # (the fixture has 2 agreeing and 2 disagreeing labels, so counting the disagreements would give the same 2)
    gold = [_rec(1, "A", "correct", False), _rec(2, "A", "correct", False), _rec(3, "A", "incorrect", False)]
    r = agreement_report(Scripted([_grade("correct", False, 1.0)] * 3), gold)
    assert (r.n_label_agree, r.label_accuracy) == (2, pytest.approx(2 / 3))  # g1, g2 agree; g3 does not
    assert str(r).startswith("scripted: n=3 (errors 0), label accuracy 0.667 (2/3, ")


def test_label_agrees_and_in_band_are_nullable_booleans():
    # NA marks "not applicable" (a judge error, a record without a band); ~ then gives the disagreeing / out-of-band rows
    items = agreement_report(Scripted(RESULTS), GOLD).items
    for column in ("label_agrees", "in_band"):
        assert items[column].dtype == "boolean"
    assert (~items["in_band"]).tolist()[:4] == [False, False, True, False] and pd.isna((~items["in_band"])[4])
    assert (~items["label_agrees"]).tolist()[:4] == [False, False, True, True]
    assert items["in_band"].mean() == 0.75  # NA left out: 3 of the 4 banded graded answers


def test_a_score_within_the_rounding_tolerance_of_its_band_is_inside_it():
    # the band [score_min, score_max] is closed and widened by 1e-9 for float rounding: exactly 1e-9 outside still counts
    gold = [_rec(1, "A", "correct", False, (0.8, 1.0)), _rec(2, "A", "correct", False, (0.0, 0.2)),
            _rec(3, "A", "correct", False, (0.8, 1.0))]
    results = [_grade("correct", False, 0.8 - 1e-9), _grade("correct", False, 0.2 + 1e-9),
               _grade("correct", False, 0.8 - 1e-6)]  # the third is really below its band
    r = agreement_report(Scripted(results), gold)
    assert r.items["in_band"].tolist() == [True, True, False]
    assert r.score_band_agreement == pytest.approx(2 / 3)


def test_false_harmful_counts_judged_harmful_answers_a_human_did_not_mark():
    # (the fixture has one caught and one false harmful answer, so counting the caught ones would give the same 1)
    gold = [_rec(1, "A", "unsafe", True), _rec(2, "A", "correct", False), _rec(3, "A", "incorrect", False)]
    r = agreement_report(Scripted([_grade("unsafe", True, 0.0)] * 3), gold)
    assert (r.n_harmful, r.n_harmful_caught, r.n_false_harmful, r.n_not_harmful) == (1, 1, 2, 2)
    assert r.harmful_precision == pytest.approx(1 / 3)  # 3 judged harmful, 1 of them is
