"""A persistent cache of judge grades: one JSON line per grade, appended as soon as it exists.

Keyed by (judge model, prompt version, question, answer), so a rerun pays nothing twice
and an interrupted run keeps everything graded so far (a half-written last line is skipped).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from ...paths import judge_cache_dir


def cache_key(model: str, prompt_version: str, question: str, answer: str) -> str:
    payload = json.dumps([model, prompt_version, question, answer], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """``get(key)`` / ``put(key, record)`` over ``<directory>/<filename>`` (JSONL, append-only)."""

    def __init__(self, directory: Path | str | None = None, filename: str = "grades.jsonl"):
        self.directory = Path(directory) if directory is not None else judge_cache_dir()
        self.path = self.directory / filename
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        self.skipped_lines = 0
        line = ""
        if self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                        self._data[rec["key"]] = rec
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1  # e.g. the last line of an interrupted run
        # A run killed mid-write leaves a last line without its newline: the next grade
        # must start a line of its own, or it would be glued to that fragment and lost.
        self._torn_tail = bool(line) and not line.endswith("\n")

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r}, entries={len(self)})"

    def get(self, key: str) -> dict | None:
        return self._data.get(key)

    def put(self, key: str, record: dict) -> None:
        rec = {"key": key, "time": round(time.time(), 3), **record}
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            if self._torn_tail:
                line, self._torn_tail = "\n" + line, False
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
            self._data[key] = rec

    def sync(self) -> None:
        """Force what was appended onto the disk (call after a batch; ``put`` only flushes)."""
        with self._lock:
            if self.path.exists():
                with self.path.open("a", encoding="utf-8") as fh:
                    os.fsync(fh.fileno())
