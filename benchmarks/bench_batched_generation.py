"""The course's decoding loop against ``model.generate``, on the level-3 evaluation's work.

The loop samples N answers for each of the 15 questions. ``sample_answers`` decodes the
prompt x sample pairs in batches (left padding) with its own loop (``course_lib.generate``):
finished answers leave the batch and the KV cache is written in place. This script times that
against ``model.generate`` on the same batches with the same sampling settings, and (with
``--per-answer``) against one ``generate`` call per answer, and prints the ratios.

    .venv/bin/python benchmarks/bench_batched_generation.py --adapter runs/level3/<run>/iter2/adapter
    .venv/bin/python benchmarks/bench_batched_generation.py --n 5 --max-new-tokens 64 --per-answer

Without ``--adapter`` the untrained tiny model rarely writes its end-of-turn token, so every
answer runs to ``max_new_tokens`` and dropping finished answers saves nothing; a trained
adapter's answers end at different lengths, which is the loop's real case.
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
    p.add_argument("--adapter", default=None, help="a saved LoRA adapter to generate with (e.g. a level-3 stage's)")
    p.add_argument("--questions", type=int, default=15, help="how many of the 15 questions (default: all)")
    p.add_argument("--n", type=int, default=30, help="answers per question (default: 30, the original experiment's N)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = temperature only (the tiny profile's loop setting)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--per-answer", action="store_true", help="also time one generate call per answer (slow)")
    args = p.parse_args(argv)

    import torch

    from course_lib.generate import sample_answers
    from course_lib.lesson import start_lesson
    from course_lib.level3.data import load_symptoms
    from course_lib.lora import load_adapter
    from course_lib.profiles import load_model
    from course_lib.sft import chat_prompt

    start_lesson(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.profile, verbose=False)
    model, tok = loaded.model, loaded.tokenizer
    if args.adapter:
        model = load_adapter(model, args.adapter).eval()
    prompts = [s["question"] for s in load_symptoms()[: args.questions]]
    total = len(prompts) * args.n
    print(f"model {loaded.label}{' + ' + args.adapter if args.adapter else ''} on {loaded.device.device}, "
          f"torch threads {torch.get_num_threads()}; {len(prompts)} questions x {args.n} samples = {total} answers, "
          f"up to {args.max_new_tokens} new tokens, batch {args.batch_size}")

    def count_tokens(texts) -> int:
        return sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in texts)

    def course_loop() -> list[str]:
        out = sample_answers(model, tok, prompts, n=args.n, batch_size=args.batch_size, seed=0, temperature=0.7,
                             top_p=args.top_p, max_new_tokens=args.max_new_tokens, progress=False)
        return [a for answers in out for a in answers]

    def transformers_generate(batch_size: int) -> list[str]:
        jobs = [chat_prompt(tok, q) for q in prompts for _ in range(args.n)]
        texts, side = [], tok.padding_side
        tok.padding_side = "left"
        try:
            for b, start in enumerate(range(0, len(jobs), batch_size)):
                enc = tok(jobs[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                torch.manual_seed(b)
                with torch.no_grad():
                    out = model.generate(**enc.to(model.device), do_sample=True, temperature=0.7, top_p=args.top_p, top_k=0,
                                         max_new_tokens=args.max_new_tokens, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.eos_token_id)
                texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return texts

    def timed(name: str, fn) -> float:
        start = time.perf_counter()
        texts = fn()
        seconds = time.perf_counter() - start
        print(f"{name:34} {seconds:8.1f} s  {total / seconds:7.1f} answers/s  ({count_tokens(texts)} tokens)")
        return seconds

    sample_answers(model, tok, prompts[:1], n=2, batch_size=2, seed=0, progress=False)  # warm-up
    ours = timed("course loop (sample_answers)", course_loop)
    theirs = timed("model.generate, same batches", lambda: transformers_generate(args.batch_size))
    print(f"speed-up of the course loop over model.generate: {theirs / ours:.2f}x")
    if args.per_answer:
        single = timed("model.generate, one per answer", lambda: transformers_generate(1))
        print(f"speed-up of the course loop over one generate per answer: {single / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
