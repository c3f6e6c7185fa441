"""Run every lesson headless with papermill, write a report, build the book.

The lessons to run are the ``book/executed/<name>`` entries of ``_toc.yml``;
each comes from ``notebooks/<name>.py`` (jupytext percent format). A failing
lesson does not stop the others: all run, then the report says which failed and
the exit status is non-zero.

A lesson whose inputs did not change since its last successful run is not executed
again: its notebook and the files it wrote for the report are restored from the
execution cache (:mod:`course_lib.publish.cache`) and the report marks it as cached,
with the original run's seconds and date. ``force=True`` (``--force``, ``make course
FORCE=1``) executes every lesson and refreshes the cache.
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
from ..timing import BREAKDOWN_SUFFIX, read_breakdown
from ..paths import EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT, TOC_PATH, mark_headless
from .cache import ExecutionCache

EXECUTED_PREFIX = "book/executed/"
REPORT_STEM = "report"
REPORT_FILES = (f"{REPORT_STEM}.json", f"{REPORT_STEM}.md")  # written by the runner, never by a lesson
SECTION_GLOB = "*_report.md"  # a lesson's section of the report page
# Passed to every lesson's kernel. ipykernel warns on stderr, once per kernel, that it talks to
# papermill over TCP without encryption; the kernel and papermill are on the same machine, so the
# warning only fills the log of `make course` / `make test`. Only the kernel application's own
# log is raised to ERROR (its errors still show); the lessons' warnings go to the notebooks as before.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" | "failed" (a lesson restored from the cache is "ok" with cached=True)
    seconds: float  # of the run that produced the notebook (the original run when cached)
    parameters: dict
    output: str
    error: str | None = None
    cached: bool = False  # restored from the execution cache instead of executed
    ran_at: str | None = None  # when the run that produced the notebook started
    sections: list[str] = field(default_factory=list)  # report sections (``*_report.md``) it wrote
    files: list[str] = field(default_factory=list)  # files it wrote beside its notebook (relative)


@dataclass
class RunReport:
    started: str
    results: list[NotebookResult] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[NotebookResult]:
        return [r for r in self.results if r.status != "ok"]

    @property
    def cached(self) -> list[NotebookResult]:
        return [r for r in self.results if r.cached]


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


def injected_parameters(nb, parameters: dict) -> dict:
    """The part of ``parameters`` the lesson declares in its ``parameters`` cell (what papermill injects)."""
    known = declared_parameters(nb)
    return {k: v for k, v in parameters.items() if k in known}


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (mtime in ns, size) of the files under ``folder`` (hidden ones skipped)."""
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if p.is_file():
            found[rel.as_posix()] = (st.st_mtime_ns, st.st_size)
    return found


def run_notebook(name: str, out_dir: Path, parameters: dict, notebooks_dir: Path = NOTEBOOKS_DIR,
                 source: str | None = None) -> NotebookResult:
    """Execute one lesson with papermill into ``out_dir/<name>.ipynb``.

    ``source`` is the lesson's text when the caller has already read it (the cache hashes exactly
    what runs). The result lists the files the lesson wrote into ``out_dir`` while it ran (new or
    changed, the notebook and the runner's report excepted) and which of them are report sections.
    """
    import jupytext
    import papermill as pm

    src = notebooks_dir / f"{name}.py"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.ipynb"
    mark_headless(report_to=out_dir)  # no progress bars in the book; report sections go beside the lessons
    ran_at = dt.datetime.now().isoformat(timespec="seconds")
    before = _snapshot(out_dir)
    start = time.perf_counter()
    params: dict = {}
    try:
        nb = jupytext.reads(source, fmt="py:percent") if source is not None else jupytext.read(src)
        params = injected_parameters(nb, parameters)
        pm.execute_notebook(
            nb, str(out), parameters=params, kernel_name="python3", language="python",
            cwd=str(notebooks_dir), progress_bar=False, log_output=False, extra_arguments=list(KERNEL_ARGUMENTS),
        )
        status, error = "ok", None
    except Exception as exc:  # any failure is reported, the next notebook still runs
        status = "failed"
        error = redact(f"{type(exc).__name__}: {exc}")[-4000:]
    seconds = round(time.perf_counter() - start, 1)
    if out.exists():
        _tag_injected_cell(out)
    skip = {out.name, *REPORT_FILES}
    files = sorted(rel for rel, sig in _snapshot(out_dir).items() if before.get(rel) != sig and rel not in skip)
    sections = [rel for rel in files if "/" not in rel and Path(rel).match(SECTION_GLOB)]
    return NotebookResult(name, status, seconds, params, str(out), error, ran_at=ran_at, sections=sections, files=files)


def run_lesson(name: str, out_dir: Path, parameters: dict, notebooks_dir: Path, cache: ExecutionCache,
               environment: dict, force: bool = False) -> NotebookResult:
    """Restore lesson ``name`` from ``cache`` when its inputs are unchanged, else execute it (and cache
    a successful run). ``force`` executes it in any case."""
    import jupytext

    src = notebooks_dir / f"{name}.py"
    try:
        raw = src.read_bytes()
        params = injected_parameters(jupytext.reads(raw.decode("utf-8"), fmt="py:percent"), parameters)
    except Exception:  # unreadable, or no parameters cell: run_notebook reports it as a failure
        print(f"[run] {name} ...", flush=True)
        return run_notebook(name, out_dir, parameters, notebooks_dir)

    key = inputs = None
    if not cache.cacheable(params):
        why = "not cached: a parameter is 'auto', decided at run time"
    else:
        inputs = cache.inputs(name, raw, params, environment)
        key = cache.key(inputs)
        entry = None if force else cache.lookup(name, key)
        if entry is not None:
            try:
                cache.restore(entry, out_dir)
            except OSError as exc:  # e.g. a full disk: execute instead
                print(f"[cache] {name}: could not restore ({exc}); executing", flush=True)
            else:
                files = [f for f in entry.files if f != entry.notebook]
                return NotebookResult(name, "ok", entry.seconds, params, str(out_dir / entry.notebook), None,
                                      cached=True, ran_at=entry.ran_at, sections=entry.sections, files=files)
        why = "forced" if force else cache.why_missed(name, inputs)

    print(f"[run] {name} ... ({why})", flush=True)
    result = run_notebook(name, out_dir, parameters, notebooks_dir, source=raw.decode("utf-8"))
    if result.status == "ok" and key is not None:  # a failed run is never cached
        try:
            cache.store(name, key, inputs, out_dir, Path(result.output).name, result.files, result.seconds,
                        result.ran_at, result.parameters, result.sections)
        except OSError as exc:  # the run itself succeeded; only the next one will be slower
            print(f"[cache] {name}: could not store the run ({exc})", flush=True)
    return result


TIMING_COLUMNS = {"train": "学習", "generate": "生成", "judge": "採点", "perplexity": "パープレキシティ",
                  "plot": "図の作成", "other": "その他", "waiting_for_workers": "ワーカー待ち", "total": "合計"}


def timing_table(report: RunReport, out_dir: Path) -> list[str]:
    """Markdown lines: each lesson's seconds by kind of work (:mod:`course_lib.timing`), from the
    ``<lesson>_timing.json`` it wrote (restored with it when cached). Empty when none wrote one."""
    rows = []
    for r in report.results:
        name = f"{r.name}{BREAKDOWN_SUFFIX}"
        data = read_breakdown(out_dir / name) if name in r.files else None
        if data is not None:
            cells = " | ".join(f"{float(data.get(k, 0.0)):.1f}" for k in TIMING_COLUMNS)
            rows.append(f"| {r.name} | {cells} | {float(data.get('in_workers', 0.0)):.1f} |")
    if not rows:
        return []
    return ["", "## 時間の内訳（秒）", "",
            "各レッスンの実行時間を、作業の種類ごとに分けたものです（`course_lib.timing` の計測）。"
            "「その他」はモデルの読み込み・集計・表示など、「ワーカー待ち」はレッスンが別プロセス（ワーカー）の作業を待っていた時間です。"
            "「うちワーカー」はワーカーが並行して動いた作業の秒数で、学習・生成などの各列に含まれます"
            "（2つのプロセスが同時に動くので、列の合計が「合計」を超えることがあります）。", "",
            "| レッスン | " + " | ".join(TIMING_COLUMNS.values()) + " | うちワーカー |",
            "| --- |" + " ---: |" * (len(TIMING_COLUMNS) + 1), *rows]


def write_report(report: RunReport, out_dir: Path) -> tuple[Path, Path]:
    """report.json (for machines) and report.md (the book's execution-status page)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{REPORT_STEM}.json"
    results = []
    for r in report.results:
        timing_file = f"{r.name}{BREAKDOWN_SUFFIX}"
        results.append(asdict(r) | {"timing": read_breakdown(out_dir / timing_file) if timing_file in r.files else None})
    payload = {"started": report.started, "environment": report.environment, "results": results}
    js.write_text(redact(json.dumps(payload, ensure_ascii=False, indent=2)), encoding="utf-8")
    ok = len(report.results) - len(report.failed)
    cached = len(report.cached)
    lines = [
        "# 実行状況（execution status）",
        "",
        "このページは `python -m course_lib run` が自動で生成します。各レッスンを papermill で",
        "ヘッドレス実行（headless execution）した結果です。",
        "",
        f"- 実行開始: {report.started}",
        f"- 結果: {ok} / {len(report.results)} 件のレッスンが成功"
        + (f"（うち {cached} 件はキャッシュから復元）" if cached else ""),
        f"- Python {report.environment.get('python')}, "
        + ", ".join(f"{k} {v}" for k, v in report.environment.get("packages", {}).items()),
        "",
        "| レッスン | 状態 | 実行時間（秒） | 実行日時 | パラメータ | エラー |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for r in report.results:
        params = ", ".join(f"`{k}={v!r}`" for k, v in r.parameters.items())
        err = (r.error or "").replace("|", "\\|").replace("\n", " ")[:300]
        # plain text: emoji fonts are not everywhere
        status = "キャッシュ" if r.cached else "成功" if r.status == "ok" else "**失敗**"
        ran_at = (r.ran_at or "").replace("T", " ")
        lines.append(f"| {r.name} | {status} | {r.seconds:.1f} | {ran_at} | {params} | {err} |")
    if cached:
        lines += [
            "",
            "「キャッシュ」のレッスンは、前回成功した実行から入力（レッスンのソース、`course_lib`、データセット、",
            "パラメータ、埋め込みモデル、主なパッケージのバージョン）が変わっていないため、実行せずに前回の結果を",
            "そのまま使っています。実行時間と実行日時は、その元の実行のものです。",
        ]
    lines += timing_table(report, out_dir)
    # The sections the lessons of this report wrote (level 3: iteration table, plots, configuration),
    # executed now or restored from the cache; a leftover from another run is not shown as current.
    shown: list[str] = []
    for r in report.results:
        for name in r.sections:
            if name not in shown and (out_dir / name).is_file():
                shown.append(name)
                lines += ["", f"```{{include}} {name}", "```"]
    md = out_dir / f"{REPORT_STEM}.md"
    md.write_text(redact("\n".join(lines) + "\n"), encoding="utf-8")
    return js, md


def run_all(parameters: dict, out_dir: Path = EXECUTED_DIR, only: list[str] | None = None,
            notebooks_dir: Path = NOTEBOOKS_DIR, toc_path: Path = TOC_PATH, force: bool = False,
            cache_dir: Path | None = None, *, cache: ExecutionCache | None = None) -> RunReport:
    """Run (or restore from the execution cache) every lesson of ``_toc.yml`` and write the report.

    ``force`` executes every lesson even when its cached run is current. ``cache_dir`` is the cache's
    folder (None: ``<cache_dir()>/executed``, moved by ``COURSE_CACHE_DIR``); ``cache`` is a ready
    :class:`ExecutionCache` instead (tests use it to hash small stand-in folders).
    """
    out_dir = Path(out_dir)
    names = toc_notebooks(toc_path)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"not in _toc.yml: {', '.join(unknown)} (available: {', '.join(names)})")
        names = [n for n in names if n in only]
    report = RunReport(started=dt.datetime.now().isoformat(timespec="seconds"), environment=environment_info())
    cache = cache if cache is not None else ExecutionCache(cache_dir)
    for name in names:
        result = run_lesson(name, out_dir, parameters, Path(notebooks_dir), cache, report.environment, force)
        if result.cached:
            print(f"[run] {name}: cached (ran {result.ran_at}, {result.seconds:.1f}s)", flush=True)
        else:
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
