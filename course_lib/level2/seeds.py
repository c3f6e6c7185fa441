"""Training-seed variance: the same sweep under several training seeds, and verdicts that hold across them.

One training run is one draw: the adapter's random initialisation and the order of the
training examples depend on the training seed, and seeds 1 and 2 can move a comparison
by as much as the difference being read. So the level-2 lesson repeats each comparison
under several training seeds (same train/validation split, same validation examples) and
gives a verdict only when every seed agrees.

The verdict of one seed is paired over the validation examples: for each validation
example, the candidate's loss minus the reference's loss (both measured on the same
example after training), and the bootstrap interval of the mean of those differences
(:func:`course_lib.stats.paired_difference`). That interval covers which validation
examples happened to be drawn, for that one trained adapter; the seeds cover the
training randomness. :func:`compare_across_seeds` combines both:
:func:`course_lib.stats.across_seeds_verdict` of the per-seed verdicts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import pandas as pd

from .sweep import SweepTable
from ..stats import (BETTER, MIXED_ACROSS_SEEDS, NO_CLEAR_DIFFERENCE, WORSE, across_seeds_verdict,
                     difference_verdict, paired_difference)

# The lesson's verdict words (a setting "良くなる" = its validation loss is lower in every seed).
VERDICT_WORDS = {
    BETTER: "良くなる",
    WORSE: "悪くなる",
    NO_CLEAR_DIFFERENCE: "はっきりした差はない",
    MIXED_ACROSS_SEEDS: "シードによって違う",
}
EXAMPLE_LOSSES = "val_example_losses"  # the sweep column with one validation loss per validation example


@dataclass(frozen=True)
class SeedComparison:
    """A candidate setting against a reference setting, seed by seed.

    ``mean_diffs[i]``: mean over validation examples of (candidate − reference) loss in
    ``seeds[i]``; ``intervals[i]``: its bootstrap interval over the examples;
    ``seed_verdicts[i]``: the verdict of that seed; ``verdict``: the verdict every seed
    agrees on, else ``MIXED_ACROSS_SEEDS``. Negative differences mean a lower loss.
    """

    seeds: tuple
    mean_diffs: tuple[float, ...]
    intervals: tuple[tuple[float, float], ...]
    seed_verdicts: tuple[str, ...]
    verdict: str
    n_examples: int

    @property
    def word(self) -> str:
        """The verdict in the lesson's words (良くなる / 悪くなる / はっきりした差はない / シードによって違う)."""
        return VERDICT_WORDS[self.verdict]

    @property
    def mean_diff(self) -> float:
        """Mean over seeds of the per-seed mean differences."""
        return sum(self.mean_diffs) / len(self.mean_diffs)

    def per_seed_text(self, digits: int = 3) -> str:
        """``シード0: -0.120、シード1: -0.080`` (the per-seed mean differences)."""
        return "、".join(f"シード{s}: {d:+.{digits}f}" for s, d in zip(self.seeds, self.mean_diffs))

    def describe(self, digits: int = 3) -> str:
        """``「悪くなる」（シード0: +0.512、シード1: +0.498）``: the verdict word and the per-seed differences."""
        return f"「{self.word}」（{self.per_seed_text(digits)}）"

    def row(self) -> dict:
        """One table row: per-seed differences with intervals, the seeds' verdicts and the verdict."""
        out = {f"シード{s}": f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
               for s, d, (lo, hi) in zip(self.seeds, self.mean_diffs, self.intervals)}
        out["判定"] = self.word
        return out


def compare_across_seeds(reference: Mapping[Hashable, Mapping[Hashable, float]],
                         candidate: Mapping[Hashable, Mapping[Hashable, float]],
                         higher_is_better: bool = False, n_boot: int = 2000, boot_seed: int = 0,
                         level: float = 0.95) -> SeedComparison:
    """Verdict on ``candidate`` against ``reference`` that holds across training seeds.

    Both map training seed → {validation example id → value} (a loss by default, so
    ``higher_is_better=False``). Both must hold the same seeds, and within a seed the same
    examples (ValueError otherwise). Per seed: the paired difference candidate − reference
    over the examples and its bootstrap interval; BETTER / WORSE when the interval lies
    strictly on one side of 0, else NO_CLEAR_DIFFERENCE. Across seeds: the verdict all
    seeds share, else MIXED_ACROSS_SEEDS.
    """
    if set(reference) != set(candidate):
        raise ValueError(f"seeds differ: reference {sorted(reference, key=str)}, candidate {sorted(candidate, key=str)}")
    if not reference:
        raise ValueError("need at least one seed")
    seeds = tuple(sorted(reference, key=str))
    diffs, intervals, verdicts, sizes = [], [], [], set()
    for s in seeds:
        pd_ = paired_difference(reference[s], candidate[s], n_boot=n_boot, seed=boot_seed, level=level)
        diffs.append(pd_.mean_diff)
        intervals.append((pd_.lo, pd_.hi))
        verdicts.append(difference_verdict(pd_.lo, pd_.hi, higher_is_better=higher_is_better))
        sizes.add(pd_.n_units)
    if len(sizes) != 1:
        raise ValueError(f"the seeds were measured on different numbers of examples: {sorted(sizes)}")
    return SeedComparison(seeds, tuple(diffs), tuple(intervals), tuple(verdicts), across_seeds_verdict(verdicts),
                          sizes.pop())


def losses_by_seed(table: pd.DataFrame, column: str = EXAMPLE_LOSSES, **match) -> dict:
    """Training seed → {example number → value} for the one row per seed that matches ``match``.

    ``table`` is a multi-seed sweep (:func:`run_seeds`); ``match`` names column values, e.g.
    ``losses_by_seed(table, lora_r=8)``. Exactly one row per seed must match.
    """
    rows = table
    for key, value in match.items():
        rows = rows[rows[key] == value]
    if rows.empty:
        raise ValueError(f"no row matches {match}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"several rows per seed match {match}; narrow the match")
    return {s: dict(enumerate(v)) for s, v in zip(rows["seed"], rows[column])}


def compare_rows(table: pd.DataFrame, reference: Mapping, candidate: Mapping, column: str = EXAMPLE_LOSSES,
                 **kwargs) -> SeedComparison:
    """:func:`compare_across_seeds` of two settings of a multi-seed sweep, each given as ``{column: value}``."""
    return compare_across_seeds(losses_by_seed(table, column, **reference), losses_by_seed(table, column, **candidate),
                                **kwargs)


def run_seeds(sweep: Callable, configs: Sequence[Mapping], train, val, seeds: Sequence[int], desc: str = "sweep",
              **kwargs) -> SweepTable:
    """The same ``sweep(configs, train, val, seed=...)`` once per training seed, stacked.

    Returns the rows of every seed with a ``seed`` column in front; ``.histories`` also get
    a ``seed`` column. ``sweep`` is :func:`course_lib.level2.sweep.run_sweep` with the model
    bound (``functools.partial``); its cache makes a run shared between experiments train once.
    """
    if not seeds:
        raise ValueError("need at least one training seed")
    tables = [sweep(list(configs), train, val, seed=s, desc=f"{desc} (seed {s})", **kwargs) for s in seeds]
    out = SweepTable(pd.concat([pd.DataFrame(t).assign(seed=s) for t, s in zip(tables, seeds)], ignore_index=True))
    out.insert(0, "seed", out.pop("seed"))
    out.histories = pd.concat([getattr(t, "histories", pd.DataFrame()).assign(seed=s) for t, s in zip(tables, seeds)],
                              ignore_index=True)
    return out


def seed_table(table: pd.DataFrame, by: str, value: str = "val_loss", digits: int = 3) -> pd.DataFrame:
    """One row per setting ``by``: ``value`` in each seed (columns ``シード0`` ...), their mean and range.

    Settings keep the order in which the table first lists them.
    """
    wide = table.pivot_table(index=by, columns="seed", values=value, aggfunc="first", sort=False)
    wide = wide.reindex(pd.unique(table[by]))
    out = wide.rename(columns=lambda s: f"シード{s}")
    out["平均"] = wide.mean(axis=1)
    out["幅（最大−最小）"] = wide.max(axis=1) - wide.min(axis=1)
    out.columns.name = None
    return out.round(digits).reset_index()


def verdict_table(comparisons: Mapping[str, SeedComparison], label: str = "比較") -> pd.DataFrame:
    """One row per comparison: each seed's mean difference with its 95% interval, then the verdict."""
    return pd.DataFrame([{label: name, **c.row()} for name, c in comparisons.items()])


def claim_agreement(verdicts: str | Sequence[str], expected: str) -> str:
    """Did a claim that predicts ``expected`` hold? 合った / シードによって違う / 合わなかった.

    Several verdicts (a claim about several comparisons): 合った when every one is
    ``expected``, シードによって違う when none contradicts it outright but one is mixed
    across seeds, else 合わなかった.
    """
    verdicts = [verdicts] if isinstance(verdicts, str) else list(verdicts)
    if not verdicts:
        raise ValueError("need at least one verdict")
    if all(v == expected for v in verdicts):
        return "合った"
    if all(v in (expected, MIXED_ACROSS_SEEDS) for v in verdicts):
        return "シードによって違う"
    return "合わなかった"


__all__ = ["VERDICT_WORDS", "EXAMPLE_LOSSES", "SeedComparison", "compare_across_seeds", "losses_by_seed",
           "compare_rows", "run_seeds", "seed_table", "verdict_table", "claim_agreement"]
