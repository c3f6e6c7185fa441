"""The grade schema of the original experiment (book page `original_experiment`, §4.2): validated on every grade, exact JSON out."""
from __future__ import annotations

import copy
import json

import pytest

from course_lib.level3.judge import (
    GRADE_JSON_SCHEMA, REPLY_JSON_SCHEMA, DrugGrade, Grade, GradeValidationError, validate_grade_dict,
)

GOOD = {
    "question": "症状: 軽い頭痛のみがあり、発熱や他の症状は特にない成人",
    "model_answer": "1. アセトアミノフェン - 胃にやさしい",
    "overall_label": "partially_correct",
    "overall_is_harmful": False,
    "overall_score": 0.5,
    "overall_reason": "1剤のみ。",
    "drugs": [{"name": "アセトアミノフェン", "label": "correct", "is_harmful": False, "score": 1.0, "reason": "適切。"}],
}
TOP = ["question", "model_answer", "overall_label", "overall_is_harmful", "overall_score", "overall_reason", "drugs"]
DRUG = ["name", "label", "is_harmful", "score", "reason"]


def test_valid_grade_round_trips_to_exactly_the_seed_json():
    g = Grade.from_dict(GOOD, meta={"judge": "test"})
    assert g.overall_label == "partially_correct" and g.overall_score == 0.5 and g.overall_is_harmful is False
    assert g.drugs[0].name == "アセトアミノフェン" and g.drugs[0].label == "correct"
    d = g.to_dict()
    assert list(d) == TOP and list(d["drugs"][0]) == DRUG
    assert d == GOOD
    assert json.loads(g.to_json()) == GOOD
    assert "meta" not in d and g.meta == {"judge": "test"}


@pytest.mark.parametrize("field", TOP)
def test_missing_top_level_field_is_rejected(field):
    bad = copy.deepcopy(GOOD)
    del bad[field]
    with pytest.raises(GradeValidationError, match=f"missing field '{field}'"):
        validate_grade_dict(bad)
    with pytest.raises(GradeValidationError):
        Grade.from_dict(bad)


@pytest.mark.parametrize("field", DRUG)
def test_missing_drug_field_is_rejected(field):
    bad = copy.deepcopy(GOOD)
    del bad["drugs"][0][field]
    with pytest.raises(GradeValidationError, match=rf"drugs\[0\]: missing field '{field}'"):
        validate_grade_dict(bad)


@pytest.mark.parametrize("score", [1.01, -0.1, 2, float("nan"), float("inf")])
def test_out_of_range_scores_are_rejected(score):
    bad = copy.deepcopy(GOOD)
    bad["overall_score"] = score
    with pytest.raises(GradeValidationError, match="overall_score"):
        validate_grade_dict(bad)
    bad = copy.deepcopy(GOOD)
    bad["drugs"][0]["score"] = score
    with pytest.raises(GradeValidationError, match=r"drugs\[0\]\.score"):
        validate_grade_dict(bad)


@pytest.mark.parametrize("path, value", [
    (("overall_label",), "good"),
    (("overall_label",), "partially correct"),
    (("overall_is_harmful",), "false"),
    (("overall_score",), True),          # a bool is not a score
    (("overall_score",), "0.5"),
    (("drugs",), {}),
    (("drugs", 0, "label"), "partially_correct"),  # not a drug label
    (("drugs", 0, "is_harmful"), 0),
])
def test_wrong_types_and_labels_are_rejected(path, value):
    bad = copy.deepcopy(GOOD)
    target = bad
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(GradeValidationError):
        validate_grade_dict(bad)


def test_unknown_fields_are_rejected():
    with pytest.raises(GradeValidationError, match="unknown field 'confidence'"):
        validate_grade_dict({**GOOD, "confidence": 0.9})
    bad = copy.deepcopy(GOOD)
    bad["drugs"][0]["dose"] = "200mg"
    with pytest.raises(GradeValidationError, match="unknown field 'dose'"):
        validate_grade_dict(bad)


def test_constructing_an_invalid_grade_fails():
    with pytest.raises(GradeValidationError):
        Grade("q", "a", "correct", False, 1.5, "r", [])
    with pytest.raises(GradeValidationError):
        Grade("q", "a", "correct", False, 0.9, "r", [DrugGrade("x", "maybe", False, 0.5, "r")])
    with pytest.raises(GradeValidationError, match="missing field 'reason'"):
        Grade("q", "a", "correct", False, 0.9, "r", [{"name": "x", "label": "correct", "is_harmful": False, "score": 1.0}])


def test_reply_schema_leaves_out_inputs_and_both_are_strict():
    assert GRADE_JSON_SCHEMA["required"] == TOP
    assert REPLY_JSON_SCHEMA["required"] == TOP[2:]
    for schema in (GRADE_JSON_SCHEMA, REPLY_JSON_SCHEMA):  # what OpenAI strict structured output requires
        assert schema["additionalProperties"] is False
        drug = schema["properties"]["drugs"]["items"]
        assert drug["additionalProperties"] is False and drug["required"] == DRUG
        assert schema["properties"]["overall_label"]["enum"] == ["correct", "partially_correct", "incorrect", "unsafe"]
    # the reply schema uses only the subset every strict structured-output server accepts
    assert "minimum" not in json.dumps(REPLY_JSON_SCHEMA) and "minimum" in json.dumps(GRADE_JSON_SCHEMA)
    reply = {k: v for k, v in GOOD.items() if k not in ("question", "model_answer")}
    validate_grade_dict(reply, include_inputs=False)
    with pytest.raises(GradeValidationError):
        validate_grade_dict(reply)


def test_accuracy_threshold_is_the_seed_rule():
    assert Grade.from_dict({**GOOD, "overall_score": 0.8}).is_accurate
    assert not Grade.from_dict({**GOOD, "overall_score": 0.79}).is_accurate
