"""Batched text generation: many prompts, N samples each, in a few ``generate`` calls."""
from __future__ import annotations

from typing import Sequence

import torch

from .progress import progress_bar
from .sft import chat_prompt
from .timing import timed_function


@timed_function("generate")
@torch.no_grad()
def sample_answers(model, tokenizer, prompts: Sequence[str], n: int = 1, temperature: float = 0.7, top_p: float = 0.9,
                   max_new_tokens: int = 128, batch_size: int = 64, seed: int = 0, system: str | None = None,
                   progress: bool = True, desc: str = "generating") -> list[list[str]]:
    """Return ``n`` answers for every prompt (a list per prompt, in order).

    All prompt × sample pairs are generated in batches with left padding, so a
    batch of 64 costs little more than one sample. ``temperature=0`` is greedy.
    Each batch is seeded from ``seed`` and its index, so results repeat exactly.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    texts = [chat_prompt(tokenizer, p, system) for p in prompts]
    jobs = [(i, texts[i]) for i in range(len(texts)) for _ in range(n)]
    results: list[list[str]] = [[] for _ in prompts]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the answer must start right after each prompt
    try:
        batches = range(0, len(jobs), batch_size)
        for b, start in enumerate(progress_bar(batches, enabled=progress, desc=desc, unit="batch")):
            chunk = jobs[start : start + batch_size]
            enc = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed * 100_003 + b)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            out = model.generate(**enc, **kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            for (i, _), text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                results[i].append(text.strip())
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return results


def answer(model, tokenizer, prompt: str, max_new_tokens: int = 128, system: str | None = None) -> str:
    """One greedy answer: what lessons show before and after training."""
    return sample_answers(model, tokenizer, [prompt], n=1, temperature=0, max_new_tokens=max_new_tokens,
                          system=system, progress=False)[0][0]
