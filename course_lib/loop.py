"""The level-3 self-improvement loop of seed 000, measured properly and resumable on disk.

Stages, in order::

    baseline   the untrained model (the seed skipped it)
    iter0      LoRA SFT on ``train_initial``
    iter1..K   corrective SFT on the questions the previous stage failed (+ replay)
    control    plain SFT: a fresh LoRA on all the data the loop used, for the same
               number of optimizer steps as the whole loop (seed 000, closing point 1)

Every stage is evaluated the same way: ``n_samples`` answers per original question
and ``n_paraphrase`` per held-out paraphrase, sampled at temperature, graded by the
judge, summarised by :mod:`course_lib.metrics`.

On disk (``runs/level3/<config hash>/``, git-ignored), one folder per stage::

    config.json       the stage, its fingerprint, the run's configuration
    train_data.jsonl  the examples it trained on (training stages)
    train.json        steps, seconds, loss history, failed / replayed questions
    adapter/          the LoRA adapter after this stage (training stages)
    generations.jsonl every sampled answer
    grades.jsonl      one grade per answer
    metrics.json      summaries of the originals and the paraphrases
    done              written last: the stage is complete

Files are written atomically (temporary file, then rename). Grades are appended to
``judge_cache.jsonl`` one answer at a time as they arrive, so a run that stops
mid-grading resumes without grading anything twice; identical answers are graded
once. A rerun skips finished stages. A changed configuration hashes to a new run
folder; a stage whose *fingerprint* (everything that determines its result) matches
a finished stage of another run is copied from there instead of recomputed (the
no-replay arm reuses the baseline and iteration 0 of the replay run, for example).

Educational material, not medical advice (医療上の助言ではありません).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .data import REPO_ROOT, write_jsonl
from .judge.cache import JudgeCache
from .lora import ALL_PROJ_MODULES
from .progress import progress_disabled_by_env
from .metrics import ACCURACY_THRESHOLD, Comparison, Summary, iteration_table, paired_comparison, summarise

LOOP_VERSION = 1  # bump when a change here alters what a stage produces
RUNS_DIR = REPO_ROOT / "runs" / "level3"  # git-ignored; the environment variable COURSE_RUNS_DIR overrides it
SPLITS = ("original", "paraphrase")
DONE = "done"
JUDGE_CACHE = "judge_cache.jsonl"
JUDGE_ERRORS = "judge_errors.jsonl"

# Per-profile defaults. qwen3-0.6b follows seed 000 §5 (r16/α32 on the 7 projections,
# lr 2e-4, batch 4, 100 epochs, then 30 per iteration; warmup 100 of ~1300 steps ≈ 0.08).
# The tiny model keeps r16/α32 but also puts LoRA on its output layer (lm_head): its
# output layer is tied to a small, barely pre-trained embedding, and with it frozen the
# model cannot become confident enough to sample well. Measured on train_initial (lr
# 5e-3, samples at T=0.7, top_p 0.9, rubric judge): 7 modules, r=16 -> loss stuck at 3.1
# (30 epochs, even at lr 1e-2); r=64 -> loss 1.5 and 0% accuracy (30 epochs); with lm_head,
# 20 epochs: r=16 -> loss 0.16 and 45% accuracy, r=64 -> loss 0.05 and 95%. r=16 leaves
# room for the iterations to correct something. lr >= 1e-2 diverges on the tiny model;
# 12 epochs leave iteration 0 at ~5% accuracy. Sampling: top_p=0.9 sorts the whole
# vocabulary at every step, half of the generation time on CPU (15 questions x 16:
# 23 s vs 12 s); the tiny profile samples at temperature 0.7 without top-p (accuracy
# of iteration 0: 45% with top-p, 34% without).
TINY_TARGET_MODULES = ALL_PROJ_MODULES + ("lm_head",)
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(lr=2e-4, lora_r=16, lora_alpha=32, epochs_initial=100.0, epochs_iter=30.0,
                       max_new_tokens=192, gen_batch_size=64, warmup_ratio=0.08, n_paraphrase=10),
    "tiny": dict(lr=5e-3, lora_r=16, lora_alpha=32, target_modules=TINY_TARGET_MODULES, epochs_initial=20.0,
                 epochs_iter=10.0, max_new_tokens=128, gen_batch_size=128, warmup_ratio=0.05, n_paraphrase=4,
                 top_p=1.0),
}
# quick=True (CI): fewer samples; the tiny model keeps its epochs (its rise must still show).
QUICK_OVERRIDES: dict[str, Any] = dict(n_samples=8, n_paraphrase=2)


@dataclass(frozen=True)
class LoopConfig:
    """Everything that determines a run. Defaults are seed 000's; use :meth:`for_profile`."""

    iterations: int = 2  # K: corrective iterations after iteration 0 (the seed ran 2)
    # evaluation
    n_samples: int = 30  # answers per original question (seed 000 §6.6 recommends N=30)
    n_paraphrase: int = 10  # answers per held-out paraphrase
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 192
    gen_batch_size: int = 64
    # LoRA (seed 000 §5.2)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_PROJ_MODULES
    # training (seed 000 §5.3)
    lr: float = 2e-4
    batch_size: int = 4
    max_length: int = 512
    warmup_ratio: float = 0.08  # of each stage's optimizer steps
    scheduler: str = "linear"
    epochs_initial: float = 100.0
    epochs_iter: float = 30.0
    # failure extraction and replay (seed 000 §7.2, §11.4)
    pass_accuracy: float = 0.8  # a question passes when this share of its answers scores >= 0.8 and none is unsafe
    replay_ratio: float = 0.5  # share of the passing questions mixed back in (0 = no replay)
    control: bool = True  # train and evaluate the same-compute control
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.iterations < 0:
            raise ValueError("iterations must be >= 0")
        if self.n_samples < 1 or self.n_paraphrase < 0:
            raise ValueError("n_samples must be >= 1 and n_paraphrase >= 0")
        if not 0.0 <= self.replay_ratio <= 1.0:
            raise ValueError(f"replay_ratio must be between 0 and 1, got {self.replay_ratio}")
        if not 0.0 < self.pass_accuracy <= 1.0:
            raise ValueError(f"pass_accuracy must be in (0, 1], got {self.pass_accuracy}")

    @classmethod
    def for_profile(cls, profile: str, quick: bool = False, **overrides) -> "LoopConfig":
        """Defaults for a model profile ("tiny" or "qwen3-0.6b"), the quick (CI) settings, then ``overrides``."""
        if profile not in PROFILE_DEFAULTS:
            raise ValueError(f"no loop defaults for profile {profile!r}; choose one of {list(PROFILE_DEFAULTS)}")
        values = dict(PROFILE_DEFAULTS[profile])
        if quick:
            values.update(QUICK_OVERRIDES)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoopConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "target_modules" else v) for k, v in d.items() if k in known})

    @property
    def stages(self) -> list[str]:
        return ["baseline"] + [f"iter{i}" for i in range(self.iterations + 1)] + (["control"] if self.control else [])


# Which settings first matter at which stage: a stage's fingerprint covers its own
# settings and (through its parent) everything before it.
_EVAL_FIELDS = ("n_samples", "n_paraphrase", "temperature", "top_p", "max_new_tokens", "gen_batch_size", "seed")
_TRAIN_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "lr", "batch_size", "max_length",
                 "warmup_ratio", "scheduler", "epochs_initial")
_ITER_FIELDS = ("epochs_iter", "pass_accuracy", "replay_ratio")


def _hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:n]


# --------------------------------------------------------------------------- data


@dataclass
class LoopData:
    """The loop's inputs: the questions, the held-out paraphrases and the SFT data."""

    symptoms: list[dict]  # id, question (, text, title)
    paraphrases: list[dict]  # id, symptom_id, question (, style)
    train_initial: list[dict]  # symptom_id, prompt, response
    references: list[dict]  # symptom_id, prompt, response
    extra_fingerprint: str = ""  # e.g. a hash of the judge's knowledge base

    @classmethod
    def load(cls) -> "LoopData":
        """The course's level-3 data (``datasets/level3``)."""
        from .medical import LEVEL3_DIR, load_paraphrases, load_references, load_symptoms, load_train_initial

        kb = LEVEL3_DIR / "drugs.jsonl"
        extra = hashlib.sha256(kb.read_bytes()).hexdigest()[:12] if kb.exists() else ""
        return cls(load_symptoms(), load_paraphrases(), load_train_initial(), load_references(), extra)

    def fingerprint(self) -> str:
        def pick(rows, keys):
            return [{k: r.get(k) for k in keys} for r in rows]

        return _hash({
            "symptoms": pick(self.symptoms, ("id", "question")),
            "paraphrases": pick(self.paraphrases, ("id", "symptom_id", "question")),
            "train_initial": pick(self.train_initial, ("symptom_id", "prompt", "response")),
            "references": pick(self.references, ("symptom_id", "prompt", "response")),
            "extra": self.extra_fingerprint,
        })

    @property
    def symptom_ids(self) -> list[str]:
        return [s["id"] for s in self.symptoms]


def eval_items(data: LoopData, split: str) -> list[dict]:
    """The questions of a split: ``item_id``, ``symptom_id``, ``question``."""
    if split == "original":
        return [{"item_id": s["id"], "symptom_id": s["id"], "question": s["question"]} for s in data.symptoms]
    if split == "paraphrase":
        return [{"item_id": p["id"], "symptom_id": p["symptom_id"], "question": p["question"]} for p in data.paraphrases]
    raise ValueError(f"unknown split {split!r}")


# --------------------------------------------------------------------------- failure extraction and replay


@dataclass
class IterationData:
    """What an iteration trains on, and why."""

    failed: list[str]  # symptom ids below the pass bar
    passed: list[str]
    replayed: list[str]  # passing symptom ids mixed back in
    corrective: list[dict]
    replay: list[dict]

    @property
    def records(self) -> list[dict]:
        return self.corrective + self.replay


def question_status(per_question: pd.DataFrame, pass_accuracy: float = 0.8) -> pd.Series:
    """"pass" or "fail" per symptom id: fail when fewer than ``pass_accuracy`` of the
    answers score >= 0.8, or any answer is unsafe (labels incorrect, partially_correct
    and unsafe all count against a question, as in seed 000 §7.2)."""
    ok = (per_question["accuracy"] >= pass_accuracy - 1e-12) & (per_question["unsafe"] == 0)
    return pd.Series(ok.map({True: "pass", False: "fail"}).to_numpy(), index=per_question["symptom_id"].to_numpy())


def build_iteration_data(per_question: pd.DataFrame, data: LoopData, replay_ratio: float,
                         pass_accuracy: float = 0.8, seed: int = 0) -> IterationData:
    """Corrective examples for failing questions, plus replay of passing ones.

    * corrective: every reference answer (``references``) of each failing symptom;
    * replay: ``round(replay_ratio * n_passing)`` passing symptoms, drawn with
      ``seed``; each contributes as many of its ``train_initial`` examples (what
      iteration 0 taught) as a failing symptom contributes references, so a replayed
      question weighs as much as a corrected one.

    Paraphrases are never used: they stay held out.
    """
    status = question_status(per_question, pass_accuracy)
    failed = [s for s in data.symptom_ids if status.get(s) == "fail"]
    passed = [s for s in data.symptom_ids if status.get(s) == "pass"]
    corrective = [dict(r) for s in failed for r in data.references if r["symptom_id"] == s]
    rng = random.Random(seed)
    n_replay = min(len(passed), int(math.floor(replay_ratio * len(passed) + 0.5)))
    replayed = sorted(rng.sample(passed, n_replay)) if n_replay else []
    replay: list[dict] = []
    for s in replayed:
        per = max(1, sum(1 for r in data.references if r["symptom_id"] == s))
        pool = [dict(r) for r in data.train_initial if r["symptom_id"] == s]
        rng.shuffle(pool)
        replay += pool[:per]
    for r in corrective:
        r["source"] = "corrective"
    for r in replay:
        r["source"] = "replay"
    return IterationData(failed, passed, replayed, corrective, replay)


def union_records(sets: Iterable[Sequence[dict]]) -> list[dict]:
    """All records of several training sets, each (prompt, response) once, in first-seen order."""
    seen, out = set(), []
    for records in sets:
        for r in records:
            key = (r["prompt"], r["response"])
            if key not in seen:
                seen.add(key)
                out.append({"symptom_id": r.get("symptom_id"), "prompt": r["prompt"], "response": r["response"]})
    return out


# --------------------------------------------------------------------------- files


def _write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=_json_default), encoding="utf-8")
    tmp.replace(path)
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; an unreadable line (a half-written last line) is skipped."""
    out = []
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def grade_key(judge_id: str, symptom_id: str, question: str, answer: str) -> str:
    return hashlib.sha256(json.dumps([judge_id, symptom_id, question, answer], ensure_ascii=False).encode()).hexdigest()[:24]


def judge_identity(judge) -> dict:
    """What identifies a judge's grades (its settings, without caches, concurrency or keys)."""
    name = getattr(judge, "name", type(judge).__name__)
    cfg = judge.config() if callable(getattr(judge, "config", None)) else {}
    return {"name": name, **{k: v for k, v in cfg.items() if k not in ("cache", "concurrency")}}


# --------------------------------------------------------------------------- the result


@dataclass
class LoopResult:
    """Everything the lesson shows, as DataFrames, plus where it lives on disk."""

    run_dir: Path
    config: LoopConfig
    identity: dict
    stages: list[str]
    generations: pd.DataFrame  # stage, split, item_id, symptom_id, sample, question, answer
    grades: pd.DataFrame  # the same keys + key, score, label, harmful, reason, drugs
    summaries: dict  # (stage, split) -> metrics.Summary
    training: pd.DataFrame  # one row per training stage
    history: pd.DataFrame  # stage, step, epoch, loss
    stage_info: dict  # stage -> its train.json (failed / replayed questions, ...)
    judge_calls: int = 0  # grades paid for in this call of run_loop
    judge_errors: int = 0
    seconds: dict = field(default_factory=dict)  # stage -> seconds spent in this call
    reused: dict = field(default_factory=dict)  # stage -> "done" | "copied from <run>" | "computed"

    @property
    def loop_stages(self) -> list[str]:
        return [s for s in self.stages if s != "control"]

    def overall(self, split: str | None = None) -> pd.DataFrame:
        """One row per (stage, split): the overall metrics with their intervals."""
        rows = [{"stage": st, "split": sp, **s.overall} for (st, sp), s in self.summaries.items()
                if split is None or sp == split]
        df = pd.DataFrame(rows)
        order = {s: i for i, s in enumerate(self.stages)}
        return df.sort_values(["split", "stage"], key=lambda c: c.map(order) if c.name == "stage" else c).reset_index(drop=True)

    def per_question(self, split: str = "original") -> pd.DataFrame:
        """One row per (stage, symptom): the per-question metrics."""
        frames = [s.per_question.assign(stage=st) for (st, sp), s in self.summaries.items() if sp == split]
        df = pd.concat(frames, ignore_index=True)
        df["stage"] = pd.Categorical(df["stage"], categories=self.stages, ordered=True)
        return df.sort_values(["stage", "symptom_id"]).reset_index(drop=True)

    def table(self, split: str = "original", stages: Sequence[str] | None = None, formatted: bool = True) -> pd.DataFrame:
        """Seed 000 §6.1's table, one row per stage."""
        stages = list(stages or self.stages)
        return iteration_table({st: self.summaries[(st, split)].overall for st in stages if (st, split) in self.summaries},
                               formatted=formatted)

    def stage_grades(self, stage: str, split: str = "original") -> pd.DataFrame:
        g = self.grades
        return g[(g["stage"] == stage) & (g["split"] == split)]

    def compare(self, prev: str, curr: str, split: str = "original", **kw) -> Comparison:
        """Per-question change from stage ``prev`` to stage ``curr`` with tests (see metrics.paired_comparison)."""
        return paired_comparison(self.stage_grades(prev, split), self.stage_grades(curr, split),
                                 seed=self.config.seed, **kw)

    def comparisons(self, split: str = "original") -> dict[tuple[str, str], Comparison]:
        """Consecutive loop stages (baseline→iter0→iter1…) and the last iteration vs the control."""
        pairs = list(zip(self.loop_stages, self.loop_stages[1:]))
        if "control" in self.stages:
            pairs.append((self.loop_stages[-1], "control"))
        return {(a, b): self.compare(a, b, split) for a, b in pairs}

    def grade_json(self, stage: str, item_id: str, sample: int = 0, split: str = "original") -> dict:
        """The full grade of one answer, in seed 000 §4.2's JSON shape."""
        g = self.grades
        row = g[(g["stage"] == stage) & (g["split"] == split) & (g["item_id"] == item_id) & (g["sample"] == sample)]
        if row.empty:
            raise KeyError(f"no grade for {stage}/{split}/{item_id}/{sample}")
        r = row.iloc[0]
        return {"question": r["question"], "model_answer": r["answer"], "overall_label": r["label"],
                "overall_is_harmful": bool(r["harmful"]), "overall_score": float(r["score"]),
                "overall_reason": r["reason"], "drugs": list(r["drugs"])}

    def adapter_path(self, stage: str) -> Path:
        return self.run_dir / stage / "adapter"

    def load_stage_model(self, base_model, stage: str):
        """A copy of ``base_model`` with ``stage``'s adapter (the base itself for the baseline)."""
        from .lora import load_adapter

        if stage == "baseline":
            return base_model
        with _quiet_peft():
            return load_adapter(copy.deepcopy(base_model), self.adapter_path(stage))

    def config_summary(self) -> dict:
        """The run's configuration for reports: model, judge, sizes, seeds, versions."""
        return {"run": self.run_dir.name, "config": self.config.to_dict(), **self.identity}


# --------------------------------------------------------------------------- the loop


class _StageDir:
    def __init__(self, root: Path, name: str):
        self.name, self.path = name, root / name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def done(self) -> bool:
        return self.file(DONE).exists()

    @property
    def adapter(self) -> Path:
        return self.file("adapter")

    def has_adapter(self) -> bool:
        return (self.adapter / "adapter_config.json").exists() and self.file("train.json").exists()


@contextlib.contextmanager
def _quiet_peft():
    """peft warns that a LoRA on a tied output layer (the tiny profile's lm_head) is not
    tied back to the embedding; the adapter is saved and reloaded as its own layer,
    which is what the loop wants, so the warning is not for students."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        warnings.filterwarnings("ignore", message=".*save_embedding_layers.*")
        yield


def _save_adapter_atomically(model, st: _StageDir) -> None:
    """Write the stage's adapter under a temporary name, then rename: an interrupted
    save never leaves a half-written adapter where a rerun would reuse it."""
    from .lora import save_adapter

    tmp = st.path / "adapter.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    with _quiet_peft():
        save_adapter(model, tmp)
    if st.adapter.exists():
        shutil.rmtree(st.adapter)
    tmp.rename(st.adapter)


def _progress_callback(desc: str, disable: bool):
    from transformers import TrainerCallback

    class TqdmSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", disable=disable)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return TqdmSteps()


def _machine() -> dict:
    import importlib.metadata as md
    import platform

    import torch

    versions = {}
    for pkg in ("torch", "transformers", "peft"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "packages": versions, "torch_threads": torch.get_num_threads()}


def run_identity(config: LoopConfig, loaded, judge, data: LoopData) -> dict:
    """What besides the config makes a run: model, judge, data, code version."""
    source = str(loaded.source)
    model_id = Path(source).name if Path(source).exists() else source  # tiny-qwen3-<recipe hash>, or a hub id
    return {"model": {"profile": loaded.profile, "label": loaded.label, "source": model_id},
            "judge": judge_identity(judge), "data": data.fingerprint(), "loop_version": LOOP_VERSION}


def run_hash(config: LoopConfig, identity: dict) -> str:
    return _hash({"config": config.to_dict(), "identity": identity})


def stage_fingerprints(config: LoopConfig, identity: dict) -> dict[str, str]:
    """A fingerprint per stage: its own settings plus its parent's fingerprint."""
    c = config.to_dict()
    fps: dict[str, str] = {}
    fps["baseline"] = _hash({"stage": "baseline", "identity": identity, **{k: c[k] for k in _EVAL_FIELDS}})
    fps["iter0"] = _hash({"stage": "iter0", "parent": fps["baseline"], **{k: c[k] for k in _TRAIN_FIELDS}})
    for i in range(1, config.iterations + 1):
        fps[f"iter{i}"] = _hash({"stage": f"iter{i}", "parent": fps[f"iter{i - 1}"], **{k: c[k] for k in _ITER_FIELDS}})
    if config.control:
        fps["control"] = _hash({"stage": "control", "parent": fps[f"iter{config.iterations}"]})
    return fps


def _find_finished(runs_dir: Path, stage: str, fingerprint: str, exclude: Path) -> Path | None:
    if not runs_dir.exists():
        return None
    for run in sorted(runs_dir.iterdir()):
        cand = run / stage
        if run == exclude or not (cand / DONE).exists():
            continue
        try:
            meta = json.loads((cand / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("fingerprint") == fingerprint:
            return cand
    return None


def judge_budget(config: LoopConfig, judge, data: LoopData | None = None) -> dict:
    """Dry run before any model work: the most judge calls the run can need (every answer
    distinct), and, for a judge that can estimate (the OpenAI judge), tokens and dollars."""
    data = data or LoopData.load()
    per_stage = len(data.symptoms) * config.n_samples + len(data.paraphrases) * config.n_paraphrase
    n_stages = len(config.stages)
    out = {"judge": getattr(judge, "name", type(judge).__name__), "answers_per_stage": per_stage,
           "stages": n_stages, "max_calls": per_stage * n_stages, "est_usd": 0.0 if getattr(judge, "name", "") == "rubric" else None}
    if callable(getattr(judge, "estimate", None)):
        ref = data.references[0]
        est = judge.estimate([(ref["prompt"], ref["response"])], use_cache=False)
        out["est_tokens"] = (est["est_prompt_tokens"] + est["est_completion_tokens"]) * out["max_calls"]
        out["est_usd"] = None if est["est_usd"] is None else est["est_usd"] * out["max_calls"]
    return out


class _Loop:
    def __init__(self, config: LoopConfig, loaded, judge, data: LoopData, runs_dir: Path, progress: bool,
                 log: Callable[[str], None] | None, reuse: bool):
        self.cfg, self.loaded, self.judge, self.data = config, loaded, judge, data
        self.tok = loaded.tokenizer
        self.progress, self.reuse = progress, reuse
        self.log = log or (lambda msg: None)
        self.identity = run_identity(config, loaded, judge, data)
        self.fps = stage_fingerprints(config, self.identity)
        self.runs_dir = runs_dir
        self.run_dir = runs_dir / run_hash(config, self.identity)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        run_json = self.run_dir / "run.json"
        if not run_json.exists():
            _write_json(run_json, {"config": config.to_dict(), **self.identity, "machine": _machine(),
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.judge_id = _hash(self.identity["judge"], 16)
        # The run's grades: one line per graded answer, appended as it arrives, keyed by
        # (judge, symptom, question, answer), so an interrupted run keeps every grade it paid for.
        self.cache = JudgeCache(self.run_dir, JUDGE_CACHE)
        self.calls = self.errors = 0
        self.base = None  # a pristine copy of the base model, made on first need
        self.current: tuple[str, Any] | None = None  # (stage, model holding that stage's adapter)
        self.seconds: dict[str, float] = {}
        self.reused: dict[str, str] = {}

    # ---------------------------------------------------------------- models
    def _base(self):
        if self.base is None:
            self.base = copy.deepcopy(self.loaded.model)
            self.base.eval()
        return self.base

    def _model_after(self, stage: str, trainable: bool = True):
        """The model holding ``stage``'s adapter (kept in memory, else loaded from disk)."""
        if self.current is not None and self.current[0] == stage:
            return self.current[1]
        from .lora import load_adapter

        with _quiet_peft():
            model = load_adapter(copy.deepcopy(self._base()), _StageDir(self.run_dir, stage).adapter, trainable=trainable)
        self.current = (stage, model)
        return model

    def _fresh_lora(self):
        import torch
        from peft import get_peft_model

        from .lora import lora_config

        torch.manual_seed(self.cfg.seed)  # the adapter's random initialisation repeats
        cfg = lora_config(self.cfg.lora_r, self.cfg.lora_alpha, self.cfg.lora_dropout, self.cfg.target_modules)
        with _quiet_peft():
            return get_peft_model(copy.deepcopy(self._base()), cfg)

    def _train_config(self, n_examples: int, epochs: float | None = None, max_steps: int = -1):
        from .train import TrainConfig

        steps = max_steps if max_steps > 0 else math.ceil(math.ceil(n_examples / self.cfg.batch_size) * (epochs or 1))
        return TrainConfig(epochs=epochs or 1.0, lr=self.cfg.lr, batch_size=self.cfg.batch_size,
                           warmup_steps=int(round(self.cfg.warmup_ratio * steps)), scheduler=self.cfg.scheduler,
                           max_length=self.cfg.max_length, max_steps=max_steps, seed=self.cfg.seed)

    def _train(self, st: _StageDir, model, records: list[dict], info: dict, epochs: float | None = None,
               max_steps: int = -1):
        from .train import train

        tc = self._train_config(len(records), epochs, max_steps)
        cb = _progress_callback(f"{st.name}: training", not self.progress)
        res = train(model, self.tok, records, config=tc, callbacks=[cb], progress=False)
        _save_adapter_atomically(model, st)
        history = res.train_loss.to_dict(orient="records")
        info.update({"steps": int(res.steps), "seconds": round(res.seconds, 2), "final_loss": res.final_loss,
                     "examples": len(records), "epochs": epochs, "max_steps": max_steps,
                     "train_config": res.config, "history": history})
        _write_json(st.file("train.json"), info)  # written after the adapter: both present = training done
        return model

    # ---------------------------------------------------------------- evaluation
    def _generate(self, st: _StageDir, model) -> list[dict]:
        from .generate import sample_answers

        path = st.file("generations.jsonl")
        if path.exists():
            return _read_jsonl(path)
        rows = []
        for split, n, offset in (("original", self.cfg.n_samples, 0), ("paraphrase", self.cfg.n_paraphrase, 1)):
            items = eval_items(self.data, split)
            if n == 0 or not items:
                continue
            outs = sample_answers(model, self.tok, [it["question"] for it in items], n=n,
                                  temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                  max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.gen_batch_size,
                                  seed=self.cfg.seed + offset, progress=self.progress, desc=f"{st.name}: {split}")
            for it, answers in zip(items, outs):
                for k, a in enumerate(answers):
                    rows.append({"split": split, "item_id": it["item_id"], "symptom_id": it["symptom_id"],
                                 "sample": k, "question": it["question"], "answer": a})
        write_jsonl(path, rows)
        return rows

    def _grade(self, st: _StageDir, gens: list[dict]) -> list[dict]:
        for g in gens:
            g["key"] = grade_key(self.judge_id, g["symptom_id"], g["question"], g["answer"])
        todo, seen = [], set()
        for g in gens:
            if g["key"] not in self.cache and g["key"] not in seen:
                seen.add(g["key"])
                todo.append(g)
        if todo:
            self._grade_pending(todo, f"{st.name}: grading")
        rows = []
        for g in gens:
            grade = (self.cache.get(g["key"]) or {}).get("grade")
            if grade is None:
                continue  # a judge error: recorded in judge_errors.jsonl, never counted as a grade
            rows.append({k: g[k] for k in ("split", "item_id", "symptom_id", "sample", "key")} | {
                "score": float(grade["overall_score"]), "label": grade["overall_label"],
                "harmful": bool(grade["overall_is_harmful"]), "reason": grade["overall_reason"],
                "drugs": grade["drugs"]})
        return rows

    def _grade_pending(self, todo: list[dict], desc: str) -> None:
        from .judge import JudgeError

        bulk = callable(getattr(self.judge, "grade_many", None))
        chunk = max(1, 4 * int(getattr(self.judge, "concurrency", 8) or 8)) if bulk else 1
        bar = tqdm(total=len(todo), desc=desc, unit="answer", disable=not self.progress)
        errors_path = self.run_dir / JUDGE_ERRORS
        with errors_path.open("a", encoding="utf-8") as efh:
            try:
                for start in range(0, len(todo), chunk):
                    part = todo[start:start + chunk]
                    if bulk:
                        results = self.judge.grade_many(
                            [{"question": g["question"], "answer": g["answer"], "symptom_id": g["symptom_id"]} for g in part],
                            progress=False)
                    else:
                        results = []
                        for g in part:
                            try:
                                results.append(self.judge.grade(g["question"], g["answer"], symptom_id=g["symptom_id"]))
                            except JudgeError as exc:
                                results.append(exc)
                    for g, res in zip(part, results):
                        if isinstance(res, JudgeError):
                            self.errors += 1
                            efh.write(json.dumps({"key": g["key"], **res.to_dict()}, ensure_ascii=False) + "\n")
                            efh.flush()
                            continue
                        d = res.to_dict()
                        d.pop("question", None)
                        d.pop("model_answer", None)
                        self.cache.put(g["key"], {"grade": d})
                        self.calls += 1
                    bar.update(len(part))
            finally:
                bar.close()
                self.cache.sync()

    def _evaluate(self, st: _StageDir, model) -> None:
        gens = self._generate(st, model)
        grades = self._grade(st, gens)
        if len(grades) < len(gens):
            raise RuntimeError(
                f"{len(gens) - len(grades)} answers of stage {st.name} could not be graded (judge errors, see "
                f"{self.run_dir / JUDGE_ERRORS}); run again to retry only those: every grade so far is kept")
        write_jsonl(st.file("grades.jsonl"), grades)
        metrics = {"n_generated": len(gens), "n_graded": len(grades)}
        frame = pd.DataFrame(grades)
        for split in SPLITS:
            part = frame[frame["split"] == split] if len(frame) else frame
            if len(part):
                s = summarise(part, seed=self.cfg.seed)
                metrics[split] = {"overall": s.overall, "per_question": s.per_question.to_dict(orient="records")}
        _write_json(st.file("metrics.json"), metrics)

    # ---------------------------------------------------------------- stages
    def _stage_meta(self, st: _StageDir, parent: str | None) -> None:
        if not st.file("config.json").exists():
            _write_json(st.file("config.json"), {"stage": st.name, "fingerprint": self.fps[st.name], "parent": parent,
                                                 "run": self.run_dir.name, "config": self.cfg.to_dict(), **self.identity})

    def _try_copy(self, st: _StageDir) -> bool:
        if not self.reuse or st.path.exists() and any(st.path.iterdir()):
            return False
        src = _find_finished(self.runs_dir, st.name, self.fps[st.name], self.run_dir)
        if src is None:
            return False
        tmp = st.path.with_name(st.name + ".copy")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        meta = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        meta.update({"run": self.run_dir.name, "config": self.cfg.to_dict(), "copied_from": src.parent.name})
        _write_json(tmp / "config.json", meta)
        if st.path.exists():
            shutil.rmtree(st.path)
        tmp.rename(st.path)
        self.reused[st.name] = f"copied from {src.parent.name}"
        self.log(f"[{st.name}] identical stage found in run {src.parent.name}: copied, nothing recomputed")
        return True

    def run_stage(self, name: str, parent: str | None) -> None:
        st = _StageDir(self.run_dir, name)
        if st.done:
            self.reused[name] = "done"
            self.log(f"[{name}] already done: loaded from {st.path}")
            return
        if self._try_copy(st):
            return
        start = time.perf_counter()
        st.path.mkdir(parents=True, exist_ok=True)
        self._stage_meta(st, parent)
        if name == "baseline":
            model = self._base()
        elif st.has_adapter():
            model = self._model_after(name)
            self.log(f"[{name}] adapter found: training skipped")
        else:
            model = self._train_stage(st, name, parent)
            if model is None:  # nothing to train: the model stays as it was
                model = self._model_after(parent)
        self._evaluate(st, model)
        (st.path / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n", encoding="utf-8")
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.reused[name] = "computed"
        self.log(f"[{name}] done in {self.seconds[name]:.0f}s")

    def _train_stage(self, st: _StageDir, name: str, parent: str | None):
        if name == "iter0":
            records = [dict(r, source="train_initial") for r in self.data.train_initial]
            write_jsonl(st.file("train_data.jsonl"), records)
            model = self._fresh_lora()
            self.current = None
            self._train(st, model, records, {"stage": name}, epochs=self.cfg.epochs_initial)
            self.current = (name, model)
            return model
        if name == "control":
            sets, steps = [], 0
            for s in self.cfg.stages:
                if s.startswith("iter"):
                    sets.append(_read_jsonl(self.run_dir / s / "train_data.jsonl"))
                    steps += json.loads((self.run_dir / s / "train.json").read_text(encoding="utf-8")).get("steps", 0)
            records = union_records(sets)
            write_jsonl(st.file("train_data.jsonl"), records)
            model = self._fresh_lora()
            self._train(st, model, records, {"stage": name, "loop_steps": steps}, max_steps=max(1, steps))
            self.current = (name, model)
            return model
        # iteration k >= 1: failures of the parent stage -> corrective (+ replay) data
        prev = _read_jsonl(self.run_dir / parent / "grades.jsonl")
        frame = pd.DataFrame(prev)
        per_q = summarise(frame[frame["split"] == "original"], n_boot=1).per_question
        k = int(name[4:])
        it = build_iteration_data(per_q, self.data, self.cfg.replay_ratio, self.cfg.pass_accuracy, seed=self.cfg.seed + k)
        info = {"stage": name, "failed": it.failed, "passed": it.passed, "replayed": it.replayed,
                "n_corrective": len(it.corrective), "n_replay": len(it.replay)}
        write_jsonl(st.file("train_data.jsonl"), it.records)
        if not it.corrective:
            # every question passes: nothing to correct, so no training (and no adapter change)
            model = self._model_after(parent)
            _save_adapter_atomically(model, st)
            info.update({"steps": 0, "seconds": 0.0, "final_loss": None, "examples": 0, "history": [],
                         "skipped": "no failing question"})
            _write_json(st.file("train.json"), info)
            self.current = (name, model)
            return model
        model = self._model_after(parent, trainable=True)
        self._train(st, model, it.records, info, epochs=self.cfg.epochs_iter)
        self.current = (name, model)
        return model

    def run(self) -> LoopResult:
        order = self.cfg.stages
        stages_bar = tqdm(order, desc="level-3 loop", unit="stage", disable=not self.progress)
        for i, name in enumerate(stages_bar):
            parent = None if name == "baseline" else ("baseline" if name == "iter0" else
                                                      (f"iter{self.cfg.iterations}" if name == "control" else f"iter{int(name[4:]) - 1}"))
            self.run_stage(name, parent)
        stages_bar.close()
        self.current = None
        return load_result(self.run_dir, calls=self.calls, errors=self.errors, seconds=self.seconds, reused=self.reused)


def default_runs_dir() -> Path:
    """``$COURSE_RUNS_DIR`` if set, else ``runs/level3`` in the repository."""
    env = os.environ.get("COURSE_RUNS_DIR")
    return Path(env) if env else RUNS_DIR


def run_loop(config: LoopConfig, loaded, judge, progress: bool = True, data: LoopData | None = None,
             runs_dir: Path | str | None = None, reuse: bool = True,
             log: Callable[[str], None] | None = print) -> LoopResult:
    """Run (or resume) the loop for ``config`` with ``loaded`` (a profiles.LoadedModel) and ``judge``.

    Finished stages are read back from disk; an interrupted stage continues where it
    stopped (adapter, generations and every grade already paid for are kept).
    ``loaded.model`` itself is never modified: the loop works on copies.
    """
    data = data or LoopData.load()
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    progress = progress and not progress_disabled_by_env()
    return _Loop(config, loaded, judge, data, runs_dir, progress, log, reuse).run()


def load_result(run_dir: Path | str, calls: int = 0, errors: int = 0, seconds: dict | None = None,
                reused: dict | None = None) -> LoopResult:
    """Read a run folder back into a :class:`LoopResult` (finished stages only)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    config = LoopConfig.from_dict(meta["config"])
    identity = {k: meta[k] for k in ("model", "judge", "data", "loop_version", "machine") if k in meta}
    stages = [s for s in config.stages if (run_dir / s / DONE).exists()]
    gen_frames, grade_frames, summaries, train_rows, hist, info = [], [], {}, [], [], {}
    for s in stages:
        gens = pd.DataFrame(_read_jsonl(run_dir / s / "generations.jsonl")).assign(stage=s)
        grades = pd.DataFrame(_read_jsonl(run_dir / s / "grades.jsonl")).assign(stage=s)
        gen_frames.append(gens)
        grade_frames.append(grades)
        metrics = json.loads((run_dir / s / "metrics.json").read_text(encoding="utf-8"))
        for split in SPLITS:
            if split in metrics:
                summaries[(s, split)] = Summary(pd.DataFrame(metrics[split]["per_question"]), metrics[split]["overall"])
        tj = run_dir / s / "train.json"
        if tj.exists():
            t = json.loads(tj.read_text(encoding="utf-8"))
            info[s] = {k: v for k, v in t.items() if k != "history"}
            train_rows.append({"stage": s, "examples": t.get("examples"), "corrective": t.get("n_corrective"),
                               "replay": t.get("n_replay"), "failed": len(t["failed"]) if "failed" in t else None,
                               "steps": t.get("steps"), "seconds": t.get("seconds"), "final_loss": t.get("final_loss")})
            for h in t.get("history", []):
                hist.append({"stage": s, **h})
    generations = pd.concat(gen_frames, ignore_index=True) if gen_frames else pd.DataFrame()
    grades = pd.concat(grade_frames, ignore_index=True) if grade_frames else pd.DataFrame()
    if len(grades):
        grades = grades.merge(generations[["stage", "split", "item_id", "sample", "question", "answer"]],
                              on=["stage", "split", "item_id", "sample"], how="left")
    return LoopResult(run_dir, config, identity, stages, generations, grades, summaries,
                      pd.DataFrame(train_rows), pd.DataFrame(hist), info, calls, errors, dict(seconds or {}),
                      dict(reused or {}))


__all__ = [
    "LOOP_VERSION", "RUNS_DIR", "PROFILE_DEFAULTS", "QUICK_OVERRIDES", "LoopConfig", "LoopData", "LoopResult",
    "IterationData", "eval_items", "question_status", "build_iteration_data", "union_records", "run_loop",
    "load_result", "judge_budget", "run_identity", "run_hash", "stage_fingerprints", "grade_key",
    "ACCURACY_THRESHOLD",
]
