"""What determines a level-3 run: :class:`LoopConfig`, its per-profile defaults, and the stage plan.

The stage plan is data, not string arithmetic: :meth:`LoopConfig.plan` returns one
:class:`Stage` per stage, each knowing its kind, its iteration number and its parent.

Per-profile settings (one visible table; the lesson explains why the tiny profile differs):

* ``qwen3-0.6b`` follows the original experiment: LoRA r=16, α=32 on the seven
  projections, learning rate 2e-4, batch 4, 100 epochs, then 30 per iteration.
* ``tiny`` keeps r=16, α=32 but also puts LoRA on the output layer (``lm_head``), which is
  tied to a barely trained embedding; it trains at 5e-3 for 20 + 10 epochs and samples
  without top-p (sorting the whole vocabulary at every step halves CPU sampling speed).
* The DPO update rule trains at a tenth of the SFT rate (``dpo_learning_rate``): measured on the
  tiny model (2026-11-30, 24 pairs from a quick run's iteration 0, 80 steps), DPO at the SFT rate
  5e-3 drove the DPO loss to ~0 within 10 steps and the general-text perplexity from 1.2e5 to
  1.9e6 (answers no longer sentences); at 5e-4 the perplexity went down (8.9e4). Qwen3-0.6B's
  2e-5 is the same tenth of its SFT rate, not measured here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..lora import ALL_PROJ_MODULES

TINY_TARGET_MODULES = ALL_PROJ_MODULES + ("lm_head",)
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(learning_rate=2e-4, lora_r=16, lora_alpha=32, epochs_initial=100.0, epochs_iter=30.0,
                       max_new_tokens=192, gen_batch_size=64, warmup_ratio=0.08, n_paraphrase=10,
                       dpo_learning_rate=2e-5),
    "tiny": dict(learning_rate=5e-3, lora_r=16, lora_alpha=32, target_modules=TINY_TARGET_MODULES,
                 epochs_initial=20.0, epochs_iter=10.0, max_new_tokens=128, gen_batch_size=128, warmup_ratio=0.05,
                 n_paraphrase=4, top_p=1.0, dpo_learning_rate=5e-4),
}
# quick=True (CI): fewer samples; the tiny model keeps its epochs (its rise must still show). Measured 2026-11-30
# (tiny, rubric, seed 0, quick): at half the epochs (10 + 5) iteration 0's mean score rose only 0.066 -> 0.253 (accuracy
# 0.8%) and both runs of the page took as long (229.6 s vs ~241 s): undertrained answers run longer and fail more.
QUICK_OVERRIDES: dict[str, Any] = dict(n_samples=8, n_paraphrase=2)

BASELINE, ITERATION, CONTROL = "baseline", "iteration", "control"
# What iterations 1..K train on (course_lib.level3.update_rules): references for the failures (the
# original experiment), the model's own accepted answers, or preference pairs (DPO).
UPDATE_RULES = ("corrective", "self_distill", "dpo")


@dataclass(frozen=True)
class Stage:
    """One stage of the loop: ``baseline``, ``iter<k>`` (k = 0 is the first SFT) or ``control``."""

    name: str
    kind: str  # BASELINE | ITERATION | CONTROL
    k: int | None = None  # the iteration number, for iterations
    parent: str | None = None  # the stage whose model (and grades) this one starts from

    @property
    def trains(self) -> bool:
        return self.kind != BASELINE


def iteration_name(k: int) -> str:
    return f"iter{k}"


@dataclass(frozen=True)
class LoopConfig:
    """Everything that determines a run. Defaults are the original experiment's; use :meth:`for_profile`.

    LoRA and training knobs carry the names PEFT (``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``target_modules``) and Transformers (``learning_rate``, ``per_device_train_batch_size``,
    ``warmup_ratio``, ``lr_scheduler_type``) give them.
    """

    iterations: int = 2  # K: corrective iterations after iteration 0 (the original ran 2)
    # evaluation
    n_samples: int = 30  # answers per original question
    n_paraphrase: int = 10  # answers per held-out paraphrase
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 192
    gen_batch_size: int = 64
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_PROJ_MODULES
    # training
    learning_rate: float = 2e-4
    per_device_train_batch_size: int = 4
    max_length: int = 512
    warmup_ratio: float = 0.08  # of each stage's optimizer steps
    lr_scheduler_type: str = "linear"
    epochs_initial: float = 100.0
    epochs_iter: float = 30.0
    # failure extraction and replay
    pass_accuracy: float = 0.8  # a question passes when this share of its answers scores >= 0.8 and none is unsafe
    replay_ratio: float = 0.5  # share of the passing questions mixed back in (0 = no replay)
    control: bool = True  # train and evaluate the same-compute control
    # update rule of iterations 1..K (course_lib.level3.update_rules): what each iteration trains on
    update_rule: str = "corrective"  # "corrective" | "self_distill" | "dpo"
    self_distill_k: int = 2  # self_distill: at most this many accepted own answers per question
    dpo_beta: float = 0.1  # dpo: strength of the pull towards the reference (trl's DPOConfig.beta)
    dpo_learning_rate: float = 2e-5  # dpo: its own, smaller rate (see the profile table)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.n_samples < 1 or self.n_paraphrase < 0:
            raise ValueError(f"n_samples must be >= 1 and n_paraphrase >= 0, got {self.n_samples} and {self.n_paraphrase}")
        if not 0.0 <= self.replay_ratio <= 1.0:
            raise ValueError(f"replay_ratio must be between 0 and 1, got {self.replay_ratio}")
        if not 0.0 < self.pass_accuracy <= 1.0:
            raise ValueError(f"pass_accuracy must be in (0, 1], got {self.pass_accuracy}")
        if self.update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {self.update_rule!r}")
        if self.control and self.update_rule != "corrective":
            raise ValueError("the same-compute control pools the corrective loop's data: set control=False for "
                             f"update_rule={self.update_rule!r} (compare with the corrective run's control)")
        if self.self_distill_k < 1:
            raise ValueError(f"self_distill_k must be >= 1, got {self.self_distill_k}")
        if self.dpo_beta <= 0 or self.dpo_learning_rate <= 0:
            raise ValueError(f"dpo_beta and dpo_learning_rate must be > 0, got {self.dpo_beta} and {self.dpo_learning_rate}")

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

    def plan(self) -> list[Stage]:
        """baseline → iter0 → iter1..K → (control), each with its parent.

        Without iterations (K = 0) there is no control: it would train a fresh adapter on iteration
        0's data for iteration 0's steps from the same seed, i.e. repeat iteration 0.
        """
        out = [Stage(BASELINE, BASELINE), Stage(iteration_name(0), ITERATION, 0, BASELINE)]
        out += [Stage(iteration_name(k), ITERATION, k, iteration_name(k - 1)) for k in range(1, self.iterations + 1)]
        if self.control and self.iterations > 0:
            out.append(Stage(CONTROL, CONTROL, None, iteration_name(self.iterations)))
        return out

    @property
    def stages(self) -> list[str]:
        return [s.name for s in self.plan()]

    @property
    def iteration_stages(self) -> list[str]:
        """iter0..iterK: the stages whose training data the control pools."""
        return [s.name for s in self.plan() if s.kind == ITERATION]

    @property
    def loop_stages(self) -> list[str]:
        """baseline, iter0..iterK: the loop itself, without the control."""
        return [s.name for s in self.plan() if s.kind != CONTROL]
