"""Open the course in JupyterLab: ``python -m course_lib lab`` (``make lab``).

Two things make the lessons read well in JupyterLab:

- **jupyterlab-myst** (a dependency) renders the MyST in the markdown cells
  (``{admonition}``, ``{note}``, ...) as boxes instead of raw fences.
- The lessons are jupytext percent ``.py`` files. JupyterLab opens a ``.py`` in its
  text editor unless told otherwise, so the course makes jupytext's notebook view
  (the widget factory ``JUPYTEXT_FACTORY``) the default viewer for Python files.

That default is a JupyterLab *settings override*, written for this project only and
never into the user's own settings (``~/.jupyter/lab/user-settings``, which still win
over it):

- in a virtual environment or conda environment (``make`` uses ``.venv``), the
  override goes into the environment's JupyterLab app directory, as
  ``<sys.prefix>/share/jupyter/lab/settings/overrides.d/lora-course.json``. It
  applies to any JupyterLab started from that environment and goes away with it.
- in a Python shared with other work (a system or ``--user`` install), nothing is
  written there: the command starts JupyterLab with ``--LabApp.app_settings_dir``
  pointing at a project folder (``.cache/jupyterlab/settings``) that holds the
  override beside a copy of the environment's own overrides.

Then ``jupyter lab`` starts with the repository as its root folder, with this interpreter
(on Linux and macOS it replaces the command's process, so Ctrl-C reaches it directly).
Arguments after ``lab`` go to ``jupyter lab`` (``python -m course_lib lab --port 8889``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..paths import REPO_ROOT, cache_dir

# The widget factory jupytext's JupyterLab extension registers ("Open With → Jupytext Notebook").
JUPYTEXT_FACTORY = "Jupytext Notebook"
DOCMANAGER_PLUGIN = "@jupyterlab/docmanager-extension:plugin"
# JupyterLab's file type for .py files (the key of "defaultViewers").
PYTHON_FILE_TYPE = "python"
OVERRIDES_FILE = "lora-course.json"  # our file in <app settings>/overrides.d/ (one per package)
JUPYTEXT_LABEXTENSION = "jupyterlab-jupytext"


def lab_overrides() -> dict:
    """The settings the course overrides: open ``.py`` files with jupytext's notebook view."""
    return {DOCMANAGER_PLUGIN: {"defaultViewers": {PYTHON_FILE_TYPE: JUPYTEXT_FACTORY}}}


def installed_jupytext_factory() -> str | None:
    """The widget factory name in the installed jupytext lab extension, or None when not found.

    The name is a constant in the extension's bundle (``FACTORY="Jupytext Notebook"``); a test
    compares it with :data:`JUPYTEXT_FACTORY` so a renamed factory cannot go unnoticed.
    """
    from jupyter_core.paths import jupyter_path

    for base in jupyter_path("labextensions"):
        static = Path(base) / JUPYTEXT_LABEXTENSION / "static"
        if not static.is_dir():
            continue
        for js in sorted(static.glob("*.js")):
            match = re.search(r'\bFACTORY\s*=\s*"([^"]+)"', js.read_text(encoding="utf-8", errors="replace"))
            if match:
                return match.group(1)
    return None


def environment_app_settings_dir() -> Path:
    """The app settings directory JupyterLab reads by default (``<app dir>/settings``)."""
    from jupyterlab.commands import get_app_dir

    return Path(get_app_dir()) / "settings"


def in_project_environment(path: Path) -> bool:
    """True when ``path`` lies in this interpreter's own virtual or conda environment.

    A system or ``--user`` Python is shared with other work, so the course writes nothing there.
    """
    prefix = Path(sys.prefix).resolve()
    is_env = sys.prefix != sys.base_prefix or (prefix / "conda-meta").is_dir()
    try:
        path.resolve().relative_to(prefix)
    except ValueError:
        return False
    return is_env


def project_app_settings_dir() -> Path:
    """Where the override goes when the environment is not the project's own."""
    return cache_dir() / "jupyterlab" / "settings"


def write_overrides(settings_dir: Path) -> Path:
    """Write :func:`lab_overrides` to ``<settings_dir>/overrides.d/lora-course.json``; returns the path."""
    path = Path(settings_dir) / "overrides.d" / OVERRIDES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(lab_overrides(), indent=2, ensure_ascii=False) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _copy_environment_overrides(source: Path, target: Path) -> None:
    """Keep the environment's own overrides when JupyterLab reads the project folder instead."""
    for name in ("overrides.json", "overrides.json5", "page_config.json", "page_config.json5"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if (source / "overrides.d").is_dir():
        for item in (source / "overrides.d").iterdir():
            if item.is_file() and item.name != OVERRIDES_FILE:
                shutil.copy2(item, target / "overrides.d" / item.name)


def apply_project_settings(settings_dir: Path | None = None) -> tuple[Path, list[str]]:
    """Make jupytext's notebook view the default for ``.py`` files, for this project only.

    Returns the override file written and the extra ``jupyter lab`` arguments it needs
    (none when it went into the project's own environment).
    """
    if settings_dir is not None:
        path = write_overrides(settings_dir)
        return path, [f"--LabApp.app_settings_dir={Path(settings_dir).resolve()}"]
    env_dir = environment_app_settings_dir()
    if in_project_environment(env_dir):
        return write_overrides(env_dir), []
    project_dir = project_app_settings_dir()
    path = write_overrides(project_dir)
    if env_dir.resolve() != project_dir.resolve():
        _copy_environment_overrides(env_dir, project_dir)
    return path, [f"--LabApp.app_settings_dir={project_dir.resolve()}"]


def lab_command(root: Path | str = REPO_ROOT, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``jupyter lab`` command line, run with this interpreter (so the course's environment)."""
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={Path(root).resolve()}", *extra]


def run_lab(lab_args: list[str] | tuple[str, ...] = ()) -> int:
    """``python -m course_lib lab``: apply the project settings, then run JupyterLab in the repository."""
    factory = installed_jupytext_factory()
    if factory is None:
        print("[lab] jupytext's JupyterLab extension is not installed: .py lessons will open as text "
              "(install the course with `pip install -e .`)", file=sys.stderr)
    elif factory != JUPYTEXT_FACTORY:
        print(f"[lab] jupytext registers its notebook view as {factory!r}, not {JUPYTEXT_FACTORY!r}: "
              "the default viewer setting will not apply", file=sys.stderr)
    path, extra = apply_project_settings()
    print(f"[lab] .py lessons open as notebooks (Jupytext Notebook): {path}")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in lab_args:
        extra.append("--allow-root")  # containers and WSL often run as root; JupyterLab refuses root otherwise
    command = lab_command(REPO_ROOT, [*extra, *lab_args])
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "nt":
        os.chdir(REPO_ROOT)
        os.execv(sys.executable, command)  # JupyterLab takes over this process: Ctrl-C and signals reach it directly
    try:  # Windows: no exec; run it and wait (Ctrl-C reaches both; JupyterLab asks and shuts down itself)
        proc = subprocess.Popen(command, cwd=REPO_ROOT)
    except OSError as exc:
        print(f"[lab] could not start JupyterLab: {exc}", file=sys.stderr)
        return 1
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue
