"""Run every lesson headless with papermill, write a report, build the book.

The lessons to run are the ``book/executed/<name>`` entries of ``_toc.yml``;
each comes from ``notebooks/<name>.py`` (jupytext percent format). A failing
lesson does not stop the others: all run, then the report says which failed and
the exit status is non-zero.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..device import environment_info
from ..secrets import redact
from ..paths import EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT, TOC_PATH, mark_headless

EXECUTED_PREFIX = "book/executed/"
REPORT_STEM = "report"


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" | "failed"
    seconds: float
    parameters: dict
    output: str
    error: str | None = None


@dataclass
class RunReport:
    started: str
    results: list[NotebookResult] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[NotebookResult]:
        return [r for r in self.results if r.status != "ok"]


def toc_notebooks(toc_path: Path = TOC_PATH) -> list[str]:
    """Names of lessons the book shows, in book order."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and f.startswith(EXECUTED_PREFIX):
                stem = f[len(EXECUTED_PREFIX):]
                if stem != REPORT_STEM:
                    names.append(stem)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return names


def declared_parameters(nb) -> dict:
    """Names and default values assigned in the cell tagged ``parameters``."""
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        values[node.targets[0].id] = None
            return values
    raise ValueError("no cell tagged 'parameters': papermill cannot inject the model profile")


def _tag_injected_cell(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, path)


def run_notebook(name: str, out_dir: Path, parameters: dict, notebooks_dir: Path = NOTEBOOKS_DIR) -> NotebookResult:
    import jupytext
    import papermill as pm

    src = notebooks_dir / f"{name}.py"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.ipynb"
    mark_headless(report_to=out_dir)  # no progress bars in the book; report sections go beside the lessons
    start = time.perf_counter()
    try:
        nb = jupytext.read(src)
        known = declared_parameters(nb)
        params = {k: v for k, v in parameters.items() if k in known}
        pm.execute_notebook(
            nb, str(out), parameters=params, kernel_name="python3", language="python",
            cwd=str(notebooks_dir), progress_bar=False, log_output=False,
        )
        status, error = "ok", None
    except Exception as exc:  # any failure is reported, the next notebook still runs
        params = locals().get("params", {})
        status = "failed"
        error = redact(f"{type(exc).__name__}: {exc}")[-4000:]
    if out.exists():
        _tag_injected_cell(out)
    return NotebookResult(name, status, round(time.perf_counter() - start, 1), params, str(out), error)


def write_report(report: RunReport, out_dir: Path) -> tuple[Path, Path]:
    """report.json (for machines) and report.md (the book's execution-status page)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{REPORT_STEM}.json"
    payload = {"started": report.started, "environment": report.environment, "results": [asdict(r) for r in report.results]}
    js.write_text(redact(json.dumps(payload, ensure_ascii=False, indent=2)), encoding="utf-8")
    ok = len(report.results) - len(report.failed)
    lines = [
        "# 実行状況（execution status）",
        "",
        "このページは `python -m course_lib run` が自動で生成します。各レッスンを papermill で",
        "ヘッドレス実行（headless execution）した結果です。",
        "",
        f"- 実行開始: {report.started}",
        f"- 結果: {ok} / {len(report.results)} 件のレッスンが成功",
        f"- Python {report.environment.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in report.environment.get("packages", {}).items()),
        "",
        "| レッスン | 状態 | 実行時間（秒） | パラメータ | エラー |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for r in report.results:
        params = ", ".join(f"`{k}={v!r}`" for k, v in r.parameters.items())
        err = (r.error or "").replace("|", "\\|").replace("\n", " ")[:300]
        status = "成功" if r.status == "ok" else "**失敗**"  # plain text: emoji fonts are not everywhere
        lines.append(f"| {r.name} | {status} | {r.seconds:.1f} | {params} | {err} |")
    # Sections that lessons wrote for the report during this run (level 3: iteration table,
    # plots, configuration); a section left over from an earlier run is not shown as current.
    started = dt.datetime.fromisoformat(report.started).timestamp()
    for section in sorted(out_dir.glob("*_report.md")):
        if section.stat().st_mtime >= started - 1:
            lines += ["", f"```{{include}} {section.name}", "```"]
    md = out_dir / f"{REPORT_STEM}.md"
    md.write_text(redact("\n".join(lines) + "\n"), encoding="utf-8")
    return js, md


def run_all(parameters: dict, out_dir: Path = EXECUTED_DIR, only: list[str] | None = None,
            notebooks_dir: Path = NOTEBOOKS_DIR, toc_path: Path = TOC_PATH) -> RunReport:
    names = toc_notebooks(toc_path)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"not in _toc.yml: {', '.join(unknown)} (available: {', '.join(names)})")
        names = [n for n in names if n in only]
    report = RunReport(started=dt.datetime.now().isoformat(timespec="seconds"), environment=environment_info())
    for name in names:
        print(f"[run] {name} ...", flush=True)
        result = run_notebook(name, out_dir, parameters, notebooks_dir)
        print(f"[run] {name}: {result.status} in {result.seconds:.1f}s" + (f"\n      {result.error[:500]}" if result.error else ""), flush=True)
        report.results.append(result)
        write_report(report, out_dir)  # keep the report current even if the run is interrupted
    js, md = write_report(report, out_dir)
    print(f"[run] report: {md} and {js}")
    return report


def build_book(root: Path = REPO_ROOT, strict: bool = True) -> int:
    """Render the executed notebooks and the prose pages into ``_build/html``."""
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "--path-output", str(root), "--all"]
    if strict:
        cmd += ["--warningiserror", "--keep-going"]
    print("[book]", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=root)
