"""Supervised fine-tuning data: chat formatting, tokenisation with the loss on the
answer only, and a collator that pads each batch to its own longest example."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

IGNORE_INDEX = -100  # label value that the cross-entropy loss skips


def chat_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """The text the model sees before it starts answering (ends with the assistant header).

    ``enable_thinking=False`` turns off Qwen3's thinking block; templates that do not
    know the flag (the tiny model's) ignore it.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)


def answer_suffix(tokenizer) -> str:
    """What ends an assistant turn: the end-of-turn token, then a newline (ChatML)."""
    return tokenizer.eos_token + "\n"


def encode_example(tokenizer, prompt: str, response: str, system: str | None = None, max_length: int = 512) -> dict:
    """Token ids and labels for one (prompt, response) pair.

    Prompt and answer are tokenised separately and concatenated, so the boundary
    is exact; prompt positions get label -100 and do not count in the loss.
    """
    prompt_ids = tokenizer(chat_prompt(tokenizer, prompt, system), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(response + answer_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)}


def encode_dataset(tokenizer, records: Sequence[dict], system: str | None = None, max_length: int = 512) -> list[dict]:
    """Encode records that have ``prompt`` and ``response`` fields."""
    return [encode_example(tokenizer, r["prompt"], r["response"], system, max_length) for r in records]


@dataclass
class AnswerOnlyCollator:
    """Pads a batch to its longest example (right padding, labels padded with -100)."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            gap = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * gap)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * gap)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * gap)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
