"""Exercise the course's GPU path end to end on the tiny model, and write what happened as JSON.

CI has no GPU, so the CUDA branches of ``device``, ``train`` (bf16 / fp16 mixed precision),
``generate``, ``perplexity``, the level-3 loop and the DPO update rule are run here, on a
machine that has one::

    python benchmarks/check_cuda_path.py --device cuda --out results.json

Every check records its result and its seconds; a failing check is recorded with its error and
the script exits non-zero at the end (after the other checks ran). On the CPU the same script
is a quick smoke test of the same code (``--device cpu``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def hardware(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from course_lib.device import pick_device
    from course_lib.profiles import load_model

    results: dict = {"device": args.device, "hardware": hardware(args.device), "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d"), "checks": {}}

    def check(name):
        def wrap(fn):
            start = time.perf_counter()
            try:
                value = fn()
                results["checks"][name] = {"ok": True, "seconds": round(time.perf_counter() - start, 2), **(value or {})}
            except Exception as exc:  # recorded; the other checks still run
                results["checks"][name] = {"ok": False, "seconds": round(time.perf_counter() - start, 2),
                                           "error": f"{type(exc).__name__}: {exc}",
                                           "trace": traceback.format_exc()[-2000:]}
            print(name, json.dumps(results["checks"][name], ensure_ascii=False)[:400], flush=True)
        return wrap

    state: dict = {}

    @check("device_choice")
    def _():
        c = pick_device(args.device)
        assert c.device == args.device, c
        return {"dtype": c.dtype_name, "why": c.why}

    @check("load_tiny")
    def _():
        state["loaded"] = loaded = load_model("tiny", device=args.device, verbose=False)
        p = next(loaded.model.parameters())
        assert p.device.type == args.device
        return {"param_device": str(p.device), "dtype": str(p.dtype)}

    @check("lora_train_level1")
    def _():
        import copy

        from course_lib.level1 import load_level1
        from course_lib.lora import attach_lora
        from course_lib.train import TrainConfig, train

        loaded = state["loaded"]
        train_records, _ = load_level1()
        model = attach_lora(copy.deepcopy(loaded.model), 8, 16, 0.05, ("q_proj", "v_proj", "lm_head"))
        res = train(model, loaded.tokenizer, train_records, config=TrainConfig(max_steps=30, learning_rate=5e-3,
                                                                              per_device_train_batch_size=4))
        losses = res.train_loss["loss"].tolist()
        assert losses[-1] < losses[0], f"loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
        state["trained"] = model
        return {"steps": res.steps, "first_loss": losses[0], "last_loss": losses[-1],
                "train_seconds": round(res.seconds, 2), "peak_memory_mb": round(res.peak_memory_mb, 1)}

    @check("generate_and_repeat")
    def _():
        from course_lib.generate import sample_answers
        from course_lib.level3.data import LoopData

        loaded = state["loaded"]
        questions = [s["question"] for s in LoopData.load().symptoms]
        t = time.perf_counter()
        a = sample_answers(loaded.model, loaded.tokenizer, questions, n=8, max_new_tokens=64, seed=3, progress=False)
        seconds = time.perf_counter() - t
        b = sample_answers(loaded.model, loaded.tokenizer, questions, n=8, max_new_tokens=64, seed=3, progress=False)
        assert all(isinstance(x, str) for row in a for x in row)
        return {"answers": sum(map(len, a)), "seconds_120_answers": round(seconds, 2), "same_seed_same_answers": a == b}

    @check("perplexity")
    def _():
        from course_lib.perplexity import general_text, perplexity

        loaded = state["loaded"]
        return {"base": perplexity(loaded.model, loaded.tokenizer, general_text()),
                "after_level1_lora": perplexity(state["trained"], loaded.tokenizer, general_text())}

    @check("level3_loop_small")
    def _():
        from course_lib.level3.config import LoopConfig
        from course_lib.level3.judge import RubricJudge
        from course_lib.level3.loop import run_loop

        cfg = LoopConfig.for_profile("tiny", iterations=1, n_samples=4, n_paraphrase=1, epochs_initial=5.0,
                                     epochs_iter=3.0)
        with tempfile.TemporaryDirectory() as runs:
            res = run_loop(cfg, state["loaded"], RubricJudge(), progress=False, runs_dir=runs, log=None)
            ov = res.overall("original").set_index("stage")
            return {"stages": res.stages, "accuracy": ov["accuracy"].round(3).to_dict(),
                    "steps": res.training.set_index("stage")["steps"].to_dict()}

    @check("dpo_rule_small")
    def _():
        from course_lib.level3.config import LoopConfig
        from course_lib.level3.judge import RubricJudge
        from course_lib.level3.loop import run_loop

        cfg = LoopConfig.for_profile("tiny", iterations=1, n_samples=4, n_paraphrase=1, epochs_initial=5.0,
                                     epochs_iter=3.0, update_rule="dpo", control=False)
        with tempfile.TemporaryDirectory() as runs:
            res = run_loop(cfg, state["loaded"], RubricJudge(), progress=False, runs_dir=runs, log=None)
            info = res.stage_info.get("iter1", {})
            return {"iter1": {k: info.get(k) for k in ("steps", "n_pairs", "dpo_beta", "final_loss")}}

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    failed = [k for k, v in results["checks"].items() if not v["ok"]]
    print("failed:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
