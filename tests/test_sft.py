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
