"""Parameter sweeps for LoRA: many short runs on ONE base model kept in memory.

Each run attaches a fresh adapter to the same base model, trains it, measures
it, and removes it again (``PeftModel.unload``), so the next run starts from the
pristine base. The base weights are checked after every run: a sweep that left
anything behind would make every later row of the table wrong.

On the CPU with a small model loaded from a local folder (the tiny model), the runs of a sweep
are shared between two worker processes (:func:`course_lib.parallel.run_jobs`); each worker
loads the same base model from the same folder, checks that its weights are bit-identical to
this one's, and trains exactly what this process would (every run seeds itself), so the table
is the same as the serial one except for the seconds and memory each run measured.

A run is described by a plain dict that uses PEFT's names for the adapter
(``lora_r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``) and
:class:`~course_lib.train.TrainConfig`'s names (the ones of
``transformers.TrainingArguments``) for training, and the summary table has
columns of the same names.
"""
from __future__ import annotations

import ctypes
import gc
import hashlib
import math
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch

from ..device import keep_freed_memory
from ..lora import ALL_PROJ_MODULES, ATTENTION_MODULES, attach_lora, lora_parameter_count
from ..parallel import default_workers, run_jobs
from ..sft import AnswerOnlyCollator, encode_dataset
from ..train import TrainConfig, train as train_model

LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
# Older short names, for a helpful error message only.
_RENAMED = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "lr": "learning_rate",
            "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
            "scheduler": "lr_scheduler_type"}

# Named module sets, in growing order ("attention+gate,up": the six projections of the lesson's A/B comparison, no down_proj).
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "q,v": ("q_proj", "v_proj"),
    "attention": ATTENTION_MODULES,
    "attention+gate,up": ATTENTION_MODULES + ("gate_proj", "up_proj"),
    "all7": ALL_PROJ_MODULES,
}


def modules_label(target_modules: Sequence[str]) -> str:
    """Short name of a module set: a MODULE_SETS key, or the module names without '_proj'."""
    mods = tuple(target_modules)
    for name, members in MODULE_SETS.items():
        if set(mods) == set(members):
            return name
    return ",".join(m.replace("_proj", "") for m in mods)


# --------------------------------------------------------------------------- losses

@torch.no_grad()
def loss_pass(model, tokenizer, records: Sequence[dict], batch_size: int = 8, max_length: int = 512,
              system: str | None = None) -> tuple[float, list[float]]:
    """One forward pass over ``records`` giving both losses the sweep reports:

    - the answer-only loss averaged the way ``Trainer.evaluate`` averages it (each batch's
      token-mean, weighted by batch size), so it matches the history's ``eval_loss``;
    - one loss per record: the mean negative log-probability of that record's answer tokens
      (prompt and padding excluded), in the order of ``records``. This is the unit of paired
      comparisons: two settings measured on the same examples. (Its plain mean weights every
      example equally, so it differs slightly from the first number.)
    """
    data = encode_dataset(tokenizer, records, system, max_length)
    collate = AnswerOnlyCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count, per_example = 0.0, 0, []
    for start in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate(data[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100,
                                                       reduction="none")
        mask = targets != -100
        sums, tokens = (token_loss * mask).sum(dim=1), mask.sum(dim=1)
        per_example += (sums / tokens.clamp(min=1)).tolist()
        total += float(sums.sum() / tokens.sum().clamp(min=1)) * len(labels)
        count += len(labels)
    if was_training:
        model.train()
    return total / count, per_example


def dataset_loss(model, tokenizer, records: Sequence[dict], batch_size: int = 8, max_length: int = 512,
                 system: str | None = None) -> float:
    """Answer-only loss over records, averaged the way ``Trainer.evaluate`` averages it
    (per-batch mean, weighted by batch size), so it matches the history's ``eval_loss``."""
    return loss_pass(model, tokenizer, records, batch_size, max_length, system)[0]


def example_losses(model, tokenizer, records: Sequence[dict], batch_size: int = 8, max_length: int = 512,
                   system: str | None = None) -> list[float]:
    """One answer-only loss per record (see :func:`loss_pass`), in the order of ``records``."""
    return loss_pass(model, tokenizer, records, batch_size, max_length, system)[1]


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


# --------------------------------------------------------------------------- one run

@dataclass
class RunSpec:
    """One sweep run: the LoRA settings (PEFT's names) plus a TrainConfig."""

    name: str
    lora_r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...]
    train: TrainConfig


def make_spec(config: Mapping, defaults: Mapping | None = None, seed: int = 0) -> RunSpec:
    """A RunSpec from a config dict (``defaults`` fill in what it leaves out).

    Unset LoRA keys: ``lora_r=8``, ``lora_alpha=2*lora_r``, ``lora_dropout=0``, all seven projections.
    """
    merged = {**(defaults or {}), **config}
    unknown = set(merged) - set(LORA_KEYS) - set(TRAIN_KEYS) - {"name"}
    if unknown:
        hints = "".join(f"; '{k}' is now '{_RENAMED[k]}'" for k in sorted(unknown) if k in _RENAMED)
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; use LoRA keys {LORA_KEYS} "
                         f"or TrainConfig fields{hints}")
    r = int(merged.get("lora_r", 8))
    alpha = float(merged.get("lora_alpha", 2 * r))
    modules = tuple(merged.get("target_modules", ALL_PROJ_MODULES))
    train_kwargs = {k: merged[k] for k in TRAIN_KEYS if k in merged}
    train_kwargs.setdefault("seed", seed)
    for k in ("num_train_epochs", "learning_rate", "weight_decay", "early_stopping_threshold"):
        if k in train_kwargs:  # 3 and 3.0 are the same run
            train_kwargs[k] = float(train_kwargs[k])
    name = merged.get("name") or f"r={r}, α={alpha:g}, {modules_label(modules)}"
    return RunSpec(name, r, alpha, float(merged.get("lora_dropout", 0.0)), modules, TrainConfig(**train_kwargs))


def _records_key(records: Sequence[dict]) -> int:
    return hash(tuple((r["prompt"], r["response"]) for r in records))


def _cache_key(spec: RunSpec, train: Sequence[dict], val: Sequence[dict] | None) -> tuple:
    """Same LoRA settings, same TrainConfig, same records: the same run."""
    return (spec.lora_r, spec.lora_alpha, spec.lora_dropout, tuple(sorted(spec.target_modules)), repr(spec.train),
            _records_key(train), _records_key(val or ()))


def _planned_steps(config: TrainConfig, n_train: int) -> int:
    """Optimizer steps the run would take without early stopping."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = math.ceil(n_train / config.per_device_train_batch_size / config.gradient_accumulation_steps)
    return math.ceil(config.num_train_epochs * per_epoch)


def _summary_row(model, tokenizer, spec: RunSpec, count, result, train, val) -> dict:
    """The table row of one trained run; the losses are measured on the final weights (the best
    ones when early stopping restored them), in eval mode."""
    config, ev = spec.train, result.eval_loss
    losses = partial(loss_pass, model, tokenizer, batch_size=max(config.per_device_train_batch_size, 8),
                     max_length=config.max_length, system=config.system)
    train_loss, train_examples = losses(train)
    val_loss, val_examples = losses(val) if val else (float("nan"), [])
    alpha = spec.lora_alpha
    return {
        "name": spec.name, "lora_r": spec.lora_r, "lora_alpha": int(alpha) if alpha.is_integer() else alpha,
        "scaling": alpha / spec.lora_r, "lora_dropout": spec.lora_dropout,
        "target_modules": modules_label(spec.target_modules),
        "learning_rate": config.learning_rate, "num_train_epochs": config.num_train_epochs,
        "lr_scheduler_type": config.lr_scheduler_type,
        "trainable_params": count.trainable, "total_params": count.total, "trainable_pct": count.percent,
        "train_loss": train_loss, "val_loss": val_loss,
        # one loss per example (the same examples in every run): the unit of paired comparisons
        "train_example_losses": tuple(train_examples), "val_example_losses": tuple(val_examples),
        "best_val_loss": result.best_eval_loss,
        "best_epoch": float(ev.loc[ev["eval_loss"].idxmin(), "epoch"]) if len(ev) else float("nan"),
        "steps": result.steps, "stopped_early": result.steps < _planned_steps(config, len(train)),
        "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb,
    }


def _train_one(base_model, tokenizer, spec: RunSpec, train, val, snapshot: BaseSnapshot,
               evaluate: Callable | None, callbacks: Sequence) -> tuple[dict, pd.DataFrame]:
    """Attach, train, measure, detach; check the base model is as the snapshot remembers it."""
    from transformers import set_seed

    count = lora_parameter_count(base_model, spec.lora_r, spec.target_modules)
    _release_memory(next(base_model.parameters()).device.type)
    set_seed(spec.train.seed)  # the adapter's random init depends on it
    model = attach_lora(base_model, spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.target_modules)
    try:
        result = train_model(model, tokenizer, train, val, spec.train, callbacks=callbacks)
        row = _summary_row(model, tokenizer, spec, count, result, train, val)
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
    return row, result.history.copy()


# --------------------------------------------------------------------------- worker processes

def weights_digest(model) -> str:
    """SHA-256 of every tensor of the model's state dict (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def worker_model_folder(base_model) -> Path | None:
    """The folder a worker can load ``base_model`` from, or None when the sweep must stay serial:
    not on the CPU, too large for a second copy, or not loaded from a local folder."""
    param = next(base_model.parameters())
    n_params = sum(p.numel() for p in base_model.parameters())
    folder = Path(str(getattr(base_model, "name_or_path", "") or ""))
    if param.device.type != "cpu" or n_params > BaseSnapshot.EXACT_LIMIT or not (folder / "config.json").is_file():
        return None
    return folder


_WORKER_BASES: dict[tuple, tuple] = {}  # in a worker: (folder, dtype, training) → (model, snapshot, digest)


def _worker_base(folder: str, dtype: str, training: bool):
    key = (folder, dtype, training)
    if key not in _WORKER_BASES:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)  # as load_model does for the tiny model: two workers, two cores
        keep_freed_memory()  # as load_model does too
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).train(training)
        _WORKER_BASES[key] = (model, BaseSnapshot(model), weights_digest(model))
    return _WORKER_BASES[key]


def _train_in_worker(folder: str, dtype: str, training: bool, tokenizer, spec: "RunSpec", train, val):
    """One run in a worker process, on the worker's copy of the base model (loaded once per worker)."""
    model, snapshot, digest = _worker_base(folder, dtype, training)
    row, history = _train_one(model, tokenizer, spec, train, val, snapshot, None, ())
    return row, history, digest


# --------------------------------------------------------------------------- the sweep

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
        """Per run and epoch: mean training loss of that epoch's steps, and the validation loss.

        A multi-seed table (:func:`course_lib.level2.seeds.run_seeds`) keeps its ``seed`` column."""
        h = self.histories
        keys = (["seed"] if "seed" in h else []) + ["run", "name"]
        train = h.dropna(subset=["loss"]).assign(epoch=lambda d: (d["epoch"] - 1e-9).apply(math.ceil))
        train = train.groupby([*keys, "epoch"], as_index=False)["loss"].mean()
        val = h.dropna(subset=["eval_loss"]).assign(epoch=lambda d: d["epoch"].round().astype(int))
        val = val[[*keys, "epoch", "eval_loss"]]
        out = train.merge(val, on=[*keys, "epoch"], how="outer")
        out = out.rename(columns={"loss": "train_loss", "eval_loss": "val_loss"})
        return out.sort_values([*keys[:-1], "epoch"]).reset_index(drop=True)


def run_sweep(base_model, tokenizer, configs: Iterable[Mapping], train: Sequence[dict], val: Sequence[dict] | None,
              progress: bool = True, defaults: Mapping | None = None, seed: int = 0,
              evaluate: Callable | None = None, desc: str = "sweep", cache: dict | None = None,
              callbacks: Sequence = (), workers: int | None = None) -> SweepTable:
    """Train one fresh LoRA adapter per config on the SAME base model and tabulate the results.

    ``configs``: dicts with LoRA keys (``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``target_modules``), TrainConfig fields (``learning_rate``, ``num_train_epochs``,
    ``lr_scheduler_type``, ...) and an optional ``name``; ``defaults`` fills in what a
    config leaves out. Every run is seeded with ``seed`` (adapter init, data order), so
    the same call gives the same table. ``evaluate(peft_model, tokenizer)`` may return
    extra columns, measured while the adapter is still attached.

    After each run the adapter is removed and the base weights are compared with a
    snapshot taken before the sweep; any difference raises RuntimeError.

    ``cache``: a dict shared between sweeps; a run whose settings were already
    trained (same LoRA and TrainConfig, same records) is taken from it instead
    of being trained again. Not used together with ``evaluate``. ``callbacks`` are
    passed to every run's Trainer.

    ``workers``: processes that share the runs (default: 2 on a 2-core machine, ``COURSE_WORKERS``
    overrides; 1 = serial, in this process). Workers are used only for a small model on the CPU
    loaded from a local folder, without ``evaluate`` or ``callbacks`` (a function defined in a
    notebook cannot be sent to another process). Runs that measure time for a comparison should
    pass ``workers=1``: two runs at once share the machine.
    """
    from ..progress import progress_bar

    if hasattr(base_model, "peft_config"):
        raise ValueError("run_sweep needs the plain base model, not a model that already carries an adapter")
    specs = [make_spec(c, defaults, seed) for c in configs]
    snapshot = BaseSnapshot(base_model)
    use_cache = cache is not None and evaluate is None and not callbacks
    keys = [_cache_key(spec, train, val) for spec in specs]
    # the runs to train: all but those in the cache (and, with a cache, each setting once)
    todo = [i for i, k in enumerate(keys) if not (use_cache and (k in cache or k in keys[:i]))]
    bar = progress_bar(total=len(specs), enabled=progress, desc=desc, unit="run")
    bar.update(len(specs) - len(todo))
    trained: dict[int, tuple[dict, pd.DataFrame]] = {}
    workers = default_workers() if workers is None else workers
    folder = worker_model_folder(base_model) if workers > 1 and len(todo) > 1 and evaluate is None and not callbacks else None
    if folder is not None:
        dtype = str(next(base_model.parameters()).dtype).removeprefix("torch.")
        jobs = [(str(folder), dtype, base_model.training, tokenizer, specs[i], train, val) for i in todo]
        outs = run_jobs(_train_in_worker, jobs, workers, reuse_pool=True, on_done=lambda _: bar.update(1))
        here = weights_digest(base_model)
        for i, (row, h, digest) in zip(todo, outs):
            if digest != here:
                raise RuntimeError(f"the worker's base model (loaded from {folder}) differs from this one: was the "
                                   "model changed after loading? Run the sweep with workers=1")
            trained[i] = (row, h)
    else:
        for i in todo:
            bar.set_postfix_str(specs[i].name)
            trained[i] = _train_one(base_model, tokenizer, specs[i], train, val, snapshot, evaluate, callbacks)
            bar.update(1)
    bar.close()
    rows, histories = [], []
    for i, (spec, key) in enumerate(zip(specs, keys)):
        if i in trained:
            row, h = trained[i]
            if use_cache:
                cache[key] = (row, h.copy())
        else:
            row, h = cache[key]
            row = {**row, "name": spec.name}
        rows.append(row)
        histories.append(h.assign(run=i, name=spec.name)[["run", "name", *h.columns]])
    table = SweepTable(rows)
    table.histories = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return table
