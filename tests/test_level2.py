"""Level 2: parameter arithmetic, the sweep runner, the widget explorer, and the lesson itself."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib.experiments import (
    MODULE_SETS,
    lora_parameter_count,
    lora_parameter_table,
    qwen3_0_6b_skeleton,
    run_sweep,
)
from course_lib.lora import ALL_PROJ_MODULES, ATTENTION_MODULES, MLP_MODULES, attach_lora

PEFT_LINE = re.compile(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model trains fastest on one thread, and many times faster on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    from course_lib.profiles import load_model

    loaded = load_model("tiny", device="cpu", verbose=False)
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def records():
    from course_lib.data import DATASETS_DIR, load_jsonl

    return load_jsonl(DATASETS_DIR / "level1" / "train.jsonl")


def _peft_numbers(text: str) -> tuple[int, int, str]:
    match = PEFT_LINE.search(text)
    assert match, f"no print_trainable_parameters line in {text!r}"
    return int(match[1].replace(",", "")), int(match[2].replace(",", "")), match[3]


@pytest.mark.parametrize("r", [1, 4, 16])
@pytest.mark.parametrize("modules", [ALL_PROJ_MODULES, ATTENTION_MODULES, MLP_MODULES, MODULE_SETS["q,v"]],
                         ids=["all7", "attention", "mlp", "qv"])
def test_parameter_count_matches_print_trainable_parameters(tiny, capsys, r, modules):
    model, _ = tiny
    predicted = lora_parameter_count(model, r, modules)
    peft_model = attach_lora(model, r=r, alpha=2 * r, target_modules=modules)
    try:
        capsys.readouterr()
        peft_model.print_trainable_parameters()
        printed = capsys.readouterr().out
        # the arithmetic also works on the wrapped model (it looks through the LoRA layers)
        assert lora_parameter_count(peft_model, r, modules) == predicted
    finally:
        peft_model.unload()
    trainable, total, pct = _peft_numbers(printed)
    assert (trainable, total) == (predicted.trainable, predicted.total)
    assert pct == f"{predicted.percent:.4f}"
    assert printed.strip() == str(predicted)


def test_parameter_count_is_r_times_in_plus_out(tiny):
    model, _ = tiny
    table = lora_parameter_table(model, 8, ALL_PROJ_MODULES)
    # tiny: hidden 128, 4 heads x 32, 2 KV heads x 32, intermediate 384, 3 layers
    shapes = dict(zip(table["module"], zip(table["in_features"], table["out_features"])))
    assert shapes == {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "o_proj": (128, 128),
                      "gate_proj": (128, 384), "up_proj": (128, 384), "down_proj": (384, 128)}
    assert lora_parameter_count(model, 8).trainable == 3 * 8 * sum(i + o for i, o in shapes.values())
    with pytest.raises(ValueError, match="no Linear layer"):
        lora_parameter_count(model, 8, ["not_a_module"])


def test_qwen3_0_6b_arithmetic_matches_peft_on_meta_model(capsys):
    qwen = qwen3_0_6b_skeleton()
    assert sum(p.numel() for p in qwen.parameters()) == 596_049_920
    predicted = lora_parameter_count(qwen, 16)
    assert predicted.trainable == 16 * 28 * 22_528 == 10_092_544
    peft_model = attach_lora(qwen, r=16, alpha=32)
    capsys.readouterr()
    peft_model.print_trainable_parameters()
    assert capsys.readouterr().out.strip() == str(predicted)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_sweep_restores_base_weights_exactly_and_is_reproducible(tiny, records):
    model, tok = tiny
    before = _state(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    configs = [dict(r=2, alpha=4), dict(r=8, alpha=16, dropout=0.1, target_modules=ATTENTION_MODULES)]
    common = dict(max_steps=2, batch_size=4, lr=1e-2)
    table = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common)

    after = model.state_dict()
    assert set(after) == set(before), "the adapter's tensors must be gone"
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights changed"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not hasattr(model, "peft_config")

    assert list(table["r"]) == [2, 8]
    assert list(table["trainable_params"]) == [lora_parameter_count(model, 2).trainable,
                                              lora_parameter_count(model, 8, ATTENTION_MODULES).trainable]
    assert sorted(table.histories["run"].unique()) == [0, 1]
    assert len(table.history(1).dropna(subset=["loss"])) == 2
    assert table["val_loss"].notna().all() and (table["steps"] == 2).all()

    again = run_sweep(model, tok, configs, records[:8], records[8:12], progress=False, defaults=common)
    assert list(again["val_loss"]) == list(table["val_loss"]), "same seed, same table"


def test_sweep_final_val_loss_matches_trainer_eval_loss(tiny, records):
    model, tok = tiny
    table = run_sweep(model, tok, [dict(r=4, epochs=1, batch_size=4, lr=1e-2)], records[:8], records[8:13],
                      progress=False)
    assert table.iloc[0]["val_loss"] == pytest.approx(table.iloc[0]["best_val_loss"], abs=1e-5)


def test_sweep_cache_skips_identical_runs(tiny, records, monkeypatch):
    import course_lib.experiments as ex

    model, tok = tiny
    calls = []
    real_train = ex.train_model
    monkeypatch.setattr(ex, "train_model", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    cache = {}
    common = dict(max_steps=1, batch_size=4)
    first = run_sweep(model, tok, [dict(r=2)], records[:4], None, progress=False, defaults=common, cache=cache)
    second = run_sweep(model, tok, [dict(r=2, epochs=3.0, name="same run")], records[:4], None, progress=False,
                       defaults=common, cache=cache)
    assert len(calls) == 1
    assert second.iloc[0]["name"] == "same run" and second.iloc[0]["train_loss"] == first.iloc[0]["train_loss"]


def test_sweep_notices_a_changed_base(tiny, records):
    model, tok = tiny
    weight = model.get_input_embeddings().weight
    original = weight.detach().clone()

    def vandal(peft_model, tokenizer):
        with torch.no_grad():
            weight[0, 0] += 1.0
        return {}

    try:
        with pytest.raises(RuntimeError, match="changed the base model"):
            run_sweep(model, tok, [dict(r=2, max_steps=1, batch_size=4)], records[:4], None, progress=False,
                      evaluate=vandal)
    finally:
        with torch.no_grad():
            weight.copy_(original)


def _capture_display(monkeypatch):
    import course_lib.widgets as widgets

    shown = []
    monkeypatch.setattr(widgets, "display", lambda *objs, **kw: shown.extend(objs))
    return shown


def test_explorer_static_fallback_draws_a_figure_and_no_widget(tiny, records, monkeypatch):
    import ipywidgets
    from matplotlib.figure import Figure

    from course_lib.widgets import lora_explorer, running_in_jupyterlab

    model, tok = tiny
    shown = _capture_display(monkeypatch)
    assert not running_in_jupyterlab()  # plain pytest: no notebook front end
    explorer = lora_explorer(model, tok, records[:8], records[8:12], defaults=dict(epochs=1, batch_size=4))
    assert explorer.mode == "static" and explorer.widget is None
    assert not any(isinstance(o, ipywidgets.Widget) for o in shown)
    figures = [o for o in shown if isinstance(o, Figure)]
    assert figures and figures[0] is explorer.figure
    loss_ax, param_ax = explorer.figure.axes
    assert loss_ax.lines and param_ax.lines, "both panels have data"
    assert len(explorer.runs) == 1 and explorer.runs.iloc[0]["r"] == 8


def test_explorer_interactive_builds_widgets_and_trains_on_click(tiny, records, monkeypatch):
    import ipywidgets

    from course_lib.widgets import lora_explorer

    model, tok = tiny
    shown = _capture_display(monkeypatch)
    explorer = lora_explorer(model, tok, records[:8], records[8:12], interactive=True,
                             defaults=dict(epochs=1, batch_size=4))
    assert explorer.mode == "interactive" and isinstance(explorer.widget, ipywidgets.VBox)
    assert shown[0] is explorer.widget
    assert len(explorer.runs) == 1 and explorer.runs.iloc[0]["r"] == 8, "the default run is drawn at once"
    sliders = [w for w in _walk(explorer.widget) if isinstance(w, (ipywidgets.SelectionSlider, ipywidgets.IntSlider))]
    assert {s.description for s in sliders} >= {"ランク r", "α（alpha）", "学習率（lr）", "エポック数"}
    info = next(w for w in _walk(explorer.widget) if isinstance(w, ipywidgets.HTML))
    rank = next(s for s in sliders if s.description == "ランク r")
    rank.value = 4
    assert f"{lora_parameter_count(model, 4).trainable:,}" in info.value, "parameter count follows the slider"
    first_figure = explorer.figure
    explorer.train_once()
    assert len(explorer.runs) == 2 and explorer.runs.iloc[-1]["r"] == 4
    assert explorer.figure is not first_figure and len(explorer.figure.axes[0].lines) > len(first_figure.axes[0].lines)


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_running_in_jupyterlab_detection(monkeypatch):
    import IPython

    from course_lib import widgets

    class FakeKernelShell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not widgets.running_in_jupyterlab(), "a kernel without a notebook session (papermill)"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/student/level2_parameters.ipynb")
    assert widgets.running_in_jupyterlab()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not widgets.running_in_jupyterlab(), "the course runner's headless mark wins"


@pytest.mark.notebook
def test_level2_notebook_executes_with_tiny_profile(executed_lesson):
    _, nb = executed_lesson("level2_parameters")  # run once per session by the runner (tests/conftest.py)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    stderr = [o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"stray stderr in the lesson: {stderr[:3]}"
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), \
        "headless run must not leave widgets (they render blank in the book)"
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 12, f"every experiment draws a figure, got {images}"
