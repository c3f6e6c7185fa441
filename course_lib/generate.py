"""Batched text generation: many prompts, N samples each, decoded together with a KV cache.

``sample_answers`` samples as ``model.generate(do_sample=True, temperature=..., top_p=..., top_k=0)``
does (greedy at ``temperature=0``), in a short loop of its own (``decode_batch``) that wastes less
on a CPU:

- a sequence that has written its end-of-turn token leaves the batch (its rows of the KV cache are
  dropped), so one long answer no longer keeps 127 finished ones decoding padding;
- the KV cache is written in place (``PreallocatedLayer``) instead of being copied with every token,
  and only the last position's logits are computed;
- the next token is drawn by inverting the cumulative distribution (``pick_next_tokens``) with one
  uniform number from the answer's own generator (seeded from ``seed`` and the answer's place in the
  job list), so an answer does not depend on ``batch_size`` or on which other answers share its
  batch, and a seed repeats exactly.

A test checks that its greedy answers equal ``model.generate``'s.
"""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from .progress import progress_bar
from .sft import chat_prompt
from .timing import timed_function


def answer_generators(seed: int, first: int, count: int) -> list[torch.Generator]:
    """One random generator per answer: answer ``j`` of a call with ``seed`` always draws the same numbers."""
    return [torch.Generator().manual_seed(seed * 100_003 + j) for j in range(first, first + count)]


def pick_next_tokens(logits: torch.Tensor, uniforms: torch.Tensor | None, temperature: float, top_p: float) -> torch.Tensor:
    """The next token of every row: greedy when ``uniforms`` is None, else sampled with temperature and top-p.

    Sampling inverts the cumulative distribution at one uniform number per row (``uniforms``, in
    [0, 1)), which picks token ``i`` with probability ``p_i``, as ``torch.multinomial`` would, at a
    fraction of its cost. Top-p keeps the most likely tokens until their mass reaches ``top_p``
    (always at least one), as Transformers' ``TopPLogitsWarper`` does.
    """
    if uniforms is None:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)
    cdf = probs.cumsum(dim=-1)
    # the first token whose cumulative mass exceeds u × total (never one of zero probability)
    picked = torch.searchsorted(cdf, (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1), right=True)
    picked = picked.clamp_(max=cdf.shape[-1] - 1).squeeze(-1)
    return picked if order is None else order.gather(-1, picked.unsqueeze(-1)).squeeze(-1)


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes each new key and value into room reserved at the start.

    ``DynamicLayer`` concatenates the whole cache with every new token (a copy that grows with the
    answer); here ``keys``/``values`` are views of one buffer sized for the prompt plus every new token.
    """

    def __init__(self, new_tokens: int):
        super().__init__()
        self.room = new_tokens

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.is_initialized, self.device, self.length = True, key_states.device, 0
            b, h, n, d = key_states.shape
            self.key_buffer = key_states.new_empty(b, h, n + self.room, d)
            self.value_buffer = value_states.new_empty(b, h, n + self.room, d)
        n = key_states.shape[-2]
        self.key_buffer[:, :, self.length:self.length + n] = key_states
        self.value_buffer[:, :, self.length:self.length + n] = value_states
        self.length += n
        self.keys, self.values = self.key_buffer[:, :, :self.length], self.value_buffer[:, :, :self.length]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self.keys, self.values = self.key_buffer[:, :, :self.length], self.value_buffer[:, :, :self.length]


def cache_keyword(model) -> str:
    """The name under which ``forward`` takes the KV cache: ``cache`` in newer Transformers 5.x, else ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def decode_batch(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, eos_token_id: int,
                 pad_token_id: int, uniforms: torch.Tensor | None = None, temperature: float = 1.0,
                 top_p: float = 1.0) -> torch.Tensor:
    """New tokens for a left-padded batch, ``pad_token_id`` after each row's end-of-turn token.

    ``uniforms`` (rows × ``max_new_tokens``) are the random numbers of sampling, None for greedy.
    Rows that have ended are removed from the batch and from the KV cache before the next step.
    """
    with torch.no_grad():  # a context, not a decorator, so that mutmut mutates this function too
        rows = input_ids.shape[0]
        new_tokens = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=input_ids.device)
        alive = torch.arange(rows, device=input_ids.device)  # which original rows are still writing
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
        cache = Cache(layer_class_to_replicate=lambda: PreallocatedLayer(max_new_tokens))
        # logits_to_keep=1: only the last position's logits are used (each prompt position would cost a vocab-wide matmul)
        step_kwargs = {cache_keyword(model): cache, "use_cache": True, "logits_to_keep": 1}
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, **step_kwargs)
        next_position = positions[:, -1] + 1
        for step in range(max_new_tokens):
            u = None if uniforms is None else uniforms[alive.cpu(), step]
            token = pick_next_tokens(out.logits[:, -1, :], u, temperature, top_p)
            new_tokens[alive, step] = token
            if step == max_new_tokens - 1:
                break
            writing = token != eos_token_id
            if not writing.all():
                keep = writing.nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                alive, token, next_position = alive[keep], token[keep], next_position[keep]
                attention_mask = attention_mask[keep]
                cache.batch_select_indices(keep)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(alive), 1)], dim=-1)
            out = model(input_ids=token.unsqueeze(-1), attention_mask=attention_mask, position_ids=next_position.unsqueeze(-1),
                        **step_kwargs)
            next_position = next_position + 1
        return new_tokens


@timed_function("generate")
@torch.no_grad()
def sample_answers(model, tokenizer, prompts: Sequence[str], n: int = 1, temperature: float = 0.7, top_p: float = 0.9,
                   max_new_tokens: int = 128, batch_size: int = 64, seed: int = 0, system: str | None = None,
                   progress: bool = True, desc: str = "generating") -> list[list[str]]:
    """Return ``n`` answers for every prompt (a list per prompt, in order).

    All prompt × sample pairs are decoded in batches of ``batch_size`` with left
    padding (see ``decode_batch``). ``temperature=0`` is greedy.
    Answer ``j`` (prompt ``j // n``, sample ``j % n``) is sampled with its own
    generator seeded from ``seed`` and ``j``, so results repeat exactly.
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
        for start in progress_bar(batches, enabled=progress, desc=desc, unit="batch"):
            chunk = jobs[start : start + batch_size]
            enc = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            uniforms = None
            if temperature > 0:
                uniforms = torch.stack([torch.rand(max_new_tokens, generator=g)
                                        for g in answer_generators(seed, start, len(chunk))])
            new_tokens = decode_batch(model, enc["input_ids"], enc["attention_mask"], max_new_tokens,
                                      tokenizer.eos_token_id, tokenizer.pad_token_id, uniforms, temperature, top_p)
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
