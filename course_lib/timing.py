"""Where a lesson's time goes: cheap wall-clock timers by category, not a profiler.

``train``, ``generate``, ``judge``, ``perplexity`` and ``plot`` are timed where that work
happens (:func:`course_lib.train.train`, :func:`course_lib.generate.sample_answers`, the
level-3 grader, :func:`course_lib.perplexity.perplexity`, the lessons' figures). A section
nested in another is counted once, in the inner category: the outer one gets its own time
only, so the categories add up to at most the lesson's wall time.

Work done in worker processes (:mod:`course_lib.parallel`) is timed there and added with
:func:`absorb`; the lesson's wait for them is not ``other`` (:func:`add_waiting`). Two workers run
side by side, so the categories can then add up to more than the lesson's wall time (the report
says how many seconds ran in workers).

The lesson's last cell calls :func:`write_breakdown`; the runner puts the file it writes
into the execution report.
"""
from __future__ import annotations

import functools
import json
import time
from contextlib import contextmanager
from pathlib import Path

from . import paths

CATEGORIES = ("train", "generate", "judge", "perplexity", "plot")
OTHER = "other"
BREAKDOWN_SUFFIX = "_timing.json"  # <lesson>_timing.json beside the executed lesson

_seconds: dict[str, float] = {}
_worker_seconds: dict[str, float] = {}
_waiting = [0.0]  # wall seconds this process spent waiting for its workers
_stack: list[list[float]] = []  # [start, seconds of nested sections] per open section
_started: float | None = None


def reset() -> None:
    """Start counting from zero (a lesson's first cell calls this through ``start_lesson``)."""
    global _started
    _seconds.clear()
    _worker_seconds.clear()
    _stack.clear()
    _waiting[0] = 0.0
    _started = time.perf_counter()


@contextmanager
def timed(category: str):
    """Count the time spent in the ``with`` block under ``category`` (minus nested sections)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown timing category {category!r}; use one of {CATEGORIES}")
    frame = [time.perf_counter(), 0.0]
    _stack.append(frame)
    try:
        yield
    finally:
        _stack.pop()
        elapsed = time.perf_counter() - frame[0]
        _seconds[category] = _seconds.get(category, 0.0) + elapsed - frame[1]
        if _stack:  # the enclosing section does not count this time again
            _stack[-1][1] += elapsed


def timed_function(category: str):
    """Decorator form of :func:`timed`: every call of the function counts under ``category``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with timed(category):
                return fn(*args, **kwargs)
        return inner
    return wrap


def snapshot() -> dict[str, float]:
    """Seconds per category counted in this process so far."""
    return {c: _seconds.get(c, 0.0) for c in CATEGORIES}


def absorb(seconds: dict[str, float]) -> None:
    """Add the per-category seconds a worker process measured."""
    for c, s in seconds.items():
        if c in CATEGORIES:
            _worker_seconds[c] = _worker_seconds.get(c, 0.0) + float(s)


def add_waiting(seconds: float) -> None:
    """Wall time this process spent waiting for worker processes: their own seconds are added with
    :func:`absorb`, so the wait is not counted again under ``other``."""
    _waiting[0] += float(seconds)


def breakdown(total: float | None = None) -> dict:
    """Seconds per category (this process plus workers), ``other`` = wall time not in any category.

    ``total`` is the lesson's wall time (default: since :func:`reset`).
    """
    if total is None:
        total = time.perf_counter() - _started if _started is not None else sum(_seconds.values())
    here = snapshot()
    out = {c: round(here[c] + _worker_seconds.get(c, 0.0), 2) for c in CATEGORIES}
    out[OTHER] = round(max(0.0, total - sum(here.values()) - _waiting[0]), 2)
    out["total"] = round(total, 2)
    out["in_workers"] = round(sum(_worker_seconds.values()), 2)
    out["waiting_for_workers"] = round(_waiting[0], 2)
    return out


def write_breakdown(lesson: str, total: float | None = None) -> Path | None:
    """Write ``<lesson>_timing.json`` for the execution report (only when the runner asked for
    report files, i.e. ``COURSE_REPORT_DIR`` is set); returns its path."""
    out_dir = paths.report_dir()
    if out_dir is None:
        return None
    path = Path(out_dir) / f"{lesson}{BREAKDOWN_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(breakdown(total), indent=2), encoding="utf-8")
    return path


def read_breakdown(path: Path) -> dict | None:
    """A breakdown file written by :func:`write_breakdown`, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "total" in data else None
