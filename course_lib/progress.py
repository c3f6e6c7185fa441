"""Progress bars that respect the runner's ``TQDM_DISABLE`` (no bars in the book)."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_disabled_by_env() -> bool:
    """True when ``TQDM_DISABLE`` is set (the runner sets it for headless lessons).

    tqdm reads that variable only for bars created without an explicit ``disable=``,
    so every course bar asks here first."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm.auto`` bar, shown when ``enabled`` and not switched off by the environment."""
    return tqdm(iterable, disable=not enabled or progress_disabled_by_env(), **kwargs)
