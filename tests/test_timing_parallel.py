"""The time breakdown (course_lib.timing) and the worker pool (course_lib.parallel)."""
from __future__ import annotations

import json
import os
import time

import pytest

from course_lib import parallel, timing


def _sleep_in(category: str, seconds: float) -> str:
    """A job for a worker: time spent under ``category``, and which process ran it."""
    with timing.timed(category):
        time.sleep(seconds)
    return f"{category}:{os.getpid()}"


def test_nested_sections_are_counted_once_in_the_inner_category(monkeypatch):
    clock = iter([0.0, 10.0, 12.0, 15.0])  # outer starts at 0, inner runs 10 → 12, outer ends at 15
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    timing._seconds.clear()
    timing._stack.clear()
    with timing.timed("train"):
        with timing.timed("generate"):
            pass
    assert timing.snapshot()["train"] == pytest.approx(13.0)  # 15 s minus the inner 2 s
    assert timing.snapshot()["generate"] == pytest.approx(2.0)


def test_breakdown_puts_the_rest_under_other_and_rejects_unknown_categories():
    timing.reset()
    timing._seconds.update({"train": 3.0, "judge": 1.5})
    timing.absorb({"generate": 4.0, "not-a-category": 9.0})
    b = timing.breakdown(total=10.0)
    assert (b["train"], b["judge"], b["generate"], b["plot"]) == (3.0, 1.5, 4.0, 0.0)
    assert b["other"] == 5.5  # 10 − 3 − 1.5: worker seconds ran alongside, not inside, the wall time
    assert b["in_workers"] == 4.0 and b["total"] == 10.0
    with pytest.raises(ValueError, match="unknown timing category"):
        with timing.timed("thinking"):
            pass


def test_write_breakdown_only_when_the_runner_asks(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_REPORT_DIR", raising=False)
    timing.reset()
    assert timing.write_breakdown("lesson_x") is None
    monkeypatch.setenv("COURSE_REPORT_DIR", str(tmp_path))
    path = timing.write_breakdown("lesson_x", total=2.0)
    assert path == tmp_path / "lesson_x_timing.json"
    assert json.loads(path.read_text())["total"] == 2.0
    assert timing.read_breakdown(path)["other"] == 2.0
    path.write_text("{not json")
    assert timing.read_breakdown(path) is None


def test_jobs_run_in_two_processes_in_order_and_their_time_comes_back():
    timing.reset()
    jobs = [("train", 0.3), ("generate", 0.3), ("judge", 0.3)]
    out = parallel.run_jobs(_sleep_in, jobs, workers=2)
    assert [o.split(":")[0] for o in out] == ["train", "generate", "judge"]  # the order of the jobs
    pids = {o.split(":")[1] for o in out}
    assert str(os.getpid()) not in pids and len(pids) == 2
    b = timing.breakdown()
    for cat in ("train", "generate", "judge"):
        assert b[cat] >= 0.3
    assert b["in_workers"] >= 0.9
    # the lesson's own wait for the workers is not "other": with nothing else done here, other is ~0
    assert b["waiting_for_workers"] >= 0.3 and b["other"] < 0.5 * b["waiting_for_workers"]


def test_one_worker_is_the_serial_path_in_this_process():
    out = parallel.run_jobs(_sleep_in, [("plot", 0.0), ("plot", 0.0)], workers=1)
    assert {o.split(":")[1] for o in out} == {str(os.getpid())}


def test_course_workers_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv("COURSE_WORKERS", "1")
    assert parallel.default_workers() == 1
    monkeypatch.setenv("COURSE_WORKERS", "two")
    with pytest.raises(ValueError, match="COURSE_WORKERS"):
        parallel.default_workers()


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_kept_workers_are_reused_and_ignore_the_interrupt_jupyter_sends_when_it_stops_a_kernel(capfd):
    import signal

    try:
        first = parallel.run_jobs(_pid_after, [(0.3,), (0.3,)], workers=2, reuse_pool=True)
        assert len(set(first)) == 2 and os.getpid() not in first
        for pid in first:
            os.kill(pid, signal.SIGINT)  # what stopping the kernel sends to its whole process group
        time.sleep(0.5)
        again = parallel.run_jobs(_pid_after, [(0.3,), (0.3,)], workers=2, reuse_pool=True)
        assert set(again) == set(first), "the same two workers, still alive"
        assert "KeyboardInterrupt" not in capfd.readouterr().err
    finally:
        pool = parallel._KEPT_POOLS.pop(2, None)
        if pool is not None:
            pool.shutdown()


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """The process's state letter and parent pid from /proc (the fields after the name), or None if it is gone."""
    try:
        fields = open(f"/proc/{pid}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _workers_of(parent_pid: int) -> list[int]:
    """Pids of the spawned pool workers whose parent is ``parent_pid``."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        stat = _state_and_parent(int(entry))
        if stat is not None and stat[1] == parent_pid and b"spawn_main" in cmdline:
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    stat = _state_and_parent(pid)
    return stat is not None and stat[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table from Linux's /proc")
@pytest.mark.parametrize("reuse_pool", [False, True])
def test_busy_workers_end_when_their_kernel_is_killed(reuse_pool):
    # A kernel killed in the middle of a job (Jupyter's restart, papermill's timeout) cannot shut its pool
    # down; the workers must not go on with a job nobody will read (here: a 120 s sleep).
    import signal
    import subprocess
    import sys

    kernel = subprocess.Popen([sys.executable, "-c",
                               "import time; from course_lib.parallel import run_jobs; "
                               f"run_jobs(time.sleep, [(120,), (120,)], workers=2, reuse_pool={reuse_pool})"])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _workers_of(kernel.pid)
        assert len(workers) == 2, f"expected two workers of the kernel, found {workers}"
        time.sleep(2.0)  # both have started their 120 s job
        assert all(_alive(pid) for pid in workers)
        kernel.kill()
        kernel.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "a worker went on after its kernel was killed"
    finally:
        kernel.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
