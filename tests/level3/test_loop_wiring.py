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


def fake_data(n_train=2, n_refs=2):
    """Four symptoms s1..s4 with n_train train_initial examples and n_refs references each."""
    from course_lib.level3.data import LoopData

    symptoms = [{"id": s, "question": f"症状: {s}"} for s in SYMPTOMS]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"言い換え: {s}"} for s in SYMPTOMS]
    train = [{"symptom_id": s, "prompt": f"症状: {s}", "response": f"初期-{s}-{k}"} for s in SYMPTOMS for k in range(n_train)]
    refs = [{"symptom_id": s, "prompt": f"症状: {s}", "response": f"参照-{s}-{k}"} for s in SYMPTOMS for k in range(n_refs)]
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


NO_REPLAY = replace(FAKE_CONFIG, replay_ratio=0.0, control=False)


@pytest.mark.parametrize("setting,value,copied,computed", [
    # iter1: one question passes (s1) and a quarter of one rounds down to no replay, as with no replay at all;
    # iter2: two pass (s1, s2), and a quarter of two rounds half up to one replayed question: other data
    ("replay_ratio", 0.25, ["iter1"], ["iter2"]),
    # accuracies 1, 0.75, 0.25, 0 (then 1, 1, 0.25, 0): a 0.9 bar fails the same questions as 0.8
    ("pass_accuracy", 0.9, ["iter1", "iter2"], []),
])
def test_an_iteration_with_the_same_parent_and_data_is_copied_not_trained_again(fake_loop, tmp_path, setting, value,
                                                                                copied, computed):
    first = fake_loop.run(tmp_path, ScoringJudge(), NO_REPLAY)
    fake_loop.trained.clear()
    judge = ScoringJudge()
    config = replace(NO_REPLAY, **{setting: value})
    second = fake_loop.run(tmp_path, judge, config)
    assert second.run_dir != first.run_dir
    assert {s: second.reused[s] for s in copied} == {s: f"copied from {first.run_dir.name}" for s in copied}
    assert all(second.reused[s] == "computed" for s in computed)
    assert [t["stage"] for t in fake_loop.trained] == computed
    if computed:  # iter2 trained from the copied iter1's adapter, on its own data (one replayed question)
        assert fake_loop.start_of("iter2") == ["base", "lora", "iter0", "iter1"]
        assert second.stage_info["iter2"]["replayed"] == ["s1"] and first.stage_info["iter2"]["replayed"] == []
    identity = {k: second.identity[k] for k in ("model", "judge", "data", "loop_version")}  # without "machine"
    for s in copied:
        assert second.stage_info[s] == first.stage_info[s]
        meta = json.loads((second.run_dir / s / "config.json").read_text(encoding="utf-8"))
        # found by its content key; filed under this run's fingerprint, so this run's settings find it again
        assert meta["content_key"] == json.loads((first.run_dir / s / "config.json").read_text())["content_key"]
        assert meta["fingerprint"] == R.stage_fingerprints(config, identity)[s] != \
            R.stage_fingerprints(NO_REPLAY, identity)[s]
    # a copied iteration's answers were graded by the first run: nothing of it is asked again
    g = second.grades
    asked_stages = set(g[[(q, a) in set(judge.asked) for q, a in zip(g["question"], g["answer"])]]["stage"])
    assert asked_stages <= set(computed)


def test_an_iterations_content_key_holds_its_parent_settings_and_selection_but_not_the_bar_or_ratio():
    from course_lib.level3.selection import IterationData

    rec = {"symptom_id": "s2", "prompt": "症状: s2", "response": "参照-s2-0", "source": "corrective"}
    sel = IterationData(["s2"], ["s1"], [], [rec], [])
    st = C.Stage("iter1", C.ITERATION, 1, "iter0")
    key = R.iteration_content_key(FAKE_CONFIG, st, "parent", sel)
    same = [R.iteration_content_key(replace(FAKE_CONFIG, replay_ratio=0.0), st, "parent", sel),
            R.iteration_content_key(replace(FAKE_CONFIG, pass_accuracy=0.6), st, "parent", sel),
            R.iteration_content_key(replace(FAKE_CONFIG, learning_rate=1.0), st, "parent", sel)]  # in the parent's key
    assert same == [key] * 3
    other = {
        "parent": R.iteration_content_key(FAKE_CONFIG, st, "other parent", sel),
        "stage": R.iteration_content_key(FAKE_CONFIG, C.Stage("iter2", C.ITERATION, 2, "iter1"), "parent", sel),
        "epochs_iter": R.iteration_content_key(replace(FAKE_CONFIG, epochs_iter=5.0), st, "parent", sel),
        "update_rule": R.iteration_content_key(replace(FAKE_CONFIG, update_rule="dpo", control=False), st, "parent", sel),
        "failed": R.iteration_content_key(FAKE_CONFIG, st, "parent", IterationData([], ["s1"], [], [rec], [])),
        "passed": R.iteration_content_key(FAKE_CONFIG, st, "parent", IterationData(["s2"], [], [], [rec], [])),
        "replayed": R.iteration_content_key(FAKE_CONFIG, st, "parent", IterationData(["s2"], ["s1"], ["s1"], [rec], [])),
        "records": R.iteration_content_key(FAKE_CONFIG, st, "parent",
                                           IterationData(["s2"], ["s1"], [], [dict(rec, response="別")], [])),
    }
    assert all(v != key for v in other.values()), [k for k, v in other.items() if v == key]
    assert len(set(other.values())) == len(other)


def test_an_iteration_claims_its_content_key_while_it_is_computed(fake_loop, tmp_path, monkeypatch):
    claimed = []
    real = R.StageClaim

    class RecordingClaim(real):
        def __init__(self, runs_dir, stage, fingerprint):
            claimed.append((stage, fingerprint))
            super().__init__(runs_dir, stage, fingerprint)

    monkeypatch.setattr(R, "StageClaim", RecordingClaim)
    result = fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, iterations=2))
    meta = {s: json.loads((result.run_dir / s / "config.json").read_text(encoding="utf-8")) for s in result.stages}
    assert "content_key" not in meta["baseline"] and "content_key" not in meta["iter0"]
    assert "content_key" not in meta["control"]
    assert claimed == [(s, meta[s]["content_key"] if s in ("iter1", "iter2") else meta[s]["fingerprint"])
                       for s in result.stages]
    assert meta["iter1"]["content_key"] != meta["iter1"]["fingerprint"]


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


# ----------------------------------------------------------------------------- the loop's small helpers, by hand


def test_stage_train_config_counts_steps_for_the_warmup_share():
    from course_lib.level3.loop import stage_train_config
    from course_lib.train import TrainConfig

    cfg = C.LoopConfig(per_device_train_batch_size=4, warmup_ratio=0.25, learning_rate=1e-3, lr_scheduler_type="cosine",
                       max_length=256, seed=3)
    same = dict(learning_rate=1e-3, per_device_train_batch_size=4, lr_scheduler_type="cosine", max_length=256, seed=3)
    # 10 examples in batches of 4: 3 steps an epoch; 2.5 epochs: ceil(7.5) = 8 steps, a quarter of them warmup: 2
    assert stage_train_config(cfg, 10, epochs=2.5) == TrainConfig(num_train_epochs=2.5, warmup_steps=2, max_steps=-1, **same)
    # no epochs given: one epoch, 3 steps, warmup round(0.75) = 1
    assert stage_train_config(cfg, 10) == TrainConfig(num_train_epochs=1.0, warmup_steps=1, max_steps=-1, **same)
    # a step budget wins over epochs: 12 steps, warmup 3; budget 1: warmup round(0.25) = 0
    assert stage_train_config(cfg, 10, max_steps=12) == TrainConfig(num_train_epochs=1.0, warmup_steps=3, max_steps=12, **same)
    assert stage_train_config(cfg, 10, epochs=2.5, max_steps=1) == TrainConfig(num_train_epochs=2.5, warmup_steps=0,
                                                                                max_steps=1, **same)


def test_judge_budget_counts_every_answer_of_every_stage():
    from course_lib.level3.data import LoopData
    from course_lib.level3.loop import judge_budget

    full = fake_data()
    data = LoopData(full.symptoms, full.paraphrases[:2], full.train_initial, full.references)  # 4 questions, 2 paraphrases

    class PricedJudge:
        name = "priced"

        def __init__(self, usd):
            self.usd, self.asked = usd, []

        def estimate(self, items, use_cache=None):
            self.asked.append((list(items), use_cache))
            return {"est_prompt_tokens": 100, "est_completion_tokens": 20, "est_usd": self.usd}

    judge = PricedJudge(0.002)
    config = C.LoopConfig(iterations=2, control=True, n_samples=3, n_paraphrase=5)
    out = judge_budget(config, judge, data)
    # 4 questions x 3 answers + 2 paraphrases x 5 = 22 answers a stage; 5 stages (baseline, iter0-2, control): 110 calls
    assert {k: out[k] for k in ("judge", "answers_per_stage", "stages", "max_calls", "est_tokens")} == {
        "judge": "priced", "answers_per_stage": 22, "stages": 5, "max_calls": 110, "est_tokens": 120 * 110}
    assert out["est_usd"] == pytest.approx(0.22) and len(out) == 6
    # priced on the first reference answer, never from the judge's cache
    assert judge.asked == [([("症状: s1", "参照-s1-0")], False)]
    free = judge_budget(C.LoopConfig(iterations=0, control=False, n_samples=1, n_paraphrase=0), PricedJudge(None), data)
    assert (free["answers_per_stage"], free["stages"], free["max_calls"], free["est_usd"]) == (4, 2, 8, None)


def test_the_training_progress_bar_counts_steps_and_shows_the_loss(monkeypatch):
    import course_lib.level3.loop as LP

    class Bar:
        def __init__(self, **kw):
            self.kw, self.updates, self.postfix, self.closed = kw, [], [], False

        def update(self, n):
            self.updates.append(n)

        def set_postfix(self, **kw):
            self.postfix.append(kw)

        def close(self):
            self.closed = True

    bars = []
    monkeypatch.setattr(LP, "progress_bar", lambda **kw: bars.append(Bar(**kw)) or bars[-1])
    callback = LP._progress_callback("iter1: training", False)
    callback.on_train_begin(None, SimpleNamespace(max_steps=7), None)
    (bar,) = bars
    assert bar.kw == {"total": 7, "desc": "iter1: training", "unit": "step", "enabled": False}
    callback.on_step_end(None, None, None)
    callback.on_step_end(None, None, None)
    callback.on_log(None, None, None, logs={"loss": 0.12345})
    callback.on_log(None, None, None, logs={"eval_loss": 1.0})  # no training loss: nothing shown
    callback.on_log(None, None, None)
    assert bar.updates == [1, 1] and bar.postfix == [{"loss": "0.123"}] and not bar.closed
    callback.on_train_end(None, None, None)
    assert bar.closed


def test_an_adapter_is_saved_under_a_temporary_name_then_renamed(monkeypatch, tmp_path):
    import course_lib.level3.loop as LP

    saved_to = []

    def save_adapter(model, path):
        saved_to.append(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights").write_text(model, encoding="utf-8")

    monkeypatch.setattr(LP, "save_adapter", save_adapter)
    sd = R.StageDir(tmp_path, "iter1")
    sd.path.mkdir()
    LP.save_adapter_atomically("v1", sd)
    assert saved_to == [sd.path / "adapter.tmp"]
    assert sorted(p.name for p in sd.path.iterdir()) == ["adapter"]
    assert (sd.adapter / "weights").read_text(encoding="utf-8") == "v1"
    # an interrupted earlier save left a half-written adapter.tmp, and an old adapter is there: both are replaced
    (sd.path / "adapter.tmp").mkdir()
    (sd.path / "adapter.tmp" / "half-written").write_text("x", encoding="utf-8")
    (sd.adapter / "stale").write_text("old", encoding="utf-8")
    LP.save_adapter_atomically("v2", sd)
    assert sorted(p.name for p in sd.path.iterdir()) == ["adapter"]
    assert sorted(p.name for p in sd.adapter.iterdir()) == ["weights"]
    assert (sd.adapter / "weights").read_text(encoding="utf-8") == "v2"


# ----------------------------------------------------------------------------- the other update rules, with fake training
#
# After iter0 the fake model answers the original questions as ORIGINAL says: s1 4/4 correct (passes the 0.8 bar),
# s2 3/4, s3 1/4, s4 0/4 (fail). The corrective rule's data for iter1 would be s2-s4's references (3 x 2) plus one
# replayed passing question (s1, round(0.5 x 1) = 1) with its 2 train_initial examples: 8 records, in batches of 2
# for epochs_iter = 30: a budget of ceil(ceil(8 / 2) x 30) = 120 steps, which every rule trains for.


def test_self_distillation_trains_on_the_parents_accepted_answers_for_the_corrective_budget(fake_loop, tmp_path):
    import random

    config = replace(FAKE_CONFIG, iterations=1, control=False, update_rule="self_distill", self_distill_k=2)
    result = fake_loop.run(tmp_path, ScoringJudge(), config)
    (entry,) = [t for t in fake_loop.trained if t["stage"] == "iter1"]
    assert entry["start"] == ["base", "lora", "iter0"] and entry["max_steps"] == 120
    by_question = {}
    for r in entry["records"]:
        by_question.setdefault(r["symptom_id"], []).append((r["response"], r["source"]))
    # at most k = 2 accepted ("ok-") answers per question, ties in the order seeded with seed + k = 1 ("1:s1", "1:s2")
    first_two = {}
    for s, pool in {"s1": ["ok-0", "ok-1", "ok-2", "ok-3"], "s2": ["ok-0", "ok-1", "ok-2"]}.items():
        random.Random(f"1:{s}").shuffle(pool)  # update_rules' documented tie order: a shuffle seeded "seed:question"
        first_two[s] = pool[:2]
    assert first_two == {"s1": ["ok-2", "ok-3"], "s2": ["ok-2", "ok-1"]}  # worked out once; seed 0 gives ok-3, ok-0
    assert by_question == {"s1": [("ok-2", "self"), ("ok-3", "self")], "s2": [("ok-2", "self"), ("ok-1", "self")],
                           "s3": [("ok-0", "self")],  # its one correct answer
                           "s4": [("参照-s4-0", "corrective"), ("参照-s4-1", "corrective")]}  # none correct: references
    assert result.stage_info["iter1"] == {
        "stage": "iter1", "update_rule": "self_distill", "failed": ["s2", "s3", "s4"], "passed": ["s1"], "replayed": [],
        "n_corrective": 2, "n_replay": 0, "n_self": 5, "n_pairs": 0, "budget": 120, "self_distill_k": 2, "steps": 120,
        "seconds": 0.0, "final_loss": 0.0, "examples": 7, "epochs": None, "max_steps": 120, "train_config": {}}
    assert result.history[result.history["stage"] == "iter1"].to_dict("records") == [{"stage": "iter1", "step": 1,
                                                                                       "loss": 0.0}]
    written = [json.loads(line) for line in (result.run_dir / "iter1" / "train_data.jsonl").read_text().splitlines()]
    assert [(r["symptom_id"], r["response"]) for r in written] == [(r["symptom_id"], r["response"]) for r in entry["records"]]


def test_dpo_trains_on_preference_pairs_with_its_own_rate_for_the_corrective_budget(fake_loop, tmp_path, monkeypatch):
    import course_lib.level3.loop as LP

    calls = []

    def train_dpo(model, tokenizer, pairs, **kw):
        calls.append({"start": list(model.lineage), "pairs": list(pairs), **kw})
        model.lineage.append("dpo")
        return SimpleNamespace(steps=kw["max_steps"], seconds=1.234, final_loss=0.5, config={"beta": kw["beta"]},
                               history=pd.DataFrame({"step": [1], "loss": [0.5]}))

    monkeypatch.setattr(LP, "train_dpo", train_dpo)
    # settings that differ from train_dpo's own defaults (linear, 512, seed 0, batch 4), so each must be passed on
    config = replace(FAKE_CONFIG, iterations=1, control=False, update_rule="dpo", dpo_beta=0.3, dpo_learning_rate=3e-5,
                     lr_scheduler_type="cosine", max_length=256, seed=2)
    result = fake_loop.run(tmp_path, ScoringJudge(), config)
    assert [t["stage"] for t in fake_loop.trained] == ["iter0"]  # no SFT in iter1
    (call,) = calls
    callbacks = call.pop("callbacks")
    assert len(callbacks) == 1 and hasattr(callbacks[0], "on_step_end")  # the step progress bar
    pairs = call.pop("pairs")
    # warmup: round(0.08 x 120) = 10 steps
    assert call == {"start": ["base", "lora", "iter0"], "beta": 0.3, "max_steps": 120, "learning_rate": 3e-5,
                    "per_device_train_batch_size": 2, "warmup_steps": 10, "lr_scheduler_type": "cosine",
                    "max_length": 256, "seed": 2}
    # s1 has no wrong answer: no pair. s2: 3 correct x 1 wrong, s3: 1 x 3 (3 pairs each, round-robin);
    # s4: no correct answer, so its 2 references x 4 wrong answers, capped at 4 pairs per question
    per_question = {s: sum(p["symptom_id"] == s for p in pairs) for s in SYMPTOMS}
    assert per_question == {"s1": 0, "s2": 3, "s3": 3, "s4": 4}
    assert all(p["chosen"].startswith(("ok-", "参照-")) and p["rejected"].startswith("bad-") for p in pairs)
    assert {p["chosen"] for p in pairs if p["symptom_id"] == "s4"} == {"参照-s4-0", "参照-s4-1"}
    assert result.stage_info["iter1"] == {
        "stage": "iter1", "update_rule": "dpo", "failed": ["s2", "s3", "s4"], "passed": ["s1"], "replayed": [],
        "n_corrective": 4, "n_replay": 0, "n_self": 6, "n_pairs": 10, "budget": 120, "dpo_beta": 0.3,
        "dpo_learning_rate": 3e-5, "steps": 120, "seconds": 1.23, "final_loss": 0.5, "examples": 10, "epochs": None,
        "max_steps": 120, "train_config": {"beta": 0.3}}
    assert result.history[result.history["stage"] == "iter1"].to_dict("records") == [{"stage": "iter1", "step": 1,
                                                                                       "loss": 0.5}]
    stage = result.run_dir / "iter1"
    assert (stage / "train_data.jsonl").read_text() == ""  # DPO has no SFT example
    assert [json.loads(line) for line in (stage / "pairs.jsonl").read_text().splitlines()] == pairs
    saved = json.loads((stage / "adapter" / "adapter_config.json").read_text())
    assert saved["lineage"] == ["base", "lora", "iter0", "dpo"]  # the adapter DPO trained is the one saved


@pytest.mark.parametrize("rule", ["corrective", "self_distill", "dpo"])
def test_an_iteration_with_no_failing_question_trains_under_no_rule(fake_loop, tmp_path, rule):
    from course_lib.level3.loop import run_loop

    # a model that already answers every question correctly: after iter0 all four questions pass
    knows_all = FakeModel(corrections=NEEDS)
    loaded = SimpleNamespace(model=knows_all, tokenizer=None, source="fake-model", profile="fake", label="fake")
    config = replace(FAKE_CONFIG, iterations=1, control=False, update_rule=rule)
    result = run_loop(config, loaded, ScoringJudge(), progress=False, data=fake_data(), runs_dir=tmp_path, log=None)
    assert [t["stage"] for t in fake_loop.trained] == ["iter0"]
    info = result.stage_info["iter1"]
    assert {k: info[k] for k in ("failed", "passed", "steps", "seconds", "final_loss", "examples", "skipped")} == {
        "failed": [], "passed": SYMPTOMS, "steps": 0, "seconds": 0.0, "final_loss": None, "examples": 0,
        "skipped": "no failing question"}
    assert (result.history["stage"] != "iter1").all()  # an empty loss history
    assert json.loads((result.run_dir / "iter1" / "train.json").read_text())["history"] == []
    saved = json.loads((result.run_dir / "iter1" / "adapter" / "adapter_config.json").read_text())
    assert saved["lineage"] == ["base", "lora", "iter0"]  # the parent's adapter, unchanged
    written = (result.run_dir / "iter1" / "train_data.jsonl").read_text().splitlines()
    # the corrective rule records its replay (round(0.5 x 4) = 2 passing questions, 2 examples each); the others nothing
    assert len(written) == (4 if rule == "corrective" else 0)


# ----------------------------------------------------------------------------- models in memory and on disk


def test_the_base_model_is_a_deep_copy_in_eval_mode_and_the_loaded_model_is_never_touched():
    import torch

    from course_lib.level3.loop import StageModels

    original = torch.nn.Sequential(torch.nn.Linear(2, 2))
    original.train()
    weights = original[0].weight.detach().clone()
    models = StageModels(SimpleNamespace(model=original), run=None, config=FAKE_CONFIG)
    base = models.base()
    assert base is models.base()  # made once
    assert not base.training and not base[0].training
    assert original.training and original[0].training  # the caller's model keeps its mode
    assert base[0] is not original[0]
    with torch.no_grad():
        base[0].weight.add_(1.0)
    assert torch.equal(original[0].weight, weights)  # and its weights


def test_the_last_stages_model_stays_in_memory_and_is_not_reloaded(fake_loop, tmp_path, monkeypatch):
    import course_lib.level3.loop as LP

    loads = []
    real_load = LP.load_adapter
    monkeypatch.setattr(LP, "load_adapter", lambda model, path, trainable=False: loads.append(
        (path.parent.name, trainable)) or real_load(model, path, trainable))
    fake_loop.run(tmp_path, ScoringJudge())
    assert loads == []  # each iteration starts from the model its parent left in memory
    fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, iterations=3, control=False))
    assert loads == [("iter2", True)]  # a new run: iter3's parent comes from the disk, once, ready to train


def test_a_trained_stage_found_on_disk_is_loaded_trainable_instead_of_trained_again(monkeypatch, tmp_path):
    import course_lib.level3.loop as LP

    loads = []

    def load_adapter(model, path, trainable=False):
        loads.append((path, trainable))
        return FakeModel(["base", "lora", path.parent.name])

    monkeypatch.setattr(LP, "load_adapter", load_adapter)
    monkeypatch.setattr(LP, "train_on", lambda *a, **kw: pytest.fail("a stage with an adapter on disk is not trained"))
    logged = []
    config = replace(FAKE_CONFIG, iterations=1, control=False)
    run = SimpleNamespace(config=config, log=logged.append, stage_dir=lambda name: R.StageDir(tmp_path, name))
    models = LP.StageModels(SimpleNamespace(model=FakeModel()), run, config)
    stages = LP.LoopStages(run, models, fake_data(), None, progress=False)
    iter1 = config.plan()[2]
    sd = R.StageDir(tmp_path, "iter1")
    (sd.adapter).mkdir(parents=True)
    (sd.adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    sd.file("train.json").write_text("{}", encoding="utf-8")  # training finished; evaluation was interrupted
    model = stages.model_for(iter1, sd)
    assert model.lineage == ["base", "lora", "iter1"]
    assert loads == [(sd.adapter, True)]  # trainable: the next iteration trains on from it
    assert logged == ["[iter1] adapter found: training skipped"]
    assert models.after("iter1") is model and len(loads) == 1  # kept in memory
    assert models.after("baseline") is models.base()


def _torch_base():
    import torch

    return SimpleNamespace(model=torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_a_stage_model_is_loaded_onto_a_deep_copy_of_the_base(monkeypatch, tmp_path):
    import course_lib.level3.loop as LP

    loads = []
    monkeypatch.setattr(LP, "load_adapter", lambda model, path, trainable=False: loads.append((model, path, trainable))
                        or SimpleNamespace(stage=path.parent.name))
    run = SimpleNamespace(stage_dir=lambda name: R.StageDir(tmp_path, name))
    models = LP.StageModels(_torch_base(), run, FAKE_CONFIG)
    base = models.base()
    iter0 = models.after("iter0")
    ((model, path, trainable),) = loads
    assert iter0.stage == "iter0" and path == tmp_path / "iter0" / "adapter" and trainable is True  # trainable by default
    assert model is not base and model[0] is not base[0]  # the adapter goes onto a copy; the base stays pristine
    assert models.after("iter0") is iter0 and len(loads) == 1
    frozen = models.after("iter1", trainable=False)
    assert frozen.stage == "iter1" and loads[1][2] is False
    assert models.after("iter1") is frozen and models.after("baseline") is base and len(loads) == 2


def test_a_fresh_adapter_is_seeded_and_attached_to_a_copy_of_the_base_with_the_configs_lora_settings(monkeypatch):
    import torch

    import course_lib.level3.loop as LP

    attached = []
    monkeypatch.setattr(LP, "attach_lora", lambda model, *args: attached.append((model, args, torch.initial_seed()))
                        or "lora model")
    config = replace(FAKE_CONFIG, lora_r=8, lora_alpha=16, lora_dropout=0.1, target_modules=("q_proj",), seed=5)
    models = LP.StageModels(_torch_base(), None, config)
    assert models.fresh_lora() == "lora model"
    ((model, args, seed),) = attached
    assert args == (8, 16, 0.1, ("q_proj",)) and seed == 5  # torch seeded with the run's seed just before
    assert model is not models.base() and model[0] is not models.base()[0]


def test_stage_train_config_passes_the_batch_size_and_reads_a_zero_budget_as_none():
    from course_lib.level3.loop import stage_train_config
    from course_lib.train import TrainConfig

    cfg = C.LoopConfig(per_device_train_batch_size=3, warmup_ratio=0.25)
    # 10 examples in batches of 3: 4 steps an epoch, 2 epochs: 8 steps, warmup 2
    expected = TrainConfig(num_train_epochs=2.0, learning_rate=cfg.learning_rate, per_device_train_batch_size=3,
                           warmup_steps=2, lr_scheduler_type="linear", max_length=512, max_steps=-1, seed=0)
    assert stage_train_config(cfg, 10, epochs=2.0) == expected
    # TrainConfig's rule: only max_steps > 0 overrides the epochs, so a budget of 0 counts the epochs' 8 steps
    assert stage_train_config(cfg, 10, epochs=2.0, max_steps=0) == replace(expected, max_steps=0)


def test_train_on_trains_with_the_stages_config_then_saves_the_adapter_and_train_json(monkeypatch, tmp_path):
    import course_lib.level3.loop as LP

    trained, callbacks_made = [], []
    monkeypatch.setattr(LP, "_progress_callback", lambda desc, enabled: callbacks_made.append((desc, enabled)) or "bar")
    monkeypatch.setattr(LP, "train", lambda model, tokenizer, records, config=None, callbacks=None: trained.append(
        (model, tokenizer, list(records), config, callbacks)) or SimpleNamespace(
        steps=2, seconds=1.2345, final_loss=0.5, config={"from": "train"},
        train_loss=pd.DataFrame({"step": [1, 2], "loss": [0.9, 0.5]})))
    monkeypatch.setattr(LP, "save_adapter", lambda model, path: (path.mkdir(parents=True), (path / "weights").write_text(model)))
    sd = R.StageDir(tmp_path, "iter1")
    sd.path.mkdir()
    records = [{"prompt": f"p{i}", "response": "r"} for i in range(3)]
    cfg = C.LoopConfig(per_device_train_batch_size=3, warmup_ratio=0.5)
    info = {"stage": "iter1"}
    assert LP.train_on(sd, "model", "tok", records, info, cfg, False, epochs=2.0) == "model"
    ((model, tok, seen, config, callbacks),) = trained
    assert (model, tok, seen, callbacks) == ("model", "tok", records, ["bar"])
    assert callbacks_made == [("iter1: training", False)]
    # 3 examples in one batch of 3, 2 epochs: 2 steps, warmup round(0.5 x 2) = 1
    assert (config.num_train_epochs, config.per_device_train_batch_size, config.warmup_steps, config.max_steps) == (2.0, 3, 1, -1)
    assert (sd.adapter / "weights").read_text() == "model"
    expected = {"stage": "iter1", "steps": 2, "seconds": 1.23, "final_loss": 0.5, "examples": 3, "epochs": 2.0,
                "max_steps": -1, "train_config": {"from": "train"},
                "history": [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.5}]}
    assert info == expected and json.loads(sd.file("train.json").read_text()) == expected


def test_every_training_gets_the_tokenizer_and_its_stages_epochs_or_step_budget(fake_loop, tmp_path, monkeypatch):
    import course_lib.level3.loop as LP
    from course_lib.level3.loop import run_loop

    import course_lib.level3.evaluate as EV

    seen, sampled_with = [], set()
    fake_train = LP.train
    monkeypatch.setattr(LP, "train", lambda model, tokenizer, records, config=None, callbacks=None: seen.append(
        (tokenizer, config.num_train_epochs, config.max_steps)) or fake_train(model, tokenizer, records, config, callbacks))
    fake_sample = EV.sample_answers
    monkeypatch.setattr(EV, "sample_answers", lambda model, tokenizer, *a, **kw: sampled_with.add(tokenizer)
                        or fake_sample(model, tokenizer, *a, **kw))
    loaded = SimpleNamespace(model=FakeModel(), tokenizer="tok", source="fake-model", profile="fake", label="fake")
    result = run_loop(FAKE_CONFIG, loaded, ScoringJudge(), progress=False, data=fake_data(), runs_dir=tmp_path, log=None)
    assert sampled_with == {"tok"}  # every stage is evaluated with the model's tokenizer too
    # iter0: epochs_initial (100); iterations: epochs_iter (30); the control: one "epoch" capped at the loop's 22 steps
    # (8 + 8 + 6 examples, one step each with the fake trainer)
    assert seen == [("tok", 100.0, -1), ("tok", 30.0, -1), ("tok", 30.0, -1), ("tok", 1.0, 22)]
    info = result.stage_info
    assert [(info[s]["epochs"], info[s]["max_steps"]) for s in ("iter0", "iter1", "iter2", "control")] == [
        (100.0, -1), (30.0, -1), (30.0, -1), (None, 22)]
    assert info["control"]["loop_steps"] == 22 and info["iter0"]["stage"] == "iter0"
    sources = {json.loads(line)["source"] for line in (result.run_dir / "iter0" / "train_data.jsonl").read_text().splitlines()}
    assert sources == {"train_initial"}  # iteration 0's examples are marked as the initial training set


class PartialJudge(ScoringJudge):
    """Grades 'ok-…' correct and anything else partially correct (score 0.5): wrong, but nothing to reject."""

    def grade_many(self, items, *, progress=False, use_cache=None, on_result=None):
        from course_lib.level3.judge import Grade

        out = [g if g.overall_label == "correct" else
               Grade(question=g.question, model_answer=g.model_answer, overall_label="partially_correct",
                     overall_is_harmful=False, overall_score=0.5, overall_reason="fake", drugs=[])
               for g in super().grade_many(items)]
        for i, g in enumerate(out):
            if on_result is not None:
                on_result(i, g)
        return out


def test_dpo_without_a_preference_pair_keeps_the_parents_adapter(fake_loop, tmp_path, monkeypatch):
    import course_lib.level3.loop as LP

    monkeypatch.setattr(LP, "train_dpo", lambda *a, **kw: pytest.fail("no pair: DPO must not train"))
    config = replace(FAKE_CONFIG, iterations=1, control=False, update_rule="dpo")
    result = fake_loop.run(tmp_path, PartialJudge(), config)
    info = result.stage_info["iter1"]
    assert info["failed"] == ["s2", "s3", "s4"]  # 0.5 is below the 0.8 an accurate answer needs
    assert {k: info[k] for k in ("n_pairs", "n_self", "n_corrective", "budget", "steps", "seconds", "final_loss",
                                 "examples", "skipped")} == {
        "n_pairs": 0, "n_self": 0, "n_corrective": 0, "budget": 120, "steps": 0, "seconds": 0.0, "final_loss": None,
        "examples": 0, "skipped": "no preference pair (no unsafe or incorrect answer)"}
    stage = result.run_dir / "iter1"
    assert (stage / "pairs.jsonl").read_text() == "" and (stage / "train_data.jsonl").read_text() == ""
    saved = json.loads((stage / "adapter" / "adapter_config.json").read_text())
    assert saved["lineage"] == ["base", "lora", "iter0"]


@pytest.mark.parametrize("headless", [False, True])
def test_progress_is_shown_everywhere_when_asked_and_nowhere_when_headless(fake_loop, tmp_path, monkeypatch, headless):
    import course_lib.level3.evaluate as EV
    import course_lib.level3.loop as LP
    from course_lib import paths
    from course_lib.level3.loop import run_loop

    monkeypatch.setenv(paths.HEADLESS_ENV, "1" if headless else "")
    bars, callbacks, sampled = [], [], []
    for module in (LP, EV):
        real_bar = module.progress_bar
        monkeypatch.setattr(module, "progress_bar", lambda *a, real_bar=real_bar, **kw: bars.append(
            (kw.get("desc"), kw.get("unit"), kw.get("enabled"))) or real_bar(*a, **{**kw, "enabled": False}))
    real_callback = LP._progress_callback
    monkeypatch.setattr(LP, "_progress_callback", lambda desc, enabled: callbacks.append((desc, enabled))
                        or real_callback(desc, False))
    real_sample = EV.sample_answers
    monkeypatch.setattr(EV, "sample_answers", lambda *a, **kw: sampled.append(kw["progress"]) or real_sample(*a, **kw))
    loaded = SimpleNamespace(model=FakeModel(), tokenizer=None, source="fake-model", profile="fake", label="fake")
    config = replace(FAKE_CONFIG, iterations=1, control=False)
    run_loop(config, loaded, ScoringJudge(), progress=True, data=fake_data(), runs_dir=tmp_path, log=None)
    shown = not headless
    assert bars[0] == ("level-3 loop", "stage", shown)  # the stage bar comes first
    assert {enabled for _, _, enabled in bars} == {shown} and len(bars) > 1  # and the grading bars follow it
    assert callbacks == [("iter0: training", shown), ("iter1: training", shown)]
    assert sampled and set(sampled) == {shown}


def test_run_loop_reports_its_judge_calls_times_reuse_and_log(fake_loop, tmp_path):
    from course_lib.level3.loop import run_loop

    judge, logged = ScoringJudge(), []
    loaded = SimpleNamespace(model=FakeModel(), tokenizer=None, source="fake-model", profile="fake", label="fake")
    config = replace(FAKE_CONFIG, iterations=1, control=False)
    result = run_loop(config, loaded, judge, progress=False, data=fake_data(), runs_dir=tmp_path, log=logged.append)
    assert result.judge_calls == len(judge.asked) > 0 and result.judge_errors == 0
    assert list(result.seconds) == ["baseline", "iter0", "iter1"] and all(v >= 0 for v in result.seconds.values())
    assert result.reused == {"baseline": "computed", "iter0": "computed", "iter1": "computed"}
    assert result.run_dir.parent == tmp_path
    assert [m.split(" done")[0] for m in logged if " done in " in m] == ["[baseline]", "[iter0]", "[iter1]"]
    # the same call again: every stage is found done in the same run folder and nothing is graded
    again = run_loop(config, loaded, ScoringJudge(), progress=False, data=fake_data(), runs_dir=tmp_path, log=None)
    assert again.run_dir == result.run_dir and again.judge_calls == 0
    assert again.reused == {"baseline": "done", "iter0": "done", "iter1": "done"} and again.seconds == {}


def test_dpo_pairs_are_drawn_with_the_seed_plus_the_iteration(fake_loop, tmp_path, monkeypatch):
    import random

    import course_lib.level3.loop as LP

    calls = []
    monkeypatch.setattr(LP, "train_dpo", lambda model, tok, pairs, **kw: calls.append(pairs) or SimpleNamespace(
        steps=1, seconds=0.0, final_loss=0.0, config={}, history=pd.DataFrame({"step": [1], "loss": [0.0]})))
    fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, iterations=1, control=False, update_rule="dpo"))
    (pairs,) = calls
    # s4: no correct answer, so its two references are chosen in turn against its four wrong answers, whose tie
    # order is update_rules' documented shuffle seeded "seed:question:rej" with seed = run seed + k = 1
    wrong = ["bad-0", "bad-1", "bad-2", "bad-3"]
    random.Random("1:s4:rej").shuffle(wrong)
    assert wrong == ["bad-2", "bad-0", "bad-1", "bad-3"]  # worked out once; seed 0 gives bad-1, bad-0, bad-3, bad-2
    assert [(p["chosen"], p["rejected"]) for p in pairs if p["symptom_id"] == "s4"] == [
        ("参照-s4-0", "bad-2"), ("参照-s4-1", "bad-0"), ("参照-s4-0", "bad-1"), ("参照-s4-1", "bad-3")]


@pytest.mark.parametrize("rule", ["corrective", "self_distill", "dpo"])
def test_every_rule_trains_with_the_tokenizer_and_the_progress_setting(fake_loop, tmp_path, monkeypatch, rule):
    import course_lib.level3.loop as LP
    from course_lib import paths
    from course_lib.level3.loop import run_loop

    monkeypatch.setenv(paths.HEADLESS_ENV, "")
    seen = []
    fake_train = LP.train
    monkeypatch.setattr(LP, "train", lambda model, tokenizer, records, config=None, callbacks=None: seen.append(
        tokenizer) or fake_train(model, tokenizer, records, config, callbacks))
    monkeypatch.setattr(LP, "train_dpo", lambda model, tokenizer, pairs, **kw: seen.append(tokenizer) or SimpleNamespace(
        steps=1, seconds=0.0, final_loss=0.0, config={}, history=pd.DataFrame({"step": [1], "loss": [0.0]})))
    bars = []
    real_callback = LP._progress_callback
    monkeypatch.setattr(LP, "_progress_callback", lambda desc, enabled: bars.append((desc, enabled))
                        or real_callback(desc, False))
    loaded = SimpleNamespace(model=FakeModel(), tokenizer="tok", source="fake-model", profile="fake", label="fake")
    config = replace(FAKE_CONFIG, iterations=1, control=False, update_rule=rule)
    result = run_loop(config, loaded, ScoringJudge(), progress=True, data=fake_data(), runs_dir=tmp_path, log=None)
    assert seen == ["tok", "tok"]  # iter0 (SFT), iter1 (this rule)
    assert bars == [("iter0: training", True), ("iter1: " + ("DPO" if rule == "dpo" else "training"), True)]
    info = result.stage_info["iter1"]
    assert (info["n_self"], info["n_pairs"]) == {"corrective": (0, 0), "self_distill": (5, 0), "dpo": (6, 10)}[rule]


def test_the_control_trains_for_the_loops_steps_even_when_that_is_a_single_step(fake_loop, tmp_path):
    from course_lib.level3.data import LoopData
    from course_lib.level3.loop import run_loop

    full = fake_data()
    one_example = LoopData(full.symptoms, full.paraphrases, full.train_initial[:1], full.references)
    # iter0: 1 example, 1 epoch: 1 step (one per example with the fake trainer); the model already answers every
    # question, so iter1 has nothing to correct and trains 0 steps: the loop took 1 step, and so does the control
    loaded = SimpleNamespace(model=FakeModel(corrections=NEEDS), tokenizer=None, source="fake-model", profile="fake",
                             label="fake")
    config = replace(FAKE_CONFIG, iterations=1, control=True, epochs_initial=1.0)
    result = run_loop(config, loaded, ScoringJudge(), progress=False, data=one_example, runs_dir=tmp_path, log=None)
    assert [(t["stage"], t["max_steps"]) for t in fake_loop.trained] == [("iter0", -1), ("control", 1)]
    assert (result.stage_info["iter0"]["steps"], result.stage_info["iter1"]["steps"]) == (1, 0)
    assert result.stage_info["control"]["loop_steps"] == 1


def test_the_replay_seed_adds_the_iteration_to_the_runs_seed(fake_loop, tmp_path):
    import random

    # with the run's seed 0, seed + k and seed - k draw alike (random.Random(-2) is random.Random(2)); with seed 3 they
    # do not: iter2 draws with 3 + 2 = 5, which replays s2 (seed 1 = 3 - 2, or 3 alone, would replay s1)
    result = fake_loop.run(tmp_path, ScoringJudge(), replace(FAKE_CONFIG, seed=3))
    assert result.stage_info["iter2"]["passed"] == ["s1", "s2"]
    assert random.Random(5).sample(["s1", "s2"], 1) == ["s2"] != random.Random(1).sample(["s1", "s2"], 1)
    assert random.Random(3).sample(["s1", "s2"], 1) == ["s1"]
    assert result.stage_info["iter2"]["replayed"] == ["s2"]


def test_run_loop_shows_progress_and_prints_its_log_by_default(fake_loop, tmp_path, monkeypatch, capsys):
    import course_lib.level3.loop as LP
    from course_lib import paths
    from course_lib.level3.loop import run_loop

    monkeypatch.setenv(paths.HEADLESS_ENV, "")
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "from-env"))  # no runs_dir given: the course's runs folder
    bars = []
    real_bar = LP.progress_bar
    monkeypatch.setattr(LP, "progress_bar", lambda *a, **kw: bars.append(kw["enabled"]) or real_bar(*a, **{**kw, "enabled": False}))
    loaded = SimpleNamespace(model=FakeModel(), tokenizer=None, source="fake-model", profile="fake", label="fake")
    capsys.readouterr()
    result = run_loop(replace(FAKE_CONFIG, iterations=0, control=False), loaded, ScoringJudge(), data=fake_data())
    assert result.run_dir.parent == tmp_path / "from-env"
    assert bars == [True]  # the stage bar, on
    printed = capsys.readouterr().out
    assert "[baseline] done in" in printed and "[iter0] done in" in printed


def test_the_control_writes_the_data_it_trains_on(fake_loop, tmp_path):
    result = fake_loop.run(tmp_path, ScoringJudge())
    (control,) = [t for t in fake_loop.trained if t["stage"] == "control"]
    lines = (result.run_dir / "control" / "train_data.jsonl").read_text(encoding="utf-8").splitlines()
    written = [json.loads(line) for line in lines]
    # each example once: the 8 initial examples and the 6 references of s2-s4 (the replays repeat initial examples)
    assert written == control["records"] and len(written) == 14


def test_the_control_records_its_stage_and_shows_its_progress(fake_loop, tmp_path, monkeypatch):
    import course_lib.level3.loop as LP
    from course_lib import paths
    from course_lib.level3.loop import run_loop

    monkeypatch.setenv(paths.HEADLESS_ENV, "")
    bars = []
    real_callback = LP._progress_callback
    monkeypatch.setattr(LP, "_progress_callback", lambda desc, enabled: bars.append((desc, enabled))
                        or real_callback(desc, False))
    loaded = SimpleNamespace(model=FakeModel(), tokenizer=None, source="fake-model", profile="fake", label="fake")
    result = run_loop(FAKE_CONFIG, loaded, ScoringJudge(), progress=True, data=fake_data(), runs_dir=tmp_path, log=None)
    assert bars[-1] == ("control: training", True)
    assert result.stage_info["control"]["stage"] == "control"


# ----------------------------------------------------------------------------- selection pinned by hand (mutation run)


def test_selection_follows_the_datas_order_and_skips_questions_it_has_no_row_for():
    from course_lib.level3.selection import build_iteration_data, question_status

    # rows in another order; s3 has no row; "s9" is not a question of the data
    per_q = pd.DataFrame({"symptom_id": ["s4", "s9", "s2", "s1"], "accuracy": [0.0, 0.0, 1.0, 0.5],
                          "unsafe": [0, 0, 0, 0]})
    assert question_status(per_q).to_dict() == {"s4": "fail", "s9": "fail", "s2": "pass", "s1": "fail"}
    it = build_iteration_data(per_q, fake_data(n_train=3), replay_ratio=0.0)
    assert it.failed == ["s1", "s4"] and it.passed == ["s2"] and it.replayed == [] and it.replay == []
    assert [r["response"] for r in it.corrective] == ["参照-s1-0", "参照-s1-1", "参照-s4-0", "参照-s4-1"]
    assert it.records == it.corrective


def test_selection_uses_its_pass_bar():
    from course_lib.level3.selection import build_iteration_data, question_status

    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [0.8, 0.9, 1.0, 0.85], "unsafe": [0, 0, 1, 0]})
    assert question_status(per_q, pass_accuracy=0.9).to_dict() == {"s1": "fail", "s2": "pass", "s3": "fail",
                                                                   "s4": "fail"}
    it = build_iteration_data(per_q, fake_data(n_train=3), replay_ratio=0.0, pass_accuracy=0.9)
    assert it.failed == ["s1", "s3", "s4"] and it.passed == ["s2"]
    assert build_iteration_data(per_q, fake_data(n_train=3), replay_ratio=0.0).failed == ["s3"]  # default bar 0.8


@pytest.mark.parametrize("ratio,n_replayed", [
    (0.1, 0),    # 3 passing * 0.1 = 0.3 -> 0
    (1 / 6, 1),  # 0.5 rounds half up -> 1
    (0.5, 2),    # 1.5 rounds half up -> 2
    (0.8, 2),    # 2.4 -> 2
    (2.0, 3),    # 6 is capped at the 3 passing questions
])
def test_the_number_of_replayed_questions_rounds_half_up_and_is_capped(ratio, n_replayed):
    from course_lib.level3.selection import build_iteration_data

    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [1.0, 1.0, 1.0, 0.0], "unsafe": [0] * 4})
    it = build_iteration_data(per_q, fake_data(n_train=3), replay_ratio=ratio)
    assert it.passed == ["s1", "s2", "s3"] and len(it.replayed) == n_replayed
    assert it.replayed == sorted(it.replayed) and set(it.replayed) <= {"s1", "s2", "s3"}
    # each replayed question brings 2 distinct train_initial examples (its 2 references' worth), never a reference
    assert len(it.replay) == 2 * n_replayed
    for s in it.replayed:
        mine = [r["response"] for r in it.replay if r["symptom_id"] == s]
        assert len(mine) == len(set(mine)) == 2 and set(mine) <= {f"初期-{s}-{k}" for k in range(3)}
    assert all(r["source"] == "replay" for r in it.replay)
    assert it.records == it.corrective + it.replay


def test_replay_is_capped_by_the_train_initial_pool():
    from course_lib.level3.selection import build_iteration_data

    # 3 references per question but only 2 train_initial examples: a replayed question brings the 2 it has
    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [1.0, 0.0, 0.0, 0.0], "unsafe": [0] * 4})
    it = build_iteration_data(per_q, fake_data(n_refs=3), replay_ratio=1.0)
    assert it.replayed == ["s1"]
    assert sorted(r["response"] for r in it.replay) == ["初期-s1-0", "初期-s1-1"]
    assert len(it.corrective) == 3 * 3


def test_selection_does_not_change_the_datas_records():
    from course_lib.level3.selection import build_iteration_data

    data = fake_data(n_train=3)
    per_q = pd.DataFrame({"symptom_id": SYMPTOMS, "accuracy": [1.0, 1.0, 0.0, 0.0], "unsafe": [0] * 4})
    it = build_iteration_data(per_q, data, replay_ratio=1.0)
    assert {r["source"] for r in it.corrective} == {"corrective"} and {r["source"] for r in it.replay} == {"replay"}
    assert not any("source" in r for r in data.references + data.train_initial)
    assert [r["response"] for r in data.train_initial[:3]] == ["初期-s1-0", "初期-s1-1", "初期-s1-2"]  # not shuffled
