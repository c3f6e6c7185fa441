import json

import pytest

from course_lib.data import DatasetError, Field, load_jsonl, train_val_split, write_jsonl

SCHEMA = [Field("id", str), Field("prompt", str), Field("response", str), Field("score", float, required=False)]


def write(tmp_path, lines):
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_valid_file_loads(tmp_path):
    p = write(tmp_path, [json.dumps({"id": "a", "prompt": "質問", "response": "答え"}, ensure_ascii=False), ""])
    assert load_jsonl(p, SCHEMA) == [{"id": "a", "prompt": "質問", "response": "答え"}]


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ('{"id": "b", "prompt": "q"}', "response", "missing required field"),
        ('{"id": "b", "prompt": "q", "response": 3}', "response", "expected str, got int"),
        ('{"id": "b", "prompt": "q", "response": "  "}', "response", "must not be blank"),
        ('{"id": "b", "prompt": "q", "response": "r", "answer": "x"}', "answer", "unknown field"),
        ('{"id": "b", "prompt": "q", "response": "r", "score": true}', "score", "got bool"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, field, problem):
    good = '{"id": "a", "prompt": "q", "response": "r"}'
    p = write(tmp_path, [good, line])
    with pytest.raises(DatasetError) as err:
        load_jsonl(p, SCHEMA)
    assert err.value.line == 2 and err.value.field == field
    assert str(err.value).startswith(f"{p}:2: field '{field}':")
    assert problem in str(err.value)


def test_invalid_json_and_duplicates(tmp_path):
    p = write(tmp_path, ['{"id": "a", "prompt": "q", "response": "r"}', '{"id": "a", "prompt": "q" "response": "r"}'])
    with pytest.raises(DatasetError, match=r"data.jsonl:2: not valid JSON"):
        load_jsonl(p, SCHEMA)
    p = write(tmp_path, ['{"id": "a", "prompt": "q", "response": "r"}'] * 2)
    with pytest.raises(DatasetError, match="duplicate value 'a' \\(first seen on line 1\\)"):
        load_jsonl(p, SCHEMA)


def test_missing_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no records"):
        load_jsonl(write(tmp_path, [""]))


def test_write_jsonl_round_trip_leaves_no_tmp(tmp_path):
    records = [{"id": str(i), "prompt": "日本語", "response": "r"} for i in range(3)]
    p = write_jsonl(tmp_path / "out" / "x.jsonl", records)
    assert load_jsonl(p, SCHEMA) == records
    assert "日本語" in p.read_text(encoding="utf-8")  # not \u-escaped
    assert list(p.parent.iterdir()) == [p]


def test_split_is_seeded_and_disjoint():
    items = [{"id": i} for i in range(20)]
    train, val = train_val_split(items, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in val})
    assert train_val_split(items, 0.25, seed=3) == (train, val)
    assert train_val_split(items, 0.25, seed=4) != (train, val)


def test_with_lines_gives_file_line_numbers_past_blank_lines(tmp_path):
    p = write(tmp_path, ['{"id": "a", "prompt": "q", "response": "r"}', "", "", '{"id": "b", "prompt": "q", "response": "r"}'])
    assert [line for line, _ in load_jsonl(p, SCHEMA, with_lines=True)] == [1, 4]
    assert load_jsonl(p, SCHEMA) == [r for _, r in load_jsonl(p, SCHEMA, with_lines=True)]
