"""LoRA adapters: attach, count parameters (by arithmetic and by counting), save, reload, merge.

Knobs carry PEFT's names: ``lora_r`` (PEFT's ``r``), ``lora_alpha``, ``lora_dropout``, ``target_modules``.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_PROJ_MODULES = ATTENTION_MODULES + MLP_MODULES  # the original experiment (book: original_experiment, §8.1): all seven projections


# Warnings peft gives that are not for students: a deprecated question it asks transformers,
# and (tiny profile, LoRA on the tied output layer) notes that the adapter is saved and
# reloaded as its own layer, which is what the course wants.
_PEFT_NOISE = (".*is_gradient_checkpointing.*", ".*tie_word_embeddings.*", ".*save_embedding_layers.*")


@contextmanager
def quiet_peft():
    """Silence the peft warnings in ``_PEFT_NOISE`` inside the block (and nothing else)."""
    with warnings.catch_warnings():
        for pattern in _PEFT_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def lora_config(lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05,
                target_modules: Sequence[str] = ALL_PROJ_MODULES):
    """A ``peft.LoraConfig``; the original experiment's settings by default (r=16, α=32, dropout 0.05, 7 modules)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def attach_lora(model, lora_r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.05,
                target_modules: Sequence[str] = ALL_PROJ_MODULES):
    """Wrap a base model with fresh LoRA adapters; only the adapters are trainable."""
    from peft import get_peft_model

    with quiet_peft():
        return get_peft_model(model, lora_config(lora_r, lora_alpha, lora_dropout, target_modules))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, the numbers ``print_trainable_parameters`` shows."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def targeted_linears(model, target_modules: Sequence[str] = ALL_PROJ_MODULES):
    """(full name, short name, Linear) for every targeted projection, adapter-wrapped or not."""
    import torch

    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if parts[-1] == "base_layer":  # inside a LoRA wrapper: the projection is the parent
            parts = parts[:-1]
        elif any(p in ("lora_A", "lora_B") for p in parts):
            continue
        if parts[-1] in target_modules:
            yield ".".join(parts), parts[-1], module


def lora_parameter_table(model, lora_r: int, target_modules: Sequence[str] = ALL_PROJ_MODULES) -> pd.DataFrame:
    """The arithmetic: one row per module type with its shape, ``r * (in + out)`` per layer, layers, total."""
    rows: dict[str, dict] = {}
    for _, short, lin in targeted_linears(model, target_modules):
        row = rows.setdefault(short, {"module": short, "in_features": lin.in_features,
                                      "out_features": lin.out_features, "layers": 0})
        row["layers"] += 1
    table = pd.DataFrame(list(rows.values()), columns=["module", "in_features", "out_features", "layers"])
    order = {m: i for i, m in enumerate(ALL_PROJ_MODULES)}
    table = table.sort_values("module", key=lambda s: s.map(lambda m: order.get(m, 99))).reset_index(drop=True)
    table["per_layer"] = lora_r * (table["in_features"] + table["out_features"])
    table["total"] = table["per_layer"] * table["layers"]
    return table


PARAMETER_TABLE_JA = {"module": "層の種類", "in_features": "入力の次元", "out_features": "出力の次元", "layers": "層の数",
                      "per_layer": "1層あたり", "total": "合計"}


def parameter_table_ja(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`lora_parameter_table` as a Japanese page shows it (the code keeps the English column names)."""
    return table.rename(columns=PARAMETER_TABLE_JA)


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


def lora_parameter_count(model, lora_r: int, target_modules: Sequence[str] = ALL_PROJ_MODULES) -> ParamCount:
    """What ``print_trainable_parameters`` will report after attaching LoRA, computed by arithmetic."""
    trainable = int(lora_parameter_table(model, lora_r, target_modules)["total"].sum())
    if trainable == 0:
        raise ValueError(f"no Linear layer named {list(target_modules)} in this model")
    return ParamCount(trainable, base_parameter_count(model) + trainable)


def save_adapter(model, path: str | Path) -> Path:
    """Save only the adapter weights (a few hundred KB to a few MB)."""
    path = Path(path)
    with quiet_peft():
        model.save_pretrained(path)
    return path


def load_adapter(base_model, path: str | Path, trainable: bool = False):
    """Put a saved adapter back on a base model."""
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def merge_adapter(peft_model):
    """Fold the adapter into the base weights: a plain model, no PEFT needed at inference."""
    return peft_model.merge_and_unload()
