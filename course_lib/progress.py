"""Progress bars that stay off when nobody is watching (:func:`course_lib.paths.headless`)."""
from __future__ import annotations

from tqdm.auto import tqdm

from .paths import headless


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm.auto`` bar, shown when ``enabled`` and the run is not headless.

    tqdm reads ``TQDM_DISABLE`` only for bars created without an explicit ``disable=``,
    so every course bar asks :func:`headless` here."""
    return tqdm(iterable, disable=not enabled or headless(), **kwargs)
