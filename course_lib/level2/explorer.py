"""An ipywidgets explorer for LoRA settings, with a static fallback.

In a live JupyterLab (or Notebook 7 / Colab) kernel the student moves sliders
for ``lora_r``, ``lora_alpha``, ``learning_rate``, ``num_train_epochs`` and
``target_modules``, presses a button, and a short run redraws the loss curves
and the parameter count. Where nobody can
move a slider (papermill, the static book, plain Python) the same function
trains one default configuration and shows one ordinary figure instead: no
widget, no blank output.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd
from IPython.display import Markdown, display

from ..lora import lora_parameter_count
from ..paths import headless
from .sweep import MODULE_SETS, modules_label, run_sweep

RANK_CHOICES = (1, 2, 4, 8, 16, 32)
ALPHA_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)
LR_CHOICES = (1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DEFAULTS = dict(lora_r=8, lora_alpha=16, learning_rate=1e-2, num_train_epochs=3, target_modules="all7",
                per_device_train_batch_size=8)
MAX_CURVES = 4  # the current run plus the three before it


def running_in_jupyterlab() -> bool:
    """True in a kernel that a live notebook front end talks to (JupyterLab, Notebook 7, Colab).

    jupyter_server puts ``JPY_SESSION_NAME`` into the environment of the kernels it
    starts for open notebooks; papermill / nbclient start theirs without it.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False  # plain Python, or a terminal IPython: no widgets there
    if headless():  # the course runner marks headless runs this way
        return False
    return "google.colab" in sys.modules or bool(os.environ.get("JPY_SESSION_NAME"))


@dataclass
class Explorer:
    """What ``lora_explorer`` built: ``mode`` is "interactive" or "static"."""

    mode: str
    widget: Any = None  # the ipywidgets box (interactive mode)
    figure: Any = None  # the last figure drawn
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per run trained so far
    histories: list = field(default_factory=list)  # their loss histories, same order
    train_once: Any = None  # interactive mode: what the button does (callable without a front end)


def _module_tuple(value) -> tuple[str, ...]:
    return MODULE_SETS[value] if isinstance(value, str) else tuple(value)


def draw_explorer(base_model, runs: pd.DataFrame, histories: Sequence[pd.DataFrame], modules: Sequence[str],
                  title: str | None = None):
    """Left: loss curves of the latest runs (the newest bold). Right: trainable parameters
    against r for ``modules``, the latest run's r marked."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..plots import JAPANESE_FONT, setup_plots

    if JAPANESE_FONT not in plt.rcParams["font.family"]:  # used outside a lesson: labels are Japanese
        setup_plots()
    fig, (ax_loss, ax_par) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    shown = list(range(len(runs)))[-MAX_CURVES:]
    palette = sns.color_palette("deep", len(shown))
    for colour, i in zip(palette, shown):
        h, latest = histories[i], i == shown[-1]
        label = runs.iloc[i]["name"]
        style = dict(color=colour, alpha=1.0 if latest else 0.45, linewidth=2.2 if latest else 1.2)
        train = h.dropna(subset=["loss"])
        ax_loss.plot(train["epoch"], train["loss"], label=f"{label}（学習）", **style)
        ev = h.dropna(subset=["eval_loss"])
        if len(ev):
            ax_loss.plot(ev["epoch"], ev["eval_loss"], marker="o", linestyle="--", label=f"{label}（検証）", **style)
    ax_loss.set_xlabel("エポック（epoch）")
    ax_loss.set_ylabel("損失（loss）")
    ax_loss.set_title(title or "損失曲線（実線: 学習, 破線: 検証）")
    ax_loss.legend(fontsize=8)

    last = runs.iloc[-1]
    counts = pd.DataFrame({"r": RANK_CHOICES,
                           "params": [lora_parameter_count(base_model, r, modules).trainable for r in RANK_CHOICES]})
    sns.lineplot(data=counts, x="r", y="params", marker="o", ax=ax_par, color="gray")
    ax_par.scatter([last["lora_r"]], [last["trainable_params"]], s=140, color=palette[-1], zorder=5)
    ax_par.annotate(f"{int(last['trainable_params']):,}\n({last['trainable_pct']:.2f}%)",
                    (last["lora_r"], last["trainable_params"]), textcoords="offset points", xytext=(8, -28), fontsize=9)
    ax_par.set_xscale("log", base=2)
    ax_par.set_xticks(list(RANK_CHOICES), [str(r) for r in RANK_CHOICES])
    ax_par.minorticks_off()
    ax_par.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    ax_par.set_xlabel("ランク r")
    ax_par.set_ylabel("学習可能パラメータ数")
    ax_par.set_title(f"パラメータ数（対象: {modules_label(modules)}）")
    fig.tight_layout()
    return fig


def lora_explorer(base_model, tokenizer, train: Sequence[dict], val: Sequence[dict] | None,
                  interactive: bool | None = None, defaults: Mapping | None = None,
                  cache: dict | None = None, seed: int = 0) -> Explorer:
    """Sliders for ``lora_r``, ``lora_alpha``, ``learning_rate``, ``num_train_epochs`` and
    ``target_modules``; a button trains a short run on ``base_model`` (through :func:`run_sweep`,
    so the base stays untouched) and redraws.

    ``defaults`` overrides :data:`DEFAULTS` (same keys). ``interactive=None`` means "only in a
    live notebook front end" (:func:`running_in_jupyterlab`). Otherwise the default configuration
    is trained once and shown as a static figure. Returns an :class:`Explorer`; assign it
    (``explorer = lora_explorer(...)``) so the page does not print it.
    """
    settings = {**DEFAULTS, **(defaults or {})}
    if interactive is None:
        interactive = running_in_jupyterlab()
    state = Explorer(mode="interactive" if interactive else "static")
    train_and_draw = _trainer(state, base_model, tokenizer, train, val, settings["per_device_train_batch_size"],
                              {} if cache is None else cache, seed)
    if interactive:
        _show_widgets(state, base_model, settings, train_and_draw)
    else:
        _show_static(settings, train_and_draw)
    return state


def _trainer(state: Explorer, base_model, tokenizer, train, val, batch_size: int, cache: dict, seed: int):
    """The button's work: one run through :func:`run_sweep`, appended to ``state``, drawn."""

    def train_and_draw(lora_r, lora_alpha, learning_rate, num_train_epochs, modules) -> Any:
        config = dict(lora_r=lora_r, lora_alpha=lora_alpha, learning_rate=learning_rate,
                      num_train_epochs=num_train_epochs, target_modules=_module_tuple(modules),
                      per_device_train_batch_size=batch_size)
        table = run_sweep(base_model, tokenizer, [config], train, val, progress=False, seed=seed, cache=cache)
        state.runs = pd.concat([state.runs, pd.DataFrame(table)], ignore_index=True)
        state.histories.append(table.histories)
        state.figure = draw_explorer(base_model, state.runs, state.histories, config["target_modules"])
        return state.figure

    return train_and_draw


def _show_static(settings: Mapping, train_and_draw) -> None:
    """No one can move a slider: train the default configuration once and show its figure."""
    import matplotlib.pyplot as plt

    fig = train_and_draw(settings["lora_r"], settings["lora_alpha"], settings["learning_rate"],
                         settings["num_train_epochs"], settings["target_modules"])
    display(Markdown(
        "（静的表示）JupyterLab で実行すると、ここにスライダーが表示されます。"
        f"この図は既定の設定 r={settings['lora_r']}, α={settings['lora_alpha']}, 学習率={settings['learning_rate']:g}, "
        f"エポック={settings['num_train_epochs']}, 対象={modules_label(_module_tuple(settings['target_modules']))} の1回分です。"))
    display(fig)
    plt.close(fig)


def _show_widgets(state: Explorer, base_model, settings: Mapping, train_and_draw) -> None:
    """Sliders, a button and a live parameter count; the default configuration is drawn at once."""
    import ipywidgets as w
    import matplotlib.pyplot as plt

    style = {"description_width": "9em"}
    layout = w.Layout(width="26em")
    lr_options = sorted(set(LR_CHOICES) | {settings["learning_rate"]})
    epochs = int(settings["num_train_epochs"])
    r_s = w.SelectionSlider(options=list(RANK_CHOICES), value=settings["lora_r"], description="ランク r",
                            style=style, layout=layout)
    a_s = w.SelectionSlider(options=list(ALPHA_CHOICES), value=settings["lora_alpha"], description="α（alpha）",
                            style=style, layout=layout)
    lr_s = w.SelectionSlider(options=[(f"{x:g}", x) for x in lr_options], value=settings["learning_rate"],
                             description="学習率（lr）", style=style, layout=layout)
    ep_s = w.IntSlider(value=epochs, min=1, max=max(10, epochs), description="エポック数", style=style, layout=layout)
    mod_d = w.Dropdown(options=list(MODULE_SETS), value=modules_label(_module_tuple(settings["target_modules"])),
                       description="対象モジュール", style=style, layout=layout)
    button = w.Button(description="学習して描画", button_style="primary", icon="play")
    info = w.HTML()
    out = w.Output()

    def update_info(*_):
        count = lora_parameter_count(base_model, r_s.value, _module_tuple(mod_d.value))
        info.value = (f"学習可能パラメータ: <b>{count.trainable:,}</b>（全体の {count.percent:.3f}%）"
                      f" ／ α/r = {a_s.value / r_s.value:g}")

    def on_click(_):
        button.disabled, button.description = True, "学習中…"
        try:
            fig = train_and_draw(r_s.value, a_s.value, lr_s.value, ep_s.value, mod_d.value)
            with out:
                out.clear_output(wait=True)
                display(fig)
            plt.close(fig)
        finally:
            button.disabled, button.description = False, "学習して描画"

    for s in (r_s, a_s, mod_d):
        s.observe(update_info, names="value")
    button.on_click(on_click)
    update_info()
    state.widget = w.VBox([w.HBox([w.VBox([r_s, a_s, lr_s]), w.VBox([ep_s, mod_d])]), w.HBox([button, info]), out])
    state.train_once = lambda: on_click(button)
    display(state.widget)
    on_click(button)  # the default configuration right away (free when the page already trained it)
