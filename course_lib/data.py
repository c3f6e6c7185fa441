"""JSON and JSONL files: loading with validation, atomic writing, and train/validation splits.

Every error names the file, the line and the field, so a student can fix the
data instead of guessing. Every write goes to a temporary file that is then
renamed, so a crash never leaves half a file where a rerun would read it.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

class DatasetError(ValueError):
    """A dataset line that cannot be used: the message says file:line and field."""

    def __init__(self, path: Path | str, line: int, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{path}:{line}"
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {problem}")


@dataclass(frozen=True)
class Field:
    """One field of a record schema."""

    name: str
    type: type | tuple[type, ...]
    required: bool = True
    choices: tuple[Any, ...] | None = None
    non_empty: bool = True  # strings and lists must not be empty


Schema = Sequence[Field]


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def validate_record(record: Any, schema: Schema, path: Path | str, line: int) -> dict:
    """Check one decoded record against a schema; raise DatasetError on the first problem."""
    if not isinstance(record, dict):
        raise DatasetError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    known = {f.name for f in schema}
    for name in record:
        if name not in known:
            raise DatasetError(path, line, name, f"unknown field (expected one of: {', '.join(sorted(known))})")
    for f in schema:
        if f.name not in record:
            if f.required:
                raise DatasetError(path, line, f.name, "missing required field")
            continue
        value = record[f.name]
        # bool is a subclass of int: a score of `true` is a mistake, not 1.
        if isinstance(value, bool) and bool not in (f.type if isinstance(f.type, tuple) else (f.type,)):
            raise DatasetError(path, line, f.name, f"expected {_type_name(f.type)}, got bool")
        if not isinstance(value, f.type):
            raise DatasetError(path, line, f.name, f"expected {_type_name(f.type)}, got {type(value).__name__}")
        if f.non_empty and isinstance(value, (str, list)) and len(value) == 0:
            raise DatasetError(path, line, f.name, "must not be empty")
        if f.non_empty and isinstance(value, str) and not value.strip():
            raise DatasetError(path, line, f.name, "must not be blank")
        if f.choices is not None:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in f.choices:
                    raise DatasetError(path, line, f.name, f"{v!r} is not one of {list(f.choices)}")
    return record


def load_jsonl(path: Path | str, schema: Schema | None = None, *, unique: str | None = "id",
               with_lines: bool = False) -> list:
    """Load a JSONL file; validate each line against ``schema`` when given.

    Blank lines are skipped. ``unique`` names a field whose values must not repeat.
    ``with_lines=True`` returns ``(line_number, record)`` pairs, so callers that check
    more than the schema can name the real line of a bad record.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset file not found (run from the repository root or check the path)")
    records: list[tuple[int, dict]] = []
    seen: dict[Any, int] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, line_no, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            if schema is not None:
                validate_record(record, schema, path, line_no)
            if unique and isinstance(record, dict) and unique in record:
                key = record[unique]
                if key in seen:
                    raise DatasetError(path, line_no, unique, f"duplicate value {key!r} (first seen on line {seen[key]})")
                seen[key] = line_no
            records.append((line_no, record))
    if not records:
        raise DatasetError(path, 1, None, "file has no records")
    return records if with_lines else [r for _, r in records]


def json_default(o):
    """JSON for the numpy scalars and paths that results carry."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def stable_hash(obj: Any, n: int = 12) -> str:
    """A short hex digest of ``obj`` as canonical JSON: the same content gives the same id on any machine."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_jsonl(path: Path | str, records: Iterable[Mapping]) -> Path:
    """Write records as UTF-8 JSONL atomically."""
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=json_default) + "\n"
                                           for r in records))


def write_json(path: Path | str, obj: Any) -> Path:
    """Write one JSON document (indented, UTF-8) atomically."""
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=json_default))


def read_jsonl(path: Path | str) -> list[dict]:
    """Records of a JSONL file the course wrote itself (results, not datasets).

    A missing file gives ``[]``; an unreadable line (the half-written last line of an
    interrupted run) is skipped. Datasets go through :func:`load_jsonl`, which refuses both.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def train_val_split(records: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Shuffle with a fixed seed and split; the validation part is never empty."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    items = list(records)
    random.Random(seed).shuffle(items)
    n_val = max(1, round(len(items) * val_fraction))
    return items[n_val:], items[:n_val]
