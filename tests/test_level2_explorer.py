"""Level 2, ``course_lib.level2.explorer``: the widget explorer and its static fallback."""
from __future__ import annotations

import pytest

from course_lib.lora import lora_parameter_count

# every test of this module on one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

# the explorer's settings carry the sweep's names
SHORT = dict(num_train_epochs=1, per_device_train_batch_size=4)


def _capture_display(monkeypatch):
    import course_lib.level2.explorer as explorer_module

    shown = []
    monkeypatch.setattr(explorer_module, "display", lambda *objs, **kw: shown.extend(objs))
    return shown


def test_explorer_static_fallback_draws_a_figure_and_no_widget(tiny, records, monkeypatch):
    import ipywidgets
    from matplotlib.figure import Figure

    from course_lib.level2.explorer import lora_explorer, running_in_jupyterlab

    model, tok = tiny
    shown = _capture_display(monkeypatch)
    assert not running_in_jupyterlab()  # plain pytest: no notebook front end
    explorer = lora_explorer(model, tok, records[:8], records[8:12], defaults=SHORT)
    assert explorer.mode == "static" and explorer.widget is None
    assert not any(isinstance(o, ipywidgets.Widget) for o in shown)
    figures = [o for o in shown if isinstance(o, Figure)]
    assert figures and figures[0] is explorer.figure
    loss_ax, param_ax = explorer.figure.axes
    assert loss_ax.lines and param_ax.lines, "both panels have data"
    assert len(explorer.runs) == 1 and explorer.runs.iloc[0]["lora_r"] == 8


def test_explorer_interactive_builds_widgets_and_trains_on_click(tiny, records, monkeypatch):
    import ipywidgets

    from course_lib.level2.explorer import lora_explorer

    model, tok = tiny
    shown = _capture_display(monkeypatch)
    explorer = lora_explorer(model, tok, records[:8], records[8:12], interactive=True, defaults=SHORT)
    assert explorer.mode == "interactive" and isinstance(explorer.widget, ipywidgets.VBox)
    assert shown[0] is explorer.widget
    assert len(explorer.runs) == 1 and explorer.runs.iloc[0]["lora_r"] == 8, "the default run is drawn at once"
    sliders = [w for w in _walk(explorer.widget) if isinstance(w, (ipywidgets.SelectionSlider, ipywidgets.IntSlider))]
    assert {s.description for s in sliders} >= {"ランク r", "α（alpha）", "学習率（lr）", "エポック数"}
    info = next(w for w in _walk(explorer.widget) if isinstance(w, ipywidgets.HTML))
    rank = next(s for s in sliders if s.description == "ランク r")
    rank.value = 4
    assert f"{lora_parameter_count(model, 4).trainable:,}" in info.value, "parameter count follows the slider"
    first_figure = explorer.figure
    explorer.train_once()
    assert len(explorer.runs) == 2 and explorer.runs.iloc[-1]["lora_r"] == 4
    assert explorer.figure is not first_figure and len(explorer.figure.axes[0].lines) > len(first_figure.axes[0].lines)


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_running_in_jupyterlab_detection(monkeypatch):
    import IPython

    from course_lib.level2 import explorer

    class FakeKernelShell:
        kernel = object()

    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert not explorer.running_in_jupyterlab(), "a kernel without a notebook session (papermill)"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/student/level2_parameters.ipynb")
    assert explorer.running_in_jupyterlab()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not explorer.running_in_jupyterlab(), "the course runner's headless mark wins"
