"""Parameter sweeps for LoRA: many short runs on ONE base model kept in memory.

Each run attaches a fresh adapter to the same base model, trains it, measures
it, and removes it again (``PeftModel.unload``), so the next run starts from the
pristine base. The base weights are checked after every run: a sweep that left
anything behind would make every later row of the table wrong.

Also here: the LoRA parameter arithmetic (``r * (in + out)`` per targeted
Linear layer), for the loaded model or for the Qwen3-0.6B shapes without
downloading any weights.
"""
from __future__ import annotations

import ctypes
import gc
import math
import time
from dataclasses import dataclass, fields
from functools import partial
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
from transformers import TrainerCallback

from .lora import ALL_PROJ_MODULES, ATTENTION_MODULES, attach_lora, targeted_linears
from .sft import AnswerOnlyCollator, encode_dataset
from .train import TrainConfig, train as train_model

LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))

# Named module sets, in growing order (seed 004 trains six projections: no down_proj).
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "q,v": ("q_proj", "v_proj"),
    "attention": ATTENTION_MODULES,
    "attention+gate,up": ATTENTION_MODULES + ("gate_proj", "up_proj"),
    "all7": ALL_PROJ_MODULES,
}

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


def modules_label(target_modules: Sequence[str]) -> str:
    """Short name of a module set: a MODULE_SETS key, or the module names without '_proj'."""
    mods = tuple(target_modules)
    for name, members in MODULE_SETS.items():
        if set(mods) == set(members):
            return name
    return ",".join(m.replace("_proj", "") for m in mods)


# --------------------------------------------------------------------------- parameter arithmetic

def lora_parameter_table(model, r: int, target_modules: Sequence[str] = ALL_PROJ_MODULES) -> pd.DataFrame:
    """One row per module type: its shape, r*(in+out) per layer, how many layers, the total."""
    rows: dict[str, dict] = {}
    for _, short, lin in targeted_linears(model, target_modules):
        row = rows.setdefault(short, {"module": short, "in_features": lin.in_features,
                                      "out_features": lin.out_features, "layers": 0})
        row["layers"] += 1
    table = pd.DataFrame(list(rows.values()), columns=["module", "in_features", "out_features", "layers"])
    order = {m: i for i, m in enumerate(ALL_PROJ_MODULES)}
    table = table.sort_values("module", key=lambda s: s.map(lambda m: order.get(m, 99))).reset_index(drop=True)
    table["per_layer"] = r * (table["in_features"] + table["out_features"])
    table["total"] = table["per_layer"] * table["layers"]
    return table


def base_parameter_count(model) -> int:
    """Parameters of the model without any adapter (shared tensors counted once)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


@dataclass(frozen=True)
class ParamCount:
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100 * self.trainable / self.total

    def __str__(self) -> str:  # the same line peft's print_trainable_parameters prints
        return f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || trainable%: {self.percent:.4f}"


def lora_parameter_count(model, r: int, target_modules: Sequence[str] = ALL_PROJ_MODULES) -> ParamCount:
    """What ``print_trainable_parameters`` will report after attaching LoRA, computed by arithmetic."""
    trainable = int(lora_parameter_table(model, r, target_modules)["total"].sum())
    if trainable == 0:
        raise ValueError(f"no Linear layer named {list(target_modules)} in this model")
    return ParamCount(trainable, base_parameter_count(model) + trainable)


def qwen3_0_6b_skeleton():
    """Qwen3-0.6B with the real shapes on the 'meta' device: no weights, no download, no memory."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**QWEN3_0_6B)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


# --------------------------------------------------------------------------- losses

@torch.no_grad()
def dataset_loss(model, tokenizer, records: Sequence[dict], batch_size: int = 8, max_length: int = 512,
                 system: str | None = None) -> float:
    """Answer-only loss over records, averaged the way ``Trainer.evaluate`` averages it
    (per-batch mean, weighted by batch size), so it matches the history's ``eval_loss``."""
    data = encode_dataset(tokenizer, records, system, max_length)
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        chunk = data[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        total += float(model(**batch).loss) * len(chunk)
        count += len(chunk)
    if was_training:
        model.train()
    return total / count


# --------------------------------------------------------------------------- base-model snapshot

class BaseSnapshot:
    """Remembers the base model's weights so a sweep can prove it gave them back unchanged.

    Small models keep an exact copy on the CPU; large ones keep per-tensor sums
    (float64), which any change of a weight would alter.
    """

    EXACT_LIMIT = 50_000_000  # parameters

    def __init__(self, model):
        state = model.state_dict()
        self.names = sorted(state)
        self.exact = sum(t.numel() for t in state.values()) <= self.EXACT_LIMIT
        self.values = {n: self._summary(state[n]) for n in self.names}
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self.training = model.training

    def _summary(self, t: torch.Tensor):
        if self.exact:
            return t.detach().to("cpu", copy=True)
        t = t.detach().double()
        return (float(t.sum()), float((t * t).sum()))

    def differences(self, model) -> list[str]:
        """Names of tensors that differ (or appeared / disappeared) since the snapshot."""
        state = model.state_dict()
        diff = sorted(set(state) ^ set(self.names))
        for n in self.names:
            if n not in state:
                continue
            now = self._summary(state[n])
            same = torch.equal(now, self.values[n]) if self.exact else now == self.values[n]
            if not same:
                diff.append(n)
        return diff

    def restore_flags(self, model) -> None:
        for n, p in model.named_parameters():
            if n in self.requires_grad:
                p.requires_grad_(self.requires_grad[n])
        model.train(self.training)


def _release_memory(device: str) -> None:
    """Give freed memory back before the next measured run (CPU: glibc malloc_trim)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (macOS, Windows): nothing to trim
            pass


# --------------------------------------------------------------------------- sweep

@dataclass
class RunSpec:
    """One sweep run: LoRA settings plus TrainConfig overrides."""

    name: str
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    train: TrainConfig


def make_spec(config: Mapping, defaults: Mapping | None = None, seed: int = 0) -> RunSpec:
    merged = {**(defaults or {}), **config}
    unknown = set(merged) - set(LORA_KEYS) - set(TRAIN_KEYS) - {"name"}
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; use LoRA keys {LORA_KEYS} or TrainConfig fields")
    r = int(merged.get("r", 8))
    alpha = float(merged.get("alpha", 2 * r))
    modules = tuple(merged.get("target_modules", ALL_PROJ_MODULES))
    train_kwargs = {k: merged[k] for k in TRAIN_KEYS if k in merged}
    train_kwargs.setdefault("seed", seed)
    for k in ("epochs", "lr", "weight_decay", "early_stopping_threshold"):  # 3 and 3.0 are the same run
        if k in train_kwargs:
            train_kwargs[k] = float(train_kwargs[k])
    name = merged.get("name") or f"r={r}, α={alpha:g}, {modules_label(modules)}"
    return RunSpec(name, r, alpha, float(merged.get("dropout", 0.0)), modules, TrainConfig(**train_kwargs))


def _records_key(records: Sequence[dict]) -> int:
    return hash(tuple((r["prompt"], r["response"]) for r in records))


class SweepTable(pd.DataFrame):
    """The sweep's summary (one row per run) with ``.histories``: every run's loss history,
    in long format (``run``, ``name``, step, epoch, loss, eval_loss, learning_rate)."""

    _metadata = ["histories"]

    @property
    def _constructor(self):
        return SweepTable

    def history(self, run) -> pd.DataFrame:
        """History of one run, by row number or by name."""
        key = "name" if isinstance(run, str) else "run"
        return self.histories[self.histories[key] == run].reset_index(drop=True)

    def epoch_curves(self) -> pd.DataFrame:
        """Per run and epoch: mean training loss of that epoch's steps, and the validation loss."""
        h = self.histories
        train = h.dropna(subset=["loss"]).assign(epoch=lambda d: (d["epoch"] - 1e-9).apply(math.ceil))
        train = train.groupby(["run", "name", "epoch"], as_index=False)["loss"].mean()
        val = h.dropna(subset=["eval_loss"]).assign(epoch=lambda d: d["epoch"].round().astype(int))
        val = val[["run", "name", "epoch", "eval_loss"]]
        out = train.merge(val, on=["run", "name", "epoch"], how="outer")
        out = out.rename(columns={"loss": "train_loss", "eval_loss": "val_loss"})
        return out.sort_values(["run", "epoch"]).reset_index(drop=True)


def run_sweep(base_model, tokenizer, configs: Iterable[Mapping], train: Sequence[dict], val: Sequence[dict] | None,
              progress: bool = True, defaults: Mapping | None = None, seed: int = 0,
              evaluate: Callable | None = None, desc: str = "sweep", cache: dict | None = None,
              callbacks: Sequence = ()) -> SweepTable:
    """Train one fresh LoRA adapter per config on the SAME base model and tabulate the results.

    ``configs``: dicts with LoRA keys (r, alpha, dropout, target_modules), TrainConfig
    fields (lr, epochs, scheduler, ...) and an optional ``name``; ``defaults`` fills in
    what a config leaves out. Every run is seeded with ``seed`` (adapter init, data
    order), so the same call gives the same table. ``evaluate(peft_model, tokenizer)``
    may return extra columns, measured while the adapter is still attached.

    After each run the adapter is removed and the base weights are compared with a
    snapshot taken before the sweep; any difference raises RuntimeError.

    ``cache``: a dict shared between sweeps; a run whose settings were already
    trained (same LoRA and TrainConfig, same records) is taken from it instead
    of being trained again. Not used together with ``evaluate``. ``callbacks`` are
    passed to every run's Trainer.
    """
    from .progress import progress_bar
    from transformers import set_seed

    if hasattr(base_model, "peft_config"):
        raise ValueError("run_sweep needs the plain base model, not a model that already carries an adapter")
    specs = [make_spec(c, defaults, seed) for c in configs]
    snapshot = BaseSnapshot(base_model)
    device = next(base_model.parameters()).device.type
    rows, histories = [], []
    bar = progress_bar(specs, enabled=progress, desc=desc, unit="run")
    for i, spec in enumerate(bar):
        bar.set_postfix_str(spec.name)
        key = (spec.r, spec.alpha, spec.dropout, tuple(sorted(spec.target_modules)), repr(spec.train),
               _records_key(train), _records_key(val or ()))
        if cache is not None and evaluate is None and not callbacks and key in cache:
            row, h = cache[key]
            rows.append({**row, "name": spec.name})
            histories.append(h.assign(run=i, name=spec.name))
            continue
        count = lora_parameter_count(base_model, spec.r, spec.target_modules)
        _release_memory(device)
        set_seed(spec.train.seed)  # the adapter's random init depends on it
        model = attach_lora(base_model, spec.r, spec.alpha, spec.dropout, spec.target_modules)
        try:
            result = train_model(model, tokenizer, train, val, spec.train, callbacks=callbacks)
            steps_per_epoch = math.ceil(len(train) / spec.train.batch_size / spec.train.gradient_accumulation_steps)
            planned = spec.train.max_steps if spec.train.max_steps > 0 else math.ceil(spec.train.epochs * steps_per_epoch)
            ev = result.eval_loss
            # the final weights (the best ones when early stopping restored them), in eval mode
            loss_of = partial(dataset_loss, model, tokenizer, batch_size=max(spec.train.batch_size, 8),
                              max_length=spec.train.max_length, system=spec.train.system)
            row = {
                "name": spec.name, "r": spec.r, "alpha": int(spec.alpha) if spec.alpha.is_integer() else spec.alpha,
                "scaling": spec.alpha / spec.r, "dropout": spec.dropout, "modules": modules_label(spec.target_modules),
                "lr": spec.train.lr, "epochs": spec.train.epochs, "scheduler": spec.train.scheduler,
                "trainable_params": count.trainable, "total_params": count.total, "trainable_pct": count.percent,
                "train_loss": loss_of(train), "val_loss": loss_of(val) if val else float("nan"),
                "best_val_loss": result.best_eval_loss,
                "best_epoch": float(ev.loc[ev["eval_loss"].idxmin(), "epoch"]) if len(ev) else float("nan"),
                "steps": result.steps, "stopped_early": result.steps < planned,
                "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb,
            }
            measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
            if measured != count.trainable:
                raise RuntimeError(f"{spec.name}: {measured} trainable parameters, arithmetic says {count.trainable}")
            if evaluate is not None:
                row.update(evaluate(model, tokenizer))
        finally:
            restored = model.unload()  # removes the LoRA layers, returns the very same base object
            snapshot.restore_flags(restored)
        changed = snapshot.differences(restored)
        if restored is not base_model or changed:
            raise RuntimeError(f"run {spec.name!r} changed the base model: {changed[:5]}")
        rows.append(row)
        h = result.history.copy()
        h.insert(0, "name", spec.name)
        h.insert(0, "run", i)
        histories.append(h)
        if cache is not None and evaluate is None and not callbacks:
            cache[key] = (row, h)
    table = SweepTable(rows)
    table.histories = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return table


# --------------------------------------------------------------------------- cost growth

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
    """Time per training step and peak memory for every (r, sequence length) pair.

    Each pair trains ``steps`` steps on batches of exactly ``seq_len`` tokens. One
    warm-up run first pays the one-time costs so that they do not land on the first pair.
    """
    data = long_records(tokenizer, records, max(seq_lengths), n=batch_size * steps)
    common = dict(max_steps=steps, batch_size=batch_size, target_modules=tuple(target_modules))
    run_sweep(base_model, tokenizer, [dict(r=min(ranks), max_length=min(seq_lengths))], data, None,
              progress=False, defaults=common, seed=seed)  # warm-up, not recorded
    timer = StepTimer()
    pairs = [(r, L) for r in ranks for L in seq_lengths]
    table = run_sweep(base_model, tokenizer, [dict(r=r, alpha=2 * r, max_length=L, name=f"r={r}, L={L}") for r, L in pairs],
                      data, None, progress=progress, defaults=common, seed=seed, desc="cost",
                      callbacks=[timer], evaluate=lambda model, tok: {"sec_per_step": timer.median()})
    out = pd.DataFrame(table)[["r", "trainable_params", "seconds", "sec_per_step", "peak_memory_mb"]].copy()
    out.insert(1, "seq_len", [L for _, L in pairs])
    out.insert(2, "tokens_per_step", out["seq_len"] * batch_size)
    return out


# --------------------------------------------------------------------------- tables for the page

COLUMN_LABELS = {
    "name": "設定", "r": "r", "alpha": "α", "scaling": "α/r", "dropout": "dropout", "modules": "対象モジュール",
    "lr": "学習率", "epochs": "エポック", "scheduler": "スケジュール",
    "trainable_params": "学習可能パラメータ数", "total_params": "全パラメータ数", "trainable_pct": "割合(%)",
    "train_loss": "学習損失", "val_loss": "検証損失", "best_val_loss": "最良の検証損失", "best_epoch": "最良エポック",
    "steps": "ステップ数", "stopped_early": "早期終了", "seconds": "時間(秒)", "peak_memory_mb": "ピークメモリ(MB)",
    "seq_len": "系列長", "tokens_per_step": "1ステップのトークン数", "sec_per_step": "1ステップの時間(秒)",
}


def japanese_table(table: pd.DataFrame, columns: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """Selected columns with Japanese headers and rounded numbers, for display."""
    out = pd.DataFrame(table[list(columns)]).copy()
    for c in out.columns:
        if c == "trainable_pct":
            out[c] = out[c].round(3)
        elif pd.api.types.is_float_dtype(out[c]) and c not in ("lr",):
            out[c] = out[c].round(digits)
    return out.rename(columns={c: COLUMN_LABELS.get(c, c) for c in columns}).reset_index(drop=True)
