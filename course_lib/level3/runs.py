"""Run folders on disk: identity, fingerprints, resume, and reading results back.

On disk (``runs/level3/<run hash>/``, git-ignored; ``COURSE_RUNS_DIR`` moves it), one folder
per stage::

    config.json       the stage, its fingerprint, its parent, the run's configuration
    train_data.jsonl  the examples it trained on (training stages)
    train.json        steps, seconds, loss history, failed / replayed questions
    adapter/          the LoRA adapter after this stage (training stages)
    generations.jsonl every sampled answer
    grades.jsonl      one grade per answer
    metrics.json      summaries of the originals and the paraphrases
    done              written last: the stage is complete

While a process computes a stage, ``<runs>/.claims/<stage>-<fingerprint>`` says so: another
process that needs the identical stage waits and copies it (:class:`StageClaim`).

Files are written atomically. A rerun skips finished stages. A changed configuration
hashes to a new run folder; a stage whose *fingerprint* (everything that determines its
result) matches a finished stage of another run is copied from there, and its grades go
into this run's judge cache, so an identical answer later in the run is never graded twice.

The pass bar and the replay ratio act on an iteration only through the data they select, so an
iteration also has a *content key* (:func:`iteration_content_key`): its parent's key, its own
settings and the selection itself. Two runs whose settings differ but whose iteration trains on
the same data from the same parent (no question passed, so there was nothing to replay) compute
that iteration once and copy it, like a shared iteration 0.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..data import read_jsonl, stable_hash, write_json
from ..device import environment_info
from ..profiles import IDENTITY_LABELS
from .config import CONTROL, LoopConfig, Stage
from .data import LoopData
from .judge.cache import JudgeCache
from .metrics import Comparison, Summary, compare_stages, iteration_table, question_passes

LOOP_VERSION = 4  # bump when a change alters what a stage produces (4: the course's own decoding loop)
SPLITS = ("original", "paraphrase")
DONE = "done"
JUDGE_CACHE = "judge_cache.jsonl"
JUDGE_ERRORS = "judge_errors.jsonl"

# Which settings first matter at which stage: a stage's fingerprint covers its own
# settings and (through its parent) everything before it.
EVAL_FIELDS = ("n_samples", "n_paraphrase", "temperature", "top_p", "max_new_tokens", "gen_batch_size", "seed")
TRAIN_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate",
                "per_device_train_batch_size", "max_length", "warmup_ratio", "lr_scheduler_type", "epochs_initial")
# update_rule and its knobs: arms differ from iteration 1 on, so they share baseline and iter0
ITER_FIELDS = ("epochs_iter", "pass_accuracy", "replay_ratio", "update_rule", "self_distill_k", "dpo_beta",
               "dpo_learning_rate")
# An update rule's knobs count only for the rule that reads them, and the corrective rule (the default, the
# loop as it was before the rules existed) hashes without any: its run folders and stages keep their names.
RULE_FIELDS = {"corrective": (), "self_distill": ("self_distill_k",), "dpo": ("dpo_beta", "dpo_learning_rate")}
_ALL_RULE_FIELDS = ("update_rule", "self_distill_k", "dpo_beta", "dpo_learning_rate")
# Settings that reach an iteration only through its selection (which questions failed, passed, were replayed):
# the content key holds the selection instead.
SELECTION_FIELDS = ("pass_accuracy", "replay_ratio")


def hashed_config(config: LoopConfig) -> dict:
    """The config as it is hashed: the update-rule fields only where they change the result."""
    c = config.to_dict()
    keep = () if config.update_rule == "corrective" else ("update_rule", *RULE_FIELDS[config.update_rule])
    return {k: v for k, v in c.items() if k not in _ALL_RULE_FIELDS or k in keep}


def grade_key(judge_id: str, symptom_id: str, question: str, answer: str) -> str:
    return stable_hash([judge_id, symptom_id, question, answer], 24)


def judge_identity(judge) -> dict:
    """What identifies a judge's grades (its settings, without caches, concurrency or keys)."""
    return {"name": judge.name, **{k: v for k, v in judge.config().items() if k not in ("cache", "concurrency")}}


def run_identity(loaded, judge, data: LoopData) -> dict:
    """What besides the config makes a run: model, judge, data, code version."""
    source = str(loaded.source)
    model_id = Path(source).name if Path(source).exists() else source  # tiny-qwen3-<recipe hash>, or a hub id
    label = IDENTITY_LABELS.get(loaded.profile, loaded.label)  # not the page label: run hashes stay as they were
    return {"model": {"profile": loaded.profile, "label": label, "source": model_id},
            "judge": judge_identity(judge), "data": data.fingerprint(), "loop_version": LOOP_VERSION}


def run_hash(config: LoopConfig, identity: dict) -> str:
    return stable_hash({"config": hashed_config(config), "identity": identity})


def stage_fingerprints(config: LoopConfig, identity: dict) -> dict[str, str]:
    """A fingerprint per stage: its own settings plus its parent's fingerprint."""
    c = hashed_config(config)
    own = {"baseline": {"identity": identity, **{k: c[k] for k in EVAL_FIELDS}},
           "iter0": {k: c[k] for k in TRAIN_FIELDS}}
    fps: dict[str, str] = {}
    for st in config.plan():
        settings = own.get(st.name, {k: c[k] for k in ITER_FIELDS if k in c} if st.kind != CONTROL else {})
        parent = {"parent": fps[st.parent]} if st.parent else {}
        fps[st.name] = stable_hash({"stage": st.name, **parent, **settings})
    return fps


def iteration_content_key(config: LoopConfig, stage: Stage, parent_key: str, selection) -> str:
    """What determines iteration ``stage`` (k >= 1) once its parent is finished: the parent's content
    key, the iteration's own settings except the pass bar and the replay ratio, and ``selection``
    (a :class:`.selection.IterationData`: the failed, passed and replayed questions and the records).

    The update rules' own data (accepted answers, preference pairs) is drawn from the parent's answers
    with the run's seed, both covered by the parent's key, and their step budget from the records.
    """
    c = hashed_config(config)
    settings = {k: c[k] for k in ITER_FIELDS if k in c and k not in SELECTION_FIELDS}
    return stable_hash({"stage": stage.name, "parent": parent_key, **settings, "failed": list(selection.failed),
                        "passed": list(selection.passed), "replayed": list(selection.replayed),
                        "records": list(selection.records)})


class StageDir:
    """The folder of one stage."""

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


def find_finished(runs_dir: Path, stage: str, fingerprint: str, exclude: Path, key: str = "fingerprint") -> Path | None:
    """A finished stage with this fingerprint (or ``key="content_key"``: content key) in another run folder."""
    if not runs_dir.exists():
        return None
    for run in sorted(runs_dir.iterdir()):
        cand = run / stage
        if run == exclude or not (cand / DONE).exists():
            continue
        try:
            meta = json.loads((cand / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: nothing to copy from
            continue
        if meta.get(key) == fingerprint:
            return cand
    return None


class StageClaim:
    """While one process computes a stage, another process that needs the identical stage
    (same fingerprint, e.g. the shared iteration 0 of two runs in :mod:`.parallel`'s workers)
    waits for it and copies it instead of computing it twice.

    The claim is a file ``<runs_dir>/.claims/<stage>-<fingerprint>`` created exclusively and
    holding the owner's process id; a claim whose process is gone (a killed run) is taken over.
    """

    POLL_SECONDS = 1.0

    def __init__(self, runs_dir: Path, stage: str, fingerprint: str):
        self.path = runs_dir / ".claims" / f"{stage}-{fingerprint}"
        self.waited = False

    def _owner_alive(self) -> bool:
        try:
            pid = int(self.path.read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            return True  # being written right now: its owner is alive
        if pid == os.getpid():
            return False  # our own leftover (an exception earlier in this process)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __enter__(self) -> "StageClaim":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._owner_alive():
                    self.waited = True
                    time.sleep(self.POLL_SECONDS)
                else:
                    self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(str(os.getpid()))
            return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


class Run:
    """One run folder: where each stage lives, whether it is done, and the run's judge cache."""

    def __init__(self, config: LoopConfig, identity: dict, runs_dir: Path, reuse: bool = True,
                 log: Callable[[str], None] | None = None):
        self.config, self.identity, self.runs_dir, self.reuse = config, identity, runs_dir, reuse
        self.log = log or (lambda msg: None)
        self.fingerprints = stage_fingerprints(config, identity)
        self.path = runs_dir / run_hash(config, identity)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "run.json").exists():
            write_json(self.path / "run.json", {
                "config": config.to_dict(), **identity,
                "machine": environment_info(("torch", "transformers", "peft")),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.judge_id = stable_hash(identity["judge"], 16)
        # One line per graded answer, appended as it arrives: an interrupted run keeps every grade it paid for.
        self.cache = JudgeCache(self.path, JUDGE_CACHE)
        self.status: dict[str, str] = {}  # stage -> "done" | "copied from <run>" | "computed"
        self.seconds: dict[str, float] = {}

    def stage_dir(self, name: str) -> StageDir:
        return StageDir(self.path, name)

    def stage(self, st: Stage, compute: Callable[[StageDir], None],
              content_key: Callable[[], str | None] | None = None) -> None:
        """Make ``st`` done: keep it if finished, copy an identical finished stage, else ``compute`` it.

        ``content_key`` (iterations k >= 1, called once the parent is finished) gives the stage's
        content key: a finished stage with the same key is copied too, and a process computing it is
        waited for, as for an identical fingerprint.
        """
        sd = self.stage_dir(st.name)
        if sd.done:
            self.status[st.name] = "done"
            self.log(f"[{st.name}] already done: loaded from {sd.path}")
            return
        if self._copy(sd):
            return
        key = content_key() if content_key else None
        if key and self._copy(sd, key):
            return
        with StageClaim(self.runs_dir, st.name, key or self.fingerprints[st.name]) as claim:
            if claim.waited and self._copy(sd, key):  # another process has just computed this very stage
                return
            start = time.perf_counter()
            sd.path.mkdir(parents=True, exist_ok=True)
            if not sd.file("config.json").exists():
                write_json(sd.file("config.json"), {"stage": st.name, "fingerprint": self.fingerprints[st.name],
                                                    **({"content_key": key} if key else {}),
                                                    "parent": st.parent, "run": self.path.name,
                                                    "config": self.config.to_dict(), **self.identity})
            compute(sd)
            sd.file(DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n", encoding="utf-8")
        self.seconds[st.name] = round(time.perf_counter() - start, 1)
        self.status[st.name] = "computed"
        self.log(f"[{st.name}] done in {self.seconds[st.name]:.0f}s")

    def content_key(self, stage: str) -> str:
        """The finished ``stage``'s content key; for stages without one (baseline, iteration 0, the
        control, or a stage written before content keys existed) its fingerprint, which determines it."""
        meta = json.loads((self.path / stage / "config.json").read_text(encoding="utf-8"))
        return meta.get("content_key") or meta["fingerprint"]

    def _copy(self, sd: StageDir, content_key: str | None = None) -> bool:
        """Copy a finished stage with this stage's fingerprint, or with ``content_key`` when given."""
        if not self.reuse or sd.path.exists() and any(sd.path.iterdir()):
            return False
        if content_key:
            src = find_finished(self.runs_dir, sd.name, content_key, self.path, key="content_key")
        else:
            src = find_finished(self.runs_dir, sd.name, self.fingerprints[sd.name], self.path)
        if src is None:
            return False
        tmp = sd.path.with_name(sd.name + ".copy")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        meta = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        # this run's fingerprint: a later run with this run's settings finds the stage here by fingerprint
        meta.update({"fingerprint": self.fingerprints[sd.name], "run": self.path.name,
                     "config": self.config.to_dict(), "copied_from": src.parent.name})
        write_json(tmp / "config.json", meta)
        if sd.path.exists():
            shutil.rmtree(sd.path)
        tmp.rename(sd.path)
        self._adopt_grades(src.parent, sd.name)
        self.status[sd.name] = f"copied from {src.parent.name}"
        self.log(f"[{sd.name}] identical stage found in run {src.parent.name}: copied, nothing recomputed")
        return True

    def _adopt_grades(self, src_run: Path, stage: str) -> None:
        """Put a copied stage's grades into this run's judge cache: an identical answer in a
        later stage of this run is then looked up, not graded (and paid for) again."""
        source = JudgeCache(src_run, JUDGE_CACHE)
        for row in self.grades(stage):
            if row["key"] not in self.cache and (rec := source.get(row["key"])) is not None:
                self.cache.put(row["key"], rec)
        self.cache.sync()

    def grades(self, stage: str) -> list[dict]:
        return read_jsonl(self.path / stage / "grades.jsonl")

    def train_data(self, stage: str) -> list[dict]:
        return read_jsonl(self.path / stage / "train_data.jsonl")

    def train_info(self, stage: str) -> dict:
        return json.loads((self.path / stage / "train.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- reading results back


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
        return [s for s in self.config.loop_stages if s in self.stages]

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

    def table(self, split: str = "original", stages: Sequence[str] | None = None, formatted: bool = True,
              stage_names: dict | None = None) -> pd.DataFrame:
        """The original experiment's results table, one row per stage."""
        stages = list(stages or self.stages)
        return iteration_table({st: self.summaries[(st, split)].overall for st in stages if (st, split) in self.summaries},
                               formatted=formatted, stage_names=stage_names)

    def stage_grades(self, stage: str, split: str = "original") -> pd.DataFrame:
        g = self.grades
        return g[(g["stage"] == stage) & (g["split"] == split)]

    def stage_pairs(self) -> list[tuple[str, str]]:
        """Consecutive loop stages (baseline→iter0→iter1…) and the last iteration vs the control."""
        pairs = list(zip(self.loop_stages, self.loop_stages[1:]))
        if CONTROL in self.stages:
            pairs.append((self.loop_stages[-1], CONTROL))
        return pairs

    def comparisons(self, split: str = "original", pairs: Sequence[tuple[str, str]] | None = None,
                    **kw) -> dict[tuple[str, str], Comparison]:
        """Paired comparisons of ``pairs`` (default :meth:`stage_pairs`), Holm-corrected together."""
        pairs = list(pairs or self.stage_pairs())
        return compare_stages({(a, b): (self.summaries[(a, split)], self.summaries[(b, split)]) for a, b in pairs},
                              seed=self.config.seed, **kw)

    def grade_json(self, stage: str, item_id: str, sample: int = 0, split: str = "original") -> dict:
        """The full grade of one answer, in the §4.2 JSON shape."""
        g = self.grades
        row = g[(g["stage"] == stage) & (g["split"] == split) & (g["item_id"] == item_id) & (g["sample"] == sample)]
        if row.empty:
            raise KeyError(f"no grade for {stage}/{split}/{item_id}/{sample}")
        r = row.iloc[0]
        return {"question": r["question"], "model_answer": r["answer"], "overall_label": r["label"],
                "overall_is_harmful": bool(r["harmful"]), "overall_score": float(r["score"]),
                "overall_reason": r["reason"], "drugs": list(r["drugs"])}

    def general_perplexity(self) -> pd.Series:
        """Perplexity on general Japanese text after each stage (the baseline is the untouched model)."""
        values = {s: json.loads((self.run_dir / s / "metrics.json").read_text(encoding="utf-8")).get("general_perplexity")
                  for s in self.stages}
        return pd.Series(values, dtype=float, name="general_perplexity")

    def stage_seconds(self) -> pd.DataFrame:
        """Seconds per stage in training, generation, judging and perplexity, as measured by the
        run that computed the stage (a copied stage keeps its original's times)."""
        rows = []
        for s in self.stages:
            ev = json.loads((self.run_dir / s / "metrics.json").read_text(encoding="utf-8")).get("seconds", {})
            rows.append({"stage": s, "train": float((self.stage_info.get(s) or {}).get("seconds") or 0.0),
                         **{k: float(ev.get(k, float("nan"))) for k in ("generate", "judge", "perplexity")}})
        return pd.DataFrame(rows, columns=["stage", "train", "generate", "judge", "perplexity"])

    def adapter_path(self, stage: str) -> Path:
        return self.run_dir / stage / "adapter"


def _training_row(stage: str, t: dict) -> dict:
    return {"stage": stage, "examples": t.get("examples"), "corrective": t.get("n_corrective"),
            "replay": t.get("n_replay"), "failed": len(t["failed"]) if "failed" in t else None,
            "steps": t.get("steps"), "seconds": t.get("seconds"), "final_loss": t.get("final_loss")}


def _with_pass_bar(summary: Summary, pass_accuracy: float) -> Summary:
    """``solved`` under this run's pass bar. A stage's metrics.json was written with the bar of the
    run that computed it, and stages before iteration 1 are shared between runs whose bars differ
    (the bar only changes what later stages train on), so it is applied again when read back."""
    pq = summary.per_question
    if len(pq) and {"accuracy", "unsafe"} <= set(pq.columns):
        pq = pq.assign(solved=question_passes(pq["accuracy"], pq["unsafe"], pass_accuracy))
        summary.overall.update(solved=int(pq["solved"].sum()),
                               solved_rate=float(pq["solved"].mean()) if len(pq) else float("nan"))
    return Summary(pq, summary.overall)


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
        gen_frames.append(pd.DataFrame(read_jsonl(run_dir / s / "generations.jsonl")).assign(stage=s))
        grade_frames.append(pd.DataFrame(read_jsonl(run_dir / s / "grades.jsonl")).assign(stage=s))
        metrics = json.loads((run_dir / s / "metrics.json").read_text(encoding="utf-8"))
        for split in SPLITS:
            if split in metrics:
                summaries[(s, split)] = _with_pass_bar(Summary(pd.DataFrame(metrics[split]["per_question"]),
                                                               dict(metrics[split]["overall"])), config.pass_accuracy)
        tj = run_dir / s / "train.json"
        if tj.exists():
            t = json.loads(tj.read_text(encoding="utf-8"))
            info[s] = {k: v for k, v in t.items() if k != "history"}
            train_rows.append(_training_row(s, t))
            hist += [{"stage": s, **h} for h in t.get("history", [])]
    generations = pd.concat(gen_frames, ignore_index=True) if gen_frames else pd.DataFrame()
    grades = pd.concat(grade_frames, ignore_index=True) if grade_frames else pd.DataFrame()
    if len(grades):
        grades = grades.merge(generations[["stage", "split", "item_id", "sample", "question", "answer"]],
                              on=["stage", "split", "item_id", "sample"], how="left")
    return LoopResult(run_dir, config, identity, stages, generations, grades, summaries,
                      pd.DataFrame(train_rows), pd.DataFrame(hist), info, calls, errors, dict(seconds or {}),
                      dict(reused or {}))
