"""Run folders on disk (``course_lib.level3.runs``), checked on folders written by hand.

No model, no training, no judge: each test writes the files a run leaves behind (``run.json``,
a stage's ``config.json`` / ``train.json`` / ``generations.jsonl`` / ``grades.jsonl`` /
``metrics.json`` / ``done``) with a few hand-chosen values, then checks what the module reads,
hashes, copies or claims against values worked out by hand. Waiting and process probes are
replaced (``time``, ``os.kill``), so nothing sleeps and no real process is signalled.
"""
from __future__ import annotations

import hashlib
import json
import locale
import os
import shutil
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from course_lib.level3 import config as C, runs as R
from course_lib.level3.judge.cache import JudgeCache
from course_lib.level3.metrics import Summary

IDENT = {"model": {"profile": "fake"}, "judge": {"name": "fake"}, "data": "d", "loop_version": 0}


def sha(obj, n=12) -> str:
    """The course's hash, spelled out: SHA-256 of canonical JSON (sorted keys, UTF-8), first n hex digits."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:n]


def write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def write_lines(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def overall(mean, **kw) -> dict:
    """A Summary.overall with every key the formatted table reads (values only need to be consistent)."""
    o = dict(mean=mean, std=0.1, n=4, n_correct=2, accuracy=0.5, accuracy_lo=0.25, accuracy_hi=0.75, n_harmful=1,
             harmful_rate=0.25, harmful_lo=0.0, harmful_hi=0.5, correct=2, partially_correct=0, incorrect=1, unsafe=1,
             solved=1, questions=2)
    o.update(kw)
    return o


def summary(rows, **kw) -> Summary:
    return Summary(pd.DataFrame(rows), overall(**kw))


# ----------------------------------------------------------------------------- hashes and identities


def test_hashed_config_keeps_an_update_rules_fields_only_under_that_rule():
    every = set(C.LoopConfig().to_dict())
    rule_fields = {"update_rule", "self_distill_k", "dpo_beta", "dpo_learning_rate"}
    assert set(R.hashed_config(C.LoopConfig())) == every - rule_fields
    sd = R.hashed_config(C.LoopConfig(update_rule="self_distill", control=False, self_distill_k=3))
    assert set(sd) == every - {"dpo_beta", "dpo_learning_rate"}
    assert (sd["update_rule"], sd["self_distill_k"]) == ("self_distill", 3)
    dpo = R.hashed_config(C.LoopConfig(update_rule="dpo", control=False, dpo_beta=0.2))
    assert set(dpo) == every - {"self_distill_k"}
    assert (dpo["update_rule"], dpo["dpo_beta"], dpo["dpo_learning_rate"]) == ("dpo", 0.2, 2e-5)
    assert dpo["lora_r"] == 16 and dpo["target_modules"] == list(C.LoopConfig().target_modules)


def test_run_hash_is_the_hash_of_the_hashed_config_and_the_identity():
    config = C.LoopConfig(iterations=1, dpo_beta=0.3)  # corrective: dpo_beta is not hashed
    hashed = {k: v for k, v in config.to_dict().items()
              if k not in ("update_rule", "self_distill_k", "dpo_beta", "dpo_learning_rate")}
    assert R.run_hash(config, IDENT) == sha({"config": hashed, "identity": IDENT})
    assert len(R.run_hash(config, IDENT)) == 12


def test_grade_key_hashes_judge_symptom_question_and_answer_in_that_order():
    assert R.grade_key("j", "s01", "質問", "答え") == sha(["j", "s01", "質問", "答え"], 24)
    assert R.grade_key("j", "s01", "答え", "質問") != R.grade_key("j", "s01", "質問", "答え")


def test_stage_fingerprints_written_out_for_a_plan_with_a_control():
    config = C.LoopConfig(iterations=1, n_samples=3, n_paraphrase=2, seed=5)
    fp = R.stage_fingerprints(config, IDENT)
    baseline = sha({"stage": "baseline", "identity": IDENT, "n_samples": 3, "n_paraphrase": 2, "temperature": 0.7,
                    "top_p": 0.9, "max_new_tokens": 192, "gen_batch_size": 64, "seed": 5})
    iter0 = sha({"stage": "iter0", "parent": baseline, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 "learning_rate": 2e-4, "per_device_train_batch_size": 4, "max_length": 512, "warmup_ratio": 0.08,
                 "lr_scheduler_type": "linear", "epochs_initial": 100.0})
    # the corrective rule hashes without update_rule and the rules' knobs
    iter1 = sha({"stage": "iter1", "parent": iter0, "epochs_iter": 30.0, "pass_accuracy": 0.8, "replay_ratio": 0.5})
    control = sha({"stage": "control", "parent": iter1})  # the control adds no setting of its own
    assert fp == {"baseline": baseline, "iter0": iter0, "iter1": iter1, "control": control}


def test_stage_fingerprints_of_an_update_rule_include_its_knobs():
    config = C.LoopConfig(iterations=1, control=False, update_rule="dpo", dpo_beta=0.2)
    fp = R.stage_fingerprints(config, IDENT)
    assert fp["iter1"] == sha({"stage": "iter1", "parent": fp["iter0"], "epochs_iter": 30.0, "pass_accuracy": 0.8,
                               "replay_ratio": 0.5, "update_rule": "dpo", "dpo_beta": 0.2, "dpo_learning_rate": 2e-5})


class FakeJudge:
    name = "fake-judge"

    def config(self):
        return {"model": "m1", "prompt_version": "v2", "cache": "/somewhere", "concurrency": 8}


def test_judge_identity_is_the_name_and_settings_without_cache_or_concurrency():
    assert R.judge_identity(FakeJudge()) == {"name": "fake-judge", "model": "m1", "prompt_version": "v2"}


class FakeData:
    def fingerprint(self):
        return "data-fp"


def test_run_identity_names_a_local_model_by_its_folder_and_labels_known_profiles(tmp_path):
    folder = tmp_path / "tiny-qwen3-abc123"
    folder.mkdir()
    loaded = SimpleNamespace(source=folder, profile="tiny", label="the page's label")
    assert R.run_identity(loaded, FakeJudge(), FakeData()) == {
        "model": {"profile": "tiny", "label": "tiny (course-built Qwen3-architecture model)",
                  "source": "tiny-qwen3-abc123"},
        "judge": {"name": "fake-judge", "model": "m1", "prompt_version": "v2"},
        "data": "data-fp", "loop_version": R.LOOP_VERSION}
    assert R.LOOP_VERSION == 4  # a bump changes every run hash: change this line with it


def test_run_identity_keeps_a_hub_id_and_the_label_of_an_unknown_profile():
    hub = SimpleNamespace(source="Qwen/Qwen3-0.6B", profile="qwen3-0.6b", label="page label")
    assert R.run_identity(hub, FakeJudge(), FakeData())["model"] == {
        "profile": "qwen3-0.6b", "label": "Qwen/Qwen3-0.6B", "source": "Qwen/Qwen3-0.6B"}
    other = SimpleNamespace(source="someone/model-x", profile="other", label="Model X")
    assert R.run_identity(other, FakeJudge(), FakeData())["model"] == {
        "profile": "other", "label": "Model X", "source": "someone/model-x"}


# ----------------------------------------------------------------------------- stage folders and finished stages


def test_stage_dir_files_done_and_adapter(tmp_path):
    sd = R.StageDir(tmp_path, "iter0")
    assert (sd.name, sd.path, sd.file("x.json"), sd.adapter) == (
        "iter0", tmp_path / "iter0", tmp_path / "iter0" / "x.json", tmp_path / "iter0" / "adapter")
    assert not sd.done and not sd.has_adapter()
    write(sd.adapter / "adapter_config.json", {})
    assert not sd.has_adapter(), "an adapter without train.json is a stage that was interrupted"
    (sd.adapter / "adapter_config.json").unlink()
    write(sd.file("train.json"), {})
    assert not sd.has_adapter(), "train.json without an adapter is not an adapter"
    write(sd.adapter / "adapter_config.json", {})
    assert sd.has_adapter()
    sd.file("done").write_text("x")
    assert sd.done


def finished(runs_dir, run, stage, fingerprint, done=True):
    write(runs_dir / run / stage / "config.json", {"stage": stage, "fingerprint": fingerprint})
    if done:
        (runs_dir / run / stage / "done").write_text("t\n")
    return runs_dir / run / stage


def test_find_finished_skips_its_own_run_unfinished_unreadable_and_other_stages(tmp_path):
    assert R.find_finished(tmp_path / "missing", "baseline", "fp", tmp_path / "r") is None
    own = finished(tmp_path, "a-own", "baseline", "fp")
    finished(tmp_path, "b-unfinished", "baseline", "fp", done=False)
    finished(tmp_path, "c-other-fp", "baseline", "other")
    (tmp_path / "d-broken" / "baseline").mkdir(parents=True)
    (tmp_path / "d-broken" / "baseline" / "config.json").write_text("{not json")
    (tmp_path / "d-broken" / "baseline" / "done").write_text("t\n")
    (tmp_path / "e-no-config" / "baseline").mkdir(parents=True)
    (tmp_path / "e-no-config" / "baseline" / "done").write_text("t\n")
    write(tmp_path / "f-no-fp" / "baseline" / "config.json", {"stage": "baseline"})
    (tmp_path / "f-no-fp" / "baseline" / "done").write_text("t\n")
    (tmp_path / "f-not-utf8" / "baseline").mkdir(parents=True)
    (tmp_path / "f-not-utf8" / "baseline" / "config.json").write_bytes(b'{"fingerprint": "fp", "x": "\xff"}')
    (tmp_path / "f-not-utf8" / "baseline" / "done").write_text("t\n")
    assert R.find_finished(tmp_path, "baseline", "fp", tmp_path / "a-own") is None
    assert R.find_finished(tmp_path, "iter0", "fp", tmp_path / "x") is None
    assert R.find_finished(tmp_path, "baseline", "fp", tmp_path / "x") == own
    good = finished(tmp_path, "g-good", "baseline", "fp")
    assert R.find_finished(tmp_path, "baseline", "fp", tmp_path / "a-own") == good


def test_find_finished_takes_the_first_run_in_name_order(tmp_path):
    for run in ("r3", "r1", "r2"):
        finished(tmp_path, run, "iter0", "fp")
    assert R.find_finished(tmp_path, "iter0", "fp", tmp_path / "r0") == tmp_path / "r1" / "iter0"


# ----------------------------------------------------------------------------- the stage claim


@pytest.fixture
def kill_calls(monkeypatch):
    """os.kill replaced: records (pid, signal) and does what ``kill_calls.effect`` says (None: the process exists)."""
    calls = []

    def fake_kill(pid, sig):
        calls.append((pid, sig))
        if fake_kill.effect is not None:
            fake_kill.effect()

    fake_kill.effect = None
    monkeypatch.setattr(os, "kill", fake_kill)
    return SimpleNamespace(calls=calls, set=lambda effect: setattr(fake_kill, "effect", effect))


def claim_file(runs_dir, text):
    path = runs_dir / ".claims" / "iter0-abc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def raise_(exc):
    def effect():
        raise exc
    return effect


def test_a_claim_lives_in_the_claims_folder_under_stage_and_fingerprint(tmp_path):
    claim = R.StageClaim(tmp_path, "iter0", "abc")
    assert claim.path == tmp_path / ".claims" / "iter0-abc" and claim.waited is False


def test_owner_alive_probes_the_pid_in_the_file_with_signal_zero(tmp_path, kill_calls):
    claim_file(tmp_path, " 4242\n")
    claim = R.StageClaim(tmp_path, "iter0", "abc")
    assert claim._owner_alive() is True
    assert kill_calls.calls == [(4242, 0)]
    kill_calls.set(raise_(ProcessLookupError()))
    assert claim._owner_alive() is False, "no such process: the claim is stale"
    kill_calls.set(raise_(PermissionError()))
    assert claim._owner_alive() is True, "a process of another user: alive"


def test_owner_alive_of_an_unreadable_file_is_true_and_our_own_pid_is_not_alive(tmp_path, kill_calls):
    claim = R.StageClaim(tmp_path, "iter0", "abc")
    assert claim._owner_alive() is True, "no file yet (being created): alive"
    claim_file(tmp_path, "12ab")
    assert claim._owner_alive() is True, "half-written pid: alive"
    claim_file(tmp_path, "")
    assert claim._owner_alive() is True, "empty (being written): alive"
    kill_calls.calls.clear()
    claim_file(tmp_path, str(os.getpid()))
    assert claim._owner_alive() is False, "our own leftover"
    assert kill_calls.calls == [], "our own pid is not probed"


def test_entering_a_claim_creates_its_folders_and_writes_our_pid(tmp_path):
    runs = tmp_path / "runs" / "level3"  # not there yet
    claim = R.StageClaim(runs, "iter0", "abc")
    with claim as entered:
        assert entered is claim and not claim.waited
        assert (runs / ".claims" / "iter0-abc").read_text() == str(os.getpid())
    assert not (runs / ".claims" / "iter0-abc").exists()
    with R.StageClaim(runs, "iter0", "abc"):  # the folder is there now: entered again
        pass


def test_a_claim_already_removed_exits_quietly(tmp_path):
    with R.StageClaim(tmp_path, "iter0", "abc") as claim:
        claim.path.unlink()
    assert not claim.path.exists()


def test_a_live_owner_is_waited_for_one_poll_at_a_time(tmp_path, kill_calls, monkeypatch):
    path = claim_file(tmp_path, "4242")
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            path.unlink()  # the owner finishes its stage

    monkeypatch.setattr(time, "sleep", sleep)
    with R.StageClaim(tmp_path, "iter0", "abc") as claim:
        assert claim.waited is True
        assert path.read_text() == str(os.getpid())
    assert sleeps == [1.0, 1.0] and kill_calls.calls == [(4242, 0), (4242, 0)]


def test_a_dead_owners_claim_is_taken_over_without_waiting(tmp_path, kill_calls, monkeypatch):
    path = claim_file(tmp_path, "4242")
    kill_calls.set(raise_(ProcessLookupError()))
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("a dead owner is not waited for"))
    with R.StageClaim(tmp_path, "iter0", "abc") as claim:
        assert claim.waited is False and path.read_text() == str(os.getpid())


def test_our_own_leftover_claim_is_taken_over(tmp_path, monkeypatch):
    path = claim_file(tmp_path, str(os.getpid()))
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("our own leftover is not waited for"))
    with R.StageClaim(tmp_path, "iter0", "abc") as claim:
        assert claim.waited is False and path.read_text() == str(os.getpid())


def test_a_stale_claim_that_vanishes_before_the_takeover_is_no_error(tmp_path, kill_calls):
    path = claim_file(tmp_path, "4242")

    def gone():  # the dead owner's file is removed (by a third process) between the probe and the takeover
        path.unlink()
        raise ProcessLookupError()

    kill_calls.set(gone)
    with R.StageClaim(tmp_path, "iter0", "abc") as claim:
        assert path.read_text() == str(os.getpid()) and not claim.waited


# ----------------------------------------------------------------------------- Run: a run folder and its stages

CONFIG = C.LoopConfig(iterations=1, n_samples=2, n_paraphrase=1)


class Clock:
    """Stands in for the module's ``time``: a scripted perf_counter, a fixed date, sleeps recorded."""

    def __init__(self, *ticks):
        self.ticks, self.sleeps, self.on_sleep = list(ticks), [], None

    def perf_counter(self):
        return self.ticks.pop(0)

    def strftime(self, fmt):
        return time.strftime(fmt, time.gmtime(1_800_000_000))  # 2027-01-15T08:00:00 UTC

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        if self.on_sleep:
            self.on_sleep()


def make_run(tmp_path, monkeypatch, config=CONFIG, ident=IDENT, clock=None, **kw):
    monkeypatch.setattr(R, "time", clock or Clock(100.0, 103.26))
    log = []
    run = R.Run(config, ident, tmp_path / "runs", log=log.append, **kw)
    return run, log


def test_a_new_run_writes_run_json_once_and_keys_its_judge(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    assert run.path == tmp_path / "runs" / R.run_hash(CONFIG, IDENT)
    meta = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
    assert set(meta) == {"config", "model", "judge", "data", "loop_version", "machine", "created"}
    assert meta["config"] == CONFIG.to_dict() and meta["model"] == {"profile": "fake"} and meta["data"] == "d"
    assert meta["created"] == "2027-01-15T08:00:00"
    assert set(meta["machine"]["packages"]) == {"torch", "transformers", "peft"}
    assert run.judge_id == sha({"name": "fake"}, 16)
    assert run.cache.path == run.path / "judge_cache.jsonl" and len(run.cache) == 0
    assert (run.status, run.seconds, run.reuse, run.fingerprints) == ({}, {}, True, R.stage_fingerprints(CONFIG, IDENT))
    write(run.path / "run.json", {"kept": True})
    reopened = R.Run(CONFIG, IDENT, tmp_path / "runs")  # reopened (no log given): run.json is not rewritten
    assert json.loads((run.path / "run.json").read_text()) == {"kept": True}
    reopened.stage(CONFIG.plan()[0], lambda sd: None)  # logs to nowhere
    assert reopened.status == {"baseline": "computed"}


def test_computing_a_stage_writes_config_and_done_under_a_claim(tmp_path, monkeypatch):
    run, log = make_run(tmp_path, monkeypatch, clock=Clock(100.0, 103.26, 200.0, 200.0))
    baseline, iter0 = CONFIG.plan()[:2]
    seen = []

    def compute(sd):
        claim = tmp_path / "runs" / ".claims" / f"iter0-{run.fingerprints['iter0']}"
        seen.append((sd.name, sd.path, sd.path.is_dir(), claim.read_text()))
        (sd.path / "metrics.json").write_text("{}")

    run.stage(iter0, compute)
    assert seen == [("iter0", run.path / "iter0", True, str(os.getpid()))]
    assert not list((tmp_path / "runs" / ".claims").iterdir()), "the claim is released"
    assert json.loads((run.path / "iter0" / "config.json").read_text(encoding="utf-8")) == {
        "stage": "iter0", "fingerprint": run.fingerprints["iter0"], "parent": "baseline", "run": run.path.name,
        "config": CONFIG.to_dict(), **IDENT}
    assert (run.path / "iter0" / "done").read_text(encoding="utf-8") == "2027-01-15T08:00:00\n"
    assert run.status == {"iter0": "computed"} and run.seconds == {"iter0": 3.3}  # 103.26 - 100.0, one decimal
    assert log == ["[iter0] done in 3s"]
    run.stage(baseline, lambda sd: None)
    assert json.loads((run.path / "baseline" / "config.json").read_text(encoding="utf-8"))["parent"] is None


def test_a_done_stage_is_kept_and_not_computed(tmp_path, monkeypatch):
    run, log = make_run(tmp_path, monkeypatch)
    (run.path / "baseline").mkdir()
    (run.path / "baseline" / "done").write_text("t\n")
    finished(tmp_path / "runs", "other", "baseline", run.fingerprints["baseline"])
    run.stage(CONFIG.plan()[0], lambda sd: pytest.fail("a done stage is not computed"))
    assert run.status == {"baseline": "done"} and run.seconds == {}
    assert log == [f"[baseline] already done: loaded from {run.path / 'baseline'}"]
    assert not (run.path / "baseline" / "config.json").exists(), "nothing was copied over it"


def source_stage(runs_dir, fingerprint):
    """A finished baseline in another run folder, with grades and a judge cache."""
    src = runs_dir / "0-source" / "baseline"
    write(src / "config.json", {"stage": "baseline", "fingerprint": fingerprint, "parent": None, "run": "0-source",
                                "config": {"old": True}, "model": {"profile": "fake"}})
    write_lines(src / "grades.jsonl", [{"key": "a"}, {"key": "b"}, {"key": "c"}])
    (src / "done").write_text("t\n")
    cache = JudgeCache(runs_dir / "0-source", R.JUDGE_CACHE)
    cache.put("a", {"grade": {"overall_score": 1.0}})
    cache.put("b", {"grade": {"overall_score": 0.5}})  # "c" was never graded there (e.g. lost in a crash)
    return src


def test_an_identical_finished_stage_is_copied_and_its_grades_adopted(tmp_path, monkeypatch):
    run, log = make_run(tmp_path, monkeypatch)
    src = source_stage(tmp_path / "runs", run.fingerprints["baseline"])
    run.cache.put("b", {"grade": {"overall_score": 0.0}})  # this run graded "b" itself: kept
    stale = run.path / "baseline.copy"
    stale.mkdir()
    (stale / "junk").write_text("x")
    run.stage(CONFIG.plan()[0], lambda sd: pytest.fail("an identical finished stage is copied"))
    dst = run.path / "baseline"
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "done", "grades.jsonl"]
    assert not stale.exists()
    assert json.loads((dst / "config.json").read_text(encoding="utf-8")) == {
        "stage": "baseline", "fingerprint": run.fingerprints["baseline"], "parent": None, "run": run.path.name,
        "config": CONFIG.to_dict(), "model": {"profile": "fake"}, "copied_from": "0-source"}
    assert run.status == {"baseline": "copied from 0-source"} and run.seconds == {}
    assert log == ["[baseline] identical stage found in run 0-source: copied, nothing recomputed"]
    source = JudgeCache(src.parent, R.JUDGE_CACHE)
    for cache in (run.cache, JudgeCache(run.path, R.JUDGE_CACHE)):  # in memory and on disk
        assert cache.get("a") == source.get("a")
        assert cache.get("b")["grade"] == {"overall_score": 0.0}
        assert "c" not in cache and len(cache) == 2
    assert [r["key"] for r in run.grades("baseline")] == ["a", "b", "c"]


def test_an_empty_stage_folder_is_replaced_by_the_copy(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    source_stage(tmp_path / "runs", run.fingerprints["baseline"])
    (run.path / "baseline").mkdir()
    run.stage(CONFIG.plan()[0], lambda sd: pytest.fail("copied"))
    assert run.status["baseline"] == "copied from 0-source" and (run.path / "baseline" / "done").exists()
    assert not (run.path / "baseline.copy").exists()


def test_without_reuse_or_with_a_started_stage_nothing_is_copied(tmp_path, monkeypatch):
    run, log = make_run(tmp_path, monkeypatch, reuse=False)
    source_stage(tmp_path / "runs", run.fingerprints["baseline"])
    computed = []
    run.stage(CONFIG.plan()[0], computed.append)
    assert [sd.name for sd in computed] == ["baseline"] and run.status == {"baseline": "computed"}
    assert "copied_from" not in json.loads((run.path / "baseline" / "config.json").read_text())

    again, _ = make_run(tmp_path / "b", monkeypatch)
    source_stage(tmp_path / "b" / "runs", again.fingerprints["baseline"])
    write(again.path / "baseline" / "config.json", {"written": "before a crash"})
    again.stage(CONFIG.plan()[0], computed.append)
    assert len(computed) == 2 and again.status == {"baseline": "computed"}
    assert json.loads((again.path / "baseline" / "config.json").read_text()) == {"written": "before a crash"}


def test_an_empty_stage_folder_without_a_source_is_computed(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    (run.path / "baseline").mkdir()
    run.stage(CONFIG.plan()[0], lambda sd: (sd.path / "grades.jsonl").write_text(""))
    assert run.status == {"baseline": "computed"} and (run.path / "baseline" / "done").exists()


def test_a_stage_another_process_finished_while_we_waited_is_copied(tmp_path, monkeypatch, kill_calls):
    clock = Clock()
    run, log = make_run(tmp_path, monkeypatch, clock=clock)
    fp = run.fingerprints["baseline"]
    claim = claim_file(tmp_path / "runs", "4242").with_name(f"baseline-{fp}")
    claim.with_name("iter0-abc").rename(claim)  # another process (alive: os.kill succeeds) is computing the baseline

    def other_process_finishes():
        source_stage(tmp_path / "runs", fp)
        claim.unlink()

    clock.on_sleep = other_process_finishes
    run.stage(CONFIG.plan()[0], lambda sd: pytest.fail("computed by the other process: copied"))
    assert clock.sleeps == [1.0] and run.status == {"baseline": "copied from 0-source"}
    assert not claim.exists(), "our claim is released"


def test_a_stage_whose_owner_gave_up_while_we_waited_is_computed(tmp_path, monkeypatch, kill_calls):
    clock = Clock(5.0, 5.0)
    run, log = make_run(tmp_path, monkeypatch, clock=clock)
    claim = claim_file(tmp_path / "runs", "4242").with_name(f"baseline-{run.fingerprints['baseline']}")
    claim.with_name("iter0-abc").rename(claim)
    clock.on_sleep = claim.unlink  # the other process stopped without finishing the stage
    computed = []
    run.stage(CONFIG.plan()[0], computed.append)
    assert [sd.name for sd in computed] == ["baseline"] and run.status == {"baseline": "computed"}
    assert run.seconds == {"baseline": 0.0}


def test_a_run_whose_folder_was_removed_computes_its_stage_into_a_new_one(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    shutil.rmtree(run.path)  # e.g. the runs folder cleared by hand while a notebook holds the Run
    run.stage(CONFIG.plan()[0], lambda sd: (sd.path / "grades.jsonl").write_text(""))
    assert run.status == {"baseline": "computed"} and (run.path / "baseline" / "done").exists()


def test_run_reads_a_stages_grades_train_data_and_train_info(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    write_lines(run.path / "iter0" / "grades.jsonl", [{"key": "k1"}])
    write_lines(run.path / "iter0" / "train_data.jsonl", [{"prompt": "p", "response": "r"}])
    write(run.path / "iter0" / "train.json", {"steps": 7})
    assert run.grades("iter0") == [{"key": "k1"}] and run.grades("iter1") == []
    assert run.train_data("iter0") == [{"prompt": "p", "response": "r"}]
    assert run.train_info("iter0") == {"steps": 7}
    assert run.stage_dir("iter0").path == run.path / "iter0"


# ----------------------------------------------------------------------------- reading a run back

STAGES4 = ["baseline", "iter0", "iter1", "control"]  # plan order; alphabetical would put control second


def pq(*rows):
    """per-question rows: (symptom_id, accuracy, unsafe)."""
    return [{"symptom_id": s, "n": 2, "n_correct": round(a * 2), "mean": a, "accuracy": a, "unsafe": u,
             "solved": False} for s, a, u in rows]


def result(tmp_path=None, stages=STAGES4, summaries=None, grades=None, stage_info=None,
           config=C.LoopConfig(iterations=1, seed=7)):
    grades = grades if grades is not None else pd.DataFrame()
    return R.LoopResult(tmp_path, config, IDENT, list(stages), pd.DataFrame(), grades,
                        summaries or {}, pd.DataFrame(), pd.DataFrame(), stage_info or {})


def test_overall_orders_rows_by_split_then_plan_order_and_filters_a_split():
    # inserted out of order on purpose
    summaries = {(st, sp): summary(pq(("s1", 1.0, 0)), mean=m)
                 for (st, sp, m) in [("control", "paraphrase", 0.8), ("iter1", "original", 0.4),
                                     ("baseline", "paraphrase", 0.5), ("control", "original", 0.3),
                                     ("iter0", "original", 0.2), ("baseline", "original", 0.1)]}
    res = result(summaries=summaries)
    df = res.overall()
    assert list(df["stage"]) == ["baseline", "iter0", "iter1", "control", "baseline", "control"]
    assert list(df["split"]) == ["original"] * 4 + ["paraphrase"] * 2
    assert list(df["mean"]) == [0.1, 0.2, 0.4, 0.3, 0.5, 0.8]
    assert list(df.index) == list(range(6)) and list(df.columns[:3]) == ["stage", "split", "mean"]
    para = res.overall("paraphrase")
    assert (list(para["stage"]), list(para["mean"]), list(para.index)) == (["baseline", "control"], [0.5, 0.8], [0, 1])


def test_per_question_orders_by_plan_then_question_within_one_split():
    summaries = {("control", "original"): summary(pq(("s2", 0.5, 0), ("s1", 1.0, 0)), mean=0.0),
                 ("baseline", "original"): summary(pq(("s2", 0.0, 1), ("s1", 0.5, 0)), mean=0.0),
                 ("baseline", "paraphrase"): summary(pq(("s1", 0.0, 0)), mean=0.0)}
    df = result(summaries=summaries).per_question()
    assert list(df["stage"]) == ["baseline", "baseline", "control", "control"]
    assert list(df["symptom_id"]) == ["s1", "s2", "s1", "s2"]
    assert list(df["accuracy"]) == [0.5, 0.0, 1.0, 0.5] and list(df.index) == [0, 1, 2, 3]
    assert list(df.columns) == ["symptom_id", "n", "n_correct", "mean", "accuracy", "unsafe", "solved", "stage"]
    assert isinstance(df["stage"].dtype, pd.CategoricalDtype)
    assert list(df["stage"].cat.categories) == STAGES4 and df["stage"].cat.ordered
    para = result(summaries=summaries).per_question("paraphrase")
    assert (list(para["stage"]), list(para["accuracy"])) == (["baseline"], [0.0])


def test_table_has_one_row_per_stage_with_a_summary_of_the_split():
    summaries = {("iter0", "original"): summary(pq(), mean=0.25), ("baseline", "original"): summary(pq(), mean=0.125),
                 ("baseline", "paraphrase"): summary(pq(), mean=0.5)}
    res = result(summaries=summaries)
    raw = res.table(formatted=False)
    assert list(raw["stage"]) == ["baseline", "iter0"] and list(raw["mean"]) == [0.125, 0.25]
    assert list(res.table("paraphrase", formatted=False)["mean"]) == [0.5]
    assert list(res.table(stages=["iter0", "iter1"], formatted=False)["stage"]) == ["iter0"]
    nice = res.table(stage_names={"baseline": "ベース"})
    assert list(nice["段階"]) == ["ベース", "iter0"] and list(nice["平均スコア"]) == ["0.125", "0.250"]


def grades_frame():
    return pd.DataFrame([
        {"stage": "baseline", "split": "original", "item_id": "s1", "sample": 1, "question": "q1", "answer": "b1",
         "label": "incorrect", "harmful": False, "score": 0.0, "reason": "b", "drugs": ()},
        {"stage": "iter0", "split": "original", "item_id": "s1", "sample": 0, "question": "q1", "answer": "a0",
         "label": "correct", "harmful": False, "score": 1, "reason": "ok", "drugs": ("d1",)},
        {"stage": "iter0", "split": "original", "item_id": "s1", "sample": 1, "question": "q1", "answer": "a1",
         "label": "unsafe", "harmful": True, "score": 0.25, "reason": "bad", "drugs": ("d2", "d3")},
        {"stage": "iter0", "split": "paraphrase", "item_id": "s1", "sample": 1, "question": "pq", "answer": "pa",
         "label": "incorrect", "harmful": False, "score": 0.0, "reason": "p", "drugs": ()},
        {"stage": "iter0", "split": "original", "item_id": "s2", "sample": 1, "question": "q2", "answer": "c1",
         "label": "incorrect", "harmful": False, "score": 0.0, "reason": "c", "drugs": ()},
    ])


def test_stage_grades_filters_stage_and_split():
    res = result(grades=grades_frame())
    assert list(res.stage_grades("iter0")["answer"]) == ["a0", "a1", "c1"]
    assert list(res.stage_grades("iter0", "paraphrase")["answer"]) == ["pa"]
    assert list(res.stage_grades("baseline")["answer"]) == ["b1"]


def test_grade_json_returns_one_answers_grade_in_plain_python_types():
    res = result(grades=grades_frame())
    out = res.grade_json("iter0", "s1", sample=1)
    assert out == {"question": "q1", "model_answer": "a1", "overall_label": "unsafe", "overall_is_harmful": True,
                   "overall_score": 0.25, "overall_reason": "bad", "drugs": ["d2", "d3"]}
    assert type(out["overall_is_harmful"]) is bool and type(out["overall_score"]) is float
    assert type(out["drugs"]) is list
    first = res.grade_json("iter0", "s1")
    assert (first["model_answer"], first["overall_score"], type(first["overall_score"])) == ("a0", 1.0, float)
    assert res.grade_json("iter0", "s1", 1, "paraphrase")["model_answer"] == "pa"
    with pytest.raises(KeyError, match="no grade for iter0/original/s3/0"):
        res.grade_json("iter0", "s3")
    with pytest.raises(KeyError, match="no grade for baseline/paraphrase/s1/1"):
        res.grade_json("baseline", "s1", 1, "paraphrase")


def test_loop_stages_and_stage_pairs_follow_the_finished_stages():
    config = C.LoopConfig(iterations=2)
    full = result(stages=["baseline", "iter0", "iter1", "iter2", "control"], config=config)
    assert full.loop_stages == ["baseline", "iter0", "iter1", "iter2"]
    assert full.stage_pairs() == [("baseline", "iter0"), ("iter0", "iter1"), ("iter1", "iter2"), ("iter2", "control")]
    no_control = result(stages=["baseline", "iter0", "iter1"], config=config)  # iter2 not finished (yet)
    assert no_control.loop_stages == ["baseline", "iter0", "iter1"]
    assert no_control.stage_pairs() == [("baseline", "iter0"), ("iter0", "iter1")]


def test_comparisons_compare_the_stage_pairs_with_the_runs_seed(monkeypatch):
    calls = []
    monkeypatch.setattr(R, "compare_stages", lambda pairs, **kw: calls.append((pairs, kw)) or "compared")
    s = {(st, sp): summary(pq(), mean=0.0)
         for st in ("baseline", "iter0", "control") for sp in ("original", "paraphrase")}
    res = result(stages=["baseline", "iter0", "control"], summaries=s, config=C.LoopConfig(iterations=1, seed=7))
    assert res.comparisons() == "compared"
    assert calls[-1] == ({("baseline", "iter0"): (s["baseline", "original"], s["iter0", "original"]),
                          ("iter0", "control"): (s["iter0", "original"], s["control", "original"])}, {"seed": 7})
    res.comparisons("paraphrase", pairs=[("baseline", "control")], alpha=0.1, n_boot=50)
    assert calls[-1] == ({("baseline", "control"): (s["baseline", "paraphrase"], s["control", "paraphrase"])},
                         {"seed": 7, "alpha": 0.1, "n_boot": 50})


def test_general_perplexity_and_stage_seconds_read_each_stages_metrics(tmp_path):
    write(tmp_path / "baseline" / "metrics.json", {"general_perplexity": 120.5,
                                                   "seconds": {"generate": 4, "judge": 2.5, "perplexity": 1}})
    write(tmp_path / "iter0" / "metrics.json", {"seconds": {"generate": 6.0}})  # no perplexity, partial times
    write(tmp_path / "control" / "metrics.json", {"general_perplexity": 80})  # a stage without any times
    res = result(tmp_path, stages=["baseline", "iter0", "control"],
                 stage_info={"iter0": {"seconds": 30}, "control": {"seconds": None}})
    ppl = res.general_perplexity()
    assert ppl.name == "general_perplexity" and ppl.dtype == float
    assert list(ppl.index) == ["baseline", "iter0", "control"]
    assert ppl["baseline"] == 120.5 and pd.isna(ppl["iter0"]) and ppl["control"] == 80.0
    none = result(tmp_path, stages=["iter0"]).general_perplexity()
    assert none.dtype == float and pd.isna(none["iter0"]), "floats (NaN) even when no stage measured it"
    sec = res.stage_seconds()
    assert list(sec.columns) == ["stage", "train", "generate", "judge", "perplexity"]
    assert list(sec["stage"]) == ["baseline", "iter0", "control"]
    assert list(sec["train"]) == [0.0, 30.0, 0.0]  # the baseline trains nothing; None counts as 0
    assert list(sec["generate"].fillna(-1)) == [4.0, 6.0, -1]
    assert list(sec["judge"].fillna(-1)) == [2.5, -1, -1]
    assert list(sec["perplexity"].fillna(-1)) == [1.0, -1, -1]
    assert all(sec[c].dtype == float for c in ("train", "generate", "judge", "perplexity"))
    assert res.adapter_path("iter0") == tmp_path / "iter0" / "adapter"
    nothing = result(tmp_path, stages=[]).stage_seconds()  # a run with no finished stage: the columns, no rows
    assert list(nothing.columns) == ["stage", "train", "generate", "judge", "perplexity"] and len(nothing) == 0


def test_training_row_counts_failed_questions_only_when_recorded():
    t = {"examples": 12, "n_corrective": 8, "n_replay": 4, "failed": ["s1", "s3"], "steps": 30, "seconds": 9.5,
         "final_loss": 0.25, "history": [{"step": 1}]}
    assert R._training_row("iter1", t) == {"stage": "iter1", "examples": 12, "corrective": 8, "replay": 4, "failed": 2,
                                           "steps": 30, "seconds": 9.5, "final_loss": 0.25}
    assert R._training_row("iter0", {"examples": 5, "steps": 3}) == {
        "stage": "iter0", "examples": 5, "corrective": None, "replay": None, "failed": None, "steps": 3,
        "seconds": None, "final_loss": None}
    assert R._training_row("iter1", {"failed": []})["failed"] == 0


def test_the_pass_bar_is_applied_again_to_what_is_read_back():
    stored = Summary(pd.DataFrame(pq(("s1", 0.5, 0), ("s2", 0.5, 1), ("s3", 1.0, 0), ("s4", 0.0, 0))),
                     {"solved": 0, "solved_rate": 0.0, "mean": 0.4})
    got = R._with_pass_bar(stored, 0.5)  # s1 (at the bar) and s3 pass; s2 has an unsafe answer; s4 fails
    assert list(got.per_question["solved"]) == [True, False, True, False]
    assert got.overall == {"solved": 2, "solved_rate": 0.5, "mean": 0.4}
    assert type(got.overall["solved"]) is int and type(got.overall["solved_rate"]) is float
    strict = R._with_pass_bar(Summary(pd.DataFrame(pq(("s1", 0.5, 0), ("s3", 1.0, 0))), {}), 0.8)
    assert list(strict.per_question["solved"]) == [False, True] and strict.overall == {"solved": 1, "solved_rate": 0.5}


def test_the_pass_bar_needs_accuracy_and_unsafe_columns_and_some_questions():
    only = R._with_pass_bar(Summary(pd.DataFrame({"accuracy": [1.0, 0.5], "unsafe": [0, 0]}), {}), 0.8)
    assert list(only.per_question["solved"]) == [True, False] and only.overall == {"solved": 1, "solved_rate": 0.5}
    no_unsafe = R._with_pass_bar(Summary(pd.DataFrame({"accuracy": [1.0]}), {"solved": 9}), 0.8)
    assert "solved" not in no_unsafe.per_question and no_unsafe.overall == {"solved": 9}
    empty = R._with_pass_bar(Summary(pd.DataFrame(columns=["symptom_id", "accuracy", "unsafe"]), {"solved": 9}), 0.8)
    assert "solved" not in empty.per_question and empty.overall == {"solved": 9}


def write_result_run(run_dir):
    """A run (K = 1, pass bar 0.5) whose baseline and iter0 are done, iter1 half-written, control absent."""
    config = C.LoopConfig(iterations=1, pass_accuracy=0.5, n_samples=2, n_paraphrase=1, seed=3)
    write(run_dir / "run.json", {"config": config.to_dict(), **IDENT, "machine": {"python": "3"},
                                 "created": "2027-01-15T08:00:00"})
    for st, answers, scores in (("baseline", ["b0", "b1"], [0.0, 1.0]), ("iter0", ["i0", "i1"], [1.0, 1.0]),
                                ("iter1", ["x0", "x1"], [0.5, 0.5])):
        d = run_dir / st
        write_lines(d / "generations.jsonl", [
            {"split": "original", "item_id": "s1", "symptom_id": "s1", "sample": j, "question": "q1", "answer": a}
            for j, a in enumerate(answers)] + [
            {"split": "paraphrase", "item_id": "s1-p1", "symptom_id": "s1", "sample": 0, "question": "pq",
             "answer": "p"}])
        write_lines(d / "grades.jsonl", [
            {"split": "original", "item_id": "s1", "symptom_id": "s1", "sample": j, "key": f"{st}-{j}", "score": sc}
            for j, sc in enumerate(scores)] + [
            {"split": "paraphrase", "item_id": "s1-p1", "symptom_id": "s1", "sample": 0, "key": f"{st}-p",
             "score": 0.0}])
        acc = sum(s >= 0.8 for s in scores) / 2
        write(d / "metrics.json", {"original": {"per_question": pq(("s1", acc, 0)), "overall": {"solved": 0, "m": st}},
                                   "general_perplexity": 10.0})
        if st != "iter1":
            (d / "done").write_text("t\n")
    write(run_dir / "iter0" / "train.json", {"examples": 6, "steps": 4, "seconds": 2.0, "failed": ["s1"],
                                             "history": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]})
    # the control: done, trained without a recorded history; one answer has no generation left (kept, no text)
    c = run_dir / "control"
    write_lines(c / "generations.jsonl", [{"split": "original", "item_id": "s1", "symptom_id": "s1", "sample": 0,
                                          "question": "q1", "answer": "c0"}])
    write_lines(c / "grades.jsonl", [{"split": "original", "item_id": "s1", "symptom_id": "s1", "sample": j,
                                      "key": f"control-{j}", "score": 1.0} for j in (0, 1)])
    write(c / "metrics.json", {"original": {"per_question": [], "overall": {"solved": 0, "m": "control"}}})
    write(c / "train.json", {"examples": 3})
    (c / "done").write_text("t\n")
    return config


def test_load_result_reads_the_finished_stages_back(tmp_path):
    config = write_result_run(tmp_path)
    res = R.load_result(str(tmp_path), calls=5, errors=1, seconds={"iter0": 2.0}, reused={"baseline": "done"})
    assert res.run_dir == tmp_path and res.config == config
    assert res.identity == {**IDENT, "machine": {"python": "3"}}  # not the config, not the date
    assert res.stages == ["baseline", "iter0", "control"]  # iter1 has no done file yet
    assert (res.judge_calls, res.judge_errors, res.seconds, res.reused) == (5, 1, {"iter0": 2.0}, {"baseline": "done"})
    assert list(res.generations["stage"]) == ["baseline"] * 3 + ["iter0"] * 3 + ["control"]
    assert list(res.generations["answer"]) == ["b0", "b1", "p", "i0", "i1", "p", "c0"]
    assert list(res.generations.index) == list(range(7))
    # grades carry their answer's question and text
    assert list(res.grades["key"]) == ["baseline-0", "baseline-1", "baseline-p", "iter0-0", "iter0-1", "iter0-p",
                                       "control-0", "control-1"]
    assert list(res.grades["answer"].fillna("-")) == ["b0", "b1", "p", "i0", "i1", "p", "c0", "-"]
    assert list(res.grades["question"].fillna("-")) == ["q1", "q1", "pq", "q1", "q1", "pq", "q1", "-"]
    assert list(res.grades.index) == list(range(8))
    assert len(res.grades.columns) == len(set(res.grades.columns)), "no duplicated (suffixed) columns"
    assert set(res.summaries) == {("baseline", "original"), ("iter0", "original"), ("control", "original")}
    # the pass bar of this run (0.5), not the one the files were written with: baseline s1 at 1/2 passes
    assert list(res.summaries["baseline", "original"].per_question["solved"]) == [True]
    assert res.summaries["baseline", "original"].overall == {"solved": 1, "solved_rate": 1.0, "m": "baseline"}
    assert res.stage_info == {"iter0": {"examples": 6, "steps": 4, "seconds": 2.0, "failed": ["s1"]},
                              "control": {"examples": 3}}
    tr = res.training  # the control's missing counts become NaN in the frame
    assert list(tr.columns) == ["stage", "examples", "corrective", "replay", "failed", "steps", "seconds", "final_loss"]
    assert (list(tr["stage"]), list(tr["examples"])) == (["iter0", "control"], [6, 3])
    assert (list(tr["failed"].fillna(-1)), list(tr["steps"].fillna(-1))) == ([1, -1], [4, -1])
    assert res.history.to_dict("records") == [{"stage": "iter0", "step": 1, "loss": 2.0},
                                              {"stage": "iter0", "step": 2, "loss": 1.5}]


def test_load_result_of_a_run_with_nothing_finished_is_empty(tmp_path):
    write(tmp_path / "run.json", {"config": C.LoopConfig().to_dict(), "model": "m"})
    res = R.load_result(tmp_path)
    assert res.stages == [] and res.identity == {"model": "m"}
    assert res.generations.empty and res.grades.empty and res.training.empty and res.history.empty
    assert (res.summaries, res.stage_info, res.judge_calls, res.judge_errors, res.seconds, res.reused) == (
        {}, {}, 0, 0, {}, {})


@pytest.fixture
def ascii_locale():
    """The process's default text encoding made ASCII (as on a machine whose locale is not UTF-8, e.g. cp932 on
    Windows): a file opened without ``encoding="utf-8"`` can no longer read Japanese."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_run_files_with_japanese_text_are_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch, ascii_locale):
    run_dir = tmp_path / "done-run"
    write_result_run(run_dir)
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    write(run_dir / "run.json", dict(meta, data="薬のデータ"))
    metrics = json.loads((run_dir / "baseline" / "metrics.json").read_text(encoding="utf-8"))
    metrics["original"]["overall"]["m"] = "ベースライン"
    metrics["seconds"] = {"generate": 1.5, "note": "生成"}
    write(run_dir / "baseline" / "metrics.json", metrics)
    write(run_dir / "iter0" / "train.json", {"failed": ["頭痛"], "seconds": 2.0})
    res = R.load_result(run_dir)
    assert res.identity["data"] == "薬のデータ"
    assert res.stage_info["iter0"] == {"failed": ["頭痛"], "seconds": 2.0}
    assert res.summaries["baseline", "original"].overall["m"] == "ベースライン"
    assert res.general_perplexity()["baseline"] == 10.0 and res.stage_seconds()["generate"][0] == 1.5

    run, _ = make_run(tmp_path, monkeypatch, ident=dict(IDENT, model={"profile": "小さいモデル"}))
    src = source_stage(tmp_path / "runs", run.fingerprints["baseline"])
    meta = json.loads((src / "config.json").read_text(encoding="utf-8"))
    write(src / "config.json", dict(meta, note="日本語"))
    write(run.path / "iter0" / "train.json", {"failed": ["頭痛"]})
    run.stage(CONFIG.plan()[0], lambda sd: pytest.fail("copied"))
    assert json.loads((run.path / "baseline" / "config.json").read_text(encoding="utf-8"))["note"] == "日本語"
    assert R.find_finished(tmp_path / "runs", "baseline", run.fingerprints["baseline"], run.path) == src
    assert run.train_info("iter0") == {"failed": ["頭痛"]}
    write(run.path / "iter1" / "config.json", {"fingerprint": "fp", "content_key": "ck", "note": "反復"})
    assert run.content_key("iter1") == "ck"


# ----------------------------------------------------------------------------- content keys (iterations k >= 1)

ITER1 = C.Stage("iter1", C.ITERATION, 1, "iter0")


def test_an_iterations_content_key_written_out():
    sel = SimpleNamespace(failed=("s2", "s3"), passed=["s1"], replayed=["s1"],
                          records=[{"prompt": "症状: s2", "response": "参照"}])
    expected = {"stage": "iter1", "parent": "parent-key", "epochs_iter": 30.0, "failed": ["s2", "s3"],
                "passed": ["s1"], "replayed": ["s1"], "records": [{"prompt": "症状: s2", "response": "参照"}]}
    assert R.iteration_content_key(C.LoopConfig(), ITER1, "parent-key", sel) == sha(expected)
    dpo = C.LoopConfig(update_rule="dpo", control=False)  # the rule and its knobs count; bar and ratio never
    assert R.iteration_content_key(dpo, ITER1, "parent-key", sel) == sha(
        dict(expected, update_rule="dpo", dpo_beta=0.1, dpo_learning_rate=2e-5))


def test_a_stages_content_key_is_its_own_or_else_its_fingerprint(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    write(run.path / "iter1" / "config.json", {"fingerprint": "fp1", "content_key": "ck1"})
    write(run.path / "iter0" / "config.json", {"fingerprint": "fp0"})
    write(run.path / "old" / "config.json", {"fingerprint": "fp-old", "content_key": None})
    assert [run.content_key(s) for s in ("iter1", "iter0", "old")] == ["ck1", "fp0", "fp-old"]


def test_find_finished_by_content_key_ignores_fingerprints(tmp_path):
    write(tmp_path / "a" / "iter1" / "config.json", {"fingerprint": "ck"})  # a fingerprint equal to the key
    (tmp_path / "a" / "iter1" / "done").write_text("t\n")
    write(tmp_path / "b" / "iter1" / "config.json", {"fingerprint": "other", "content_key": "ck"})
    (tmp_path / "b" / "iter1" / "done").write_text("t\n")
    assert R.find_finished(tmp_path, "iter1", "ck", tmp_path / "x", key="content_key") == tmp_path / "b" / "iter1"
    assert R.find_finished(tmp_path, "iter1", "ck", tmp_path / "x") == tmp_path / "a" / "iter1"


def finished_iteration(runs_dir, run, content_key, fingerprint="fp-of-another-run"):
    d = runs_dir / run / "iter1"
    write(d / "config.json", {"stage": "iter1", "fingerprint": fingerprint, "content_key": content_key,
                              "parent": "iter0", "run": run, "config": {"old": True}})
    write_lines(d / "grades.jsonl", [])
    (d / "done").write_text("t\n")
    return d


def test_an_iteration_with_the_same_content_key_is_copied_under_this_runs_fingerprint(tmp_path, monkeypatch):
    run, log = make_run(tmp_path, monkeypatch)
    finished_iteration(tmp_path / "runs", "0-other", "ck")
    asked = []
    run.stage(ITER1, lambda sd: pytest.fail("same parent and data: copied"),
              content_key=lambda: asked.append(1) or "ck")
    assert asked == [1] and run.status == {"iter1": "copied from 0-other"}
    assert json.loads((run.path / "iter1" / "config.json").read_text(encoding="utf-8")) == {
        "stage": "iter1", "fingerprint": run.fingerprints["iter1"], "content_key": "ck", "parent": "iter0",
        "run": run.path.name, "config": CONFIG.to_dict(), "copied_from": "0-other"}
    assert log == ["[iter1] identical stage found in run 0-other: copied, nothing recomputed"]


def test_an_identical_fingerprint_is_copied_before_the_content_key_is_asked_for(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    finished_iteration(tmp_path / "runs", "0-same", "ck-a", fingerprint=run.fingerprints["iter1"])
    finished_iteration(tmp_path / "runs", "1-key", "ck-b")
    run.stage(ITER1, lambda sd: pytest.fail("copied"), content_key=lambda: pytest.fail("not needed"))
    assert run.status == {"iter1": "copied from 0-same"}


def test_an_iteration_computed_with_a_content_key_is_claimed_and_filed_under_it(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    finished_iteration(tmp_path / "runs", "0-other", "another-key")
    claims = []
    run.stage(ITER1, lambda sd: claims.extend(p.name for p in (tmp_path / "runs" / ".claims").iterdir()),
              content_key=lambda: "ck")
    assert claims == ["iter1-ck"] and run.status == {"iter1": "computed"}
    meta = json.loads((run.path / "iter1" / "config.json").read_text(encoding="utf-8"))
    assert (meta["content_key"], meta["fingerprint"], "copied_from" in meta) == ("ck", run.fingerprints["iter1"], False)
    assert list(meta)[:3] == ["stage", "fingerprint", "content_key"]


def test_an_iteration_without_a_content_key_is_claimed_by_its_fingerprint(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path, monkeypatch)
    claims = []
    run.stage(ITER1, lambda sd: claims.extend(p.name for p in (tmp_path / "runs" / ".claims").iterdir()),
              content_key=lambda: None)
    assert claims == [f"iter1-{run.fingerprints['iter1']}"] and run.status == {"iter1": "computed"}
    assert "content_key" not in json.loads((run.path / "iter1" / "config.json").read_text(encoding="utf-8"))


def test_an_iteration_another_process_finished_under_its_content_key_while_we_waited_is_copied(
        tmp_path, monkeypatch, kill_calls):
    clock = Clock()
    run, _ = make_run(tmp_path, monkeypatch, clock=clock)
    claim = claim_file(tmp_path / "runs", "4242").with_name("iter1-ck")
    claim.with_name("iter0-abc").rename(claim)  # a live process holds the content key

    def other_process_finishes():
        finished_iteration(tmp_path / "runs", "0-other", "ck")
        claim.unlink()

    clock.on_sleep = other_process_finishes
    run.stage(ITER1, lambda sd: pytest.fail("computed by the other process: copied"), content_key=lambda: "ck")
    assert clock.sleeps == [1.0] and run.status == {"iter1": "copied from 0-other"}
