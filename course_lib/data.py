"""JSONL datasets: loading with validation, and train/validation splits.

Every error names the file, the line and the field, so a student can fix the
data instead of guessing.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASETS_DIR = REPO_ROOT / "datasets"


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


def write_jsonl(path: Path | str, records: Iterable[Mapping]) -> Path:
    """Write records as UTF-8 JSONL atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def train_val_split(records: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Shuffle with a fixed seed and split; the validation part is never empty."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    items = list(records)
    random.Random(seed).shuffle(items)
    n_val = max(1, round(len(items) * val_fraction))
    return items[n_val:], items[:n_val]
