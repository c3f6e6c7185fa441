"""The papermill runner: runs every lesson, reports failures, keeps secrets out."""
import json
import textwrap

import nbformat
import pytest

from course_lib.__main__ import main
from course_lib.publish.runner import declared_parameters, run_all, toc_notebooks
from course_lib.secrets import redact

GOOD = '''\
# %% tags=["parameters"]
model_profile = "auto"
quick = False

# %%
print("profile", model_profile, "quick", quick)
'''
BROKEN = '''\
# %% tags=["parameters"]
model_profile = "auto"

# %%
import os
raise RuntimeError("lesson broke, key=" + os.environ.get("OPENAI_API_KEY", ""))
'''
NO_PARAMS = '''\
# %%
print("no parameters cell")
'''


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The runner's default execution cache follows COURSE_CACHE_DIR: keep it out of the user's .cache/."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def course_tree(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "good.py").write_text(GOOD)
    (nbdir / "broken.py").write_text(BROKEN)
    (nbdir / "noparams.py").write_text(NO_PARAMS)
    toc = tmp_path / "_toc.yml"
    toc.write_text(textwrap.dedent("""\
        format: jb-book
        root: book/intro
        parts:
          - caption: x
            chapters:
              - file: book/executed/broken
              - file: book/executed/good
              - file: book/executed/noparams
              - file: book/executed/report
    """))
    return tmp_path, nbdir, toc


def test_toc_lists_lessons_in_order(course_tree):
    _, _, toc = course_tree
    assert toc_notebooks(toc) == ["broken", "good", "noparams"]


def test_runs_all_reports_failures_and_redacts_secrets(course_tree, monkeypatch, capfd):
    root, nbdir, toc = course_tree
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-0123456789")
    out = root / "out"
    report = run_all({"model_profile": "tiny", "quick": True, "judge": "rubric"}, out, None, nbdir, toc)
    status = {r.name: r.status for r in report.results}
    assert status == {"broken": "failed", "good": "ok", "noparams": "failed"}  # a failure does not stop the rest
    by_name = {r.name: r for r in report.results}
    assert "lesson broke" in by_name["broken"].error
    assert "no cell tagged 'parameters'" in by_name["noparams"].error
    # only declared parameters are injected
    assert by_name["good"].parameters == {"model_profile": "tiny", "quick": True}

    executed = nbformat.read(out / "good.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert "profile tiny quick True" in "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))

    data = json.loads((out / "report.json").read_text())
    assert [r["status"] for r in data["results"]] == ["failed", "ok", "failed"]
    assert data["environment"]["packages"]["papermill"]
    assert [r["cached"] for r in data["results"]] == [False, False, False]  # a first run executes everything
    page = (out / "report.md").read_text()
    assert "1 / 3" in page and "**失敗**" in page
    for text in (page, (out / "report.json").read_text()):
        assert "SECRET" not in text
    # the kernel's "running over TCP without encryption" warning no longer fills the log
    assert "without encryption" not in capfd.readouterr().err


def test_cli_exits_nonzero_when_a_lesson_fails(course_tree):
    root, nbdir, toc = course_tree
    args = ["run", "--out", str(root / "cli"), "--notebooks", str(nbdir), "--toc", str(toc), "--profile", "auto"]
    assert main(args + ["--only", "good"]) == 0
    assert main(args + ["--only", "good", "broken"]) == 1
    assert main(args + ["--only", "missing"]) == 2


def test_parameters_cell_is_read_without_running_it():
    import jupytext

    nb = jupytext.reads(GOOD, fmt="py:percent")
    assert declared_parameters(nb) == {"model_profile": "auto", "quick": False}


def test_redact_hides_key_shaped_strings(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert redact("key sk-abcdefghijklmnop end") == "key sk-*** end"
    assert redact("a short one sk-ab3 too") == "a short one sk-*** too"  # the stronger of the two old rules
    monkeypatch.setenv("OPENAI_API_KEY", "not-key-shaped-123456")
    assert redact("x not-key-shaped-123456 y") == "x *** y"
    assert redact("given secret-value-987", "secret-value-987") == "given ***"


def test_every_course_lesson_has_a_parameters_cell():
    import jupytext

    from course_lib.paths import REPO_ROOT

    for name in toc_notebooks():
        nb = jupytext.read(REPO_ROOT / "notebooks" / f"{name}.py")
        assert "model_profile" in declared_parameters(nb), name


def test_the_report_splits_each_lessons_time_by_kind_of_work(tmp_path):
    """A lesson's <name>_timing.json becomes one row of the status page's time table; a lesson
    that wrote none (or an unreadable one) gets no row, and no table appears without rows."""
    from course_lib.publish.runner import NotebookResult, RunReport, timing_table, write_report

    (tmp_path / "a_timing.json").write_text(json.dumps(
        {"train": 12.0, "generate": 3.5, "judge": 0.25, "perplexity": 0.0, "plot": 1.0, "other": 4.0, "total": 20.75,
         "in_workers": 0.0}))
    (tmp_path / "b_timing.json").write_text("{broken")
    report = RunReport("2026-11-30T00:00:00", [
        NotebookResult("a", "ok", 20.8, {}, "a.ipynb", files=["a_timing.json"]),
        NotebookResult("b", "ok", 1.0, {}, "b.ipynb", files=["b_timing.json"]),
        NotebookResult("c", "ok", 1.0, {}, "c.ipynb")], environment={})
    lines = timing_table(report, tmp_path)
    # train, generate, judge, perplexity, plot, other, waiting for workers (0 when absent), total, in workers
    assert "| a | 12.0 | 3.5 | 0.2 | 0.0 | 1.0 | 4.0 | 0.0 | 20.8 | 0.0 |" in lines
    assert not [line for line in lines if line.startswith(("| b ", "| c "))]
    _, md = write_report(report, tmp_path)
    assert "## 時間の内訳（秒）" in md.read_text(encoding="utf-8")
    payload = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert payload["results"][0]["timing"]["train"] == 12.0 and payload["results"][1]["timing"] is None
    assert timing_table(RunReport("x", [NotebookResult("c", "ok", 1.0, {}, "c.ipynb")], environment={}), tmp_path) == []
