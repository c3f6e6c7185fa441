"""Independent jobs in worker processes: both CPU cores busy while a lesson waits.

The tiny model runs single-threaded (on a shared 2-core machine that was measured faster than
two threads), so two independent trainings or runs are best given one process each. Each job
is a module-level function and its arguments (what a spawned process can import and unpickle);
it runs with the lesson's environment variables, and its time breakdown
(:mod:`course_lib.timing`) comes back with its result and is added to the lesson's.

``workers=1`` runs the same jobs one after another in this process: the serial path, for
debugging and for the equality test (same results either way, because every job seeds itself).

A page that hands out many small batches of jobs (level 2's sweeps) keeps its workers between
calls (``reuse_pool=True``): starting a worker (importing torch, loading the model) takes seconds.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
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


_KEPT_POOLS: dict[int, ProcessPoolExecutor] = {}


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process gets when its parent dies


def _exit_with_parent(parent_pid: int | None) -> None:
    # A killed kernel (Jupyter's "restart", papermill's timeout, a stopped test session) cannot shut its
    # pool down: a worker in the middle of a training would go on alone for minutes, holding a core.
    # Linux can end it with its parent. Elsewhere the worker ends when its current job does.
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


def _init_worker(parent_pid: int | None, ignore_interrupts: bool) -> None:
    _exit_with_parent(parent_pid)
    if ignore_interrupts:
        # A kept worker outlives the call that started it. When Jupyter stops the kernel it interrupts the
        # kernel's whole process group: the idle worker would print a KeyboardInterrupt traceback into the
        # log. The kernel decides; the worker just exits when the pool is shut down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _new_pool(workers: int, ignore_interrupts: bool = False) -> ProcessPoolExecutor:
    # Linux sends the death signal when the *thread* that started the worker ends, so it is only
    # asked for from the main thread (where a lesson's cells run), which lives as long as the kernel.
    parent_pid = os.getpid() if threading.current_thread() is threading.main_thread() else None
    # "spawn": a fresh interpreter per worker; forking a process that has started torch's or the
    # tokenizer's threads can deadlock
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(parent_pid, ignore_interrupts))


def _kept_pool(workers: int) -> ProcessPoolExecutor:
    """A pool kept for the rest of this process (the lesson's kernel), so its workers keep what they loaded."""
    if workers not in _KEPT_POOLS:
        _KEPT_POOLS[workers] = _new_pool(workers, ignore_interrupts=True)
    return _KEPT_POOLS[workers]


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int | None = None, reuse_pool: bool = False,
             on_done: Callable[[int], None] | None = None) -> list:
    """``[fn(*args) for args in jobs]``, in that order, computed by ``workers`` processes.

    Jobs start in list order as workers free up, so put a job that needs another's results
    (e.g. a run that copies another run's finished stages) after it. ``reuse_pool``: keep the
    workers for the next call. ``on_done(i)`` is called as job ``i`` finishes (a progress bar).
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(jobs) <= 1:
        results = []
        for i, args in enumerate(jobs):
            results.append(fn(*args))
            if on_done:
                on_done(i)
        return results
    start = time.perf_counter()
    pool = _kept_pool(workers) if reuse_pool else _new_pool(min(workers, len(jobs)))
    try:
        futures = {pool.submit(_timed_job, fn, tuple(args)): i for i, args in enumerate(jobs)}
        done: dict[int, Any] = {}
        for fut in as_completed(futures):
            out, seconds = fut.result()
            timing.absorb(seconds)
            done[futures[fut]] = out
            if on_done:
                on_done(futures[fut])
    except BaseException:
        # a failed job or an interrupt: no half-used pool is kept for the next call
        if reuse_pool:
            _KEPT_POOLS.pop(workers, None)
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        if not reuse_pool:
            pool.shutdown()
    timing.add_waiting(time.perf_counter() - start)
    return [done[i] for i in range(len(jobs))]
