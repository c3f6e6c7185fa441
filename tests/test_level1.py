"""Level 1 (``course_lib.level1``): the dataset and the answer-format helpers.

Checks of the executed lesson page are in ``tests/lessons/test_level1_lesson.py``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_lib.data import DatasetError
from course_lib.level1 import (
    LEVEL1_DIR,
    LEVEL1_FORMAT,
    follows_format,
    format_match_rate,
    load_level1,
    load_level1_split,
)

GOOD = "【結論】米の中心まで水を吸わせるためです。\n【理由】浸しておくと熱が均一に通ります。"


# --- the shipped dataset -------------------------------------------------------------

def test_dataset_loads_with_expected_sizes_and_ids():
    train, heldout = load_level1()
    assert len(train) == 60 and len(heldout) == 20
    assert [r["id"] for r in train] == [f"l1-train-{i:03d}" for i in range(1, 61)]
    assert [r["id"] for r in heldout] == [f"l1-heldout-{i:03d}" for i in range(1, 21)]


def test_dataset_records_have_exactly_the_schema_fields():
    train, heldout = load_level1()
    for r in train + heldout:
        assert set(r) == {"id", "prompt", "response"}
        assert all(isinstance(v, str) and v.strip() for v in r.values())


def test_every_reference_answer_follows_the_format():
    train, heldout = load_level1()
    assert format_match_rate([r["response"] for r in train + heldout]) == 1.0


def test_heldout_prompts_are_new():
    train, heldout = load_level1()
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}


def test_format_regex_is_the_one_in_the_readme():
    readme = (LEVEL1_DIR / "README.md").read_text(encoding="utf-8")
    assert f"\n{LEVEL1_FORMAT.pattern}\n" in readme


# --- validation errors name the file, the line and the field -------------------------

def _write(folder: Path, split: str, records: list[dict], blank_first: bool = False) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    text = ("\n" if blank_first else "") + "\n".join(lines) + "\n"
    (folder / f"{split}.jsonl").write_text(text, encoding="utf-8")


def _record(split: str, n: int, prompt: str | None = None, response: str = GOOD) -> dict:
    return {"id": f"l1-{split}-{n:03d}", "prompt": prompt or f"{split} の質問 {n} は何ですか。", "response": response}


def test_bad_response_format_is_reported_with_file_line_and_field(tmp_path):
    bad = _record("train", 2, response="【結論】一行だけです。")
    _write(tmp_path, "train", [_record("train", 1), bad], blank_first=True)
    with pytest.raises(DatasetError) as info:
        load_level1_split("train", tmp_path)
    assert info.value.line == 3  # a blank first line, then two records
    assert info.value.field == "response"
    assert str(tmp_path / "train.jsonl") in str(info.value)


def test_id_from_the_wrong_split_is_rejected(tmp_path):
    _write(tmp_path, "heldout", [_record("heldout", 1), _record("train", 2)])
    with pytest.raises(DatasetError) as info:
        load_level1_split("heldout", tmp_path)
    assert (info.value.line, info.value.field) == (2, "id")


def test_unknown_field_is_rejected_by_the_schema(tmp_path):
    _write(tmp_path, "train", [{**_record("train", 1), "source": "web"}])
    with pytest.raises(DatasetError) as info:
        load_level1_split("train", tmp_path)
    assert info.value.field == "source"


def test_heldout_prompt_seen_in_train_is_rejected(tmp_path):
    _write(tmp_path, "train", [_record("train", 1, prompt="同じ質問ですか。")])
    _write(tmp_path, "heldout", [_record("heldout", 1), _record("heldout", 2, prompt="同じ質問ですか。")])
    with pytest.raises(DatasetError) as info:
        load_level1(tmp_path)
    assert (info.value.line, info.value.field) == (2, "prompt")


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="split"):
        load_level1_split("test")


# --- the format check ------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    GOOD,
    "【結論】十文字です。\n【理由】" + "あ" * 56,  # 10 and 60 characters: both bounds allowed
])
def test_follows_format_accepts_two_labelled_lines(text):
    assert follows_format(text)


@pytest.mark.parametrize("text", [
    "【結論】米の中心まで水を吸わせるためです。",  # one line
    GOOD + "\n【理由】もう一行あります。",  # three lines
    "【理由】浸しておくと熱が均一に通ります。\n【結論】米の中心まで水を吸わせるためです。",  # order swapped
    "結論：米の中心まで水を吸わせるためです。\n理由：浸しておくと熱が均一に通ります。",  # other labels
    GOOD + "\n",  # a trailing newline
    " " + GOOD,  # something before the first label
    "【結論】短い。\n【理由】浸しておくと熱が均一に通ります。",  # first line under 10 characters
    "【結論】米の中心まで水を吸わせるためです。\n【理由】" + "あ" * 57,  # second line over 60 characters (cut off)
    "",
    None,
])
def test_follows_format_rejects_other_shapes(text):
    assert not follows_format(text)


def test_line_bounds_can_be_changed():
    long_answer = "【結論】米の中心まで水を吸わせるためです。\n【理由】" + "あ" * 57
    assert follows_format(long_answer, line_chars=(1, 100))


def test_format_match_rate_counts_the_fraction():
    assert format_match_rate([GOOD, "だめな答え", GOOD, GOOD]) == 0.75
    assert format_match_rate(["だめな答え"]) == 0.0


def test_format_match_rate_refuses_empty_and_single_string():
    with pytest.raises(ValueError):
        format_match_rate([])
    with pytest.raises(TypeError):
        format_match_rate(GOOD)


def test_regex_alone_would_accept_a_cut_off_answer():
    # Why the line-length bound exists: an answer cut at max_new_tokens still matches the pattern.
    runaway = "【結論】米の中心まで水を吸わせるためです。\n【理由】" + "あ" * 90
    assert re.fullmatch(LEVEL1_FORMAT, runaway)
    assert not follows_format(runaway)

