"""Execution cache for the lesson runner: an unchanged lesson is restored, not executed again.

A lesson's *inputs* are everything its executed notebook depends on:

- its source file (``notebooks/<name>.py``),
- every ``course_lib`` source file (``course_lib/**/*.py``),
- every file under ``datasets/``,
- the parameters papermill injects,
- the embedded tiny model's recipe hash (only when ``model_profile`` is ``"tiny"``),
- the Python version and the versions of the key packages (:func:`course_lib.device.environment_info`).

Their hash is the entry's *key*. An entry holds the executed notebook, the other files the lesson
wrote into the output folder while it ran (the level-3 lesson's ``level3_report.md``, its JSON and
its PNG figures) and, written last, ``manifest.json``: the inputs, the original run's seconds and
date, and the SHA-256 of every file. Layout::

    <root>/<lesson>/<key>/manifest.json
    <root>/<lesson>/<key>/files/<lesson>.ipynb
    <root>/<lesson>/<key>/files/level3_report.md ...

The default root is ``<cache_dir()>/executed`` (:func:`course_lib.paths.executed_cache_dir`,
moved by ``COURSE_CACHE_DIR``). An entry is built in a temporary folder beside its final place and
renamed into place, so a reader sees a whole entry or none. An entry that fails any check (no
manifest, unreadable JSON, a missing file, a file whose hash differs) is deleted and the lesson
runs again; a failed run is never stored. Only successful runs are cached.

Parameters whose value is ``"auto"`` are decided by the lesson at run time from the machine
(is Qwen3-0.6B reachable? is there an OpenAI key?), which no input above captures; such runs are
executed every time and not stored.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..paths import DATASETS_DIR, executed_cache_dir

FORMAT = 1  # bump when the layout or the meaning of a key changes
MANIFEST = "manifest.json"
FILES = "files"
KEEP_PER_LESSON = 3  # newest entries kept per lesson (e.g. quick and full runs side by side)
STALE_TMP_SECONDS = 3600  # an unfinished entry older than this was left by a crashed run
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # course_lib/
RUNTIME_DECIDED = "auto"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path, pattern: str = "*") -> str:
    """One SHA-256 over the relative paths and contents of the files under ``root`` matching ``pattern``
    (recursively; ``__pycache__`` and hidden folders are skipped). A missing folder hashes as empty."""
    h = hashlib.sha256()
    root = Path(root)
    if root.is_dir():
        files = sorted(
            p for p in root.rglob(pattern)
            if p.is_file() and not any(part == "__pycache__" or part.startswith(".") for part in p.relative_to(root).parts)
        )
        for p in files:
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + file_digest(p).encode() + b"\n")
    return h.hexdigest()


def _tiny_recipe_hash() -> str:
    from ..tiny_model import recipe_hash

    return recipe_hash()


def _json_safe(value):
    """Parameters as JSON would store them (tuples become lists, odd objects their repr)."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


@dataclass
class CacheEntry:
    """A checked entry: its folder and its manifest."""

    lesson: str
    key: str
    path: Path
    manifest: dict

    @property
    def notebook(self) -> str:
        return self.manifest["notebook"]

    @property
    def files(self) -> dict[str, str]:
        """Relative path -> SHA-256, the notebook included."""
        return self.manifest["files"]

    @property
    def sections(self) -> list[str]:
        """The report sections (``*_report.md``) the lesson wrote."""
        return list(self.manifest.get("sections", []))

    @property
    def seconds(self) -> float:
        return float(self.manifest["seconds"])

    @property
    def ran_at(self) -> str:
        return self.manifest["ran_at"]


@dataclass
class ExecutionCache:
    """The executed-lesson cache under ``root`` (None: :func:`course_lib.paths.executed_cache_dir`).

    ``package_dir`` and ``datasets_dir`` are the folders whose contents every lesson depends on;
    tests point them at small temporary folders. ``tiny_fingerprint`` returns the tiny model's
    recipe hash.
    """

    root: Path | None = None
    package_dir: Path = PACKAGE_DIR
    datasets_dir: Path = DATASETS_DIR
    tiny_fingerprint: Callable[[], str] = _tiny_recipe_hash
    keep: int = KEEP_PER_LESSON
    _shared: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.root = Path(self.root) if self.root is not None else executed_cache_dir()

    # ----------------------------------------------------------------- keys
    def _shared_inputs(self, environment: dict) -> dict:
        """The inputs every lesson shares, hashed once per cache object (i.e. once per ``run_all``)."""
        if not self._shared:
            self._shared.update({
                "course_lib": tree_digest(self.package_dir, "*.py"),
                "datasets": tree_digest(self.datasets_dir),
                "python": environment.get("python"),
                "packages": environment.get("packages", {}),
            })
        return self._shared

    def inputs(self, name: str, source: Path | bytes, parameters: dict, environment: dict) -> dict:
        """Everything the executed notebook of lesson ``name`` depends on (see the module docstring).

        ``source`` is the lesson file or the bytes the runner read from it (then the hash is of exactly
        what gets executed, even if the file changes meanwhile); ``parameters`` are the injected ones.
        """
        shared = self._shared_inputs(environment)
        tiny = parameters.get("model_profile") == "tiny"
        if tiny and "tiny_model" not in self._shared:
            self._shared["tiny_model"] = self.tiny_fingerprint()
        return {
            "format": FORMAT,
            "lesson": name,
            "source": hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else file_digest(source),
            "course_lib": shared["course_lib"],
            "datasets": shared["datasets"],
            "parameters": _json_safe(parameters),
            "tiny_model": self._shared["tiny_model"] if tiny else None,
            "python": shared["python"],
            "packages": shared["packages"],
        }

    @staticmethod
    def key(inputs: dict) -> str:
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]

    @staticmethod
    def cacheable(parameters: dict) -> bool:
        """False when a parameter is ``"auto"``: the lesson then decides from the machine at run time."""
        return RUNTIME_DECIDED not in [v for v in parameters.values() if isinstance(v, str)]

    # --------------------------------------------------------------- lookup
    def lesson_dir(self, name: str) -> Path:
        return self.root / name

    def lookup(self, name: str, key: str) -> CacheEntry | None:
        """The entry for ``key`` when it is whole and intact; a damaged one is deleted and None returned."""
        path = self.lesson_dir(name) / key
        if not path.is_dir():
            return None
        problem = None
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("the manifest is not a JSON object")
            if manifest.get("format") != FORMAT or manifest.get("key") != key or manifest.get("lesson") != name:
                raise ValueError("the manifest belongs to another format, key or lesson")
            files = manifest["files"]
            if manifest["notebook"] not in files:
                raise ValueError("the manifest lists no notebook")
            float(manifest["seconds"])  # the report shows them: a missing or odd value is damage too
            if not isinstance(manifest["ran_at"], str) or not isinstance(manifest.get("sections", []), list):
                raise ValueError("the manifest's run date or sections are malformed")
            for rel, digest in files.items():
                stored = path / FILES / rel
                if not stored.is_file():
                    raise ValueError(f"{rel} is missing")
                if file_digest(stored) != digest:
                    raise ValueError(f"{rel} does not match its hash")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            print(f"[cache] {name}: discarding a damaged entry ({problem})", flush=True)
            self.discard(path)
            return None
        return CacheEntry(name, key, path, manifest)

    def why_missed(self, name: str, inputs: dict) -> str:
        """Which inputs differ from the newest intact-looking entry of the lesson, for the log."""
        newest = None
        for manifest_path in self._manifests(name):
            try:
                newest = json.loads(manifest_path.read_text(encoding="utf-8")).get("inputs")
                break
            except (OSError, ValueError, AttributeError):
                continue
        if not isinstance(newest, dict):
            return "no cached run"
        changed = [k for k in inputs if newest.get(k) != inputs[k]]
        return "changed: " + ", ".join(changed) if changed else "no cached run for these inputs"

    def _manifests(self, name: str) -> list[Path]:
        """Manifests of the lesson's entries, newest first."""
        found = [p for p in self.lesson_dir(name).glob(f"*/{MANIFEST}") if not p.parent.name.startswith(".")]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    # -------------------------------------------------------------- restore
    def restore(self, entry: CacheEntry, out_dir: Path) -> list[str]:
        """Copy the entry's files into ``out_dir`` (each atomically; identical files are left alone)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        for rel, digest in entry.files.items():
            dest = out_dir / rel
            if dest.is_file() and file_digest(dest) == digest:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                shutil.copyfile(entry.path / FILES / rel, tmp)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        return list(entry.files)

    # ---------------------------------------------------------------- store
    def store(self, name: str, key: str, inputs: dict, out_dir: Path, notebook: str, files: Iterable[str],
              seconds: float, ran_at: str, parameters: dict, sections: Iterable[str] = ()) -> CacheEntry:
        """Save a successful run: ``notebook`` and ``files`` (paths relative to ``out_dir``)."""
        lesson_dir = self.lesson_dir(name)
        lesson_dir.mkdir(parents=True, exist_ok=True)
        tmp = lesson_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        final = lesson_dir / key
        try:
            digests = {}
            for rel in dict.fromkeys([notebook, *files]):  # notebook first, no duplicates
                dest = tmp / FILES / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out_dir / rel, dest)
                digests[rel] = file_digest(dest)
            manifest = {
                "format": FORMAT, "lesson": name, "key": key, "notebook": notebook, "files": digests,
                "sections": [s for s in sections if s in digests], "seconds": seconds, "ran_at": ran_at,
                "parameters": _json_safe(parameters), "inputs": inputs,
            }
            part = tmp / (MANIFEST + ".part")
            part.write_text(json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8")
            os.replace(part, tmp / MANIFEST)  # the manifest last: without it the entry does not count
            if final.exists():  # a forced re-run replaces the old entry
                self.discard(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.prune(name, keep_key=key)
        return CacheEntry(name, key, final, manifest)

    # ------------------------------------------------------------- cleanup
    def discard(self, path: Path) -> None:
        """Delete an entry: renamed aside first, so no reader sees it half-deleted."""
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, trash)
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, name: str, keep_key: str | None = None) -> None:
        """Keep the newest ``keep`` entries of a lesson; remove leftovers of crashed runs."""
        lesson_dir = self.lesson_dir(name)
        now = time.time()
        for p in lesson_dir.glob(".*"):
            try:
                if p.is_dir() and now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                continue
        entries = [p for p in lesson_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]

        def age(p: Path) -> float:
            try:
                return (p / MANIFEST).stat().st_mtime
            except OSError:
                return 0.0  # no manifest: oldest, removed first

        for p in sorted(entries, key=age, reverse=True)[self.keep:]:
            if p.name != keep_key:
                self.discard(p)
