"""Launch links for the published book: open a lesson in Colab or on Binder.

The lesson sources are jupytext ``.py`` files and the book renders executed copies
that git does not track, so the theme's own launch links (built from the page's
path) would point at files that do not exist. The links built here point at files
that do:

- **Binder** builds the repository branch from ``binder/``; its ``postBuild``
  installs the course and pairs every ``notebooks/*.py`` with an ``.ipynb``, which
  the link opens.
- **Colab** opens only ``.ipynb`` files stored on GitHub, so the publish workflow
  pushes the notebooks written by :func:`export_colab_notebooks` to the
  ``COLAB_BRANCH`` branch. Each one starts with a setup cell that clones the
  course and installs what a lesson needs when (and only when) it runs in Colab:
  the lesson packages of ``pyproject.toml`` (:func:`colab_requirements`), then the
  course itself without its dependencies. Colab's own PyTorch (a CUDA build) and
  Jupyter stay as they are; the book and test tools are not installed.

Everything derives from ``repository`` and ``launch_buttons`` in ``_config.yml``:
a fork changes the URL there and every link, clone command and setup cell follows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
import yaml

from ..paths import CONFIG_PATH, NOTEBOOKS_DIR, REPO_ROOT
from .runner import EXECUTED_PREFIX, toc_notebooks

COLAB_BRANCH = "notebooks"  # the branch the publish workflow pushes Colab notebooks to
COLAB_COURSE_DIR = "/content/lora-course"
SETUP_TAG = "colab-setup"

_GITHUB_URL = re.compile(r"^https://github\.com/(?P<org>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+?)(?:\.git)?/?$")


class LaunchConfigError(ValueError):
    """``_config.yml`` lacks what the launch links need; the message names file, line and field."""


@dataclass(frozen=True)
class LaunchConfig:
    repository_url: str
    org: str
    name: str
    branch: str
    binderhub_url: str
    colab_url: str


def _field_line(text: str, keys: tuple[str, ...]) -> int | None:
    """1-based line of a nested mapping key in YAML text (None when absent)."""
    node = yaml.compose(text)
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return line
        for k, v in node.value:
            if k.value == key:
                line, node = k.start_mark.line + 1, v
                break
        else:
            return line
    return line


def read_launch_config(config_path: Path = CONFIG_PATH) -> LaunchConfig:
    """Repository and launch settings from the book's ``_config.yml``."""
    text = Path(config_path).read_text(encoding="utf-8")
    config = yaml.safe_load(text) or {}

    def fail(keys: tuple[str, ...], problem: str):
        line = _field_line(text, keys)
        where = f"{config_path}:{line}" if line else str(config_path)
        raise LaunchConfigError(f"{where}: field '{'.'.join(keys)}': {problem}")

    repository = config.get("repository") or {}
    url = str(repository.get("url") or "")
    match = _GITHUB_URL.match(url)
    if not match:
        fail(("repository", "url"), f"expected https://github.com/<owner>/<repo> "
             f"(Colab and Binder links need a GitHub repository), got {url!r}")
    buttons = config.get("launch_buttons") or {}
    for key in ("binderhub_url", "colab_url"):
        if not str(buttons.get(key) or "").startswith("https://"):
            fail(("launch_buttons", key), f"expected an https:// URL, got {buttons.get(key)!r}")
    return LaunchConfig(
        repository_url=f"https://github.com/{match['org']}/{match['name']}",
        org=match["org"],
        name=match["name"],
        branch=str(repository.get("branch") or "main"),
        binderhub_url=buttons["binderhub_url"].rstrip("/"),
        colab_url=buttons["colab_url"].rstrip("/"),
    )


def lesson_for_page(pagename: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> str | None:
    """The lesson a book page renders (``book/executed/level1_basics`` -> ``level1_basics``), else None."""
    if not pagename.startswith(EXECUTED_PREFIX):
        return None
    name = pagename[len(EXECUTED_PREFIX):]
    return name if (notebooks_dir / f"{name}.py").is_file() else None


def lesson_notebook_path(lesson: str) -> str:
    """The ``.ipynb`` both buttons open, relative to the branch root: on ``config.branch``
    the twin ``binder/postBuild`` writes, on ``COLAB_BRANCH`` the exported notebook."""
    return f"notebooks/{lesson}.ipynb"


def binder_link(lesson: str, config: LaunchConfig) -> str:
    """Binder builds ``config.branch`` and opens the lesson's ``.ipynb`` twin."""
    return (f"{config.binderhub_url}/v2/gh/{config.org}/{config.name}/{config.branch}"
            f"?urlpath=lab/tree/{lesson_notebook_path(lesson)}")


def colab_link(lesson: str, config: LaunchConfig) -> str:
    """Colab opens the exported notebook from the ``COLAB_BRANCH`` branch."""
    return f"{config.colab_url}/github/{config.org}/{config.name}/blob/{COLAB_BRANCH}/{lesson_notebook_path(lesson)}"


def lesson_links(lesson: str, config: LaunchConfig | None = None) -> dict[str, str]:
    """Launch-button text -> URL for one lesson (the texts the book theme uses)."""
    config = config or read_launch_config()
    return {"Binder": binder_link(lesson, config), "Colab": colab_link(lesson, config)}


# pyproject.toml dependencies a lesson on Colab does not install, and why.
NOT_ON_COLAB = {
    "torch": "preinstalled on Colab as a CUDA build; installing it again would replace that build",
    "jupyter-book": "builds the book, not used by a lesson",
    "jupytext": "reads the .py lesson sources; Colab opens the exported .ipynb",
    "papermill": "headless execution of the lessons (python -m course_lib run)",
    "ipykernel": "Colab runs its own kernel",
    "jupyterlab": "the local notebook interface; Colab has its own",
    "jupyterlab-myst": "renders MyST in JupyterLab; Colab has its own notebook interface",
}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def colab_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The requirements a lesson needs on Colab: ``pyproject.toml``'s dependencies (their version
    bounds too) without those in ``NOT_ON_COLAB``. Read from the one dependency list, so a package
    added there for the lessons reaches Colab without a second list to update."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    deps = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]["dependencies"]
    unknown = set(NOT_ON_COLAB) - {_requirement_name(d) for d in deps}
    if unknown:
        raise ValueError(f"{pyproject}: NOT_ON_COLAB names {sorted(unknown)}, which are not dependencies")
    return [d for d in deps if _requirement_name(d) not in NOT_ON_COLAB]


SETUP_MARKDOWN = """\
**Google Colab で開いた場合**は、最初に次のセルを実行してください。コースのコードとデータを
`{course_dir}` に取得してインストールします（初回だけ数分かかります）。
Colab 以外（手元の JupyterLab や Binder）では、このセルは何もしません。
GPU を使う場合は、先にメニューの「ランタイム → ランタイムのタイプを変更」で GPU を選んでください。
"""

SETUP_CODE = """\
# Colab only: fetch the course (code and datasets) and install what a lesson needs. Elsewhere this cell does nothing.
# Colab's own PyTorch (a CUDA build) and Jupyter stay as they are; the book and test tools are not installed.
import os
import subprocess
import sys

COURSE_REPO = "{repository_url}"
COURSE_DIR = "{course_dir}"
LESSON_PACKAGES = [{packages}]  # pyproject.toml's dependencies that a lesson imports
if "google.colab" in sys.modules:
    if not os.path.isdir(os.path.join(COURSE_DIR, "course_lib")):
        subprocess.run(["git", "clone", "--depth", "1", COURSE_REPO, COURSE_DIR], check=True)
    installed = os.path.join(COURSE_DIR, ".colab-installed")
    if not os.path.exists(installed):  # again after a failed install, not after a kernel restart
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *LESSON_PACKAGES], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e", COURSE_DIR], check=True)
        open(installed, "w").close()
    os.chdir(COURSE_DIR)  # the lessons read datasets/ and write runs/ relative to the course
    if COURSE_DIR not in sys.path:
        sys.path.insert(0, COURSE_DIR)  # this kernel started before the install
"""


def setup_code(repository_url: str, course_dir: str | Path, requirements: list[str] | None = None) -> str:
    """The Colab setup cell's code."""
    requirements = colab_requirements() if requirements is None else requirements
    return SETUP_CODE.format(repository_url=repository_url, course_dir=course_dir,
                             packages=", ".join(f'"{r}"' for r in requirements))


def colab_notebook(lesson: str, config: LaunchConfig | None = None,
                   notebooks_dir: Path = NOTEBOOKS_DIR) -> nbformat.NotebookNode:
    """The lesson as an output-free ``.ipynb`` with the Colab setup cells after its title."""
    config = config or read_launch_config()
    source = notebooks_dir / f"{lesson}.py"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no lesson source named {lesson!r}; lessons are notebooks/*.py")
    nb = jupytext.read(source)
    setup = [
        nbformat.v4.new_markdown_cell(SETUP_MARKDOWN.format(course_dir=COLAB_COURSE_DIR),
                                      metadata={"tags": [SETUP_TAG]}),
        nbformat.v4.new_code_cell(setup_code(config.repository_url, COLAB_COURSE_DIR),
                                  metadata={"tags": [SETUP_TAG]}),
    ]
    # Keep the lesson title on top: the setup goes right after the first markdown cell.
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells[at:at] = setup
    nb.metadata.pop("jupytext", None)  # a plain notebook: Colab has no .py twin to pair with
    nbformat.validate(nb)
    return nb


def export_colab_notebooks(out_dir: Path, lessons: list[str] | None = None,
                           config: LaunchConfig | None = None,
                           notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Write the Colab notebooks of every book lesson under ``out_dir`` (the tree of ``COLAB_BRANCH``)."""
    config = config or read_launch_config()
    lessons = lessons if lessons is not None else toc_notebooks()
    out_dir = Path(out_dir)
    written = []
    for lesson in lessons:
        path = out_dir / lesson_notebook_path(lesson)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(colab_notebook(lesson, config, notebooks_dir), path)
        written.append(path)
    (out_dir / "README.md").write_text(
        f"# Colab notebooks (generated)\n\n"
        f"Written by `python -m course_lib colab` from the lesson sources in `notebooks/*.py` on "
        f"`{config.branch}` of {config.repository_url}; the book's Colab buttons open them. "
        f"Do not edit here: edit the sources.\n", encoding="utf-8")
    return written
