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


# ----------------------------------------------------------------------------- issue 19: mutation-checked
# The schemas and the validator's messages, written out by hand from the module docstring and the seed's
# JSON (book page `original_experiment`, §4.2).

SCORE = {"type": "number", "description": "0〜1", "minimum": 0, "maximum": 1}
DRUG_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "薬剤名（回答に書かれたとおり）"},
        "label": {"type": "string", "enum": ["correct", "incorrect", "unsafe"]},
        "is_harmful": {"type": "boolean"},
        "score": SCORE,
        "reason": {"type": "string", "description": "評価理由（日本語）"},
    },
    "required": DRUG,
    "additionalProperties": False,
}
GRADE_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "model_answer": {"type": "string"},
        "overall_label": {"type": "string", "enum": ["correct", "partially_correct", "incorrect", "unsafe"]},
        "overall_is_harmful": {"type": "boolean"},
        "overall_score": SCORE,
        "overall_reason": {"type": "string", "description": "評価理由（日本語）"},
        "drugs": {"type": "array", "items": DRUG_SCHEMA},
    },
    "required": TOP,
    "additionalProperties": False,
}


def _no_bounds(schema):
    return json.loads(json.dumps(schema).replace(', "minimum": 0, "maximum": 1', ""))


def test_grade_and_reply_json_schemas_written_out():
    from course_lib.level3.judge.schema import grade_json_schema

    assert GRADE_JSON_SCHEMA == GRADE_SCHEMA
    assert json.dumps(GRADE_JSON_SCHEMA, ensure_ascii=False) == json.dumps(GRADE_SCHEMA, ensure_ascii=False)  # key order
    reply = _no_bounds(GRADE_SCHEMA)
    del reply["properties"]["question"], reply["properties"]["model_answer"]
    reply["required"] = TOP[2:]
    assert REPLY_JSON_SCHEMA == reply
    assert grade_json_schema() == GRADE_SCHEMA  # the defaults: inputs and bounds
    assert grade_json_schema(include_inputs=False) == {**reply, "properties": {
        k: GRADE_SCHEMA["properties"][k] for k in TOP[2:]}}
    assert grade_json_schema(bounds=False) == _no_bounds(GRADE_SCHEMA)


@pytest.mark.parametrize("path, value, message", [
    ((), [1], "grade: expected a JSON object, got list"),
    (("drugs", 0), "x", "grade.drugs[0]: expected a JSON object, got str"),
    (("question",), 1, "grade.question: expected str, got int"),
    (("model_answer",), None, "grade.model_answer: expected str, got NoneType"),
    (("overall_label",), "good", "grade.overall_label: 'good' is not one of ['correct', 'partially_correct', 'incorrect', "
                                  "'unsafe']"),
    (("overall_is_harmful",), "false", "grade.overall_is_harmful: expected bool, got str"),
    (("overall_score",), True, "grade.overall_score: expected a number, got bool"),
    (("overall_score",), "0.5", "grade.overall_score: expected a number, got str"),
    (("overall_score",), 1.5, "grade.overall_score: score 1.5 is outside [0, 1]"),
    (("overall_score",), float("nan"), "grade.overall_score: score nan is outside [0, 1]"),
    (("overall_reason",), b"x", "grade.overall_reason: expected str, got bytes"),
    (("drugs",), (), "grade.drugs: expected list, got tuple"),
    (("drugs", 0, "name"), 3, "grade.drugs[0].name: expected str, got int"),
    (("drugs", 0, "label"), "partially_correct", "grade.drugs[0].label: 'partially_correct' is not one of "
                                                 "['correct', 'incorrect', 'unsafe']"),
    (("drugs", 0, "is_harmful"), 0, "grade.drugs[0].is_harmful: expected bool, got int"),
    (("drugs", 0, "score"), -0.5, "grade.drugs[0].score: score -0.5 is outside [0, 1]"),
    (("drugs", 0, "reason"), None, "grade.drugs[0].reason: expected str, got NoneType"),
])
def test_validation_messages_name_the_field(path, value, message):
    bad = copy.deepcopy(GOOD)
    if not path:
        bad = value
    else:
        target = bad
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict(bad)
    assert str(info.value) == message


def test_a_second_drug_is_checked_too():
    bad = copy.deepcopy(GOOD)
    bad["drugs"].append({**GOOD["drugs"][0], "score": 2})
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict(bad)
    assert str(info.value) == "grade.drugs[1].score: score 2 is outside [0, 1]"
    bad["drugs"][1] = {"name": "x"}
    with pytest.raises(GradeValidationError, match=r"^grade\.drugs\[1\]: missing field 'label'$"):
        validate_grade_dict(bad)


def test_bounds_ints_and_exact_messages_are_accepted_or_named():
    for score in (0, 1, 0.0, 1.0):  # both ends are in range; an int is a number
        assert validate_grade_dict({**GOOD, "overall_score": score})["overall_score"] == score
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict({**GOOD, "overall_score": float("-inf")})
    assert str(info.value) == "grade.overall_score: score -inf is outside [0, 1]"
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict({k: v for k, v in GOOD.items() if k != "drugs"})
    assert str(info.value) == "grade: missing field 'drugs'"
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict({**GOOD, "extra": 1})
    assert str(info.value) == "grade: unknown field 'extra'"
    assert isinstance(GradeValidationError("x"), ValueError)


def test_without_inputs_the_inputs_are_unknown_fields_and_not_type_checked():
    reply = {k: v for k, v in GOOD.items() if k not in ("question", "model_answer")}
    assert validate_grade_dict(reply, include_inputs=False) is reply
    with pytest.raises(GradeValidationError) as info:
        validate_grade_dict(GOOD, include_inputs=False)
    assert str(info.value) == "grade: unknown field 'question'"


def test_check_type_rejects_a_bool_where_an_int_is_expected():
    from course_lib.level3.judge.schema import _check_type

    _check_type(True, bool, "x")
    _check_type(3, int, "x")
    with pytest.raises(GradeValidationError) as info:
        _check_type(True, int, "x")
    assert str(info.value) == "x: expected int, got bool"


def test_grade_from_dicts_scores_as_floats_and_meta():
    drug = {"name": "イブ", "label": "unsafe", "is_harmful": True, "score": 0, "reason": "危険。"}
    g = Grade("q", "a", "unsafe", True, 0, "r", [drug])
    assert g.drugs == [DrugGrade("イブ", "unsafe", True, 0, "危険。")]
    d = g.to_dict()
    assert d["overall_score"] == 0.0 and type(d["overall_score"]) is float
    assert d["drugs"][0] == {"name": "イブ", "label": "unsafe", "is_harmful": True, "score": 0.0, "reason": "危険。"}
    assert type(d["drugs"][0]["score"]) is float
    assert g.meta == {} and g.unrecognised == [] and not g.is_accurate
    assert g.to_json() == ('{"question": "q", "model_answer": "a", "overall_label": "unsafe", "overall_is_harmful": true, '
                           '"overall_score": 0.0, "overall_reason": "r", "drugs": [{"name": "イブ", "label": "unsafe", '
                           '"is_harmful": true, "score": 0.0, "reason": "危険。"}]}')
    assert g.to_json(indent=1).startswith('{\n "question": "q"')  # keyword arguments reach json.dumps
    h = Grade.from_dict({**GOOD, "overall_score": 1}, meta={"unrecognised": ["ゲンキナール"]})
    assert type(h.overall_score) is float and h.is_accurate and h.unrecognised == ["ゲンキナール"]
    assert h.drugs[0] == DrugGrade("アセトアミノフェン", "correct", False, 1.0, "適切。")
    assert Grade.from_dict(GOOD).meta == {}
    meta = {"judge": "x"}
    assert Grade.from_dict(GOOD, meta=meta).meta is not meta  # a copy
    h.meta["unrecognised"].append("x")
    assert h.unrecognised == ["ゲンキナール", "x"] and h.unrecognised is not h.meta["unrecognised"]
    assert h == Grade.from_dict({**GOOD, "overall_score": 1.0})  # meta is not compared
    assert "meta" not in repr(h)


def test_judge_errors_record_what_failed():
    from course_lib.level3.judge.schema import JudgeConfigError, JudgeError

    e = JudgeError("boom", kind="timeout", question="q", answer="a", attempts=3)
    assert str(e) == "boom" and (e.message, e.kind, e.question, e.answer, e.attempts) == ("boom", "timeout", "q", "a", 3)
    assert e.to_dict() == {"error": "boom", "kind": "timeout", "question": "q", "model_answer": "a", "attempts": 3}
    d = JudgeError("x")
    assert d.to_dict() == {"error": "x", "kind": "api_error", "question": None, "model_answer": None, "attempts": 0}
    c = JudgeConfigError("no key")
    assert isinstance(c, JudgeError) and str(c) == "no key"
    assert c.to_dict() == {"error": "no key", "kind": "config", "question": None, "model_answer": None, "attempts": 0}


def test_a_drug_given_as_a_dict_is_checked_with_its_place():
    with pytest.raises(GradeValidationError) as info:
        Grade("q", "a", "correct", False, 0.9, "r", [DrugGrade("x", "correct", False, 1.0, "r"), {"name": "y"}])
    assert str(info.value) == "grade.drugs[1]: missing field 'label'"
