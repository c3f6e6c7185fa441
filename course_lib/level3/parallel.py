"""Several level-3 runs at once: each run in a worker process, then read back here.

A page that compares runs (with and without replay, several training seeds, several update
rules) computes them with :func:`run_loops`: the runs go to worker processes
(:func:`course_lib.parallel.run_jobs`), which write their stages to the run folders as
:func:`.loop.run_loop` always does; then ``run_loop`` here finds every stage finished and only
reads it back. Two runs that share a stage (the baseline and iteration 0 of runs that differ
only after it; an iteration that trains on the same data from the same parent, as the runs with
and without replay do while no question passes) compute it once: the second waits for the first
(:class:`.runs.StageClaim`) and copies it.

Workers are used for the tiny model on the CPU with the rubric judge, which a worker can
rebuild identically. Anything else (Qwen3-0.6B, a GPU, the OpenAI judge) runs serially: a
second copy of a large model or of a GPU context gains nothing, and the OpenAI judge already
grades concurrently.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from .. import paths
from ..parallel import default_workers, run_jobs
from .config import LoopConfig
from .data import LoopData
from .loop import run_loop
from .runs import LoopResult, judge_identity


def _loop_in_worker(config: dict, profile: str, runs_dir: str) -> dict:
    """One run in a worker process: the model and the rubric judge are built there."""
    from ..profiles import load_model
    from .judge import RubricJudge

    loaded = load_model(profile, verbose=False)
    res = run_loop(LoopConfig.from_dict(config), loaded, RubricJudge(), progress=False, runs_dir=runs_dir, log=None)
    return {"reused": res.reused, "seconds": res.seconds, "calls": res.judge_calls, "errors": res.judge_errors}


def can_use_workers(loaded, judge) -> bool:
    """True for the tiny model on the CPU with the default rubric judge (see the module docstring)."""
    if loaded.profile != "tiny" or loaded.device.device != "cpu":
        return False
    from .judge import RubricJudge

    return judge.name == "rubric" and judge_identity(judge) == judge_identity(RubricJudge())


def run_loops(configs: Sequence[LoopConfig], loaded, judge, workers: int | None = None,
              runs_dir: Path | str | None = None, data: LoopData | None = None,
              log: Callable[[str], None] | None = print) -> list[LoopResult]:
    """``[run_loop(c, loaded, judge) for c in configs]``, computed by ``workers`` processes where
    :func:`can_use_workers` allows (default: 2 on a 2-core machine; 1 = serial).

    Put runs that reuse another run's stages after it. Each result reports how its stages were
    obtained and the judge calls paid, as if it had been computed here.
    """
    workers = default_workers() if workers is None else workers
    runs_dir = Path(runs_dir) if runs_dir else paths.runs_dir()
    if workers <= 1 or len(configs) <= 1 or not can_use_workers(loaded, judge):
        return [run_loop(c, loaded, judge, data=data, runs_dir=runs_dir, log=log) for c in configs]
    if data is not None and data.fingerprint() != LoopData.load().fingerprint():
        raise ValueError("worker processes read the course's datasets; pass data=None or workers=1")
    done = run_jobs(_loop_in_worker, [(c.to_dict(), loaded.profile, str(runs_dir)) for c in configs], workers)
    results = []
    for c, work in zip(configs, done):
        res = run_loop(c, loaded, judge, data=data, runs_dir=runs_dir, log=None)  # every stage is finished: read back
        results.append(dataclasses.replace(res, reused=work["reused"], seconds=work["seconds"],
                                           judge_calls=work["calls"], judge_errors=work["errors"]))
    return results
