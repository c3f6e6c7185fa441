"""What a LoRA run costs: time per step and peak memory against ``lora_r`` and sequence length.

The measurement trains a few steps per (``lora_r``, sequence length) pair through
:func:`~course_lib.level2.sweep.run_sweep`, on batches made exactly that long.

For Qwen3-0.6B the parameter count needs no training and no download: its
``config.json`` values (``QWEN3_0_6B``) build the model's skeleton on the
``meta`` device, and :func:`course_lib.lora.lora_parameter_count` does the rest.
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch
from transformers import TrainerCallback

from ..lora import ALL_PROJ_MODULES
from .sweep import run_sweep

# Qwen/Qwen3-0.6B config.json values that decide the LoRA shapes.
QWEN3_0_6B = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
    max_position_embeddings=40960,
)


def qwen3_0_6b_skeleton():
    """Qwen3-0.6B with the real shapes on the 'meta' device: no weights, no download, no memory."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**QWEN3_0_6B)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


class StepTimer(TrainerCallback):
    """Trainer callback: wall time of every optimizer step of the current run."""

    def __init__(self):
        self.durations: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.durations = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._start)

    def median(self) -> float:
        """Median step time, leaving out the first step (it pays one-time set-up costs)."""
        steps = self.durations[1:] or self.durations
        return float(pd.Series(steps).median()) if steps else float("nan")


def long_records(tokenizer, records: Sequence[dict], min_tokens: int, n: int = 8) -> list[dict]:
    """``n`` records whose answers are at least ``min_tokens`` tokens long: truncating them to
    ``max_length`` gives batches of exactly that length (for timing, not for learning)."""
    text = "\n".join(r["response"] for r in records)
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < min_tokens:
        text = text + "\n" + text
    return [{"prompt": records[i % len(records)]["prompt"], "response": text} for i in range(n)]


def measure_cost(base_model, tokenizer, records: Sequence[dict], ranks: Sequence[int], seq_lengths: Sequence[int],
                 steps: int = 3, batch_size: int = 4, target_modules: Sequence[str] = ALL_PROJ_MODULES,
                 progress: bool = True, seed: int = 0) -> pd.DataFrame:
    """Time per training step and peak memory for every (``lora_r``, sequence length) pair.

    Each pair trains ``steps`` steps on batches of exactly ``seq_len`` tokens. One
    warm-up run first pays the one-time costs so that they do not land on the first pair.
    Columns: lora_r, seq_len, tokens_per_step, trainable_params, seconds, sec_per_step, peak_memory_mb.
    """
    data = long_records(tokenizer, records, max(seq_lengths), n=batch_size * steps)
    common = dict(max_steps=steps, per_device_train_batch_size=batch_size, target_modules=tuple(target_modules))
    run_sweep(base_model, tokenizer, [dict(lora_r=min(ranks), max_length=min(seq_lengths))], data, None,
              progress=False, defaults=common, seed=seed)  # warm-up, not recorded
    timer = StepTimer()
    pairs = [(r, L) for r in ranks for L in seq_lengths]
    configs = [dict(lora_r=r, lora_alpha=2 * r, max_length=L, name=f"r={r}, L={L}") for r, L in pairs]
    table = run_sweep(base_model, tokenizer, configs, data, None, progress=progress, defaults=common, seed=seed,
                      desc="cost", callbacks=[timer], evaluate=lambda model, tok: {"sec_per_step": timer.median()})
    out = pd.DataFrame(table)[["lora_r", "trainable_params", "seconds", "sec_per_step", "peak_memory_mb"]].copy()
    out.insert(1, "seq_len", [L for _, L in pairs])
    out.insert(2, "tokens_per_step", out["seq_len"] * batch_size)
    return out
