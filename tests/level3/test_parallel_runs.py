"""Several level-3 runs in worker processes give exactly the serial results, and two runs that
share a stage (same fingerprint, or an iteration with the same parent and data) compute it once:
the second waits for the first and copies it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from course_lib.level3 import config as C
from course_lib.level3.judge import RubricJudge
from course_lib.level3.parallel import can_use_workers, run_loops
from course_lib.level3.runs import StageClaim

SMALL = C.LoopConfig.for_profile("tiny", iterations=1, n_samples=1, n_paraphrase=0, max_new_tokens=8,
                                 epochs_initial=1.0, epochs_iter=1.0, control=False)


def test_a_claim_held_by_a_live_process_is_waited_for(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim_file = tmp_path / ".claims" / "iter0-abc"
        claim_file.parent.mkdir()
        claim_file.write_text(str(other.pid))
        threading.Timer(0.5, claim_file.unlink).start()  # the other process finishes its stage
        start = time.perf_counter()
        with StageClaim(tmp_path, "iter0", "abc") as claim:
            assert claim.waited and time.perf_counter() - start >= 0.5
            assert claim_file.read_text() == str(os.getpid())
        assert not claim_file.exists()
    finally:
        other.kill()


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".claims").mkdir()
    (tmp_path / ".claims" / "iter0-abc").write_text(str(dead.pid))
    with StageClaim(tmp_path, "iter0", "abc") as claim:
        assert not claim.waited


@pytest.fixture(scope="module")
def tiny():
    from course_lib.profiles import load_model

    return load_model("tiny", verbose=False)


def test_workers_only_for_the_tiny_model_with_the_default_rubric_judge(tiny):
    assert can_use_workers(tiny, RubricJudge())

    class OtherJudge:
        name = "openai"

        def config(self):
            return {"model": "gpt-4.1-mini"}

    assert not can_use_workers(tiny, OtherJudge())


def test_two_runs_in_workers_equal_the_serial_runs(tiny, tmp_path):
    configs = [SMALL, replace(SMALL, replay_ratio=0.0)]  # the second shares baseline and iter0 with the first
    judge = RubricJudge()
    par = run_loops(configs, tiny, judge, workers=2, runs_dir=tmp_path / "par", log=None)
    ser = run_loops(configs, tiny, judge, workers=1, runs_dir=tmp_path / "ser", log=None)
    for p, s in zip(par, ser):
        assert p.stages == s.stages
        cols = ["stage", "split", "item_id", "sample", "answer"]
        assert p.generations[cols].equals(s.generations[cols])
        assert p.grades["score"].tolist() == s.grades["score"].tolist()
    # each shared stage was computed once, by whichever worker claimed it first, and copied by the other;
    # at 8 new tokens no question passes, so without replay iteration 1 trains on the same data: shared too
    assert par[0].stage_info["iter1"]["passed"] == [] and par[1].stage_info["iter1"]["n_replay"] == 0
    for stage in ("baseline", "iter0", "iter1"):
        ways = sorted(r.reused[stage].split(" from ")[0] for r in par)
        assert ways == ["computed", "copied"], (stage, [r.reused for r in par])
    assert not list((tmp_path / "par" / ".claims").iterdir())
