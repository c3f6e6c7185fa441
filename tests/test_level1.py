"""Level 1 (``course_lib.level1``): the dataset and the answer-format helpers; perplexity
(``course_lib.perplexity``, shared with level 3) on constructed models.

Checks of the executed lesson page are in ``tests/lessons/test_level1_lesson.py``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from course_lib.perplexity import perplexity

from course_lib.data import DatasetError
from course_lib.level1 import (
    LEVEL1_DIR,
    LEVEL1_FORMAT,
    follows_format,
    format_match_rate,
    format_steps,
    load_level1,
    load_level1_split,
    load_level1_test,
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


def test_test_split_loads_with_its_own_ids_and_new_prompts():
    train, heldout = load_level1()
    test = load_level1_test()
    assert [r["id"] for r in test] == [f"l1-test-{i:03d}" for i in range(1, 21)]
    assert format_match_rate([r["response"] for r in test]) == 1.0
    assert not {r["prompt"] for r in test} & {r["prompt"] for r in train + heldout}
    assert not {r["response"] for r in test} & {r["response"] for r in train + heldout}


def test_readme_lists_every_split_file():
    readme = (LEVEL1_DIR / "README.md").read_text(encoding="utf-8")
    for name in ("train.jsonl", "heldout.jsonl", "test.jsonl"):
        assert f"`{name}`" in readme


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


def test_test_prompt_seen_in_heldout_is_rejected(tmp_path):
    _write(tmp_path, "train", [_record("train", 1)])
    _write(tmp_path, "heldout", [_record("heldout", 1, prompt="同じ質問ですか。")])
    _write(tmp_path, "test", [_record("test", 1), _record("test", 2, prompt="同じ質問ですか。")])
    with pytest.raises(DatasetError) as info:
        load_level1_test(tmp_path)
    assert (info.value.line, info.value.field) == (2, "prompt")
    assert "heldout.jsonl" in str(info.value)


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="split"):
        load_level1_split("dev")


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


def test_format_steps_count_each_step_on_constructed_answers():
    answers = [GOOD,  # all three steps
               "【結論】米を研ぎます。",  # one line: step 1 only
               "前置き\n【理由】" + "あ" * 12,  # no 【結論】: step 2 only
               "【結論】米を研ぎます。\n【理由】" + "あ" * 90]  # both labels, second line too long: steps 1 and 2
    assert format_steps(answers) == {"n": 4, "line1_ok": 3, "line2_ok": 3, "format_ok": 1,
                                     "line1_rate": 0.75, "line2_rate": 0.75, "format_rate": 0.25}
    with pytest.raises(ValueError):
        format_steps([])
    with pytest.raises(TypeError):
        format_steps(GOOD)


def test_regex_alone_would_accept_a_cut_off_answer():
    # Why the line-length bound exists: an answer cut at max_new_tokens still matches the pattern.
    runaway = "【結論】米の中心まで水を吸わせるためです。\n【理由】" + "あ" * 90
    assert re.fullmatch(LEVEL1_FORMAT, runaway)
    assert not follows_format(runaway)



# --- perplexity on constructed models ---------------------------------------------------

class _FixedLogits(torch.nn.Module):
    """A stand-in language model: ``logits_for(input_ids)`` decides every prediction."""

    def __init__(self, vocab_size: int, logits_for):
        super().__init__()
        self.vocab_size, self.logits_for = vocab_size, logits_for
        self.unused = torch.nn.Parameter(torch.zeros(1))  # perplexity() reads the device from here

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits_for(input_ids))


class _CharTokenizer:
    """One token per character, ids from a fixed alphabet."""

    pad_token_id = 0

    def __init__(self, alphabet: str):
        self.ids = {ch: i + 1 for i, ch in enumerate(alphabet)}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.ids[ch] for ch in text]}


TEXTS = ["あいうえお", "かきくけこさし", "たち"]  # different lengths, so batches are padded
VOCAB = 50


def test_uniform_logits_give_perplexity_equal_to_vocab_size():
    model = _FixedLogits(VOCAB, lambda ids: torch.zeros(*ids.shape, VOCAB))
    tok = _CharTokenizer("".join(TEXTS))
    assert perplexity(model, tok, TEXTS) == pytest.approx(VOCAB, rel=1e-6)
    assert perplexity(model, tok, TEXTS, batch_size=1) == pytest.approx(VOCAB, rel=1e-6)


def test_a_model_that_knows_the_next_token_scores_one():
    # Text where the next id is always the current id + 1; the model puts all its weight there.
    alphabet = "".join(chr(ord("ア") + i) for i in range(20))
    tok = _CharTokenizer(alphabet)
    model = _FixedLogits(VOCAB, lambda ids: 50.0 * torch.nn.functional.one_hot(ids + 1, VOCAB).float())
    assert perplexity(model, tok, [alphabet[:7], alphabet[3:15]]) == pytest.approx(1.0, abs=1e-6)


def test_perplexity_is_exp_of_the_mean_over_all_predicted_tokens():
    # Probability 1/2 on the right token at every position: perplexity 2, however the texts are batched.
    alphabet = "".join(chr(ord("ア") + i) for i in range(20))
    tok = _CharTokenizer(alphabet)
    half = math.log(VOCAB - 1)  # logit that gives the right token 1/2 when the other 49 have logit 0

    def logits_for(ids):
        return half * torch.nn.functional.one_hot(ids + 1, VOCAB).float()

    model = _FixedLogits(VOCAB, logits_for)
    for batch_size in (1, 2, 8):
        assert perplexity(model, tok, [alphabet[:4], alphabet[2:12]], batch_size=batch_size) == pytest.approx(2.0, rel=1e-5)


def test_max_length_cuts_each_text():
    # Right predictions on the first 3 tokens, hopeless ones after: cutting to 4 tokens keeps only the right ones.
    alphabet = "".join(chr(ord("ア") + i) for i in range(20))
    tok = _CharTokenizer(alphabet)

    def logits_for(ids):
        good = 50.0 * torch.nn.functional.one_hot(ids + 1, VOCAB).float()
        bad = 50.0 * torch.nn.functional.one_hot(torch.zeros_like(ids), VOCAB).float()
        positions = torch.arange(ids.shape[1]).view(1, -1, 1)
        return torch.where(positions < 3, good, bad)

    model = _FixedLogits(VOCAB, logits_for)
    assert perplexity(model, tok, [alphabet[:10]], max_length=4) == pytest.approx(1.0, abs=1e-6)
    assert perplexity(model, tok, [alphabet[:10]], max_length=10) > 100


def test_perplexity_refuses_a_single_string_and_too_short_texts():
    model = _FixedLogits(VOCAB, lambda ids: torch.zeros(*ids.shape, VOCAB))
    tok = _CharTokenizer("あい")
    with pytest.raises(TypeError):
        perplexity(model, tok, "あい")
    with pytest.raises(ValueError):
        perplexity(model, tok, ["あ", ""])


def test_perplexity_of_a_real_model_does_not_depend_on_batching(small_model):
    model, tokenizer = small_model
    texts = ["今日は天気が良いので散歩に行きます。", "モデル", "学習率を小さくすると、損失はゆっくり下がります。"]
    one_by_one = perplexity(model, tokenizer, texts, batch_size=1)
    batched = perplexity(model, tokenizer, texts, batch_size=3)
    assert batched == pytest.approx(one_by_one, rel=1e-4)
    assert 1.0 < batched < len(tokenizer) * 10
    assert not model.training
