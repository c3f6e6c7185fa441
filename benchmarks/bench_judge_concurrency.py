"""Benchmark: OpenAIJudge sequential vs concurrent against a local OpenAI-compatible server.

Seed 000 graded its answers one API call at a time (§12.2: "並列アクセスの未実装"); with
15 questions x 30 samples = 450 grades that is the bottleneck. This script grades 450
answers through OpenAIJudge against the fake server in tests/ (127.0.0.1, fixed latency
per request, no network, no key needed) twice: concurrency 1, then concurrency N, and
prints the wall times and their ratio. Not a test: timings depend on the machine.

    .venv/bin/python benchmarks/bench_judge_concurrency.py            # 450 grades, 200 ms, N=16
    .venv/bin/python benchmarks/bench_judge_concurrency.py --n 90     # quicker
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "level3"))
sys.path.insert(0, str(ROOT))

from fake_openai_server import FakeOpenAIServer  # noqa: E402

from course_lib.level3.judge import Grade, OpenAIJudge  # noqa: E402
from course_lib.level3.data import load_train_initial  # noqa: E402


def make_pairs(n: int) -> list[tuple[str, str]]:
    """n distinct (question, answer) pairs: the training answers with a sample number appended."""
    train = load_train_initial()
    return [(r["prompt"], f"{r['response']}\n(sample {i})") for i, r in
            ((i, train[i % len(train)]) for i in range(n))]


def run(server: FakeOpenAIServer, pairs, concurrency: int) -> float:
    judge = OpenAIJudge(api_key="sk-local-benchmark", base_url=server.url, cache_dir=None)  # no cache: every call is paid
    server.reset_counts()
    start = time.perf_counter()
    results = judge.grade_many(pairs, concurrency=concurrency, progress=False)
    wall = time.perf_counter() - start
    ok = sum(isinstance(r, Grade) for r in results)
    print(f"  concurrency {concurrency:>3}: {wall:7.2f} s  ({ok}/{len(pairs)} graded, {server.calls} HTTP calls, "
          f"peak in flight {server.max_in_flight})")
    return wall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=450, help="number of grades (default 450 = 15 questions x 30 samples)")
    ap.add_argument("--latency", type=float, default=0.2, help="server latency per request in seconds (default 0.2)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent requests for the second run (default 16)")
    args = ap.parse_args(argv)
    pairs = make_pairs(args.n)
    print(f"{args.n} grades, server latency {args.latency * 1000:.0f} ms "
          f"(ideal: sequential {args.n * args.latency:.1f} s, concurrent {args.n * args.latency / args.concurrency:.1f} s)")
    with FakeOpenAIServer(latency=args.latency) as server:
        warm = OpenAIJudge(api_key="sk-local-benchmark", base_url=server.url, cache_dir=None)
        warm.grade_many(make_pairs(2), progress=False)  # imports and first connections, not timed
        seq = run(server, pairs, 1)
        con = run(server, pairs, args.concurrency)
    print(f"speed-up (sequential / concurrent): {seq / con:.1f}x")


if __name__ == "__main__":
    main()
