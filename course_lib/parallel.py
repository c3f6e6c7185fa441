"""Independent jobs in worker processes: both CPU cores busy while a lesson waits.

The tiny model runs single-threaded (on a shared 2-core machine that was measured faster than
two threads), so two independent trainings or runs are best given one process each. Each job
is a module-level function and its arguments (what a spawned process can import and unpickle);
it runs with the lesson's environment variables, and its time breakdown
(:mod:`course_lib.timing`) comes back with its result and is added to the lesson's.

``workers=1`` runs the same jobs one after another in this process: the serial path, for
debugging and for the equality test (same results either way, because every job seeds itself).
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

from . import paths, timing

DEFAULT_WORKERS = 2


def default_workers() -> int:
    """Two workers where there are two cores or more; ``COURSE_WORKERS`` overrides (1 = serial)."""
    override = paths.workers_override()
    return override if override is not None else min(DEFAULT_WORKERS, os.cpu_count() or 1)


def _timed_job(fn: Callable, args: tuple) -> tuple[Any, dict]:
    timing.reset()
    out = fn(*args)
    return out, timing.snapshot()


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int | None = None) -> list:
    """``[fn(*args) for args in jobs]``, in that order, computed by ``workers`` processes.

    Jobs start in list order as workers free up, so put a job that needs another's results
    (e.g. a run that copies another run's finished stages) after it.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*args) for args in jobs]
    # "spawn": a fresh interpreter per worker; forking a process that has started torch's or the
    # tokenizer's threads can deadlock
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_timed_job, fn, tuple(args)) for args in jobs]
        results = []
        for fut in futures:
            out, seconds = fut.result()
            timing.absorb(seconds)
            results.append(out)
    timing.add_waiting(time.perf_counter() - start)
    return results
