"""Perplexity on general Japanese text: how much a fine-tune forgets outside its task.

Levels 1 and 3 measure the same thing: the base model's perplexity on a fixed slice of the
course's general corpus (``datasets/pretrain``), then the fine-tuned model's. The slice is
held out from every fine-tuning set (the tiny model saw it during pre-training, as a real
base model saw general text): a rise after fine-tuning is forgetting.
"""
from __future__ import annotations

import math
from typing import Sequence

from .timing import timed_function

GENERAL_TEXT_EVERY = 10  # every 10th paragraph of the corpus, starting with the first


def general_text(every: int = GENERAL_TEXT_EVERY) -> list[str]:
    """The fixed slice of general Japanese text (paragraphs of ``datasets/pretrain``)."""
    from .tiny_model import read_corpus

    return read_corpus()[::every]


@timed_function("perplexity")
def perplexity(model, tokenizer, texts: Sequence[str], max_length: int = 128, batch_size: int = 8) -> float:
    """Perplexity of ``model`` on ``texts``: exp of the mean negative log-probability per token.

    Each text is tokenised on its own (no special tokens) and cut to ``max_length``
    tokens; every token after the first is predicted from the tokens before it, and
    the mean runs over all predicted tokens of all texts. A model that spreads its
    probability evenly over a vocabulary of V tokens scores exactly V; lower is better.
    """
    import torch

    if isinstance(texts, str):
        raise TypeError("perplexity expects a list of texts, not a single string")
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    encoded = [ids for ids in encoded if len(ids) >= 2]  # one token alone predicts nothing
    if not encoded:
        raise ValueError("perplexity needs at least one text of two or more tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            longest = max(len(ids) for ids in chunk)
            input_ids = torch.tensor([ids + [pad_id] * (longest - len(ids)) for ids in chunk], device=device)
            mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in chunk], device=device)
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:]
            nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counted = mask[:, 1:].bool()
            total_nll += float(nll[counted].sum())
            total_tokens += int(counted.sum())
    finally:
        if was_training:
            model.train()
    return math.exp(total_nll / total_tokens)
