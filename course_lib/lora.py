"""LoRA adapters: attach, count parameters, save, reload, merge."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ALL_PROJ_MODULES = ATTENTION_MODULES + MLP_MODULES  # seed 000 §8.1: all seven projections


@contextmanager
def _quiet_peft():
    """peft asks transformers a deprecated question; the warning is not for students."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: Sequence[str] = ALL_PROJ_MODULES):
    """The seed experiment's settings by default (r=16, alpha=32, dropout=0.05, 7 modules)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def attach_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: Sequence[str] = ALL_PROJ_MODULES):
    """Wrap a base model with fresh LoRA adapters; only the adapters are trainable."""
    from peft import get_peft_model

    with _quiet_peft():
        return get_peft_model(model, lora_config(r, alpha, dropout, target_modules))


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


def expected_lora_parameters(model, r: int, target_modules: Sequence[str] = ALL_PROJ_MODULES) -> int:
    """LoRA parameters by arithmetic: r * (in + out) for every targeted Linear layer."""
    return sum(r * (lin.in_features + lin.out_features) for _, _, lin in targeted_linears(model, target_modules))


def save_adapter(model, path: str | Path) -> Path:
    """Save only the adapter weights (a few hundred KB to a few MB)."""
    path = Path(path)
    model.save_pretrained(path)
    return path


def load_adapter(base_model, path: str | Path, trainable: bool = False):
    """Put a saved adapter back on a base model."""
    from peft import PeftModel

    with _quiet_peft():
        return PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def merge_adapter(peft_model):
    """Fold the adapter into the base weights: a plain model, no PEFT needed at inference."""
    return peft_model.merge_and_unload()
