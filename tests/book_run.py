"""The test session's executed book, built in a background process while the unit tests run.

Executing the lessons is most of the suite's time, and most of it is one single-threaded process:
the session starts it as soon as collection shows that a test needs it, orders those tests
last (``tests/conftest.py``), and runs the other tests meanwhile on the other core.

The background process does what ``make course`` does, into temporary folders: every lesson of
``_toc.yml`` (quick, tiny model, rubric judge), its own execution cache and its own level-3 runs
folder, so a run left in ``runs/level3`` or ``.cache/`` by older code can never pass the tests.

Run by the session as ``python tests/book_run.py <folder>``; it writes ``<folder>/report.pickle``
(the :class:`~course_lib.publish.runner.RunReport`) and its log to ``<folder>/book-run.log``.
"""
from __future__ import annotations

import os
import pickle
import shutil
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
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def main(folder: Path) -> None:
    from course_lib.publish.runner import run_all

    root = folder / "book-build"
    # Lessons that fail are in the report (status "failed"), for the tests to show one by one.
    report = run_all(PARAMETERS, root / "book" / "executed", cache_dir=folder / "executed-cache")
    (folder / "report.pickle").write_bytes(pickle.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
