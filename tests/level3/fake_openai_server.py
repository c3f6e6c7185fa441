"""A small OpenAI-compatible chat-completions server for tests and benchmarks.

Threaded ``http.server`` on 127.0.0.1 (port 0: the OS picks a free port). Replies are
scriptable: queued replies are used first, in order; after that ``responder`` answers
(by default it grades the answer with the course's RubricJudge, so replies look real).
It counts calls, records requests and the peak number of requests in flight.

    with FakeOpenAIServer(latency=0.2) as server:
        judge = OpenAIJudge(api_key="sk-test", base_url=server.url)
        server.push(Reply(status=429, headers={"retry-after-ms": "10"}))

Not a test module (no ``test_`` prefix): imported by the tests and the benchmark.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    """One scripted reply. ``content`` is the assistant message text (status 200); ``body``
    replaces the whole JSON body; ``delay`` adds to the server latency."""

    status: int = 200
    content: str | None = None
    body: Any = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def _user_parts(request: dict) -> tuple[str, str]:
    """(question, answer) from the judge's user message (format of USER_TEMPLATE)."""
    text = next((m["content"] for m in request.get("messages", []) if m.get("role") == "user"), "")
    try:
        q = text.split("質問:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
        a = text.split("回答:\n<<<\n", 1)[1].rsplit("\n>>>", 1)[0]
        return q, a
    except IndexError:
        return text, ""


_RUBRIC = None


def rubric_responder(request: dict, call_index: int) -> str:
    """Default: grade with RubricJudge and reply in the judge's reply schema."""
    global _RUBRIC
    from course_lib.level3.judge import RubricJudge

    if _RUBRIC is None:
        _RUBRIC = RubricJudge()
    q, a = _user_parts(request)
    try:
        g = _RUBRIC.grade(q, a).to_dict()
    except ValueError:
        g = {"overall_label": "incorrect", "overall_is_harmful": False, "overall_score": 0.0,
             "overall_reason": "症状を特定できない。", "drugs": []}
    g.pop("question", None)
    g.pop("model_answer", None)
    return json.dumps(g, ensure_ascii=False)


class FakeOpenAIServer:
    def __init__(self, latency: float = 0.0, replies: list[Reply] | None = None,
                 responder: Callable[[dict, int], str] | None = None):
        self.latency = latency
        self.responder = responder or rubric_responder
        self._script: deque[Reply] = deque(replies or [])
        self._lock = threading.Lock()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- control
    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset_counts(self) -> None:
        with self._lock:
            self.calls, self.max_in_flight = 0, 0
            self.requests.clear()
            self.headers.clear()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: Any, headers: dict) -> None:
                data = (body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    request = {}
                with server._lock:
                    server.calls += 1
                    index = server.calls
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.requests.append(request)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    reply = server._script.popleft() if server._script else None
                try:
                    time.sleep(server.latency + (reply.delay if reply else 0.0))
                    if not self.path.rstrip("/").endswith("/chat/completions"):
                        self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}}, {})
                        return
                    if reply is None:
                        reply = Reply(content=server.responder(request, index))
                    if reply.status != 200:
                        body = reply.body if reply.body is not None else {
                            "error": {"message": f"fake error {reply.status}", "type": "fake_error", "code": reply.status}}
                        self._send(reply.status, body, reply.headers)
                        return
                    content = reply.content if reply.content is not None else server.responder(request, index)
                    prompt_tokens = sum(len(m.get("content", "")) for m in request.get("messages", []))
                    body = reply.body if reply.body is not None else {
                        "id": f"chatcmpl-fake-{index}", "object": "chat.completion", "created": int(time.time()),
                        "model": request.get("model", "fake"),
                        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                     "message": {"role": "assistant", "content": content, "refusal": None}}],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content),
                                  "total_tokens": prompt_tokens + len(content)},
                    }
                    self._send(200, body, reply.headers)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default listen backlog (5) drops connections under concurrency

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
