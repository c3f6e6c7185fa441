"""The loop's wiring, checked without a real model.

Training and sampling are replaced by fakes: a "model" is a record of the stages its
weights came from, and an answer names the model that wrote it. So the tests can ask
which stage each iteration started from, what selection read, what was graded, and
which settings a stage's fingerprint covers, in a fraction of a second per run.
"""
from __future__ import annotations

import json
from dataclasses import fields, replace
from types import SimpleNamespace

import pandas as pd
import pytest
# imported here, not first inside the loop: a mutation run forks every test from an already warm process
from transformers import TrainerCallback  # noqa: F401

from course_lib.level3 import config as C, runs as R

IDENT = {"model": {"profile": "fake"}, "judge": {"name": "fake"}, "data": "d", "loop_version": 0}

# A changed value for every setting of LoopConfig (except the stage plan itself: iterations, control).
CHANGED = {"n_samples": 31, "n_paraphrase": 11, "temperature": 0.5, "top_p": 0.8, "max_new_tokens": 100,
           "gen_batch_size": 32, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ("q_proj",),
           "learning_rate": 1e-3, "per_device_train_batch_size": 2, "max_length": 256, "warmup_ratio": 0.1,
           "lr_scheduler_type": "cosine", "epochs_initial": 50.0, "epochs_iter": 10.0, "pass_accuracy": 0.6,
           "replay_ratio": 0.25, "update_rule": "self_distill", "self_distill_k": 3, "dpo_beta": 0.2,
           "dpo_learning_rate": 1e-4, "seed": 1}
# The first stage each setting can change: it and every later stage must get a new fingerprint.
FIRST_STAGE = {**{k: "baseline" for k in ("n_samples", "n_paraphrase", "temperature", "top_p", "max_new_tokens",
                                          "gen_batch_size", "seed")},
               **{k: "iter0" for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
                                       "per_device_train_batch_size", "max_length", "warmup_ratio",
                                       "lr_scheduler_type", "epochs_initial")},
               **{k: "iter1" for k in ("epochs_iter", "pass_accuracy", "replay_ratio", "update_rule", "self_distill_k",
                                       "dpo_beta", "dpo_learning_rate")}}
# An update rule's own knob is compared under that rule (the default rule reads neither knob).
RULE_OF = {"self_distill_k": "self_distill", "dpo_beta": "dpo", "dpo_learning_rate": "dpo"}


def test_every_setting_is_listed_here():
    names = {f.name for f in fields(C.LoopConfig)} - {"iterations", "control"}
    assert names == set(CHANGED) == set(FIRST_STAGE)


@pytest.mark.parametrize("setting", sorted(CHANGED))
def test_a_changed_setting_changes_the_fingerprint_of_its_stage_and_every_later_one(setting):
    # the update-rule arms run without the control (it pools the corrective loop's data)
    rule = {"update_rule": RULE_OF[setting]} if setting in RULE_OF else {}
    base = C.LoopConfig(iterations=2, control=not (rule or setting == "update_rule"), **rule)
    assert getattr(base, setting) != CHANGED[setting]
    before = R.stage_fingerprints(base, IDENT)
    after = R.stage_fingerprints(replace(base, **{setting: CHANGED[setting]}), IDENT)
    order = base.stages  # baseline, iter0, iter1, iter2(, control)
    first = order.index(FIRST_STAGE[setting])
    for i, stage in enumerate(order):
        if i < first:
            assert after[stage] == before[stage], f"{setting} must not change {stage}: it is reused across runs"
        else:
            assert after[stage] != before[stage], f"{setting} changed but {stage} kept its fingerprint (stale copy)"


def test_fingerprints_are_distinct_per_stage_and_cover_the_identity():
    fp = R.stage_fingerprints(C.LoopConfig(iterations=2), IDENT)
    assert len(set(fp.values())) == len(fp) == 5
    other = R.stage_fingerprints(C.LoopConfig(iterations=2), dict(IDENT, data="e"))
    assert all(other[s] != fp[s] for s in fp)


# ----------------------------------------------------------------------------- the loop with fake training and sampling

SYMPTOMS = ["s1", "s2", "s3", "s4"]
N = 4  # answers per original question and per paraphrase
# The untrained model's answers to the original questions (1 = correct): accuracies 1, 0.75, 0.25, 0.
ORIGINAL = {"s1": [1, 1, 1, 1], "s2": [1, 1, 1, 0], "s3": [1, 0, 0, 0], "s4": [0, 0, 0, 0]}
# Its answers to the paraphrases are the other way round: selection that read them would pick other questions.
PARAPHRASE = {"s1": [0, 0, 0, 0], "s2": [0, 0, 0, 0], "s3": [1, 1, 1, 1], "s4": [1, 1, 1, 1]}
# How many trainings with corrective examples a question needs before the model answers it correctly.
NEEDS = {"s2": 1, "s3": 2, "s4": 3}


class FakeModel:
    """'Weights' that record where they came from: the stages trained into them, and the corrective
    examples they saw per question. Deep-copied and saved like a real model."""

    def __init__(self, lineage=("base",), corrections=None):
        self.lineage = list(lineage)
        self.corrections = dict(corrections or {})

    def eval(self):
        return self

    def answers(self, symptom_id: str, split: str) -> list[str]:
        if split == "paraphrase":
            verdicts = PARAPHRASE[symptom_id]
        elif self.corrections.get(symptom_id, 0) >= NEEDS.get(symptom_id, 0):
            verdicts = [1] * N
        else:
            verdicts = ORIGINAL[symptom_id]
        return [f"{'ok' if v else 'bad'}-{j}" for j, v in enumerate(verdicts)]


class ScoringJudge:
    """Grades 'ok-…' correct and anything else incorrect; records every (question, answer) it is asked."""

    name, version, concurrency = "scoring", "1", 2

    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def config(self):
        return {"judge": "scoring"}

    def estimate(self, items, use_cache=None):
        raise AssertionError("not used by the loop")

    def grade_many(self, items, *, progress=False, use_cache=None, on_result=None):
        from course_lib.level3.judge import Grade, as_request

        out = []
        for i, r in enumerate(map(as_request, items)):
            self.asked.append((r.question, r.answer))
            ok = r.answer.startswith("ok")
            out.append(Grade(question=r.question, model_answer=r.answer, overall_label="correct" if ok else "incorrect",
                             overall_is_harmful=False, overall_score=1.0 if ok else 0.0, overall_reason="fake", drugs=[]))
            if on_result is not None:
                on_result(i, out[-1])
        return out


def fake_data():
    from course_lib.level3.data import LoopData

    symptoms = [{"id": s, "question": f"症状: {s}"} for s in SYMPTOMS]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"言い換え: {s}"} for s in SYMPTOMS]
    train = [{"symptom_id": s, "prompt": f"症状: {s}", "response": f"初期-{s}-{k}"} for s in SYMPTOMS for k in range(2)]
    refs = [{"symptom_id": s, "prompt": f"症状: {s}", "response": f"参照-{s}-{k}"} for s in SYMPTOMS for k in range(2)]
    return LoopData(symptoms, paraphrases, train, refs)


FAKE_CONFIG = C.LoopConfig(iterations=2, n_samples=N, n_paraphrase=N, pass_accuracy=0.8, replay_ratio=0.5,
                           per_device_train_batch_size=2, control=True, seed=0)


class FakeLoop:
    """Patches the loop's model work (attach, train, save, load, sample, perplexity) with fakes that log."""

    def __init__(self, monkeypatch):
        import course_lib.level3.evaluate as EV
        import course_lib.level3.loop as LP

        self.trained: list[dict] = []  # one entry per training: stage, the lineage it started from, its records
        self.selections: list[pd.DataFrame] = []  # what failure selection was given
        self._stage: list[str] = []
        real_train_on, real_select = LP.train_on, LP.build_iteration_data

        def train_on(sd, model, *a, **kw):
            self._stage.append(sd.name)
            return real_train_on(sd, model, *a, **kw)

        def select(per_q, *a, **kw):
            self.selections.append(per_q.copy())
            return real_select(per_q, *a, **kw)

        def train(model, tokenizer, records, config=None, callbacks=None):
            stage = self._stage[-1]
            self.trained.append({"stage": stage, "start": list(model.lineage), "records": list(records),
                                 "max_steps": config.max_steps})
            for s in {r["symptom_id"] for r in records if r.get("source") == "corrective"}:
                model.corrections[s] = model.corrections.get(s, 0) + 1  # one more training that corrected s
            model.lineage.append(stage)
            steps = config.max_steps if config.max_steps > 0 else len(records)
            return SimpleNamespace(steps=steps, seconds=0.0, final_loss=0.0, config={},
                                   train_loss=pd.DataFrame({"step": [1], "loss": [0.0]}))

        def attach_lora(model, *a, **kw):
            return FakeModel(model.lineage + ["lora"], model.corrections)

        def save_adapter(model, path):
            path.mkdir(parents=True)
            (path / "adapter_config.json").write_text(
                json.dumps({"lineage": model.lineage, "corrections": model.corrections}), encoding="utf-8")

        def load_adapter(model, path, trainable=False):
            saved = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
            return FakeModel(saved["lineage"], saved["corrections"])

        def sample_answers(model, tokenizer, prompts, n=1, **kw):
            by_question = {**{f"症状: {s}": (s, "original") for s in SYMPTOMS},
                           **{f"言い換え: {s}": (s, "paraphrase") for s in SYMPTOMS}}
            out = [model.answers(*by_question[p]) for p in prompts]
            assert all(len(a) == n for a in out)
            return out

        for name, fn in {"train_on": train_on, "build_iteration_data": select, "train": train,
                         "attach_lora": attach_lora, "save_adapter": save_adapter, "load_adapter": load_adapter}.items():
            monkeypatch.setattr(LP, name, fn)
        monkeypatch.setattr(EV, "sample_answers", sample_answers)
        monkeypatch.setattr(EV, "perplexity", lambda model, tok, text: float(len(model.lineage)))

    def run(self, runs_dir, judge, config=FAKE_CONFIG):
        from course_lib.level3.loop import run_loop

        loaded = SimpleNamespace(model=FakeModel(), tokenizer=None, source="fake-model", profile="fake", label="fake")
        return run_loop(config, loaded, judge, progress=False, data=fake_data(), runs_dir=runs_dir, log=None)

    def start_of(self, stage: str) -> list[str]:
        (entry,) = [t for t in self.trained if t["stage"] == stage]
        return entry["start"]


@pytest.fixture()
def fake_loop(monkeypatch):
    return FakeLoop(monkeypatch)


def test_each_iteration_trains_from_the_previous_stage_and_the_control_from_scratch(fake_loop, tmp_path):
    result = fake_loop.run(tmp_path, ScoringJudge())
    assert [t["stage"] for t in fake_loop.trained] == ["iter0", "iter1", "iter2", "control"]
    assert fake_loop.start_of("iter0") == ["base", "lora"]
    assert fake_loop.start_of("iter1") == ["base", "lora", "iter0"]
    assert fake_loop.start_of("iter2") == ["base", "lora", "iter0", "iter1"]
    assert fake_loop.start_of("control") == ["base", "lora"]  # a fresh adapter, not the loop's
    # what each stage saved is what it trained: iter2's adapter holds the whole chain
    saved = json.loads((result.run_dir / "iter2" / "adapter" / "adapter_config.json").read_text())
    assert saved["lineage"] == ["base", "lora", "iter0", "iter1", "iter2"]
    # the stages were evaluated with their own model: perplexity stands in for the lineage length
    assert result.general_perplexity().to_dict() == {"baseline": 1.0, "iter0": 3.0, "iter1": 4.0, "iter2": 5.0,
                                                     "control": 3.0}


def test_an_iteration_resumed_in_a_new_run_loads_its_parents_adapter(fake_loop, tmp_path):
    fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, iterations=1, control=False))
    fake_loop.trained.clear()
    # one more iteration: another run folder; baseline, iter0 and iter1 are copied, iter2 starts from iter1 on disk
    result = fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, iterations=2, control=False))
    assert all(result.reused[s].startswith("copied") for s in ("baseline", "iter0", "iter1"))
    assert [t["stage"] for t in fake_loop.trained] == ["iter2"]
    assert fake_loop.start_of("iter2") == ["base", "lora", "iter0", "iter1"]


def test_failures_are_selected_from_the_original_questions_only(fake_loop, tmp_path):
    result = fake_loop.run(tmp_path, ScoringJudge())
    # selection saw the originals' accuracies (1, 0.75, 0.25, 0), not the paraphrases' (0, 0, 1, 1)
    first = fake_loop.selections[0].set_index("symptom_id")
    assert first["accuracy"].to_dict() == {"s1": 1.0, "s2": 0.75, "s3": 0.25, "s4": 0.0}
    assert (first["n"] == N).all()
    assert result.stage_info["iter1"]["failed"] == ["s2", "s3", "s4"]
    # iter1 fixed s2 (NEEDS 1); s3 and s4 still fail after it
    assert result.stage_info["iter2"]["failed"] == ["s3", "s4"]
    trained_prompts = {r["prompt"] for t in fake_loop.trained for r in t["records"]}
    assert trained_prompts and not any(p.startswith("言い換え") for p in trained_prompts)


@pytest.mark.parametrize("pass_accuracy,failed", [(0.8, ["s2", "s3", "s4"]), (0.7, ["s3", "s4"]),
                                                  (0.2, ["s4"]), (1.0, ["s2", "s3", "s4"])])
def test_pass_accuracy_decides_which_questions_fail(fake_loop, tmp_path, pass_accuracy, failed):
    config = replace(FAKE_CONFIG, iterations=1, control=False, pass_accuracy=pass_accuracy)
    result = fake_loop.run(tmp_path, ScoringJudge(), config)
    assert result.stage_info["iter1"]["failed"] == failed
    corrective = [r for t in fake_loop.trained if t["stage"] == "iter1" for r in t["records"]
                  if r["source"] == "corrective"]
    assert sorted({r["symptom_id"] for r in corrective}) == failed
    # the stage's summary uses the same bar
    solved = result.per_question().query("stage == 'baseline'").set_index("symptom_id")["solved"]
    assert [s for s in SYMPTOMS if not solved[s]] == failed


def test_the_control_trains_on_the_loops_data_for_the_loops_steps(fake_loop, tmp_path):
    result = fake_loop.run(tmp_path, ScoringJudge())
    loop_steps = sum(result.stage_info[s]["steps"] for s in ("iter0", "iter1", "iter2"))
    (control,) = [t for t in fake_loop.trained if t["stage"] == "control"]
    assert control["max_steps"] == loop_steps == 8 + (6 + 2) + (4 + 2)  # examples per stage, 1 step each here
    loop_pairs = {(r["prompt"], r["response"]) for t in fake_loop.trained if t["stage"] != "control"
                  for r in t["records"]}
    control_pairs = [(r["prompt"], r["response"]) for r in control["records"]]
    assert set(control_pairs) == loop_pairs and len(control_pairs) == len(loop_pairs)


def test_no_answer_is_graded_twice_in_a_run_including_copied_stages(fake_loop, tmp_path):
    first_judge = ScoringJudge()
    first = fake_loop.run(tmp_path, first_judge)
    # within a run: every distinct (question, answer) graded exactly once, though stages repeat answers
    asked = first_judge.asked
    g = first.grades
    distinct = set(zip(g["question"], g["answer"]))
    assert len(asked) == len(set(asked)) == len(distinct) < len(g)
    # a second run that differs from iteration 1 on: baseline and iter0 are copied with their grades
    second_judge = ScoringJudge()
    second = fake_loop.run(tmp_path, second_judge, replace(FAKE_CONFIG, replay_ratio=0.0))
    assert second.run_dir != first.run_dir
    assert second.reused["baseline"].startswith("copied") and second.reused["iter0"].startswith("copied")
    asked = second_judge.asked
    g = second.grades
    copied = set(zip(*[g[g["stage"].isin(["baseline", "iter0"])][c] for c in ("question", "answer")]))
    assert len(asked) == len(set(asked))
    assert not set(asked) & copied  # what a copied stage graded is looked up, not graded again
    assert set(asked) == set(zip(g["question"], g["answer"])) - copied
    assert asked  # the later stages did have new answers


@pytest.mark.parametrize("setting,value,first_recomputed", [
    ("epochs_iter", 5.0, "iter1"), ("replay_ratio", 0.0, "iter1"), ("pass_accuracy", 0.7, "iter1"),
    ("lora_dropout", 0.2, "iter0"), ("learning_rate", 1e-3, "iter0"), ("epochs_initial", 3.0, "iter0")])
def test_a_changed_setting_recomputes_its_stage_instead_of_copying_a_stale_one(fake_loop, tmp_path, setting, value,
                                                                               first_recomputed):
    config = replace(FAKE_CONFIG, iterations=1, control=False)
    fake_loop.run(tmp_path, ScoringJudge(), config)
    fake_loop.trained.clear()
    result = fake_loop.run(tmp_path, ScoringJudge(), replace(config, **{setting: value}))
    stages = ["baseline", "iter0", "iter1"]
    first = stages.index(first_recomputed)
    assert all(result.reused[s].startswith("copied") for s in stages[:first])
    assert all(result.reused[s] == "computed" for s in stages[first:])
    assert [t["stage"] for t in fake_loop.trained] == stages[first:]


def test_a_copied_stage_reports_solved_questions_with_this_runs_pass_accuracy(fake_loop, tmp_path):
    """pass_accuracy is fingerprinted from iteration 1 on, so a baseline computed under another bar is
    copied; its questions must still count as solved under this run's bar."""
    config = replace(FAKE_CONFIG, iterations=0, control=False)
    fake_loop.run(tmp_path, ScoringJudge(), config)
    result = fake_loop.run(tmp_path, ScoringJudge(), replace(config, pass_accuracy=0.7))
    solved = result.per_question().query("stage == 'baseline'").set_index("symptom_id")["solved"]
    assert solved["s2"]  # 3 of 4 correct passes a 0.7 bar


def test_each_iteration_draws_its_replay_with_its_own_seed(fake_loop, tmp_path):
    import random

    result = fake_loop.run(tmp_path, ScoringJudge())
    # iter2: s1 and s2 pass after iter1, replay_ratio 0.5 replays one of them, drawn with seed + 2
    assert result.stage_info["iter2"]["passed"] == ["s1", "s2"]
    assert result.stage_info["iter2"]["replayed"] == random.Random(FAKE_CONFIG.seed + 2).sample(["s1", "s2"], 1) == ["s1"]
    assert random.Random(FAKE_CONFIG.seed).sample(["s1", "s2"], 1) == ["s2"]  # the run's seed alone would pick s2


def test_union_records_keep_the_symptom_and_drop_the_rest():
    from course_lib.level3.selection import union_records

    a = [{"symptom_id": "s1", "prompt": "p", "response": "r", "source": "corrective"}]
    b = [{"symptom_id": "s2", "prompt": "p", "response": "r"}, {"prompt": "q", "response": "r", "source": "replay"}]
    assert union_records([a, b]) == [{"symptom_id": "s1", "prompt": "p", "response": "r"},
                                     {"symptom_id": None, "prompt": "q", "response": "r"}]


def test_the_replay_draw_defaults_to_seed_zero():
    import random

    from course_lib.level3.selection import build_iteration_data

    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [1.0] * 4, "unsafe": [0] * 4})
    it = build_iteration_data(per_q, fake_data(), replay_ratio=0.5)
    assert it.replayed == sorted(random.Random(0).sample(SYMPTOMS, 2)) == ["s2", "s4"]
    assert build_iteration_data(per_q, fake_data(), replay_ratio=0.5, seed=1).replayed != it.replayed


def test_a_replayed_question_weighs_as_much_as_its_references():
    from course_lib.level3.data import LoopData
    from course_lib.level3.selection import build_iteration_data

    data = fake_data()
    # s1 has one reference, s2 none: replay gives one train_initial example each (never none)
    refs = [r for r in data.references if r["symptom_id"] not in ("s1", "s2")] + [dict(data.references[0])]
    assert sum(r["symptom_id"] == "s1" for r in refs) == 1
    data = LoopData(data.symptoms, data.paraphrases, data.train_initial, refs)
    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [1.0, 1.0, 0.0, 0.0], "unsafe": [0] * 4})
    it = build_iteration_data(per_q, data, replay_ratio=1.0)
    assert it.replayed == ["s1", "s2"] and it.failed == ["s3", "s4"]
    assert sorted(r["symptom_id"] for r in it.replay) == ["s1", "s2"]
    assert len(it.corrective) == 4


def test_the_pass_bar_defaults_to_the_original_experiments():
    from course_lib.level3.selection import question_status

    per_q = pd.DataFrame({"symptom_id": ["a", "b", "c"], "accuracy": [0.8, 0.79, 1.0], "unsafe": [0, 0, 1]})
    assert question_status(per_q).to_dict() == {"a": "pass", "b": "fail", "c": "fail"}
