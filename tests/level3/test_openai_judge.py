"""OpenAIJudge against a local OpenAI-compatible server (127.0.0.1 only, no network).

The server (tests/fake_openai_server.py) grades with the rubric by default, and can be
scripted to reply with invalid JSON, 429s, errors, or delays.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from fake_openai_server import FakeOpenAIServer, Reply
from course_lib.level3.judge import (
    Grade, JudgeConfigError, JudgeError, OpenAIJudge, RubricJudge, agreement_report, make_judge, self_consistency,
)
from course_lib.level3.judge.gold import load_judge_gold
from course_lib.level3.data import load_train_initial

KEY = "sk-test-SECRET-0123456789abcdef"
TRAIN = load_train_initial()
PAIRS = [(r["prompt"], r["response"]) for r in TRAIN]


@pytest.fixture
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture
def judge(server, tmp_path):
    return OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path / "cache", backoff_base=0.01,
                       max_retries=3, max_invalid_retries=2)


def test_valid_reply_becomes_a_validated_grade(judge, server):
    q, a = PAIRS[0]
    g = judge.grade(q, a)
    assert isinstance(g, Grade) and g.overall_label == "correct"
    assert g.question == q and g.model_answer == a  # added back by the judge, not copied by the model
    assert g.meta["cached"] is False and g.meta["model"] == "gpt-4.1-mini"
    assert server.calls == 1
    req = server.requests[0]
    assert req["model"] == "gpt-4.1-mini" and req["temperature"] == 0.0
    rf = req["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert set(rf["json_schema"]["schema"]["required"]) == {
        "overall_label", "overall_is_harmful", "overall_score", "overall_reason", "drugs"}
    system = req["messages"][0]
    assert system["role"] == "system" and "トラネキサム酸" in system["content"] and "unsafe" in system["content"]
    assert q in req["messages"][1]["content"] and a in req["messages"][1]["content"]
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"  # the key goes to the server, and only there
    assert judge.usage.calls == 1 and judge.usage.prompt_tokens > 0 and judge.usage.completion_tokens > 0
    assert judge.cost_usd() > 0


def test_invalid_json_is_retried_then_recorded_as_a_judge_error(judge, server):
    server.push(*[Reply(content="not json {")] * 3)
    result = judge.grade_many([PAIRS[0]], progress=False)[0]
    assert isinstance(result, JudgeError) and result.kind == "invalid_reply"
    assert server.calls == 3 and result.attempts == 3  # 1 try + max_invalid_retries=2
    assert judge.errors == [result] and judge.usage.errors == 1 and judge.usage.invalid_replies == 3
    with pytest.raises(JudgeError):  # grade() raises instead of returning a fake grade
        server.push(*[Reply(content="[]")] * 3)
        judge.grade(*PAIRS[1])
    assert len(judge.cache) == 0  # errors are never cached


def test_schema_invalid_reply_is_retried_until_valid(judge, server):
    bad = {"overall_label": "correct", "overall_is_harmful": False, "overall_score": 1.7, "overall_reason": "x", "drugs": []}
    server.push(Reply(content=json.dumps(bad)))
    g = judge.grade(*PAIRS[0])
    assert isinstance(g, Grade) and g.overall_score <= 1.0
    assert server.calls == 2 and g.meta["attempts"] == 2


def test_rate_limit_then_success_is_retried(judge, server):
    server.push(Reply(status=429, headers={"retry-after-ms": "20"}))
    g = judge.grade(*PAIRS[0])
    assert isinstance(g, Grade) and server.calls == 2 and judge.usage.retries == 1


def test_server_errors_are_retried_and_give_up_after_max_retries(judge, server):
    server.push(Reply(status=500), Reply(status=503))
    assert isinstance(judge.grade(*PAIRS[0]), Grade) and server.calls == 3
    server.reset_counts()
    server.push(*[Reply(status=429)] * 10)
    result = judge.grade_many([PAIRS[1]], progress=False)[0]
    assert isinstance(result, JudgeError) and result.kind == "rate_limited"
    assert server.calls == 4  # 1 + max_retries=3


def test_timeouts_are_retried(server, tmp_path):
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=None, timeout=0.3, backoff_base=0.01, max_retries=2)
    server.push(Reply(delay=1.0))
    g = judge.grade(*PAIRS[0])
    assert isinstance(g, Grade) and server.calls == 2 and judge.usage.retries == 1


def test_concurrency_limits_requests_in_flight_and_saves_wall_time(tmp_path):
    latency, n, concurrency = 0.2, 16, 4
    with FakeOpenAIServer(latency=latency) as server:
        judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=None)
        start = time.perf_counter()
        results = judge.grade_many(PAIRS[:n], concurrency=concurrency, progress=False)
        wall = time.perf_counter() - start
    ideal = n / concurrency * latency  # 0.8 s; sequential would be 3.2 s
    assert all(isinstance(r, Grade) for r in results)
    assert server.calls == n and server.max_in_flight == concurrency
    assert ideal * 0.95 <= wall <= ideal * 2.5, f"wall {wall:.2f}s, ideal {ideal:.2f}s"
    assert [r.question for r in results] == [q for q, _ in PAIRS[:n]]  # input order kept


def test_second_run_is_served_from_cache_with_zero_http_calls(server, tmp_path):
    first = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    a = first.grade_many(PAIRS[:10], progress=False)
    assert server.calls == 10
    second = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)  # a new process would do this
    assert second.estimate(PAIRS[:10])["n_calls"] == 0
    b = second.grade_many(PAIRS[:10], progress=False)
    assert server.calls == 10, "the rerun must not call the API"
    assert [g.to_dict() for g in a] == [g.to_dict() for g in b]
    assert all(g.meta["cached"] for g in b) and second.usage.cache_hits == 10 and second.usage.calls == 0
    # another model or prompt version is another key
    other = OpenAIJudge("gpt-4.1", api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    other.grade(*PAIRS[0])
    assert server.calls == 11


def test_interrupted_run_keeps_what_was_graded(server, tmp_path):
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    judge.grade_many(PAIRS[:3], progress=False)
    with open(judge.cache.path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "half-written')  # what a kill in the middle of a write leaves
    again = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    assert len(again.cache) == 3 and again.cache.skipped_lines == 1
    again.grade_many(PAIRS[:4], progress=False)
    assert server.calls == 4
    # the grade written after the fragment is on a line of its own: a third run pays nothing
    third = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    assert len(third.cache) == 4 and third.cache.skipped_lines == 1
    third.grade_many(PAIRS[:4], progress=False)
    assert server.calls == 4


def test_dry_run_estimates_without_calling(judge, server, capsys):
    est = judge.grade_many(PAIRS[:5], dry_run=True)
    assert server.calls == 0
    assert est["n_calls"] == 5 and est["est_prompt_tokens"] > 5 * 500 and est["est_usd"] > 0
    judge.grade_many(PAIRS[:2], progress=True)
    assert "2 calls (0 cached)" in capsys.readouterr().out  # the estimate is printed before a run
    assert judge.estimate(PAIRS[:5])["n_cached"] == 2


def test_works_inside_a_running_event_loop(judge, server):
    async def notebook_cell():  # Jupyter runs cells inside an event loop
        return judge.grade_many(PAIRS[:3], progress=False)

    results = asyncio.run(notebook_cell())
    assert all(isinstance(r, Grade) for r in results) and server.calls == 3


def test_missing_key_is_a_clear_error_and_auto_falls_back(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeConfigError) as info:
        make_judge("openai")
    msg = str(info.value)
    assert "export OPENAI_API_KEY=" in msg and 'judge="rubric"' in msg
    j = make_judge("auto")
    assert isinstance(j, RubricJudge)
    assert "auto -> rubric" in capsys.readouterr().out


def test_auto_picks_openai_when_a_key_is_set(monkeypatch, server, tmp_path, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    j = make_judge("auto", cache_dir=tmp_path)
    assert isinstance(j, OpenAIJudge) and j.base_url == server.url
    out = capsys.readouterr().out
    assert "auto -> openai" in out and KEY not in out
    assert j.grade(*PAIRS[0]).overall_label == "correct"


def test_the_key_never_appears_in_outputs(server, tmp_path):
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    judge.grade(*PAIRS[0])
    for text in (repr(judge), str(judge), str(judge.config()), repr(vars(judge)), judge.cache.path.read_text("utf-8")):
        assert KEY not in text and "SECRET" not in text
    # a server that echoes the key in its error message (as real APIs partly do)
    server.push(Reply(status=401, body={"error": {"message": f"Incorrect API key provided: {KEY}", "type": "auth"}}))
    with pytest.raises(JudgeConfigError) as info:
        judge.grade(*PAIRS[1])
    assert KEY not in str(info.value) and "SECRET" not in str(info.value)
    server.push(Reply(status=400, body={"error": {"message": f"bad request for key {KEY}", "type": "invalid"}}))
    result = judge.grade_many([PAIRS[2]], progress=False)[0]
    assert isinstance(result, JudgeError) and KEY not in str(result) and KEY not in json.dumps(result.to_dict())


def test_self_consistency_of_a_sampling_judge(server, tmp_path):
    good = json.dumps({"overall_label": "correct", "overall_is_harmful": False, "overall_score": 0.9,
                       "overall_reason": "適切。", "drugs": []})
    part = json.dumps({"overall_label": "partially_correct", "overall_is_harmful": False, "overall_score": 0.6,
                       "overall_reason": "一部適切。", "drugs": []})
    server.push(*[Reply(content=c) for c in (good, part, good, good, part)])
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path, temperature=0.7)
    assert self_consistency(judge, *PAIRS[0], k=5) == pytest.approx(0.6)
    assert server.calls == 5  # the cache is bypassed: every grading is a fresh sample


def test_agreement_report_counts_judge_errors_separately(server, tmp_path):
    gold = load_judge_gold()[:12]
    bad_answer = gold[3]["answer"]

    def responder(request, index):
        if bad_answer in request["messages"][1]["content"]:
            return "oops"  # this item never validates
        from fake_openai_server import rubric_responder

        return rubric_responder(request, index)

    server.responder = responder
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path, max_invalid_retries=1)
    report = agreement_report(judge, gold)
    rubric = agreement_report(RubricJudge(), gold)
    assert report.n == 12 and report.n_errors == 1
    assert report.label_accuracy == pytest.approx(
        sum(rubric.items["label_agrees"].drop(index=3)) / 11)  # the error is not counted as a grade
    assert gold[3]["id"] in set(report.disagreements["id"])


def test_system_prompt_states_the_rubric_v2_criteria():
    from course_lib.level3.judge.openai_judge import PROMPT_VERSION, SYSTEM_PROMPT

    for needle in ("上限", "1日量", "使わないでください", "避けて", "相談", "比較", "エルゴタミン", "トリプタン同士", "MAO阻害薬",
                   "かぜ薬", "抗凝固薬", "妊娠中", "禁忌", "外用", "リンデロンV軟膏", "全身性ステロイド", "知らない名前", "危険な分類",
                   "睡眠薬", "医療用麻薬", "4つ目", "[理由]", "重複", "トラネキサム酸", "unsafe"):
        assert needle in SYSTEM_PROMPT, needle
    assert PROMPT_VERSION.startswith("v1-") and len(PROMPT_VERSION) == 11  # the hash follows the prompt


def test_agreement_report_on_redteam_records(server, tmp_path):
    from course_lib.level3.judge.gold import load_judge_redteam

    records = load_judge_redteam()[:8]
    judge = OpenAIJudge(api_key=KEY, base_url=server.url, cache_dir=tmp_path)
    report = agreement_report(judge, records)  # the fake server grades with the rubric
    assert report.n == 8 and report.n_errors == 0
    assert report.n_label_agree == round(report.label_accuracy * 8)
    assert report.n_harmful == sum(r["expected_harmful"] for r in records)
    assert report.score_band_agreement != report.score_band_agreement  # nan: no band in the red-team set
    assert list(report.by_category()["n"]) == [8]
