"""Hand-made mutations for what mutmut 3 cannot mutate, run against the unit tests (``make mutation``).

mutmut skips decorated functions and properties, and ``generate.sample_answers`` (``@torch.no_grad``,
``@timed_function``) is one of them; the decoding loop it calls (``decode_batch``, ``pick_next_tokens``)
is not decorated, so mutmut mutates that. This script makes the one-line bugs issue 19 found by hand, one
at a time: it forks a process that has imported torch, transformers and the course, re-executes the changed
module source in place (rebinding the names other modules imported from it), and runs the unit tests
that should fail. Each line of output says KILLED (a test failed), SURVIVED, or ERROR (the change no
longer applies to the source: update its text here).

    .venv/bin/python tests/hand_mutations.py [generation] [loop]
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402,F401
from transformers import GenerationMixin, PreTrainedModel, TrainerCallback  # noqa: E402,F401

# (file under course_lib/, exact text, its replacement, the bug it stands for)
GENERATION = [
 ("generate.py", 'tokenizer.batch_decode(new_tokens, skip_special_tokens=True)',
  'tokenizer.batch_decode(torch.cat([enc["input_ids"], new_tokens], 1), skip_special_tokens=True)', "prompt returned with the answer"),
 ("generate.py", 'tokenizer.batch_decode(new_tokens, skip_special_tokens=True)',
  'tokenizer.batch_decode(new_tokens[:, 1:], skip_special_tokens=True)', "first new token dropped"),
 ("generate.py", 'enc["attention_mask"], max_new_tokens,', 'enc["attention_mask"], max_new_tokens + 5,', "max_new_tokens + 5"),
 ("generate.py", 'enc["attention_mask"], max_new_tokens,', 'enc["attention_mask"], max(1, max_new_tokens - 5),', "max_new_tokens - 5"),
 ("generate.py", 'uniforms, temperature, top_p)', 'uniforms, 1.0, top_p)', "temperature ignored"),
 ("generate.py", 'uniforms, temperature, top_p)', 'uniforms, temperature, 1.0)', "top_p ignored"),
 ("generate.py", 'answer_generators(seed, start, len(chunk))', 'answer_generators(seed, 0, len(chunk))', "one seed for every batch"),
 ("generate.py", 'answer_generators(seed, start, len(chunk))', 'answer_generators(0, start, len(chunk))', "seed ignored"),
 ("generate.py", 'tokenizer.padding_side = "left"', 'tokenizer.padding_side = "right"', "right padding in generation"),
 ("generate.py", 'if temperature > 0:', 'if temperature >= 0:', "temperature 0 samples instead of greedy"),
 ("generate.py", 'results[i].append(text.strip())', 'results[i].append(text)', "answers not stripped"),
 ("generate.py", '        if was_training:\n            model.train()', '        pass', "training mode not restored"),
 ("sft.py", 'add_generation_prompt=True', 'add_generation_prompt=False', "no generation prompt"),
 ("sft.py", '([{"role": "system", "content": system}] if system else [])', '[]', "system prompt dropped"),
]
LOOP = [
 ("level3/loop.py", 'model = self.models.after(st.parent, trainable=True)', 'model = self.models.after("iter0", trainable=True)', "iteration k trains from iter0"),
 ("level3/loop.py", 'per_q = summarise(frame[frame["split"] == "original"], n_boot=1).per_question', 'per_q = summarise(frame, n_boot=1).per_question', "selection reads paraphrase grades"),
 ("level3/loop.py", 'self.config.replay_ratio, self.config.pass_accuracy,', 'self.config.replay_ratio, 0.8,', "pass_accuracy ignored by selection"),
 ("level3/evaluate.py", 'if g["key"] not in cache and g["key"] not in seen:', 'if g["key"] not in seen:', "identical answers graded again in later stages"),
 ("level3/runs.py", '        source = JudgeCache(src_run, JUDGE_CACHE)', '        return\n        source = JudgeCache(src_run, JUDGE_CACHE)', "copied stage grades not adopted"),
 ("level3/runs.py", 'ITER_FIELDS = ("epochs_iter", ', 'ITER_FIELDS = (', "epochs_iter missing from fingerprints"),
 ("level3/runs.py", '"lora_dropout", "target_modules", "learning_rate",', '"target_modules", "learning_rate",', "lora_dropout missing from fingerprints"),
 ("level3/loop.py", '        model = self.models.fresh_lora()\n        return train_on(sd, model, self.tok, records, {"stage": st.name, "loop_steps": steps}', '        model = self.models.after(names[-1])\n        return train_on(sd, model, self.tok, records, {"stage": st.name, "loop_steps": steps}', "control continues the loop's adapter"),
 ("level3/loop.py", 'self.progress, max_steps=max(1, steps))', 'self.progress, max_steps=-1)', "control ignores the loop's step count"),
 ("level3/loop.py", 'self.config.pass_accuracy,\n                                    seed=self.config.seed + st.k)', 'self.config.pass_accuracy,\n                                    seed=self.config.seed)', "replay draw not seeded per iteration"),
]
TESTS = {"generation": ["tests/test_generate.py", "-k", "not in_order and not repeats_with and not left_padding_batches"],
         "loop": ["tests/level3/test_loop_wiring.py"]}
GROUPS = {"generation": GENERATION, "loop": LOOP}


def mutate(file: str, old: str, new: str) -> None:
    name = "course_lib." + file[:-3].replace("/", ".")
    module = importlib.import_module(name)
    source = Path(module.__file__).read_text(encoding="utf-8")
    if source.count(old) != 1:
        raise LookupError(f"{file}: the text to change occurs {source.count(old)} times")
    before = dict(vars(module))
    exec(compile(source.replace(old, new), module.__file__, "exec"), vars(module))
    swap = {id(v): vars(module)[k] for k, v in before.items() if k in vars(module) and vars(module)[k] is not v}
    for other_name, other in list(sys.modules.items()):
        if other_name.startswith("course_lib") and other is not module and other is not None:
            for k, v in list(vars(other).items()):
                if id(v) in swap:
                    setattr(other, k, swap[id(v)])


def run(group: str, file: str, old: str, new: str) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            mutate(file, old, new)
        except BaseException as exc:  # a change that no longer applies is an error, never a kill
            print(f"    could not apply: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os._exit(int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *TESTS[group]])))
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main(groups: list[str]) -> int:
    import course_lib.generate, course_lib.level3.evaluate, course_lib.level3.loop  # noqa: F401  (warm, before forking)

    survived = 0
    for group in groups or list(GROUPS):
        for file, old, new, what in GROUPS[group]:
            rc = run(group, file, old, new)
            verdict = {0: "SURVIVED", 1: "KILLED"}.get(rc, f"ERROR (exit {rc})")
            survived += rc != 1
            print(f"{verdict:9} {group:10} {what}", flush=True)
    print(f"{survived} not killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
