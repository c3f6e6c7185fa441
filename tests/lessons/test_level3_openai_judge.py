"""The real judge path end to end: the level-3 lesson with judge="openai" against a local
OpenAI-compatible server (tests/level3/fake_openai_server.py) that grades like the rubric, answers
some requests with malformed JSON and one with HTTP 429. Nothing the run writes may contain the key.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "level3"))
from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402

KEY = "sk-test-DoNotLeak-1234567890abcdef"


@pytest.fixture
def environment(tmp_path):
    """The kernel inherits the runner's environment: key, server, and folders of the test's own."""
    names = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "COURSE_RUNS_DIR", "COURSE_JUDGE_CACHE_DIR")
    saved = {n: os.environ.get(n) for n in names}
    yield tmp_path
    for n, v in saved.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v


@pytest.mark.notebook
def test_level3_runs_with_the_openai_judge_and_leaks_no_key(environment):
    from course_lib.publish.runner import run_all

    tmp = environment
    # malformed replies and a rate limit among the first requests: the judge must retry them
    replies = [Reply(content="これは JSON ではありません"), Reply(status=429, headers={"retry-after-ms": "10"}),
               Reply(content='{"overall_label": "correct"}')]
    with FakeOpenAIServer(replies=replies) as server:
        os.environ.update({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url,
                           "COURSE_RUNS_DIR": str(tmp / "runs"), "COURSE_JUDGE_CACHE_DIR": str(tmp / "judge-cache")})
        out = tmp / "executed"
        # iterations=0 keeps it short: baseline and iteration 0 (no control without iterations), graded over HTTP
        report = run_all({"model_profile": "tiny", "judge": "openai", "quick": True, "seed": 0, "iterations": 0},
                         out, ["level3_loop"], cache_dir=tmp / "executed-cache")
        calls = server.calls
    result = report.results[0]
    assert result.status == "ok", result.error
    assert result.parameters["judge"] == "openai"
    assert calls > 100  # every stage's answers and both agreement sets went through the server
    written = [p for p in tmp.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in written) and any(p.name == "judge_cache.jsonl" for p in written)
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes() or b"DoNotLeak" in p.read_bytes()]
    assert not leaks, f"the API key reached: {leaks}"
