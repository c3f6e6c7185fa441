"""Every path the course reads or writes, every ``COURSE_*`` variable, and the headless check.

One place answers "where does this go, and which variable moves it":

===================  =====================================  ===============================
what                 default                                override
===================  =====================================  ===============================
datasets             ``<repo>/datasets``                    (none: part of the course)
built models, judge  ``<repo>/.cache``                      ``COURSE_CACHE_DIR``
cache
LLM judge's cache    ``<cache>/judge``                      ``COURSE_JUDGE_CACHE_DIR``
executed-lesson      ``<repo>/.cache/executed``             ``COURSE_CACHE_DIR`` (its
cache                                                       ``executed/`` folder)
level-3 runs         ``<repo>/runs/level3``                 ``COURSE_RUNS_DIR``
report sections      (none: only when the runner runs)      ``COURSE_REPORT_DIR``
executed lessons     ``<repo>/book/executed``               ``--out`` of ``python -m course_lib``
a local Qwen3-0.6B   (none)                                 ``COURSE_QWEN_PATH``
===================  =====================================  ===============================

Not a path, but a ``COURSE_*`` variable all the same: ``COURSE_WORKERS`` sets how many
worker processes run independent jobs (:mod:`course_lib.parallel`; 1 = serial).

"Headless" means no person is watching (papermill in CI or ``python -m course_lib run``):
the runner sets ``TQDM_DISABLE=1``, which also switches every tqdm bar off.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = REPO_ROOT / "datasets"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_DIR = REPO_ROOT / "book"
EXECUTED_DIR = BOOK_DIR / "executed"
TOC_PATH = REPO_ROOT / "_toc.yml"
CONFIG_PATH = REPO_ROOT / "_config.yml"

CACHE_ENV = "COURSE_CACHE_DIR"
JUDGE_CACHE_ENV = "COURSE_JUDGE_CACHE_DIR"
RUNS_ENV = "COURSE_RUNS_DIR"
REPORT_ENV = "COURSE_REPORT_DIR"
QWEN_PATH_ENV = "COURSE_QWEN_PATH"
WORKERS_ENV = "COURSE_WORKERS"
HEADLESS_ENV = "TQDM_DISABLE"  # tqdm reads it too, so bars made elsewhere also stay off


def cache_dir() -> Path:
    """Built models and the judge cache: ``$COURSE_CACHE_DIR`` or ``<repo>/.cache`` (git-ignored)."""
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache")


def judge_cache_dir() -> Path:
    """The LLM judge's grade cache: ``$COURSE_JUDGE_CACHE_DIR`` or ``<cache>/judge``."""
    return Path(os.environ.get(JUDGE_CACHE_ENV) or cache_dir() / "judge")


def executed_cache_dir() -> Path:
    """The runner's cache of executed lessons: ``<cache_dir()>/executed`` (see ``course_lib.publish.cache``)."""
    return cache_dir() / "executed"


def runs_dir() -> Path:
    """Level-3 run folders: ``$COURSE_RUNS_DIR`` or ``<repo>/runs/level3`` (git-ignored)."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs" / "level3")


def report_dir() -> Path | None:
    """Where a lesson adds its section to the execution report: set by the runner, else None."""
    value = os.environ.get(REPORT_ENV)
    return Path(value) if value else None


def qwen_path() -> str | None:
    """A local Qwen3-0.6B folder named by ``$COURSE_QWEN_PATH``, if any."""
    return os.environ.get(QWEN_PATH_ENV) or None


def workers_override() -> int | None:
    """The number of worker processes ``$COURSE_WORKERS`` asks for (at least 1), or None when unset."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"{WORKERS_ENV} must be a whole number such as 1 or 2, got {value!r}") from None


def headless() -> bool:
    """True when no person is watching: the runner set ``TQDM_DISABLE`` to a true value."""
    return os.environ.get(HEADLESS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def mark_headless(report_to: Path | None = None) -> None:
    """What the runner does before executing lessons: no progress bars, report sections to ``report_to``."""
    os.environ[HEADLESS_ENV] = "1"
    if report_to is not None:
        os.environ[REPORT_ENV] = str(report_to)


def display_path(path: Path | str) -> str:
    """``path`` relative to the repository when it lies inside it (for messages and pages)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)
