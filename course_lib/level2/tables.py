"""Sweep tables as the page shows them: chosen columns, Japanese headers, rounded numbers.

The code keeps the English column names (``lora_r``, ``learning_rate``, ...: the
names of the settings themselves); only the displayed copy gets Japanese headers,
from ``COLUMN_LABELS``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

COLUMN_LABELS = {
    "name": "設定", "lora_r": "r", "lora_alpha": "α", "scaling": "α/r", "lora_dropout": "ドロップアウト",
    "target_modules": "対象モジュール", "learning_rate": "学習率", "num_train_epochs": "エポック",
    "lr_scheduler_type": "スケジュール",
    "trainable_params": "学習可能パラメータ数", "total_params": "全パラメータ数", "trainable_pct": "割合(%)",
    "train_loss": "学習損失", "val_loss": "検証損失", "best_val_loss": "最良の検証損失", "best_epoch": "最良エポック",
    "steps": "ステップ数", "stopped_early": "早期終了", "seconds": "時間(秒)", "peak_memory_mb": "ピークメモリ(MB)",
    "seq_len": "系列長", "tokens_per_step": "1ステップのトークン数", "sec_per_step": "1ステップの時間(秒)",
}
UNROUNDED = ("learning_rate",)  # 0.001 must not become 0.0


def japanese_table(table: pd.DataFrame, columns: Sequence[str], digits: int = 3,
                   labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Selected columns with Japanese headers and rounded numbers, for display.

    ``labels`` adds or overrides headers (for columns a lesson computed itself).
    """
    out = pd.DataFrame(table[list(columns)]).copy()
    for c in out.columns:
        if c == "trainable_pct":
            out[c] = out[c].round(3)
        elif pd.api.types.is_float_dtype(out[c]) and c not in UNROUNDED:
            out[c] = out[c].round(digits)
    names = {**COLUMN_LABELS, **(labels or {})}
    return out.rename(columns={c: names.get(c, c) for c in columns}).reset_index(drop=True)
