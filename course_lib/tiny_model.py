"""Build the course's embedded tiny Qwen3 model, offline and deterministically.

Recipe: a byte-level BPE tokenizer trained on the course's own Japanese corpus
(``datasets/pretrain``), Qwen's special tokens and a ChatML chat template, a
small ``Qwen3Config``, then a short full-parameter pre-training on the same
corpus. LoRA needs this: on a randomly initialised base the adapter has nothing
to steer and the loss stays flat.

The result is saved with ``save_pretrained`` and loaded back through the same
``from_pretrained`` code as ``Qwen/Qwen3-0.6B``. It is cached under a folder
named by a hash of the recipe and the corpus, so it is rebuilt only when either
changes.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .paths import DATASETS_DIR, cache_dir
from .progress import progress_bar

PRETRAIN_DIR = DATASETS_DIR / "pretrain"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, the format Qwen models use. `enable_thinking` is accepted and ignored:
# the tiny model has no thinking mode, so callers can pass it to any profile.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BUILDER_VERSION = 1  # bump when the code below changes what gets built


@dataclass(frozen=True)
class TinyRecipe:
    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 3e-3
    warmup_steps: int = 30
    seed: int = 1234


DEFAULT_RECIPE = TinyRecipe()


def cache_root() -> Path:
    """Where built models live: :func:`course_lib.paths.cache_dir` (``$COURSE_CACHE_DIR`` or ``<repo>/.cache``)."""
    return cache_dir()


def corpus_files() -> list[Path]:
    files = sorted(PRETRAIN_DIR.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{PRETRAIN_DIR}: no *.txt corpus files; the tiny model cannot be built without them")
    return files


def read_corpus() -> list[str]:
    """Paragraphs of the pre-training corpus, one per non-blank line."""
    paragraphs: list[str] = []
    for path in corpus_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                paragraphs.append(line.strip())
    return paragraphs


def recipe_hash(recipe: TinyRecipe = DEFAULT_RECIPE) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": asdict(recipe), "builder": BUILDER_VERSION}, sort_keys=True).encode())
    for path in corpus_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def tiny_model_dir(recipe: TinyRecipe = DEFAULT_RECIPE) -> Path:
    return cache_root() / "models" / f"tiny-qwen3-{recipe_hash(recipe)}"


def train_tokenizer(paragraphs: list[str], vocab_size: int):
    """Byte-level BPE (as Qwen uses) trained on our own text, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def _token_stream(tokenizer, paragraphs: list[str]) -> torch.Tensor:
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids: list[int] = []
    for p in paragraphs:
        ids.extend(tokenizer(p, add_special_tokens=False)["input_ids"])
        ids.append(sep)
    return torch.tensor(ids, dtype=torch.long)


def _qwen3_config(recipe: TinyRecipe, tokenizer):
    """Qwen3's architecture at the recipe's small sizes, with the tokenizer's special tokens."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads,
        head_dim=recipe.hidden_size // recipe.num_attention_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _pretrain(model, stream: torch.Tensor, recipe: TinyRecipe, progress: bool) -> list[float]:
    """Full-parameter pre-training on random windows of the corpus (seeded); returns the losses."""
    model.train()
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        done = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    max_start = len(stream) - recipe.seq_len - 1
    losses: list[float] = []
    bar = progress_bar(range(recipe.steps), enabled=progress, desc="pre-training tiny Qwen3")
    for step in bar:
        starts = torch.randint(0, max_start, (recipe.batch_size,), generator=gen)
        batch = torch.stack([stream[s : s + recipe.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def build_tiny_model(out_dir: Path | None = None, recipe: TinyRecipe = DEFAULT_RECIPE, progress: bool = True) -> Path:
    """Train tokenizer and model from scratch and save them; returns the folder."""
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir) if out_dir else tiny_model_dir(recipe)
    start = time.perf_counter()
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)

    paragraphs = read_corpus()
    tokenizer = train_tokenizer(paragraphs, recipe.vocab_size)
    stream = _token_stream(tokenizer, paragraphs)
    model = AutoModelForCausalLM.from_config(_qwen3_config(recipe, tokenizer))
    losses = _pretrain(model, stream, recipe, progress)

    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {
        "recipe": asdict(recipe),
        "recipe_hash": recipe_hash(recipe),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_tokens": int(len(stream)),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "first_loss": losses[0],
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (tmp / "course_build.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)  # atomic: a half-built model never looks finished
    return out_dir


def ensure_tiny_model(recipe: TinyRecipe = DEFAULT_RECIPE, progress: bool = True) -> Path:
    """Return the cached tiny model folder, building it first if needed."""
    path = tiny_model_dir(recipe)
    if (path / "course_build.json").exists():
        return path
    print(f"Building the embedded tiny model into {path} (first run only, about a minute on 2 CPU cores)...")
    return build_tiny_model(path, recipe, progress=progress)


def quick_recipe() -> TinyRecipe:
    """A much smaller recipe for tests of the build itself (determinism, round trip)."""
    return replace(DEFAULT_RECIPE, vocab_size=600, hidden_size=64, intermediate_size=128, num_hidden_layers=1, steps=10, batch_size=4, seq_len=32)
