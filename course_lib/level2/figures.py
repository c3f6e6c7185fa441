"""Figures of the level-2 page that show training-seed variance honestly.

- :func:`seed_points`: one point per training seed and a line through the seeds' mean,
  so the reader sees how far a result moves between seeds before reading a difference.
- :func:`bars_start_at_zero`: a bar's height is read as its size, so a bar chart whose
  value axis does not start at 0 exaggerates differences (a 7 % difference drawn as 3×).
  The page checks every bar chart it draws with it.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd


def seed_points(ax, table: pd.DataFrame, x: str, y: str, hue: str | None = None, seed: str = "seed",
                label: str | None = None, palette=None, jitter: float = 0.0, log2_x: bool = False):
    """Each seed's value as a point, and the mean over seeds as a line with markers.

    ``hue`` draws one mean line (and one point colour) per value of that column; without
    it, ``label`` names the mean line. A numeric ``x`` gets a line plot; ``jitter`` shifts
    the seeds' points sideways by that fraction of the x value (``log2_x``: of a doubling),
    so equal points stay visible. A non-numeric ``x`` (module sets, schedules) gets one
    column of points per category and the means joined by a line.
    """
    import numpy as np
    import seaborn as sns

    data = table[[c for c in dict.fromkeys([x, y, seed, hue]) if c]].copy()
    if not pd.api.types.is_numeric_dtype(data[x]):
        point_kw = dict(color="gray") if hue is None else dict(hue=hue, palette=palette)
        sns.stripplot(data=data, x=x, y=y, alpha=0.55, size=5, jitter=0.12, legend=False, ax=ax, **point_kw)
        mean_kw = dict(label=label or "シードの平均") if hue is None else dict(hue=hue, palette=palette)
        sns.pointplot(data=data, x=x, y=y, errorbar=None, markers="D", ax=ax, **mean_kw)
        return ax
    seeds = sorted(data[seed].unique())
    if jitter and len(seeds) > 1:
        offsets = dict(zip(seeds, np.linspace(-jitter, jitter, len(seeds))))
        shift = data[seed].map(offsets)
        data["_x"] = data[x] * (2.0 ** shift) if log2_x else data[x] + shift
    else:
        data["_x"] = data[x]
    means = data.groupby([c for c in (hue, x) if c], sort=False, as_index=False)[y].mean()
    line_kw = dict(marker="o", markersize=7, linewidth=2, errorbar=None, ax=ax)
    if hue:
        sns.lineplot(data=means, x=x, y=y, hue=hue, palette=palette, **line_kw)
        sns.scatterplot(data=data, x="_x", y=y, hue=hue, palette=palette, alpha=0.45, s=28, legend=False, ax=ax)
    else:
        sns.lineplot(data=means, x=x, y=y, label=label or "シードの平均", **line_kw)
        sns.scatterplot(data=data, x="_x", y=y, color="gray", alpha=0.6, s=28, label="各シード", ax=ax)
    ax.set_xlabel(x)
    return ax


def bars_start_at_zero(fig) -> list[tuple[str, float]]:
    """(title, lower y limit) of every axes of ``fig`` that holds bars; ValueError if one starts above 0.

    An axes counts as a bar chart when it holds rectangle patches (``ax.patches``).
    A bar chart of positive values must include 0 on its value axis.
    """
    checked, wrong = [], []
    for ax in fig.axes:
        if not ax.patches:
            continue
        low = float(ax.get_ylim()[0])
        checked.append((ax.get_title(), low))
        if low > 0:
            wrong.append((ax.get_title(), low))
    if wrong:
        raise ValueError(f"bar chart(s) whose value axis starts above 0: {wrong}")
    return checked


def seed_labels(seeds: Sequence[int]) -> str:
    """``0, 1, 2`` (the seeds as the page names them)."""
    return ", ".join(str(s) for s in seeds)


__all__ = ["seed_points", "bars_start_at_zero", "seed_labels"]
