"""Let nbval run the lesson sources (jupytext percent ``.py``) directly.

nbval only collects ``.ipynb``; this collector reads ``notebooks/*.py`` with
jupytext and hands the notebook to nbval's own machinery.
"""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).parent / "notebooks"


def pytest_collect_file(file_path: Path, parent):
    opt = parent.config.option
    if not (getattr(opt, "nbval", False) or getattr(opt, "nbval_lax", False)):
        return None
    if file_path.suffix == ".py" and file_path.parent == NOTEBOOKS_DIR:
        return JupytextNotebook.from_parent(parent, path=file_path)
    return None


# What the test command runs a lesson with: the embedded model and CI sizes, never the hub,
# whatever the network (the parameters cell would otherwise say model_profile="auto").
TEST_PARAMETERS = "\n# set by the test command (conftest.py)\nmodel_profile = \"tiny\"\nquick = True\n"


def _pin_offline_parameters(nb) -> None:
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source += TEST_PARAMETERS
            return
    raise ValueError("lesson has no cell tagged 'parameters': the test command cannot pin the model profile")


try:
    import nbformat
    import nbval.plugin as nbval_plugin

    class _ReadsOneNotebook:
        """Stands in for the nbformat module while nbval reads the file."""

        def __init__(self, nb):
            self._nb = nb

        def read(self, *args, **kwargs):
            return self._nb

        def __getattr__(self, name):
            return getattr(nbformat, name)

    class JupytextNotebook(nbval_plugin.IPyNbFile):
        def collect(self):
            import jupytext

            nb = jupytext.read(self.path)
            _pin_offline_parameters(nb)
            original = nbval_plugin.nbformat
            nbval_plugin.nbformat = _ReadsOneNotebook(nb)
            try:
                yield from super().collect()
            finally:
                nbval_plugin.nbformat = original

except ImportError:  # nbval not installed: plain pytest still works
    JupytextNotebook = None  # type: ignore[assignment]

    def pytest_collect_file(file_path: Path, parent):  # noqa: F811
        return None
