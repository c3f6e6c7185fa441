"""The runner's execution cache: an unchanged lesson is restored, a changed one executed again.

One test executes real kernels (restoring what a real run wrote); the others replace papermill
with a stand-in that writes the output notebook directly, so each takes a fraction of a second.
"""
import json
import textwrap

import nbformat
import papermill
import pytest

from course_lib.__main__ import main
from course_lib.publish import runner
from course_lib.publish.cache import KEEP_PER_LESSON, MANIFEST, ExecutionCache
from course_lib.publish.runner import run_all

# Writes a report section and a figure beside its notebook, as the level-3 lesson does.
DEMO = '''\
# %% tags=["parameters"]
model_profile = "auto"
quick = False

# %%
import os
from pathlib import Path

out = Path(os.environ["COURSE_REPORT_DIR"])
(out / "demo_report.md").write_text("## demo section\\n\\n![plot](demo_plot.png)\\n", encoding="utf-8")
(out / "demo_plot.png").write_bytes(b"not really a png")
print("profile", model_profile, "quick", quick)
'''
BROKEN = '''\
# %% tags=["parameters"]
model_profile = "auto"

# %%
raise RuntimeError("lesson broke")
'''
PARAMS = {"model_profile": "tiny", "quick": True, "judge": "rubric", "seed": 0}


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    """A two-lesson course, a stand-in course_lib and datasets folder, and a private cache over them."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "default-cache"))  # never the user's .cache/
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "demo.py").write_text(DEMO, encoding="utf-8")
    (nbdir / "broken.py").write_text(BROKEN, encoding="utf-8")
    toc = tmp_path / "_toc.yml"
    toc.write_text(textwrap.dedent("""\
        format: jb-book
        root: book/intro
        chapters:
          - file: book/executed/demo
          - file: book/executed/broken
          - file: book/executed/report
    """))
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "helpers.py").write_text("VALUE = 1\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.jsonl").write_text('{"q": "a"}\n')

    class Tree:
        root = tmp_path
        notebooks = nbdir

        @staticmethod
        def cache(fingerprint: str = "tiny-1") -> ExecutionCache:
            # a fresh object per run, as run_all makes one per run
            return ExecutionCache(tmp_path / "cache", package_dir=pkg, datasets_dir=data,
                                  tiny_fingerprint=lambda: fingerprint)

        @staticmethod
        def run(out: str = "out", parameters: dict = PARAMS, only=("demo",), force: bool = False, cache=None):
            return run_all(parameters, tmp_path / out, list(only) if only else None, nbdir, toc,
                           force=force, cache=cache or Tree.cache())

    Tree.pkg, Tree.data = pkg, data
    return Tree


@pytest.fixture()
def executions(monkeypatch):
    """Every papermill call (lesson names), executed for real."""
    calls = []
    real = papermill.execute_notebook

    def spy(nb, output_path, **kwargs):
        calls.append(output_path.rsplit("/", 1)[-1].removesuffix(".ipynb"))
        return real(nb, output_path, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", spy)
    return calls


@pytest.fixture()
def fake_executions(monkeypatch):
    """Every papermill call (lesson names), answered without a kernel: the output notebook gets the
    injected-parameters cell papermill would add, ``demo`` writes its section and figure, and a
    lesson raising in its source fails."""
    import os
    from pathlib import Path

    calls = []

    def fake(nb, output_path, parameters=None, **kwargs):
        name = output_path.rsplit("/", 1)[-1].removesuffix(".ipynb")
        calls.append(name)
        cell = nbformat.v4.new_code_cell(f"# Parameters\n{parameters!r}")
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(1, cell)
        nbformat.write(nb, output_path)
        if name == "demo":
            out = Path(os.environ["COURSE_REPORT_DIR"])
            (out / "demo_report.md").write_text(f"## demo section {len(calls)}\n", encoding="utf-8")
            (out / "demo_plot.png").write_bytes(b"not really a png")
        if any("raise RuntimeError" in c.source for c in nb.cells):
            raise RuntimeError("lesson broke")

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return calls


def entries(tree, lesson: str):
    folder = tree.root / "cache" / lesson
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_unchanged_rerun_restores_notebook_files_and_report_sections(tree, executions):
    first = tree.run(only=None)
    assert executions == ["demo", "broken"]
    demo = first.results[0]
    assert (demo.status, demo.cached) == ("ok", False)
    assert demo.sections == ["demo_report.md"] and demo.files == ["demo_plot.png", "demo_report.md"]
    assert entries(tree, "broken") == []  # a failed run is never cached
    assert len(entries(tree, "demo")) == 1

    # Into a fresh folder, with a stale section from some other run lying there.
    (tree.root / "out2").mkdir()
    (tree.root / "out2" / "stale_report.md").write_text("old")
    executions.clear()
    second = tree.run(out="out2", only=None)
    assert executions == ["broken"]  # only the lesson that failed runs again
    again = second.results[0]
    assert again.cached and again.status == "ok"
    assert (again.seconds, again.ran_at) == (demo.seconds, demo.ran_at)  # the original run's numbers
    for name in ("demo.ipynb", "demo_report.md", "demo_plot.png"):
        assert (tree.root / "out2" / name).read_bytes() == (tree.root / "out" / name).read_bytes(), name
    executed = nbformat.read(tree.root / "out2" / "demo.ipynb", as_version=4)
    assert "profile tiny quick True" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))

    data = json.loads((tree.root / "out2" / "report.json").read_text(encoding="utf-8"))
    assert [(r["name"], r["status"], r["cached"]) for r in data["results"]] == [("demo", "ok", True), ("broken", "failed", False)]
    assert data["results"][0]["seconds"] == demo.seconds and data["results"][0]["ran_at"] == demo.ran_at
    page = (tree.root / "out2" / "report.md").read_text(encoding="utf-8")
    assert f"| demo | キャッシュ | {demo.seconds:.1f} | {demo.ran_at.replace('T', ' ')} |" in page
    assert "1 / 2" in page and "うち 1 件はキャッシュから復元" in page
    assert "```{include} demo_report.md" in page  # the restored section counts, by the manifest
    assert "stale_report.md" not in page  # a file the lessons of this report did not write does not


@pytest.mark.parametrize("change", ["source", "parameter", "course_lib file", "new course_lib file",
                                    "dataset", "tiny model", "package version"])
def test_a_changed_input_executes_again(tree, fake_executions, monkeypatch, change):
    tree.run()
    tree.run()
    assert fake_executions == ["demo"]  # the second run was restored
    parameters, cache = PARAMS, tree.cache()
    if change == "source":
        (tree.notebooks / "demo.py").write_text(DEMO + "\n# %%\nprint('more')\n", encoding="utf-8")
    elif change == "parameter":
        parameters = {**PARAMS, "quick": False}
    elif change == "course_lib file":
        (tree.pkg / "sub" / "helpers.py").write_text("VALUE = 2\n")
    elif change == "new course_lib file":
        (tree.pkg / "extra.py").write_text("")
    elif change == "dataset":
        (tree.data / "items.jsonl").write_text('{"q": "b"}\n')
    elif change == "tiny model":
        cache = tree.cache(fingerprint="tiny-2")
    elif change == "package version":
        env = runner.environment_info()
        monkeypatch.setattr(runner, "environment_info",
                            lambda: {**env, "packages": {**env["packages"], "transformers": "0.0.1"}})
    report = tree.run(parameters=parameters, cache=cache)
    assert fake_executions == ["demo", "demo"], change
    assert not report.results[0].cached
    tree.run(parameters=parameters, cache=cache)
    assert fake_executions == ["demo", "demo"], "the new run is cached in turn"


def test_inputs_that_do_not_matter_keep_the_cache(tree, fake_executions):
    tree.run()
    (tree.pkg / "sub" / "notes.txt").write_text("not python")  # only course_lib/**/*.py counts
    (tree.notebooks / "other.py").write_text("# another lesson's file")
    tree.run(parameters={**PARAMS, "judge": "openai"})  # not declared by the lesson, so not injected
    assert fake_executions == ["demo"]


def test_tiny_fingerprint_only_matters_for_the_tiny_profile(tree, fake_executions):
    qwen = {**PARAMS, "model_profile": "qwen3-0.6b"}
    tree.run(parameters=qwen, cache=tree.cache(fingerprint="tiny-1"))
    tree.run(parameters=qwen, cache=tree.cache(fingerprint="tiny-2"))
    assert fake_executions == ["demo"]


def test_force_executes_again_and_refreshes_the_entry(tree, fake_executions):
    tree.run()
    (key,) = entries(tree, "demo")
    first = json.loads((key / MANIFEST).read_text())
    report = tree.run(force=True)
    assert fake_executions == ["demo", "demo"] and not report.results[0].cached
    assert entries(tree, "demo") == [key]  # same inputs, same key: the entry was replaced
    assert json.loads((key / MANIFEST).read_text())["ran_at"] >= first["ran_at"]
    tree.run()
    assert fake_executions == ["demo", "demo"]


@pytest.mark.parametrize("damage", ["no manifest", "unreadable manifest", "truncated notebook",
                                    "missing file", "half-written entry"])
def test_a_damaged_entry_is_discarded_and_the_lesson_executed(tree, fake_executions, damage, capsys):
    tree.run()
    (entry,) = entries(tree, "demo")
    files = entry / "files"
    if damage == "no manifest":
        (entry / MANIFEST).unlink()
    elif damage == "unreadable manifest":
        (entry / MANIFEST).write_text('{"format": 1, "files": ')
    elif damage == "truncated notebook":
        nb = files / "demo.ipynb"
        nb.write_bytes(nb.read_bytes()[:100])
    elif damage == "missing file":
        (files / "demo_plot.png").unlink()
    elif damage == "half-written entry":  # a run killed while storing: files, no manifest yet
        (entry / MANIFEST).rename(entry / (MANIFEST + ".part"))
    (tree.root / "out" / "demo_plot.png").unlink()
    capsys.readouterr()
    report = tree.run()
    assert fake_executions == ["demo", "demo"], damage
    assert not report.results[0].cached and report.results[0].status == "ok"
    assert "discarding a damaged entry" in capsys.readouterr().out
    assert (tree.root / "out" / "demo_plot.png").exists()
    (fresh,) = entries(tree, "demo")  # replaced by the new run's whole entry
    manifest = json.loads((fresh / MANIFEST).read_text())
    assert set(manifest["files"]) == {"demo.ipynb", "demo_report.md", "demo_plot.png"}
    tree.run()
    assert fake_executions == ["demo", "demo"]


def test_a_failing_lesson_is_never_cached(tree, fake_executions):
    report = tree.run(only=["broken"])
    assert report.failed and entries(tree, "broken") == []
    tree.run(only=["broken"])
    assert fake_executions == ["broken", "broken"]


def test_auto_parameters_are_decided_at_run_time_so_not_cached(tree, fake_executions):
    auto = {**PARAMS, "model_profile": "auto"}
    tree.run(parameters=auto)
    tree.run(parameters=auto)
    assert fake_executions == ["demo", "demo"] and entries(tree, "demo") == []


def test_old_entries_are_pruned(tree, fake_executions):
    for quick in (True, False, "a", "b", "c"):
        tree.run(parameters={**PARAMS, "quick": quick})
    assert len(entries(tree, "demo")) == KEEP_PER_LESSON
    tree.run(parameters={**PARAMS, "quick": "c"})  # the newest is kept
    assert len(fake_executions) == 5


def test_the_kernel_is_started_with_quiet_logs(tree, monkeypatch):
    seen = {}

    def fake(nb, output_path, **kwargs):
        seen.update(kwargs)
        nbformat.write(nb, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    tree.run()
    assert "--IPKernelApp.log_level=ERROR" in seen["extra_arguments"]


def test_cli_force_and_default_cache_location(tree, fake_executions, monkeypatch):
    """``--force`` reaches the runner; the default cache lies under $COURSE_CACHE_DIR/executed."""
    import course_lib.tiny_model as tiny_model

    monkeypatch.setattr(tiny_model, "ensure_tiny_model", lambda: None)  # the fake lesson loads no model
    args = ["run", "--out", str(tree.root / "cli"), "--notebooks", str(tree.notebooks),
            "--toc", str(tree.root / "_toc.yml"), "--profile", "tiny", "--quick", "--only", "demo"]
    assert main(args) == 0
    assert main(args) == 0
    assert fake_executions == ["demo"]
    assert list((tree.root / "default-cache" / "executed" / "demo").glob(f"*/{MANIFEST}"))
    assert main(args + ["--force"]) == 0
    assert fake_executions == ["demo", "demo"]
