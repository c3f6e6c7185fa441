"""Level 2, ``course_lib.level2.seeds`` and ``.figures``: verdicts that hold across training seeds,
checked on constructed inputs whose answers are computed by hand, and the bar-chart check."""
from __future__ import annotations

import pandas as pd
import pytest

from course_lib.level2.figures import bars_start_at_zero, seed_points
from course_lib.level2.seeds import (VERDICT_WORDS, claim_agreement, compare_across_seeds, compare_rows,
                                     losses_by_seed, run_seeds, seed_table, verdict_table)
from course_lib.level2.sweep import SweepTable
from course_lib.stats import BETTER, MIXED_ACROSS_SEEDS, NO_CLEAR_DIFFERENCE, WORSE


def _shifted(base: dict, diffs: list[float]) -> dict:
    """The reference losses plus one difference per example (examples in key order)."""
    return {k: base[k] + d for k, d in zip(sorted(base), diffs)}


BASE = {"a": 5.0, "b": 4.0, "c": 6.0}


def test_lower_loss_in_every_seed_is_better():
    # seed 0: differences -0.1, -0.2, -0.3 (mean -0.2); seed 1: -0.3, -0.3, -0.6 (mean -0.4).
    # Every bootstrap mean lies between the smallest and largest difference, so both intervals are below 0.
    reference = {0: BASE, 1: BASE}
    candidate = {0: _shifted(BASE, [-0.1, -0.2, -0.3]), 1: _shifted(BASE, [-0.3, -0.3, -0.6])}
    c = compare_across_seeds(reference, candidate)
    assert c.seeds == (0, 1) and c.n_examples == 3
    assert c.mean_diffs == pytest.approx((-0.2, -0.4))
    assert c.mean_diff == pytest.approx(-0.3)
    assert all(-0.3 - 1e-9 <= lo <= hi <= -0.1 + 1e-9 for lo, hi in c.intervals[:1])
    assert all(hi < 0 for _, hi in c.intervals)
    assert c.seed_verdicts == (BETTER, BETTER) and c.verdict == BETTER and c.word == "良くなる"
    assert c.per_seed_text() == "シード0: -0.200、シード1: -0.400"


def test_higher_loss_in_every_seed_is_worse_and_higher_is_better_flips_it():
    reference = {0: BASE, 1: BASE, 2: BASE}
    candidate = {s: _shifted(BASE, [0.1, 0.2, 0.3]) for s in (0, 1, 2)}
    c = compare_across_seeds(reference, candidate)
    assert c.verdict == WORSE and c.word == "悪くなる" and c.mean_diff == pytest.approx(0.2)
    assert compare_across_seeds(reference, candidate, higher_is_better=True).verdict == BETTER


def test_seeds_that_disagree_give_mixed():
    # seed 0 lower on every example, seed 1 higher on every example: each seed is clear, they disagree.
    reference = {0: BASE, 1: BASE}
    candidate = {0: _shifted(BASE, [-0.2, -0.2, -0.2]), 1: _shifted(BASE, [0.2, 0.2, 0.2])}
    c = compare_across_seeds(reference, candidate)
    assert c.seed_verdicts == (BETTER, WORSE)
    assert c.verdict == MIXED_ACROSS_SEEDS and c.word == "シードによって違う"
    assert c.mean_diff == pytest.approx(0.0)


def test_clear_in_one_seed_and_unclear_in_another_is_not_a_verdict():
    # seed 1: differences -1 and +1. Bootstrap means of two values are -1, 0, +1 (1/4, 1/2, 1/4),
    # so the 95% interval is [-1, +1] and contains 0.
    base = {"a": 5.0, "b": 5.0}
    reference = {0: base, 1: base}
    candidate = {0: _shifted(base, [-0.5, -0.5]), 1: _shifted(base, [-1.0, 1.0])}
    c = compare_across_seeds(reference, candidate)
    assert c.intervals[1] == pytest.approx((-1.0, 1.0))
    assert c.seed_verdicts == (BETTER, NO_CLEAR_DIFFERENCE) and c.verdict == MIXED_ACROSS_SEEDS


def test_no_difference_in_every_seed_is_no_clear_difference():
    reference = {0: BASE, 1: BASE}
    c = compare_across_seeds(reference, {0: dict(BASE), 1: _shifted(BASE, [-1.0, 0.0, 1.0])})
    assert c.intervals[0] == (0.0, 0.0) and c.mean_diffs[0] == 0.0  # identical losses: a legitimate zero width
    assert c.seed_verdicts == (NO_CLEAR_DIFFERENCE, NO_CLEAR_DIFFERENCE)
    assert c.verdict == NO_CLEAR_DIFFERENCE and c.word == "はっきりした差はない"


def test_mismatched_seeds_or_examples_are_refused():
    with pytest.raises(ValueError, match="seeds differ"):
        compare_across_seeds({0: BASE, 1: BASE}, {0: BASE})
    with pytest.raises(ValueError, match="units differ"):
        compare_across_seeds({0: BASE}, {0: {"a": 1.0, "b": 1.0}})
    with pytest.raises(ValueError, match="at least one seed"):
        compare_across_seeds({}, {})


def test_every_verdict_has_its_word():
    assert set(VERDICT_WORDS) == {BETTER, WORSE, NO_CLEAR_DIFFERENCE, MIXED_ACROSS_SEEDS}
    assert set(VERDICT_WORDS.values()) == {"良くなる", "悪くなる", "はっきりした差はない", "シードによって違う"}


def _seed_table() -> pd.DataFrame:
    # two settings (r = 1, r = 8) × two seeds; per-example losses of 2 validation examples
    return pd.DataFrame([
        {"seed": 0, "lora_r": 1, "val_loss": 5.5, "val_example_losses": (5.4, 5.6)},
        {"seed": 0, "lora_r": 8, "val_loss": 5.0, "val_example_losses": (4.9, 5.1)},
        {"seed": 1, "lora_r": 1, "val_loss": 5.6, "val_example_losses": (5.5, 5.7)},
        {"seed": 1, "lora_r": 8, "val_loss": 5.2, "val_example_losses": (5.0, 5.4)},
    ])


def test_losses_by_seed_and_compare_rows_read_a_multi_seed_table():
    table = _seed_table()
    assert losses_by_seed(table, lora_r=8) == {0: {0: 4.9, 1: 5.1}, 1: {0: 5.0, 1: 5.4}}
    c = compare_rows(table, {"lora_r": 1}, {"lora_r": 8})
    # seed 0: 4.9 - 5.4 = -0.5, 5.1 - 5.6 = -0.5; seed 1: 5.0 - 5.5 = -0.5, 5.4 - 5.7 = -0.3
    assert c.mean_diffs == pytest.approx((-0.5, -0.4))
    assert c.verdict == BETTER
    assert c.row() == {"シード0": "-0.500 [-0.500, -0.500]", "シード1": "-0.400 [-0.500, -0.300]", "判定": "良くなる"}
    with pytest.raises(ValueError, match="no row"):
        losses_by_seed(table, lora_r=4)
    with pytest.raises(ValueError, match="several rows"):
        losses_by_seed(table)


def test_seed_table_gives_each_seed_its_mean_and_range():
    out = seed_table(_seed_table(), "lora_r").set_index("lora_r")
    assert list(out.columns) == ["シード0", "シード1", "平均", "幅（最大−最小）"]
    assert out.loc[1].tolist() == pytest.approx([5.5, 5.6, 5.55, 0.1])
    assert out.loc[8].tolist() == pytest.approx([5.0, 5.2, 5.1, 0.2])


def test_verdict_table_and_claim_agreement():
    c = compare_rows(_seed_table(), {"lora_r": 1}, {"lora_r": 8})
    table = verdict_table({"r=8 − r=1": c})
    assert table.to_dict("records") == [{"比較": "r=8 − r=1", **c.row()}]
    assert claim_agreement(BETTER, BETTER) == "合った"
    assert claim_agreement(MIXED_ACROSS_SEEDS, BETTER) == "シードによって違う"
    assert claim_agreement(NO_CLEAR_DIFFERENCE, BETTER) == "合わなかった"
    assert claim_agreement(WORSE, BETTER) == "合わなかった"
    # a claim about several comparisons (e.g. "too small and too large are both worse")
    assert claim_agreement([WORSE, WORSE], WORSE) == "合った"
    assert claim_agreement([WORSE, MIXED_ACROSS_SEEDS], WORSE) == "シードによって違う"
    assert claim_agreement([WORSE, NO_CLEAR_DIFFERENCE], WORSE) == "合わなかった"
    assert c.describe() == "「良くなる」（シード0: -0.500、シード1: -0.400）"


def test_run_seeds_stacks_one_sweep_per_seed():
    calls = []

    def fake_sweep(configs, train, val, seed, desc):
        calls.append((seed, desc))
        t = SweepTable([{"name": c["name"], "val_loss": 1.0 + seed} for c in configs])
        t.histories = pd.DataFrame({"run": [0], "loss": [2.0]})
        return t

    table = run_seeds(fake_sweep, [{"name": "x"}, {"name": "y"}], [], [], seeds=[3, 4], desc="rank")
    assert calls == [(3, "rank (seed 3)"), (4, "rank (seed 4)")]
    assert list(table.columns)[0] == "seed" and list(table["seed"]) == [3, 3, 4, 4]
    assert list(table["val_loss"]) == [4.0, 4.0, 5.0, 5.0]
    assert list(table.histories["seed"]) == [3, 4]
    with pytest.raises(ValueError):
        run_seeds(fake_sweep, [{"name": "x"}], [], [], seeds=[])


# --------------------------------------------------------------------------- figures

def test_bar_charts_must_start_at_zero():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (good, bad, lines) = plt.subplots(1, 3)
    good.bar(["A", "B"], [4.03, 3.73])
    good.set_title("good")
    bad.bar(["A", "B"], [4.03, 3.73])
    bad.set_ylim(3.35, 4.1)  # the review's example: a 7 % difference drawn as a 3× one
    bad.set_title("bad")
    lines.plot([1, 2], [4.0, 3.7])  # not a bar chart: any range is fine
    lines.set_ylim(3.5, 4.1)
    with pytest.raises(ValueError, match="bad"):
        bars_start_at_zero(fig)
    bad.set_ylim(0, 4.1)
    assert bars_start_at_zero(fig) == [("good", 0.0), ("bad", 0.0)]
    plt.close(fig)


def test_seed_points_draws_each_seed_and_the_mean():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    seed_points(ax, _seed_table(), "lora_r", "val_loss", jitter=0.1, log2_x=True)
    points = [c for c in ax.collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in points) == 4  # 2 settings × 2 seeds
    mean_line = ax.lines[0]
    assert list(mean_line.get_ydata()) == pytest.approx([5.55, 5.1])
    plt.close(fig)


def test_seed_points_takes_categories_too():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame({"seed": [0, 1, 0, 1], "schedule": ["linear", "linear", "constant", "constant"],
                          "val_loss": [4.9, 5.1, 5.0, 5.2]})
    fig, ax = plt.subplots()
    seed_points(ax, table, "schedule", "val_loss")
    assert sum(len(c.get_offsets()) for c in ax.collections) >= 4  # every seed's point is drawn
    assert any(list(line.get_ydata()) == pytest.approx([5.0, 5.1]) for line in ax.lines)  # the means
    assert not ax.patches  # points, not bars
    plt.close(fig)
