"""Training with the Hugging Face ``Trainer``: one call, a loss history back.

The same ``Trainer`` runs under ``accelerate launch`` / ``torchrun`` on several
GPUs, so this code scales without changes.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pandas as pd
import torch

from .sft import AnswerOnlyCollator, encode_dataset
from .timing import timed


@dataclass
class TrainConfig:
    """Training settings, named as in ``transformers.TrainingArguments`` (the names learners meet everywhere)."""

    num_train_epochs: float = 3.0
    learning_rate: float = 2e-4
    per_device_train_batch_size: int = 4
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"  # "linear" | "cosine" | "constant_with_warmup" | "constant"
    weight_decay: float = 0.0
    max_length: int = 512
    eval_steps: int | None = None  # evaluate every N steps; None = once per epoch
    early_stopping_patience: int | None = None  # evaluations without improvement before stopping
    early_stopping_threshold: float = 0.0
    max_steps: int = -1  # > 0 overrides epochs
    gradient_accumulation_steps: int = 1
    seed: int = 0
    system: str | None = None  # optional system prompt for every example


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per logged step: step, epoch, loss / eval_loss, learning_rate
    seconds: float
    steps: int
    peak_memory_mb: float  # GPU: max allocated; CPU: peak growth of the process RSS
    config: dict = field(default_factory=dict)

    @property
    def train_loss(self) -> pd.DataFrame:
        return self.history.dropna(subset=["loss"])[["step", "epoch", "loss"]]

    @property
    def eval_loss(self) -> pd.DataFrame:
        if "eval_loss" not in self.history:
            return pd.DataFrame(columns=["step", "epoch", "eval_loss"])
        return self.history.dropna(subset=["eval_loss"])[["step", "epoch", "eval_loss"]]

    @property
    def final_loss(self) -> float:
        return float(self.train_loss["loss"].iloc[-1])

    @property
    def best_eval_loss(self) -> float:
        return float(self.eval_loss["eval_loss"].min()) if len(self.eval_loss) else float("nan")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak memory while a block runs: CUDA allocator peak, or sampled RSS growth on CPU."""

    def __init__(self, device: str):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif os.path.exists("/proc/self/statm"):
            self._start, self._stop = _rss_mb(), threading.Event()
            self._peak = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss_mb())

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._peak, _rss_mb()) - self._start
        return False


def training_arguments(config: TrainConfig, out_dir: str, eval_strategy: str, device: str, bf16: bool,
                       progress: bool, fp16: bool = False):
    """``TrainingArguments`` for :func:`train`: the config's fields under their own names, plus
    what the course always wants (a log line per step, no reporting, no checkpoints unless
    early stopping needs the best one back). ``bf16`` / ``fp16``: mixed precision that matches
    the base model's dtype (fp16 on a GPU without bf16, such as Colab's T4)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out_dir,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=max(config.per_device_train_batch_size, 8),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        logging_steps=1,
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps,
        # Early stopping restores the best checkpoint, so it needs saving on the eval schedule.
        save_strategy=eval_strategy if config.early_stopping_patience else "no",
        save_steps=config.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=bool(config.early_stopping_patience),
        metric_for_best_model="eval_loss" if config.early_stopping_patience else None,
        greater_is_better=False,
        report_to="none",
        disable_tqdm=not progress,
        seed=config.seed,
        data_seed=config.seed,
        bf16=bf16,
        fp16=fp16,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        save_only_model=True,
    )


def train(model, tokenizer, train_records: Sequence[dict], val_records: Sequence[dict] | None = None,
          config: TrainConfig = TrainConfig(), callbacks: Sequence = (), progress: bool = False) -> TrainResult:
    """Fine-tune ``model`` (usually a PEFT model) on records with ``prompt``/``response``.

    The loss is computed on the answer tokens only. Returns the loss history.
    """
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer

    train_ds = encode_dataset(tokenizer, train_records, config.system, config.max_length)
    val_ds = encode_dataset(tokenizer, val_records, config.system, config.max_length) if val_records else None
    if config.early_stopping_patience and not val_ds:
        raise ValueError("early stopping needs validation records (val_records)")

    device = next(model.parameters()).device.type
    eval_strategy = "no" if val_ds is None else ("steps" if config.eval_steps else "epoch")
    with tempfile.TemporaryDirectory(prefix="course-train-") as out_dir:
        dtype = next(model.parameters()).dtype
        args = training_arguments(config, out_dir, eval_strategy, device, bf16=dtype == torch.bfloat16,
                                  fp16=dtype == torch.float16, progress=progress)
        cbs = list(callbacks)
        if config.early_stopping_patience:
            cbs.append(EarlyStoppingCallback(config.early_stopping_patience, config.early_stopping_threshold))
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            data_collator=AnswerOnlyCollator(tokenizer.pad_token_id),
            callbacks=cbs,
        )
        if not progress:
            trainer.remove_callback(PrinterCallback)  # without tqdm it would print every log dict
        start = time.perf_counter()
        with PeakMemory(device) as mem, timed("train"):
            trainer.train()
        seconds = time.perf_counter() - start
    model.eval()
    rows = [
        {k: v for k, v in entry.items() if k in ("step", "epoch", "loss", "eval_loss", "learning_rate")}
        for entry in trainer.state.log_history
        if "loss" in entry or "eval_loss" in entry
    ]
    history = pd.DataFrame(rows, columns=["step", "epoch", "loss", "eval_loss", "learning_rate"])
    return TrainResult(history, seconds, trainer.state.global_step, mem.peak_mb, asdict(config))
