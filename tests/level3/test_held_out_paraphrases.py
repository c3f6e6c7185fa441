"""The paraphrases are held out: selection and training never read them.

``LoopData.paraphrases`` is replaced by a list that raises as soon as anything iterates,
indexes, sizes or tests it. Then the code that decides what the loop trains on runs on the
course's real data: :func:`course_lib.level3.selection.build_iteration_data` and the
training rules of :class:`course_lib.level3.loop.LoopStages` (iteration 0, corrective
iterations, the same-compute control). Training itself is replaced by a recorder
(``train_on``), and the models by a stub, so only the data-building part runs: no model,
no GPU, a second or two.

Evaluation (:mod:`course_lib.level3.evaluate`, :func:`course_lib.level3.data.eval_items`)
is allowed to read the paraphrases: measuring on them is what they are for. The last
test checks that the guard really notices a read, so the others cannot pass by accident.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from course_lib.data import write_jsonl
from course_lib.level3 import config as C, data as D, loop as LP, runs as R, selection as S, update_rules as U


class ParaphrasesRead(AssertionError):
    pass


class HeldOut(list):
    """A list that must stay closed: any read raises :class:`ParaphrasesRead`.

    It still holds the real paraphrases, so code that bypassed the Python-level methods
    (a C routine reading the list's storage directly) would copy their text somewhere;
    the tests also look for that text in every record that would be trained on.
    """

    def _touched(self, *args, **kwargs):
        raise ParaphrasesRead("the held-out paraphrases were read by selection or training code")

    __iter__ = __reversed__ = __len__ = __getitem__ = __contains__ = __bool__ = _touched
    index = count = copy = _touched
    __add__ = __mul__ = __rmul__ = __eq__ = __ne__ = _touched


@pytest.fixture(scope="module")
def course_data():
    return D.LoopData.load()


@pytest.fixture()
def guarded(course_data):
    """The course's level-3 data, with the paraphrases behind the guard."""
    return replace(course_data, paraphrases=HeldOut(course_data.paraphrases))


def paraphrase_questions(data: D.LoopData) -> set[str]:
    return {p["question"] for p in data.paraphrases}


def assert_no_paraphrase_text(records, course_data):
    held_out = paraphrase_questions(course_data)
    originals = {s["question"] for s in course_data.symptoms}
    for r in records:
        assert r["prompt"] not in held_out
        assert r["prompt"] in originals  # only the 15 original questions are trained on
        assert not any(q in r["response"] for q in held_out)


def per_question(data: D.LoopData, failing: set[str]) -> pd.DataFrame:
    return pd.DataFrame([{"symptom_id": s, "accuracy": 0.2 if s in failing else 1.0, "unsafe": 0}
                         for s in data.symptom_ids])


def test_the_guard_is_closed(guarded):
    for read in (lambda p: list(p), lambda p: p[0], lambda p: len(p), lambda p: bool(p),
                 lambda p: [x for x in p], lambda p: {} in p):
        with pytest.raises(ParaphrasesRead):
            read(guarded.paraphrases)


@pytest.mark.parametrize("replay_ratio", [0.0, 0.5, 1.0])
def test_build_iteration_data_never_reads_the_paraphrases(guarded, course_data, replay_ratio):
    failing = {"s04", "s07", "s12"}
    it = S.build_iteration_data(per_question(course_data, failing), guarded, replay_ratio, seed=3)
    assert set(it.failed) == failing
    assert it.corrective and {r["symptom_id"] for r in it.corrective} == failing
    assert_no_paraphrase_text(it.records, course_data)
    # and the status helper on its own
    assert set(S.question_status(per_question(course_data, failing))[lambda s: s == "fail"].index) == failing


class StubModels:
    """Stands in for :class:`course_lib.level3.loop.StageModels`: no model is ever built."""

    def __init__(self):
        self.kept: list[str] = []

    def base(self):
        return "base-model"

    def fresh_lora(self):
        return "fresh-lora"

    def after(self, stage, trainable=True):
        return f"model-after-{stage}"

    def keep(self, stage, model):
        self.kept.append(stage)


def grades_rows(data: D.LoopData, failing: set[str], paraphrase_ids: list[tuple[str, str]], n: int = 3) -> list[dict]:
    """A stage's grades.jsonl: n answers per original question (failing ones score 0.73),
    plus some paraphrase rows, which the iteration rule must filter out by ``split``."""
    rows = []
    for s in data.symptom_ids:
        for k in range(n):
            bad = s in failing
            rows.append({"split": "original", "symptom_id": s, "item_id": s, "sample": k,
                         "score": 0.73 if bad else 1.0, "label": "partially_correct" if bad else "correct",
                         "harmful": False})
    for pid, sid in paraphrase_ids:  # failing paraphrases must not make the original question fail
        rows.append({"split": "paraphrase", "symptom_id": sid, "item_id": pid, "sample": 0,
                     "score": 0.0, "label": "incorrect", "harmful": False})
    return rows


def test_loop_training_rules_never_read_the_paraphrases(guarded, course_data, tmp_path, monkeypatch):
    trained: dict[str, list[dict]] = {}

    def fake_train_on(sd, model, tokenizer, records, info, config, progress, epochs=None, max_steps=-1):
        """Records what the stage would train on, writes the stage's train.json, returns the model as it was."""
        trained[sd.name] = [dict(r) for r in records]
        steps = max_steps if max_steps > 0 else len(records)
        info.update({"steps": steps, "examples": len(records), "epochs": epochs, "max_steps": max_steps})
        LP.write_json(sd.file("train.json"), info)
        return model

    monkeypatch.setattr(LP, "train_on", fake_train_on)
    monkeypatch.setattr(LP, "save_adapter_atomically", lambda model, sd: sd.path.mkdir(parents=True, exist_ok=True))

    config = C.LoopConfig(iterations=2, replay_ratio=0.5, control=True, seed=0)
    run = R.Run(config, {"model": "stub", "judge": {"judge": "stub"}, "data": "held-out test"}, tmp_path)
    models = StubModels()
    stages = LP.LoopStages(run, models, guarded, tokenizer=None, progress=False)
    plan = {st.name: st for st in config.plan()}
    some_paraphrases = [(p["id"], p["symptom_id"]) for p in course_data.paraphrases[::7]]

    # iteration 0: train_initial, nothing else
    stages.model_for(plan["iter0"], run.stage_dir("iter0"))
    assert [(r["prompt"], r["response"]) for r in trained["iter0"]] == \
        [(r["prompt"], r["response"]) for r in course_data.train_initial]

    # iteration 1: the questions iteration 0 failed get their references, plus replay
    failing = {"s04", "s09", "s15"}
    write_jsonl(run.stage_dir("iter0").file("grades.jsonl"), grades_rows(course_data, failing, some_paraphrases))
    stages.model_for(plan["iter1"], run.stage_dir("iter1"))
    corrective = [r for r in trained["iter1"] if r["source"] == "corrective"]
    assert {r["symptom_id"] for r in corrective} == failing
    assert len(corrective) == sum(r["symptom_id"] in failing for r in course_data.references)

    # iteration 2: everything passes, so nothing is trained (the skip path)
    write_jsonl(run.stage_dir("iter1").file("grades.jsonl"), grades_rows(course_data, set(), some_paraphrases))
    stages.model_for(plan["iter2"], run.stage_dir("iter2"))
    assert "iter2" not in trained and run.train_info("iter2")["skipped"]

    # control: the union of what the loop trained on, for as many steps
    stages.model_for(plan["control"], run.stage_dir("control"))
    assert trained["control"] == S.union_records([trained["iter0"], trained["iter1"]])
    assert run.train_info("control")["max_steps"] == len(trained["iter0"]) + len(trained["iter1"])

    assert models.kept == ["iter0", "iter1", "iter2", "control"]
    for name, records in trained.items():
        assert_no_paraphrase_text(records, course_data)
    for name in ("iter0", "iter1", "iter2", "control"):  # the data files each stage leaves on disk
        assert_no_paraphrase_text(run.train_data(name), course_data)


def test_evaluation_may_read_them_and_the_guard_notices(guarded, course_data):
    with pytest.raises(ParaphrasesRead):
        D.eval_items(guarded, "paraphrase")
    items = D.eval_items(course_data, "paraphrase")
    assert {i["question"] for i in items} == paraphrase_questions(course_data)


@pytest.mark.parametrize("rule", ["self_distill", "dpo"])
def test_self_distill_and_dpo_never_read_the_paraphrases(guarded, course_data, tmp_path, monkeypatch, rule):
    """The other update rules learn from the model's own answers: only those to the 15 originals."""
    trained: dict[str, list[dict]] = {}

    def fake_train_on(sd, model, tokenizer, records, info, config, progress, epochs=None, max_steps=-1):
        trained["sft"] = [dict(r) for r in records]
        LP.write_json(sd.file("train.json"), dict(info, steps=max_steps, examples=len(records)))
        return model

    def fake_train_dpo(model, tokenizer, pairs, **kw):
        trained["dpo"] = [dict(p) for p in pairs]
        return U.DPOResult(pd.DataFrame([{"step": 1, "epoch": 1.0, "loss": 0.69}]), 0.0,
                           kw["max_steps"], {})

    monkeypatch.setattr(LP, "train_on", fake_train_on)
    monkeypatch.setattr(LP, "train_dpo", fake_train_dpo)
    monkeypatch.setattr(LP, "save_adapter_atomically", lambda model, sd: sd.path.mkdir(parents=True, exist_ok=True))
    config = C.LoopConfig(iterations=1, control=False, update_rule=rule, seed=0)
    run = R.Run(config, {"model": "stub", "judge": {"judge": "stub"}, "data": "held-out test"}, tmp_path)
    stages = LP.LoopStages(run, StubModels(), guarded, tokenizer=None, progress=False)
    st = {s.name: s for s in config.plan()}["iter1"]
    # iteration 0's answers: per original question one correct and one incorrect answer; every paraphrase
    # answer is "correct" and carries the paraphrase's text, so reading one would put it into the training data
    failing = {"s02", "s08"}
    gens, grades = [], []
    for s in course_data.symptom_ids:
        q = next(x["question"] for x in course_data.symptoms if x["id"] == s)
        for k, (label, score) in enumerate([("correct", 1.0), ("incorrect", 0.1)]):
            if s in failing and label == "correct":
                label, score = "partially_correct", 0.5
            gens.append({"split": "original", "item_id": s, "symptom_id": s, "sample": k, "question": q,
                         "answer": f"自分の回答 {s}-{k}"})
            grades.append({"split": "original", "item_id": s, "symptom_id": s, "sample": k, "score": score,
                           "label": label, "harmful": False})
    for k, p in enumerate(course_data.paraphrases):
        gens.append({"split": "paraphrase", "item_id": p["id"], "symptom_id": p["symptom_id"], "sample": 0,
                     "question": p["question"], "answer": p["question"]})
        grades.append({"split": "paraphrase", "item_id": p["id"], "symptom_id": p["symptom_id"], "sample": 0,
                       "score": 1.0, "label": "correct", "harmful": False})
    run.stage_dir("iter0").path.mkdir(parents=True)
    write_jsonl(run.stage_dir("iter0").file("generations.jsonl"), gens)
    write_jsonl(run.stage_dir("iter0").file("grades.jsonl"), grades)
    stages.model_for(st, run.stage_dir("iter1"))
    info = run.train_info("iter1")
    if rule == "self_distill":
        records = trained["sft"]
        assert_no_paraphrase_text(records, course_data)
        assert {r["symptom_id"] for r in records if r["source"] == "corrective"} == failing
        assert info["n_self"] == len(course_data.symptom_ids) - len(failing)
    else:
        pairs = trained["dpo"]
        assert_no_paraphrase_text([{"prompt": p["prompt"], "response": p["chosen"] + p["rejected"]} for p in pairs],
                                  course_data)
        assert {p["symptom_id"] for p in pairs if p["chosen_source"] == "reference"} == failing
        assert info["n_pairs"] == len(pairs) and info["steps"] == info["budget"]
