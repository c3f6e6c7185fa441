"""The test session's executed book, built in a background process while the unit tests run.

Executing the lessons is most of the suite's time: the session starts it as soon as collection
shows that a test needs it, orders those tests last (``tests/conftest.py``), and runs the other
tests meanwhile.

The background process does what ``make course`` does, into temporary folders: every lesson of
``_toc.yml`` (quick, tiny model, rubric judge), its own execution cache and its own level-3 runs
folder, so a run left in ``runs/level3`` or ``.cache/`` by older code can never pass the tests.

The lessons run in two lanes at once, each in its own process (``lanes``): level 3's pages, the
longest chain (the second reuses the first's runs, so they stay in order), beside the others. Each
lane writes into its own folder; when both are done their files are gathered into the book's
``executed`` folder and one report is written in book order, as ``run_all`` writes it.

Run by the session as ``python tests/book_run.py <folder>``; it writes ``<folder>/report.pickle``
(the :class:`~course_lib.publish.runner.RunReport`) and its log to ``<folder>/book-run.log``.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PARAMETERS = {"model_profile": "tiny", "judge": "rubric", "quick": True, "seed": 0}
LOG_TAIL_CHARS = 4000


class BookRun:
    """One background execution of every lesson into ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.root = self.folder / "book-build"  # a copy of _config.yml, _toc.yml and book/
        self.log = self.folder / "book-run.log"
        self.result = self.folder / "report.pickle"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from course_lib.paths import REPO_ROOT

        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("_config.yml", "_toc.yml"):
            shutil.copy(REPO_ROOT / name, self.root / name)
        shutil.copytree(REPO_ROOT / "book", self.root / "book", ignore=shutil.ignore_patterns("executed", "_build"))
        # Offline like the rest of the session (pytest-socket guards only the pytest process): the
        # lessons run on the embedded model, and the hub's own switch keeps anything from asking it.
        env = os.environ | {"COURSE_RUNS_DIR": str(self.folder / "runs-level3"), "HF_HUB_OFFLINE": "1"}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, __file__, str(self.folder)], cwd=REPO_ROOT, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait(self):
        """(book_root, RunReport) once the run has finished; an error with the log's end if it crashed."""
        if self.process is None:
            raise RuntimeError("the background lesson run was never started")
        code = self.process.wait()
        if code != 0 or not self.result.is_file():
            tail = self.log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
            raise RuntimeError(f"the background lesson run crashed (exit {code}); the end of {self.log}:\n{tail}")
        return self.root, pickle.loads(self.result.read_bytes())

    def stop(self) -> None:
        """Stop a run the session no longer waits for (an interrupted or failed session)."""
        if self.process is not None and self.process.poll() is None:
            terminate([self.process], timeout=20)  # longer than the run's own wait for its lanes (below)


def terminate(processes: list[subprocess.Popen], timeout: float) -> None:
    """SIGTERM every process at once, then wait for each; one still running after ``timeout`` s is killed."""
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


def lanes(names: list[str]) -> list[list[str]]:
    """The lessons in two lanes, each in book order: level 3's pages, and the rest."""
    level3 = [n for n in names if n.startswith("level3")]
    return [lane for lane in ([n for n in names if n not in level3], level3) if lane]


def run_lane(folder: Path, k: int) -> None:
    from course_lib.publish.runner import run_all, toc_notebooks

    report = run_all(PARAMETERS, folder / f"lane{k}", only=lanes(toc_notebooks())[k],
                     cache_dir=folder / "executed-cache")
    (folder / f"lane{k}.pickle").write_bytes(pickle.dumps(report))


def main(folder: Path) -> None:
    from course_lib.publish.runner import RunReport, toc_notebooks, write_report

    names = toc_notebooks()
    procs = [subprocess.Popen([sys.executable, __file__, str(folder), str(k)]) for k in range(len(lanes(names)))]

    def stop_lanes(signum, frame):  # BookRun.stop terminates this process: the lanes (and their kernels) go too
        terminate(procs, timeout=15)
        sys.exit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop_lanes)
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a lane of the lesson run failed (exit codes {codes})")
    reports = [pickle.loads((folder / f"lane{k}.pickle").read_bytes()) for k in range(len(procs))]
    out = folder / "book-build" / "book" / "executed"
    for k in range(len(procs)):  # every file a lesson wrote; the lane's own report is replaced below
        shutil.copytree(folder / f"lane{k}", out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("report.md", "report.json"))
    results = {r.name: r for rep in reports for r in rep.results}
    # Lessons that fail are in the report (status "failed"), for the tests to show one by one.
    report = RunReport(started=min(rep.started for rep in reports), environment=reports[0].environment,
                       results=[results[n] for n in names])
    write_report(report, out)
    (folder / "report.pickle").write_bytes(pickle.dumps(report))


if __name__ == "__main__":
    if len(sys.argv) > 2:
        run_lane(Path(sys.argv[1]), int(sys.argv[2]))
    else:
        main(Path(sys.argv[1]))
