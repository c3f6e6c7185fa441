"""Plot set-up: seaborn with a Japanese font, and the loss-curve plot every lesson uses."""
from __future__ import annotations

import logging
from .timing import timed_function

JAPANESE_FONT = "IPAexGothic"  # shipped by matplotlib-fontja, so no system font is needed


def setup_plots(context: str = "notebook") -> None:
    """Seaborn theme with Japanese labels rendered.

    ``sns.set_theme`` resets the font family, so the Japanese font is passed to it
    rather than set before it.
    """
    import matplotlib
    import matplotlib_fontja  # noqa: F401  (registers IPAexGothic with matplotlib)
    import seaborn as sns

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    sns.set_theme(context=context, style="whitegrid", font=JAPANESE_FONT)
    matplotlib.rcParams["axes.unicode_minus"] = False  # the minus sign is missing from many CJK fonts
    matplotlib.rcParams["figure.dpi"] = 100


@timed_function("plot")
def plot_loss(history, ax=None, title: str = "損失曲線（loss curve）"):
    """Training loss per step, with validation loss when the history has it."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    train = history.dropna(subset=["loss"])
    sns.lineplot(data=train, x="step", y="loss", ax=ax, label="学習損失（train loss）")
    if "eval_loss" in history and history["eval_loss"].notna().any():
        ev = history.dropna(subset=["eval_loss"])
        sns.lineplot(data=ev, x="step", y="eval_loss", ax=ax, marker="o", label="検証損失（validation loss）")
    ax.set_xlabel("ステップ（step）")
    ax.set_ylabel("損失（loss）")
    ax.set_title(title)
    return ax
