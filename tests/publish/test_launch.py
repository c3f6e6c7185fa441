"""Launch links (Colab, Binder), the Colab notebooks and their setup cell, and the
places that must agree with the repository URL in _config.yml."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import nbformat
import pytest
import yaml

from course_lib.publish import launch
from course_lib.__main__ import main
from course_lib.paths import REPO_ROOT
from course_lib.publish.runner import toc_notebooks

CONFIG = launch.read_launch_config()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "_config.yml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
title: t
repository:
  url: https://github.com/someone/some-course
  branch: dev
launch_buttons:
  binderhub_url: https://binder.example.org/
  colab_url: https://colab.research.google.com
"""


def test_config_is_read_from_the_book_config(tmp_path):
    config = launch.read_launch_config(write_config(tmp_path, GOOD))
    assert (config.org, config.name, config.branch) == ("someone", "some-course", "dev")
    assert config.repository_url == "https://github.com/someone/some-course"
    assert config.binderhub_url == "https://binder.example.org"  # trailing slash dropped


def test_the_repository_config_matches_its_yaml():
    raw = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert CONFIG.repository_url == raw["repository"]["url"].removesuffix(".git").rstrip("/")
    assert CONFIG.branch == raw["repository"]["branch"]


@pytest.mark.parametrize("url", ["https://gitlab.com/a/b", "<this repository's URL>", ""])
def test_a_non_github_repository_url_names_file_line_and_field(tmp_path, url):
    path = write_config(tmp_path, GOOD.replace("https://github.com/someone/some-course", url))
    with pytest.raises(launch.LaunchConfigError, match=rf"{re.escape(str(path))}:3: field 'repository.url'"):
        launch.read_launch_config(path)


def test_a_missing_repository_section_names_file_and_field(tmp_path):
    path = write_config(tmp_path, "title: t\n")
    with pytest.raises(launch.LaunchConfigError, match=r"_config.yml: field 'repository.url'"):
        launch.read_launch_config(path)


def test_a_missing_colab_url_names_its_line(tmp_path):
    path = write_config(tmp_path, GOOD.replace("  colab_url: https://colab.research.google.com\n", ""))
    # The field is absent, so the error points at its parent section (line 5).
    with pytest.raises(launch.LaunchConfigError, match=r":5: field 'launch_buttons.colab_url'"):
        launch.read_launch_config(path)


def test_pages_map_to_lessons():
    assert launch.lesson_for_page("book/executed/level1_basics") == "level1_basics"
    assert launch.lesson_for_page("book/executed/report") is None  # generated, no source
    assert launch.lesson_for_page("book/setup") is None
    assert launch.lesson_for_page("book/executed/no_such_lesson") is None


def tracked_files() -> set[str]:
    # safe.directory: CI runs as root in a clone owned by someone else ("dubious ownership")
    out = subprocess.run(["git", "-c", "safe.directory=*", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"not a git checkout: {out.stderr.strip()}")
    return set(out.stdout.split())


def test_binder_links_open_the_twin_of_a_tracked_lesson_source():
    tracked = tracked_files()
    assert "binder/postBuild" in tracked and "binder/requirements.txt" in tracked
    for lesson in toc_notebooks():
        url = urlparse(launch.binder_link(lesson, CONFIG))
        assert url.path == f"/v2/gh/{CONFIG.org}/{CONFIG.name}/{CONFIG.branch}"
        (target,) = parse_qs(url.query)["urlpath"]
        assert target == f"lab/tree/notebooks/{lesson}.ipynb"
        assert f"notebooks/{lesson}.py" in tracked


def test_binder_postbuild_writes_the_notebooks_its_links_open(tmp_path):
    # The command postBuild runs, on a copy of the sources: it must produce the .ipynb
    # each Binder link opens, and leave the .py sources as they were.
    postbuild = (REPO_ROOT / "binder" / "postBuild").read_text(encoding="utf-8")
    (command,) = [line for line in postbuild.splitlines() if line.startswith("jupytext ")]
    work = tmp_path / "repo"
    (work / "notebooks").mkdir(parents=True)
    for source in (REPO_ROOT / "notebooks").glob("*.py"):
        (work / "notebooks" / source.name).write_bytes(source.read_bytes())
    (work / "jupytext.toml").write_bytes((REPO_ROOT / "jupytext.toml").read_bytes())
    jupytext_bin = str(Path(sys.executable).with_name("jupytext"))
    subprocess.run(["bash", "-c", command], cwd=work, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(jupytext_bin).parent}:{os.environ['PATH']}"})
    for lesson in toc_notebooks():
        target = parse_qs(urlparse(launch.binder_link(lesson, CONFIG)).query)["urlpath"][0]
        nb = nbformat.read(work / target.removeprefix("lab/tree/"), as_version=4)
        assert nb.cells, lesson
        assert (work / "notebooks" / f"{lesson}.py").read_bytes() == (REPO_ROOT / "notebooks" / f"{lesson}.py").read_bytes()


def test_colab_links_point_at_the_exported_notebooks(tmp_path):
    written = launch.export_colab_notebooks(tmp_path, config=CONFIG)
    assert sorted(p.stem for p in written) == sorted(toc_notebooks())
    prefix = f"https://colab.research.google.com/github/{CONFIG.org}/{CONFIG.name}/blob/{launch.COLAB_BRANCH}/"
    for lesson in toc_notebooks():
        link = launch.colab_link(lesson, CONFIG)
        assert link.startswith(prefix)
        assert (tmp_path / link.removeprefix(prefix)).is_file(), link
    assert "Do not edit here" in (tmp_path / "README.md").read_text(encoding="utf-8")


def test_colab_notebook_is_the_lesson_plus_setup_cells():
    import jupytext

    for lesson in toc_notebooks():
        source = jupytext.read(REPO_ROOT / "notebooks" / f"{lesson}.py")
        nb = launch.colab_notebook(lesson, CONFIG)
        setup = [c for c in nb.cells if launch.SETUP_TAG in c.metadata.get("tags", [])]
        assert [c.cell_type for c in setup] == ["markdown", "code"]
        assert CONFIG.repository_url in setup[1].source
        rest = [c for c in nb.cells if c not in setup]
        assert [c.source for c in rest] == [c.source for c in source.cells]
        assert nb.cells[0].source == source.cells[0].source  # the title stays on top
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        assert "jupytext" not in nb.metadata and nb.metadata["kernelspec"]["name"] == "python3"
        nbformat.validate(nb)


def test_colab_notebook_for_an_unknown_lesson_says_where_it_looked():
    with pytest.raises(FileNotFoundError, match=r"notebooks/level9_missing\.py"):
        launch.colab_notebook("level9_missing", CONFIG)


class FakeRun:
    """Stands in for subprocess.run: records commands, 'clones' by creating course_lib/."""

    def __init__(self):
        self.commands: list[list[str]] = []

    def __call__(self, cmd, check=False, **kwargs):
        self.commands.append(list(cmd))
        if cmd[:2] == ["git", "clone"]:
            (Path(cmd[-1]) / "course_lib").mkdir(parents=True)
        return subprocess.CompletedProcess(cmd, 0)


def run_setup_cell(monkeypatch, course_dir: Path, in_colab: bool) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(sys, "path", list(sys.path))
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = launch.setup_code(CONFIG.repository_url, course_dir)
    exec(compile(code, "colab-setup", "exec"), {})
    return fake


def test_setup_cell_clones_and_installs_once_in_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    course_dir = tmp_path / "content" / "lora-course"
    fake = run_setup_cell(monkeypatch, course_dir, in_colab=True)
    assert fake.commands[0] == ["git", "clone", "--depth", "1", CONFIG.repository_url, str(course_dir)]
    # the lesson packages (not Colab's torch, not the book or JupyterLab), then the course without dependencies
    assert fake.commands[1][1:] == ["-m", "pip", "install", "--quiet", *launch.colab_requirements()]
    assert fake.commands[2][1:] == ["-m", "pip", "install", "--quiet", "--no-deps", "-e", str(course_dir)]
    assert len(fake.commands) == 3
    assert Path.cwd() == course_dir and sys.path[0] == str(course_dir)
    # Running the cell again (or after a kernel restart) does not clone or install again.
    again = run_setup_cell(monkeypatch, course_dir, in_colab=True)
    assert again.commands == [] and sys.path.count(str(course_dir)) == 1


def test_setup_cell_installs_again_after_a_failed_install(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    course_dir = tmp_path / "content" / "lora-course"

    def failing_pip(cmd, check=False, **kwargs):
        if cmd[:2] == ["git", "clone"]:
            (Path(cmd[-1]) / "course_lib").mkdir(parents=True)
            return subprocess.CompletedProcess(cmd, 0)
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(subprocess, "run", failing_pip)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    with pytest.raises(subprocess.CalledProcessError):
        exec(compile(launch.setup_code(CONFIG.repository_url, course_dir), "colab-setup", "exec"), {})
    again = run_setup_cell(monkeypatch, course_dir, in_colab=True)
    assert [c[3:5] for c in again.commands] == [["install", "--quiet"]] * 2  # no second clone, the install again


def test_colab_installs_the_lesson_packages_only():
    reqs = launch.colab_requirements()
    names = {launch._requirement_name(r) for r in reqs}
    assert {"transformers", "peft", "openai", "ipywidgets", "seaborn", "myst-nb", "matplotlib-fontja"} <= names
    assert not names & {"torch", "jupyter-book", "jupyterlab", "jupyterlab-myst", "papermill", "jupytext", "ipykernel"}
    assert any(r.startswith("transformers") and ">=" in r for r in reqs)  # pyproject's bounds come along


# Imported by a lesson and present on Colab without an install: its torch, its kernel (IPython),
# and what the listed packages bring with them.
COLAB_PROVIDES = {"torch", "ipython", "numpy", "huggingface-hub"}


def test_every_package_a_lesson_imports_is_installed_on_colab():
    import importlib.metadata as md
    import importlib.util

    sources = list((REPO_ROOT / "notebooks").glob("*.py"))
    sources += [p for p in (REPO_ROOT / "course_lib").rglob("*.py")
                if "publish" not in p.parts and p.name != "__main__.py"]
    names = set()
    for path in sources:
        names |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", path.read_text(encoding="utf-8"), re.M))
    names -= set(sys.stdlib_module_names) | {"course_lib"}
    dists = md.packages_distributions()
    installed = {launch._requirement_name(r) for r in launch.colab_requirements()} | COLAB_PROVIDES
    missing = {}
    for name in sorted(names):
        if importlib.util.find_spec(name) is None:
            continue  # not a module (a word after "from" in a docstring) or not installed here either
        provided = {d.lower().replace("_", "-") for d in dists.get(name, [])}
        if not provided & installed:
            missing[name] = sorted(provided)
    assert not missing, f"imported by a lesson but not installed on Colab: {missing}"


def test_setup_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake = run_setup_cell(monkeypatch, tmp_path / "lora-course", in_colab=False)
    assert fake.commands == [] and Path.cwd() == tmp_path
    assert not (tmp_path / "lora-course").exists()


def test_colab_command_writes_the_notebooks(tmp_path, capsys):
    assert main(["colab", "--out", str(tmp_path)]) == 0
    assert {p.name for p in (tmp_path / "notebooks").iterdir()} == {f"{n}.ipynb" for n in toc_notebooks()}
    assert f"'{launch.COLAB_BRANCH}' branch" in capsys.readouterr().out


def test_publish_workflow_pushes_the_colab_notebooks_to_their_branch():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "publish.yml").read_text(encoding="utf-8"))
    build = workflow["jobs"]["build"]
    assert workflow["jobs"]["test"]["steps"][-1]["run"] == "bash .ci/run"  # the README's test command
    assert build["needs"] == "test"
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert "make course" in runs and "make colab" in runs
    push = next(step["run"] for step in build["steps"] if "git push" in step.get("run", ""))
    assert "cd _build/colab" in push and f"git init -q -b {launch.COLAB_BRANCH}" in push
    assert push.rstrip().endswith(f" {launch.COLAB_BRANCH}")
    pages = next(step for step in build["steps"] if "upload-pages-artifact" in step.get("uses", ""))
    assert pages["with"]["path"] == "_build/html"


@pytest.mark.parametrize("doc", ["README.md", "book/setup.md"])
def test_clone_commands_use_the_configured_repository(doc):
    text = (REPO_ROOT / doc).read_text(encoding="utf-8")
    urls = re.findall(r"git clone (\S+)", text)
    assert urls, f"{doc} has no git clone command"
    assert set(urls) == {CONFIG.repository_url}, f"{doc}: clone URLs {urls} differ from _config.yml"
