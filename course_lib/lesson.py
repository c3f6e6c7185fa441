"""What every lesson does first: fixed seeds, quiet libraries, Japanese plots, and a
note saying which model produced the outputs on the page."""
from __future__ import annotations

import os
import random
import warnings


def start_lesson(seed: int = 0) -> None:
    """Seed every random generator, silence library noise, set up plots, start the timers."""
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars are noise on a lesson page
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\..*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from . import timing
    from .plots import setup_plots

    timing.reset()  # the lesson's time breakdown (course_lib.timing) counts from here
    setup_plots()


def model_note(loaded, judge: str | None = None) -> str:
    """Markdown for a note box: which model (and judge) produced this page's outputs."""
    lines = [f"**このページの出力を生成したモデル**: `{loaded.label}`（デバイス: `{loaded.device.device}`, `{loaded.device.dtype_name}`）"]
    if loaded.profile == "tiny":
        lines.append(
            "これはコースが自前で作る小さな Qwen3 アーキテクチャのモデルです。"
            "数値や生成文は Qwen3-0.6B の結果**ではありません**。"
            "`model_profile=\"qwen3-0.6b\"` で実モデルの結果を得られます。"
        )
    if judge:
        lines.append(f"**採点者（judge）**: `{judge}`")
    return "\n\n".join(lines)


def show_model_note(loaded, judge: str | None = None) -> None:
    from IPython.display import Markdown, display

    display(Markdown("> " + "\n>\n> ".join(model_note(loaded, judge).split("\n\n"))))
