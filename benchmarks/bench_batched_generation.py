"""Batched generation vs one ``generate`` call per sample, for the level-3 evaluation.

The loop samples N answers for each of the 15 questions. ``sample_answers`` puts all
prompt x sample pairs into batches (left padding); the naive way calls ``generate``
once per answer. This script times both on the same work and prints the ratio.

    .venv/bin/python benchmarks/bench_batched_generation.py            # 15 x 30, tiny model
    .venv/bin/python benchmarks/bench_batched_generation.py --n 5 --max-new-tokens 64

Both runs sample at temperature 0.7 (``--top-p`` 1.0 by default, as the loop does for the
tiny profile) until ``max_new_tokens`` or the end-of-turn token;
the untrained tiny model rarely stops early, so both do the full token count.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="tiny", choices=["tiny", "qwen3-0.6b", "auto"])
    p.add_argument("--questions", type=int, default=15, help="how many of the 15 questions (default: all)")
    p.add_argument("--n", type=int, default=30, help="answers per question (default: 30, the original experiment (book page `original_experiment`)'s N)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = temperature only (the tiny profile's loop setting)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)

    import torch

    from course_lib.generate import sample_answers
    from course_lib.lesson import start_lesson
    from course_lib.level3.data import load_symptoms
    from course_lib.profiles import load_model

    start_lesson(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.profile, verbose=False)
    model, tok = loaded.model, loaded.tokenizer
    prompts = [s["question"] for s in load_symptoms()[: args.questions]]
    total = len(prompts) * args.n
    common = dict(temperature=0.7, top_p=args.top_p, max_new_tokens=args.max_new_tokens, progress=False)
    print(f"model {loaded.label} on {loaded.device.device}, torch threads {torch.get_num_threads()}; "
          f"{len(prompts)} questions x {args.n} samples = {total} answers, up to {args.max_new_tokens} new tokens")

    def timed(batch_size: int) -> tuple[float, int]:
        start = time.perf_counter()
        out = sample_answers(model, tok, prompts, n=args.n, batch_size=batch_size, seed=0, **common)
        seconds = time.perf_counter() - start
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for answers in out for a in answers)
        return seconds, tokens

    sample_answers(model, tok, prompts[:1], n=2, batch_size=2, seed=0, **common)  # warm-up
    b_sec, b_tok = timed(args.batch_size)
    print(f"batched (batch {args.batch_size}): {b_sec:8.1f} s  {total / b_sec:7.1f} answers/s  ({b_tok} tokens)")
    s_sec, s_tok = timed(1)
    print(f"one generate per answer   : {s_sec:8.1f} s  {total / s_sec:7.1f} answers/s  ({s_tok} tokens)")
    print(f"speed-up of batching: {s_sec / b_sec:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
