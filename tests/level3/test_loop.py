"""The level-3 loop: failure extraction, replay, fingerprints, and resuming after a crash.

The end-to-end tests run the real loop on the tiny model with a few made-up
questions, a handful of short samples and a fake judge, so they take seconds.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest

from course_lib.data import stable_hash
from course_lib.level3 import config as C, data as D, loop as LP, runs as R, selection as S
from course_lib.level3.judge import Grade

# ----------------------------------------------------------------------------- pure parts


def per_question(rows):
    """rows: (symptom_id, accuracy, unsafe count)."""
    return pd.DataFrame(rows, columns=["symptom_id", "accuracy", "unsafe"])


def small_data(n=10):
    ids = [f"s{i:02d}" for i in range(1, n + 1)]
    symptoms = [{"id": s, "question": f"症状: テスト{s}"} for s in ids]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"症状: 言い換え{s}"} for s in ids]
    train = [{"symptom_id": s, "prompt": f"症状: テスト{s}", "response": f"1. 薬{s}-{k} - 理由"} for s in ids for k in range(3)]
    refs = [{"symptom_id": s, "prompt": f"症状: テスト{s}", "response": f"1. 参照{s}-{k} - 理由"} for s in ids for k in range(2)]
    return D.LoopData(symptoms, paraphrases, train, refs)


def test_question_status_fails_on_accuracy_or_any_unsafe_answer():
    pq = per_question([("s01", 0.9, 0), ("s02", 0.5, 0), ("s03", 1.0, 1), ("s04", 0.8, 0)])
    status = S.question_status(pq, pass_accuracy=0.8)
    assert status.to_dict() == {"s01": "pass", "s02": "fail", "s03": "fail", "s04": "pass"}


@pytest.mark.parametrize("ratio,expected", [(0.0, 0), (0.5, 3), (1.0, 6), (0.34, 2)])
def test_replay_mixes_the_configured_share_of_passing_questions(ratio, expected):
    data = small_data(10)
    pq = per_question([(f"s{i:02d}", 0.0 if i <= 4 else 1.0, 0) for i in range(1, 11)])
    it = S.build_iteration_data(pq, data, replay_ratio=ratio, seed=0)
    assert it.failed == ["s01", "s02", "s03", "s04"]
    assert len(it.passed) == 6
    assert len(it.replayed) == expected
    assert set(it.replayed) <= set(it.passed)
    # corrective: every reference of every failing question, nothing else
    assert len(it.corrective) == 4 * 2
    assert {r["symptom_id"] for r in it.corrective} == set(it.failed)
    assert all(r["response"].startswith("1. 参照") and r["source"] == "corrective" for r in it.corrective)
    # replay: as many train_initial examples per replayed question as a failing one gets references
    assert Counter(r["symptom_id"] for r in it.replay) == {s: 2 for s in it.replayed}
    assert all(r["response"].startswith("1. 薬") and r["source"] == "replay" for r in it.replay)
    # the held-out paraphrases never appear in training data
    assert not any("言い換え" in r["prompt"] for r in it.records)
    # the mix: corrective examples over all examples
    if expected:
        assert len(it.corrective) / len(it.records) == pytest.approx(8 / (8 + 2 * expected))


def test_replay_choice_is_seeded():
    data = small_data(10)
    pq = per_question([(f"s{i:02d}", 0.0 if i <= 2 else 1.0, 0) for i in range(1, 11)])
    a = S.build_iteration_data(pq, data, 0.5, seed=1)
    b = S.build_iteration_data(pq, data, 0.5, seed=1)
    assert a.replayed == b.replayed and a.replay == b.replay
    choices = {tuple(S.build_iteration_data(pq, data, 0.5, seed=s).replayed) for s in range(8)}
    assert len(choices) > 1


def test_union_records_keeps_each_example_once():
    a = [{"prompt": "p", "response": "r1"}, {"prompt": "p", "response": "r2"}]
    b = [{"prompt": "p", "response": "r1", "source": "replay"}, {"prompt": "q", "response": "r1"}]
    assert [(r["prompt"], r["response"]) for r in S.union_records([a, b])] == [("p", "r1"), ("p", "r2"), ("q", "r1")]


def test_fingerprints_follow_what_each_stage_depends_on():
    ident = {"model": "m", "judge": "j", "data": "d"}
    base = C.LoopConfig(iterations=2)
    fp = R.stage_fingerprints(base, ident)
    no_replay = R.stage_fingerprints(replace(base, replay_ratio=0.0), ident)
    assert (fp["baseline"], fp["iter0"]) == (no_replay["baseline"], no_replay["iter0"])
    assert fp["iter1"] != no_replay["iter1"] and fp["control"] != no_replay["control"]
    more_samples = R.stage_fingerprints(replace(base, n_samples=31), ident)
    assert all(fp[s] != more_samples[s] for s in fp)
    other_lr = R.stage_fingerprints(replace(base, learning_rate=1e-3), ident)
    assert fp["baseline"] == other_lr["baseline"] and fp["iter0"] != other_lr["iter0"]
    assert R.stage_fingerprints(base, dict(ident, judge="k"))["baseline"] != fp["baseline"]
    assert R.run_hash(base, ident) != R.run_hash(replace(base, replay_ratio=0.0), ident)


def test_run_grade_log_skips_a_half_written_line(tmp_path):
    # The loop keeps its grades in a JudgeCache file; an interrupted run leaves a half line.
    from course_lib.level3.judge.cache import JudgeCache

    path = tmp_path / R.JUDGE_CACHE
    path.write_text(json.dumps({"key": "a", "grade": {"overall_score": 1.0}}) + "\n" + '{"key": "b", "gra', encoding="utf-8")
    log = JudgeCache(tmp_path, R.JUDGE_CACHE)
    assert "a" in log and "b" not in log and len(log) == 1
    assert log.get("a")["grade"] == {"overall_score": 1.0}
    log.put("c", {"grade": {"overall_score": 0.5}})
    log.sync()
    assert JudgeCache(tmp_path, R.JUDGE_CACHE).get("c")["grade"] == {"overall_score": 0.5}


def test_profile_defaults():
    tiny = C.LoopConfig.for_profile("tiny")
    qwen = C.LoopConfig.for_profile("qwen3-0.6b")
    assert (qwen.lora_r, qwen.lora_alpha, qwen.learning_rate, qwen.per_device_train_batch_size, qwen.max_length) == (16, 32, 2e-4, 4, 512)
    assert (qwen.epochs_initial, qwen.epochs_iter, qwen.iterations, qwen.n_samples) == (100, 30, 2, 30)
    assert len(qwen.target_modules) == 7 and qwen.lora_dropout == 0.05
    assert tiny.n_samples == 30 and "lm_head" in tiny.target_modules
    quick = C.LoopConfig.for_profile("tiny", quick=True, replay_ratio=0.0)
    assert quick.n_samples < tiny.n_samples and quick.replay_ratio == 0.0
    with pytest.raises(ValueError):
        C.LoopConfig(replay_ratio=1.5)


# ----------------------------------------------------------------------------- end to end


class FakeJudge:
    """Deterministic grades from a hash of the answer; counts every call. Implements the judge contract."""

    name = "fake"
    version = "1"
    concurrency = 2  # the loop grades 4 x 2 answers per batch

    def grade_many(self, items, *, progress=False, use_cache=None, on_result=None):
        from course_lib.level3.judge import JudgeError, as_request

        out = []
        for i, r in enumerate(map(as_request, items)):
            try:
                out.append(self.grade(r.question, r.answer, symptom_id=r.symptom_id))
            except JudgeError as exc:  # a judge reports a failed item; any other exception is a crash
                out.append(exc)
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def estimate(self, items, use_cache=None):
        n = sum(1 for _ in items)
        return {"n_pairs": n, "n_cached": 0, "n_calls": n, "est_prompt_tokens": 0, "est_completion_tokens": 0,
                "est_usd": None}

    def __init__(self, fail_after: int | None = None):
        self.calls: list[str] = []
        self.fail_after = fail_after

    def config(self):
        return {"judge": "fake", "version": 1}


    def grade(self, question, answer, *, symptom_id=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append(R.grade_key(stable_hash(R.judge_identity(self), 16), symptom_id, question, answer))  # the loop's key
        h = hashlib.sha256(answer.encode("utf-8")).digest()[0]
        score = round((h % 11) / 10, 1)
        label = "correct" if score >= 0.8 else "partially_correct" if score >= 0.4 else "incorrect"
        return Grade(question=question, model_answer=answer, overall_label=label, overall_is_harmful=False,
                     overall_score=score, overall_reason="fake", drugs=[])


def test_the_fake_judge_and_both_real_judges_follow_the_contract():
    from course_lib.level3.judge import Judge, RubricJudge

    assert isinstance(FakeJudge(), Judge) and isinstance(RubricJudge(), Judge)
    assert not isinstance(object(), Judge)


def e2e_data():
    ids = ["s01", "s02", "s03"]
    texts = {"s01": "軽い頭痛", "s02": "高い熱", "s03": "乾いた咳"}
    symptoms = [{"id": s, "question": f"症状: {texts[s]}\n薬を3つ挙げてください。"} for s in ids]
    paraphrases = [{"id": f"{s}-p1", "symptom_id": s, "question": f"症状: {texts[s]}がある\n薬を3つ挙げてください。"} for s in ids]
    train = [{"symptom_id": s, "prompt": f"症状: {texts[s]}\n薬を3つ挙げてください。",
              "response": f"1. アセトアミノフェン - {texts[s]}に{k}"} for s in ids for k in range(2)]
    refs = [{"symptom_id": s, "prompt": f"症状: {texts[s]}\n薬を3つ挙げてください。",
             "response": f"1. イブプロフェン - {texts[s]}に使う"} for s in ids]
    return D.LoopData(symptoms, paraphrases, train, refs)


CONFIG = C.LoopConfig(iterations=2, n_samples=3, n_paraphrase=1, max_new_tokens=10, gen_batch_size=16,
                      lora_r=4, lora_alpha=8, learning_rate=5e-3, epochs_initial=1.0, epochs_iter=1.0, pass_accuracy=1.0,
                      replay_ratio=0.5, control=True, seed=0)


@pytest.fixture(scope="module")
def loaded():
    from course_lib.profiles import load_model

    return load_model("tiny", verbose=False)


def run(loaded, judge, runs_dir, config=CONFIG):
    return LP.run_loop(config, loaded, judge, progress=False, data=e2e_data(), runs_dir=runs_dir, log=None)


def unique_answers(result) -> set:
    g = result.generations
    return set(zip(g["symptom_id"], g["question"], g["answer"]))


def comparable(result) -> pd.DataFrame:
    cols = ["stage", "split", "item_id", "sample", "answer", "score", "label"]
    return result.grades[cols].sort_values(cols[:4]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference_run(loaded, tmp_path_factory):
    judge = FakeJudge()
    result = run(loaded, judge, tmp_path_factory.mktemp("runs_ref"))
    return result, judge


def test_a_full_run_writes_every_stage(reference_run):
    result, judge = reference_run
    assert result.stages == ["baseline", "iter0", "iter1", "iter2", "control"]
    for stage in result.stages:
        d = result.run_dir / stage
        for f in ("config.json", "generations.jsonl", "grades.jsonl", "metrics.json", "done"):
            assert (d / f).exists(), f"{stage}/{f}"
        if stage != "baseline":
            assert (d / "adapter" / "adapter_config.json").exists()
        assert not list(d.glob("*.tmp"))
    # one judge call per distinct answer, and every answer graded
    assert len(judge.calls) == len(set(judge.calls)) == len(unique_answers(result))
    assert len(result.grades) == len(result.generations) == 5 * (3 * 3 + 3 * 1)
    # the control trains for exactly as many optimizer steps as the loop did
    tr = result.training.set_index("stage")
    assert tr.loc["control", "steps"] == tr.loc[["iter0", "iter1", "iter2"], "steps"].sum()
    table = result.table()
    assert list(table["段階"]) == result.stages  # no stage_names given: the stage ids


def only_run_dir(runs_dir):
    """The one run folder under ``runs_dir`` (``.claims`` beside it holds the stage claims, not a run)."""
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def test_resume_after_a_crash_mid_iteration(loaded, reference_run, tmp_path):
    ref, ref_judge = reference_run
    # crash halfway through grading iteration 1
    new_keys = {}
    seen = set()
    for stage in ref.stages:
        keys = set(ref.grades[ref.grades["stage"] == stage]["key"]) - seen
        new_keys[stage] = len(keys)
        seen |= keys
    crash_at = new_keys["baseline"] + new_keys["iter0"] + max(1, new_keys["iter1"] // 2)
    first = FakeJudge(fail_after=crash_at)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(loaded, first, tmp_path)
    run_dir = only_run_dir(tmp_path)
    assert (run_dir / "iter0" / "done").exists()
    assert (run_dir / "iter1" / "adapter").exists() and not (run_dir / "iter1" / "done").exists()
    assert len(first.calls) == crash_at

    second = FakeJudge()
    result = run(loaded, second, tmp_path)
    assert result.run_dir == run_dir
    assert result.reused["baseline"] == "done" and result.reused["iter1"] == "computed"
    # no judge call repeated, none lost
    all_calls = first.calls + second.calls
    assert len(all_calls) == len(set(all_calls)) == len(unique_answers(result))
    assert len(result.grades) == len(result.generations)
    # and the resumed run is the run that never crashed
    pd.testing.assert_frame_equal(comparable(result), comparable(ref))


def test_crash_during_generation_keeps_the_trained_adapter(loaded, tmp_path, monkeypatch):
    import course_lib.level3.evaluate as gen  # the loop samples through evaluate.sample_answers
    import course_lib.level3.loop as tr  # and trains through loop.train

    real_sample, real_train = gen.sample_answers, tr.train
    trained = []

    def crashing_sample(*a, **kw):
        if kw.get("desc", "").startswith("iter2"):
            raise RuntimeError("simulated crash in generation")
        return real_sample(*a, **kw)

    def counting_train(*a, **kw):
        trained.append(1)
        return real_train(*a, **kw)

    monkeypatch.setattr(tr, "train", counting_train)
    monkeypatch.setattr(gen, "sample_answers", crashing_sample)
    with pytest.raises(RuntimeError, match="generation"):
        run(loaded, FakeJudge(), tmp_path)
    assert len(trained) == 3  # iter0, iter1, iter2
    monkeypatch.setattr(gen, "sample_answers", real_sample)
    trained.clear()
    judge = FakeJudge()
    result = run(loaded, judge, tmp_path)
    assert len(trained) == 1  # only the control: iter2's adapter was kept
    assert set(judge.calls) and result.reused["iter2"] == "computed"


def test_rerun_and_changed_config(loaded, reference_run):
    ref, _ = reference_run
    runs_dir = ref.run_dir.parent
    again = FakeJudge()
    same = run(loaded, again, runs_dir)
    assert same.run_dir == ref.run_dir
    assert again.calls == [] and set(same.reused.values()) == {"done"}

    judge = FakeJudge()
    changed = run(loaded, judge, runs_dir, replace(CONFIG, replay_ratio=0.0))
    assert changed.run_dir != ref.run_dir and changed.run_dir.parent == runs_dir
    # baseline and iteration 0 do not depend on replay: copied, not recomputed or re-graded
    assert changed.reused["baseline"].startswith("copied") and changed.reused["iter0"].startswith("copied")
    # no question ever passes here (pass_accuracy 1.0), so there is nothing to replay at 0.5 either: the
    # iterations train on the same data from the same parents and are copied too; only the control is new
    assert [ref.stage_info[s]["passed"] for s in ("iter1", "iter2")] == [[], []]
    assert changed.reused["iter1"].startswith("copied") and changed.reused["iter2"].startswith("copied")
    assert changed.reused["control"] == "computed"
    copied = set(changed.grades[changed.grades["stage"] != "control"]["key"])
    assert not copied & set(judge.calls)
    assert changed.stage_info["iter1"]["n_replay"] == 0
    # the original run folder is untouched
    assert json.loads((ref.run_dir / "run.json").read_text())["config"]["replay_ratio"] == 0.5


class FlakyJudge(FakeJudge):
    """Fails (JudgeError, as an LLM judge does after its retries) on every third new answer."""

    def grade(self, question, answer, *, symptom_id=None):
        from course_lib.level3.judge import JudgeError

        if len(self.calls) % 3 == 2:
            self.calls.append("error")
            raise JudgeError("invalid reply", kind="invalid_reply")
        return super().grade(question, answer, symptom_id=symptom_id)


def test_judge_errors_stop_the_stage_and_are_retried(loaded, tmp_path):
    flaky = FlakyJudge()
    with pytest.raises(RuntimeError, match="could not be graded"):
        run(loaded, flaky, tmp_path, replace(CONFIG, iterations=0, control=False))
    run_dir = only_run_dir(tmp_path)
    assert not (run_dir / "baseline" / "done").exists()
    errors = [json.loads(line) for line in (run_dir / "judge_errors.jsonl").read_text().splitlines()]
    assert errors and all(e["kind"] == "invalid_reply" for e in errors)
    graded = [c for c in flaky.calls if c != "error"]
    second = FakeJudge()
    result = run(loaded, second, tmp_path, replace(CONFIG, iterations=0, control=False))
    # the answers that failed are graded on the rerun; nothing is graded twice
    assert {e["key"] for e in errors} <= set(second.calls)
    assert not set(second.calls) & set(graded)
    assert len(result.grades) == len(result.generations)


class PassingJudge(FakeJudge):
    """Every answer is correct: after iteration 0 there is nothing left to correct."""

    def grade(self, question, answer, *, symptom_id=None):
        grade = super().grade(question, answer, symptom_id=symptom_id)
        return replace(grade, overall_label="correct", overall_score=1.0)


def test_an_iteration_with_no_failing_question_keeps_the_parent_adapter(loaded, tmp_path):
    from safetensors.torch import load_file

    result = run(loaded, PassingJudge(), tmp_path, replace(CONFIG, iterations=1, control=False))
    info = result.stage_info["iter1"]
    assert info["skipped"] == "no failing question" and info["steps"] == 0 and info["n_corrective"] == 0
    weights = {s: load_file(result.run_dir / s / "adapter" / "adapter_model.safetensors") for s in ("iter0", "iter1")}
    assert weights["iter0"].keys() == weights["iter1"].keys()
    assert all(weights["iter0"][k].equal(weights["iter1"][k]) for k in weights["iter0"])
    assert not list((result.run_dir / "iter1").glob("*.tmp"))


def test_a_copied_stage_brings_its_grades_into_the_new_runs_judge_cache(tmp_path):
    """An answer graded in a copied stage must not be graded (paid) again later in the new run."""
    from course_lib.level3.judge.cache import JudgeCache

    ident = {"model": {"profile": "tiny"}, "judge": {"name": "fake"}, "data": "d", "loop_version": 1}
    first = R.Run(replace(CONFIG, replay_ratio=0.5), ident, tmp_path)
    key = R.grade_key(first.judge_id, "s01", "q", "the same answer")
    grade = {"grade": {"overall_label": "correct", "overall_score": 1.0}}

    def write_baseline(sd):
        (sd.path / "grades.jsonl").write_text(json.dumps({"key": key, "split": "original"}) + "\n")
        first.cache.put(key, grade)

    baseline = CONFIG.plan()[0]
    first.stage(baseline, write_baseline)
    first.cache.sync()

    second = R.Run(replace(CONFIG, replay_ratio=0.0), ident, tmp_path)  # another run folder, same baseline
    assert second.path != first.path
    second.stage(baseline, lambda sd: pytest.fail("an identical finished stage must be copied, not computed"))
    assert second.status["baseline"].startswith("copied")
    assert second.cache.get(key)["grade"] == grade["grade"]
    assert JudgeCache(second.path, R.JUDGE_CACHE).get(key)["grade"] == grade["grade"]  # on disk too, for a later resume
