import torch

from course_lib.sft import IGNORE_INDEX, AnswerOnlyCollator, chat_prompt, encode_example


def test_loss_only_on_answer_tokens(small_model):
    _, tok = small_model
    ex = encode_example(tok, "質問です", "【結論】答えです")
    prompt_len = len(tok(chat_prompt(tok, "質問です"), add_special_tokens=False)["input_ids"])
    labels, ids = ex["labels"], ex["input_ids"]
    assert labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert all(l != IGNORE_INDEX for l in labels[prompt_len:])
    # the answer part decodes back to the response followed by the end-of-turn token
    assert tok.decode(ids[prompt_len:]) == "【結論】答えです<|im_end|>\n"


def test_truncation_keeps_ids_and_labels_aligned(small_model):
    _, tok = small_model
    ex = encode_example(tok, "長い質問" * 20, "答え" * 50, max_length=30)
    assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"]) == 30


def test_collator_pads_dynamically(small_model):
    _, tok = small_model
    a = encode_example(tok, "短い", "はい")
    b = encode_example(tok, "もう少し長い質問文です", "いいえ、違います")
    batch = AnswerOnlyCollator(tok.pad_token_id)([a, b])
    longest = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == (2, longest)  # padded to the batch, not to max_length
    short = 0 if len(a["input_ids"]) < len(b["input_ids"]) else 1
    n = min(len(a["input_ids"]), len(b["input_ids"]))
    assert torch.all(batch["labels"][short, n:] == IGNORE_INDEX)
    assert torch.all(batch["attention_mask"][short, n:] == 0)
    assert torch.all(batch["input_ids"][short, n:] == tok.pad_token_id)


# ----------------------------------------------------------------------------- issue 19: mutation-checked
# The same functions on a character-level fake tokenizer, so that every id and label can be written out by hand.

class CharTokenizer:
    """One id per character (its code point); a ChatML-like template; records how it was called."""

    eos_token = "<E>"
    pad_token_id = 0

    def __init__(self):
        self.template_calls = []
        self.encode_calls = []

    def apply_chat_template(self, messages, **kw):
        self.template_calls.append((messages, kw))
        return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[a]"

    def __call__(self, text, **kw):
        self.encode_calls.append(kw)
        return {"input_ids": [ord(c) for c in text]}


def _ids(text):
    return [ord(c) for c in text]


def test_chat_prompt_messages_and_template_flags():
    tok = CharTokenizer()
    assert chat_prompt(tok, "Q") == "[user]Q[a]"
    assert chat_prompt(tok, "Q", system="S") == "[system]S[user]Q[a]"
    assert chat_prompt(tok, "Q", system="") == "[user]Q[a]"  # an empty system prompt is none
    assert tok.template_calls[1][0] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    for _, kw in tok.template_calls:
        assert kw == {"tokenize": False, "add_generation_prompt": True, "enable_thinking": False}


def test_encode_example_by_hand():
    from course_lib.sft import answer_suffix

    tok = CharTokenizer()
    assert answer_suffix(tok) == "<E>\n"
    ex = encode_example(tok, "Q", "ok", system="S")
    prompt = _ids("[system]S[user]Q[a]")
    answer = _ids("ok<E>\n")
    assert ex == {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                  "attention_mask": [1] * (len(prompt) + len(answer))}
    assert IGNORE_INDEX == -100
    assert all(kw == {"add_special_tokens": False} for kw in tok.encode_calls)
    cut = encode_example(tok, "Q", "ok", max_length=12)  # "[user]Q[a]" is 10 characters
    assert cut == {"input_ids": _ids("[user]Q[a]ok"), "labels": [-100] * 10 + _ids("ok"), "attention_mask": [1] * 12}


def test_encode_example_default_max_length_is_512():
    tok = CharTokenizer()
    ex = encode_example(tok, "Q", "x" * 600)
    assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"]) == 512


def test_encode_dataset_passes_system_and_max_length():
    from course_lib.sft import encode_dataset

    tok = CharTokenizer()
    records = [{"prompt": "Q", "response": "ok", "id": 1}, {"prompt": "R", "response": "no"}]
    out = encode_dataset(tok, records, system="S", max_length=21)
    assert out == [encode_example(tok, "Q", "ok", "S", 21), encode_example(tok, "R", "no", "S", 21)]
    assert len(out[0]["input_ids"]) == 21  # "[system]S[user]Q[a]" is 19 characters, then "ok"
    assert encode_dataset(tok, records[:1]) == [encode_example(tok, "Q", "ok")]
    assert len(encode_dataset(tok, [{"prompt": "Q", "response": "x" * 600}])[0]["input_ids"]) == 512


def test_collator_by_hand():
    batch = AnswerOnlyCollator(pad_token_id=7)([
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "attention_mask": [1, 1, 1]},
        {"input_ids": (4,), "labels": (4,), "attention_mask": (1,)},
    ])
    assert list(batch) == ["input_ids", "labels", "attention_mask"]
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())
