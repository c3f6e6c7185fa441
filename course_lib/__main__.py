"""Command line: ``python -m course_lib {build-tiny,run,book,course,colab,lab,test}``.

Examples::

    python -m course_lib course                                  # the main job (tiny model, rubric judge)
    python -m course_lib run --quick --only level1_basics        # one lesson, CI-sized
    python -m course_lib run --profile qwen3-0.6b --judge openai # the real model and the LLM judge
    python -m course_lib course --force                          # execute every lesson, cached or not
    python -m course_lib lab                                     # JupyterLab, .py lessons open as notebooks
    python -m course_lib test -k level1                          # the test command (= make test), any OS

``course`` is the main job: build the embedded model, execute every lesson with
papermill on the embedded defaults, write the report, build the book. A lesson
whose inputs did not change since its last successful run is restored from the
execution cache instead of executed (``--force`` executes everything).
``colab`` writes the notebooks the book's Colab buttons open (see ``launch``).
``lab`` starts JupyterLab in the repository with jupytext's notebook view as the default
for the lessons' ``.py`` files (see ``publish/lab.py``); arguments after it go to ``jupyter lab``.
``test`` runs the test command ``tests/run_tests.sh`` (where bash exists) or pytest with the
same arguments (Windows); arguments after it go to pytest.
"""
from __future__ import annotations

import argparse
import sys

from .paths import EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT, TOC_PATH
from .publish.runner import build_book, run_all


def _run_parameters(args) -> dict:
    return {"model_profile": args.profile, "judge": args.judge, "quick": args.quick, "seed": args.seed}


def run_tests(pytest_args: list[str]) -> int:
    """``make test`` without make: ``tests/run_tests.sh`` with this interpreter, or pytest itself on Windows."""
    import os
    import shutil
    import subprocess

    bash = shutil.which("bash") if os.name != "nt" else None
    if bash:
        env = {**os.environ, "PY": sys.executable}
        return subprocess.call([bash, str(REPO_ROOT / "tests" / "run_tests.sh"), *pytest_args], cwd=REPO_ROOT, env=env)
    status = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=REPO_ROOT)
    if status == 5:  # as tests/run_tests.sh: no test collected is a broken suite, not a pass
        print("[test] pytest collected no tests", file=sys.stderr)
        return 1
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("build-tiny", help="build (or reuse) the embedded tiny Qwen3 model")
    for name in ("run", "course"):
        p = sub.add_parser(name, help="execute the lessons" if name == "run" else "build model, run lessons, build the book")
        p.add_argument("--profile", default="tiny", choices=["tiny", "qwen3-0.6b", "auto"], help="model profile (default: tiny)")
        p.add_argument("--judge", default="rubric", choices=["rubric", "openai", "auto"], help="level-3 judge (default: rubric)")
        p.add_argument("--quick", action="store_true", help="smaller grids and sample counts (what CI uses)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--only", nargs="*", help="run only these lessons (names from _toc.yml)")
        p.add_argument("--force", action="store_true",
                       help="execute every lesson even when its cached run is current (refreshes the cache)")
        p.add_argument("--out", default=str(EXECUTED_DIR), help="folder for executed notebooks and the report")
        p.add_argument("--toc", default=str(TOC_PATH), help=argparse.SUPPRESS)
        p.add_argument("--notebooks", default=str(NOTEBOOKS_DIR), help=argparse.SUPPRESS)
    sub.add_parser("book", help="build the book from the executed notebooks into _build/html")
    p = sub.add_parser("colab", help="write the Colab notebooks the publish workflow pushes to their branch")
    p.add_argument("--out", default=str(REPO_ROOT / "_build" / "colab"), help="output folder (default: _build/colab)")
    sub.add_parser("lab", help="start JupyterLab in the repository, .py lessons opening as notebooks "
                               "(further arguments go to jupyter lab)")
    sub.add_parser("test", help="run the test suite like `make test` (further arguments go to pytest)")

    return parser


def _run_lessons(args) -> int:
    """``run`` and ``course``: execute the lessons (cached when current), then build the book for ``course``."""
    from pathlib import Path

    if args.profile == "tiny":
        from .tiny_model import ensure_tiny_model

        ensure_tiny_model()
    try:
        report = run_all(_run_parameters(args), Path(args.out), args.only, Path(args.notebooks), Path(args.toc),
                         force=args.force)
    except ValueError as exc:  # a wrong --only: say what exists instead of a traceback
        print(f"[run] {exc}", file=sys.stderr)
        return 2
    status = 1 if report.failed else 0
    if args.command == "course":
        status = build_book() or status
    if report.failed:
        print(f"[run] FAILED: {', '.join(r.name for r in report.failed)}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough[:1] == ["--"]:  # `python -m course_lib test -- -h`: the rest is for pytest / jupyter lab
        passthrough = passthrough[1:]
    if args.command == "lab":
        from .publish.lab import run_lab

        return run_lab(passthrough)
    if args.command == "test":
        return run_tests(passthrough)
    if passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    if args.command == "build-tiny":
        from .tiny_model import ensure_tiny_model

        print(ensure_tiny_model())
        return 0
    if args.command == "book":
        return build_book()
    if args.command == "colab":
        from .publish.launch import COLAB_BRANCH, export_colab_notebooks

        for path in export_colab_notebooks(args.out):
            print(path)
        print(f"[colab] push {args.out} to the '{COLAB_BRANCH}' branch to publish them")
        return 0

    return _run_lessons(args)

if __name__ == "__main__":
    sys.exit(main())
