"""The lessons in a real JupyterLab, the way a student opens them with ``python -m course_lib lab``.

One JupyterLab server per module, on 127.0.0.1 with a random port and token, rooted at a
temporary copy of ``notebooks/`` (plus ``jupytext.toml``), with the project setting applied
exactly as the ``lab`` command applies it. It is always stopped (terminate, then kill).

- REST: every lesson ``.py`` opens as a notebook through jupytext's contents manager, with
  its parameters cell tagged; level 0 runs in a real kernel over the kernel websocket.
- Browser (headless Chromium): level 1 opens as a notebook by default and its objectives
  admonition renders as a box (jupyterlab-myst); level 2 opens, and its widget explorer cell
  runs in a live kernel, a slider moves and the plot changes.

Level 2's own setup (model, data, every sweep before the explorer) takes minutes on a
laptop CPU, so the explorer cell runs in a small stand-in notebook: the tiny model and
eight training examples, then the lesson's explorer cell copied verbatim from the lesson.

Screenshots: ``_build/test-artifacts/screenshots/jupyterlab-*.png``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from course_lib.paths import HEADLESS_ENV, NOTEBOOKS_DIR, REPO_ROOT, REPORT_ENV
from course_lib.publish import lab
from course_lib.publish.runner import toc_notebooks

ARTIFACTS = REPO_ROOT / "_build" / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
HOST = "127.0.0.1"  # the suite allows loopback only (pytest-socket); never "localhost", which may be ::1
TEST_PARAMETERS = 'model_profile = "tiny"\nquick = True\n'
STAND_IN = "explorer_check.py"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--no-proxy-server", "--window-size=1400,1000")


# ---------------------------------------------------------------- the project setting (no server)

def test_jupytext_registers_the_factory_the_setting_names():
    """The default-viewer setting names jupytext's widget factory; a renamed factory would make it a no-op."""
    assert lab.installed_jupytext_factory() == lab.JUPYTEXT_FACTORY


def test_project_setting_goes_to_the_given_folder_only(tmp_path):
    path, extra = lab.apply_project_settings(tmp_path / "settings")
    assert path == tmp_path / "settings" / "overrides.d" / lab.OVERRIDES_FILE
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}
    assert extra == [f"--LabApp.app_settings_dir={(tmp_path / 'settings').resolve()}"]


def test_shared_python_gets_a_project_settings_folder(tmp_path, monkeypatch):
    """Outside a virtual or conda environment nothing is written to the environment's JupyterLab."""
    env_settings = tmp_path / "system" / "settings"
    (env_settings / "overrides.d").mkdir(parents=True)
    (env_settings / "overrides.json").write_text('{"a": {"b": 1}}', encoding="utf-8")
    monkeypatch.setattr(lab, "environment_app_settings_dir", lambda: env_settings)
    monkeypatch.setattr(lab, "in_project_environment", lambda path: False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    path, extra = lab.apply_project_settings()
    project = tmp_path / "cache" / "jupyterlab" / "settings"
    assert path == project / "overrides.d" / lab.OVERRIDES_FILE
    assert extra == [f"--LabApp.app_settings_dir={project.resolve()}"]
    assert (project / "overrides.json").read_text(encoding="utf-8") == '{"a": {"b": 1}}'  # the environment's own kept
    assert list((env_settings / "overrides.d").iterdir()) == []


def test_lab_and_test_commands_pass_their_arguments_on(monkeypatch):
    import course_lib.__main__ as cli

    calls = []
    monkeypatch.setattr(lab, "run_lab", lambda args: calls.append(("lab", list(args))) or 0)
    monkeypatch.setattr(subprocess, "call",
                        lambda cmd, **kw: calls.append(("call", cmd, kw.get("env", {}).get("PY"))) or 0)
    assert cli.main(["lab", "--port=8890"]) == 0
    assert cli.main(["test", "-k", "level1", "-q"]) == 0
    assert calls[0] == ("lab", ["--port=8890"])
    kind, cmd, py = calls[1]
    if os.name == "nt":
        assert cmd == [sys.executable, "-m", "pytest", "-k", "level1", "-q"]
    else:  # the same script `make test` runs, with this interpreter
        assert cmd[1:] == [str(REPO_ROOT / "tests" / "run_tests.sh"), "-k", "level1", "-q"] and py == sys.executable


# ---------------------------------------------------------------- the server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _stand_in_notebook() -> str:
    """Level 2's explorer cell, verbatim, after a small setup that defines what it uses."""
    import jupytext

    lesson = jupytext.read(NOTEBOOKS_DIR / "level2_parameters.py")
    cells = [c for c in lesson.cells if c.cell_type == "code" and "lora_explorer(" in c.source]
    assert len(cells) == 1, "level 2 should have one explorer cell"
    setup = '''\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# Stand-in for level 2's setup (test_jupyterlab.py): the tiny model and eight examples,
# then the lesson's explorer cell, verbatim.

# %%
import torch

from course_lib.level1 import load_level1_split
from course_lib.level2.explorer import running_in_jupyterlab
from course_lib.profiles import load_model

torch.set_num_threads(1)
loaded = load_model("tiny", device="cpu", verbose=False)
model, tokenizer = loaded.model, loaded.tokenizer
records = load_level1_split("train")
train_set, val_set = records[:8], records[8:12]
quick, seed, cache = False, 0, {}
BASE_LR = 1e-2
REF = dict(num_train_epochs=2)
live = running_in_jupyterlab()
assert live, "a kernel JupyterLab started should count as a live notebook"
'''
    return setup + "\n# %%\n" + cells[0].source + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real JupyterLab on 127.0.0.1 with the project setting; yields (base_url, token, root)."""
    import httpx

    from course_lib.tiny_model import ensure_tiny_model

    ensure_tiny_model()  # built once here, not inside a cell's time limit
    tmp = tmp_path_factory.mktemp("jupyterlab")
    root = tmp / "course"
    (root / "notebooks").mkdir(parents=True)
    for source in NOTEBOOKS_DIR.glob("*.py"):
        shutil.copy2(source, root / "notebooks" / source.name)
    shutil.copy2(REPO_ROOT / "jupytext.toml", root / "jupytext.toml")
    (root / "notebooks" / STAND_IN).write_text(_stand_in_notebook(), encoding="utf-8")

    # A fresh Jupyter configuration, so the user's own settings neither help nor hinder.
    user_settings = tmp / "user-settings"
    news = user_settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}), encoding="utf-8")  # no "get news?" toast in screenshots
    env = {k: v for k, v in os.environ.items() if k not in (HEADLESS_ENV, REPORT_ENV)}  # a person is watching
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(user_settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               IPYTHONDIR=str(tmp / "ipython"), PYDEVD_DISABLE_FILE_VALIDATION="1")

    _, extra = lab.apply_project_settings()  # what `python -m course_lib lab` does
    port, token = _free_port(), secrets.token_hex(16)
    command = lab.lab_command(root, [
        *extra, "--no-browser", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
        # nothing beyond loopback: no news feed, no update check, no extension index
        "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "jupyterlab-server.log"
    log = open(log_path, "w", encoding="utf-8")
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=os.name != "nt")
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log_path.read_text(encoding='utf-8')[-3000:]}")
            try:
                if _get(base, token, "/api/status").status_code == 200:
                    break
            except (OSError, httpx.TransportError):  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in 90 s:\n{log_path.read_text(encoding='utf-8')[-3000:]}")
            time.sleep(0.5)
        yield base, token, root
    finally:
        proc.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if os.name != "nt":
            try:  # anything the server started and left behind (its own process group)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.close()


def _client():
    import httpx

    return httpx.Client(trust_env=False, timeout=30)  # never through a proxy: loopback only


def _get(base: str, token: str, path: str):
    with _client() as client:
        return client.get(base + path, headers={"Authorization": f"token {token}"})


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _open_as_notebook(server, name: str) -> dict:
    base, token, _ = server
    response = _get(base, token, f"/api/contents/notebooks/{name}.py?type=notebook&content=1")
    assert response.status_code == 200, f"{name}.py did not open as a notebook: {response.text[:500]}"
    model = response.json()
    assert model["type"] == "notebook" and model["format"] == "json"
    return model["content"]


# ---------------------------------------------------------------- REST and kernel

def test_project_setting_reaches_the_server(server):
    """The settings JupyterLab serves make jupytext's notebook view the default for .py files."""
    base, token, _ = server
    response = _get(base, token, "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert response.status_code == 200, response.text[:500]
    default = response.json()["schema"]["properties"]["defaultViewers"]["default"]
    assert default.get("python") == lab.JUPYTEXT_FACTORY, default


@pytest.mark.parametrize("name", toc_notebooks())
def test_lesson_opens_as_a_notebook_with_its_parameters_cell(server, name):
    nb = _open_as_notebook(server, name)
    cells = nb["cells"]
    assert len(cells) > 5 and any(c["cell_type"] == "markdown" for c in cells)
    tagged = [c for c in cells if "parameters" in _tags(c)]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", [c["metadata"] for c in cells[:5]]
    assert "model_profile" in "".join(tagged[0]["source"])
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


class KernelSocket:
    """A minimal Jupyter client over ``/api/kernels/<id>/channels`` (JSON messages, protocol 5)."""

    def __init__(self, base: str, token: str, kernel_id: str):
        import websocket  # websocket-client: a dependency of jupyter_server

        self.session = uuid.uuid4().hex
        url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=10,
                                              http_no_proxy=[HOST])

    def execute(self, code: str, timeout: float = 180) -> dict:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session, "username": "test",
                       "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        reply, idle, errors = None, False, []
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply in {timeout} s to:\n{code[:300]}")
            self.ws.settimeout(max(1.0, deadline - time.monotonic()))
            frame = self.ws.recv()
            if isinstance(frame, bytes):  # binary frames carry buffers (widgets); nothing to check here
                continue
            msg = json.loads(frame)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "execute_reply":
                reply = msg["content"]
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "error":
                errors.append("\n".join(msg["content"].get("traceback", [])) or msg["content"].get("evalue", ""))
        return {"status": reply["status"], "errors": errors, "reply": reply}

    def close(self):
        self.ws.close()


def test_level0_runs_in_a_real_kernel_through_the_server(server):
    base, token, _ = server
    nb = _open_as_notebook(server, "level0_setup")
    code = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        code.append("".join(cell["source"]))
        if "parameters" in _tags(cell):
            code.append(TEST_PARAMETERS)  # as papermill would: the embedded model, CI sizes
    assert TEST_PARAMETERS in code, "no parameters cell to pin the model profile after"

    headers = {"Authorization": f"token {token}"}
    with _client() as client:
        response = client.post(base + "/api/kernels", headers=headers, json={"name": "python3", "path": "notebooks"})
        assert response.status_code == 201, response.text[:500]
        kernel_id = response.json()["id"]
        kernel = None
        try:
            kernel = KernelSocket(base, token, kernel_id)
            for i, source in enumerate(code):
                result = kernel.execute(source)
                assert result["status"] == "ok", f"cell {i} ended '{result['status']}':\n{source[:400]}\n" + \
                    "\n".join(result["errors"])[-3000:]
            # the lesson ran in the live kernel, on the embedded model
            check = kernel.execute("assert loaded.profile == 'tiny', loaded.profile")
            assert check["status"] == "ok", check["errors"]
        finally:
            if kernel is not None:
                kernel.close()
            client.delete(base + f"/api/kernels/{kernel_id}", headers=headers)


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("chromium / chromedriver not installed (tests/run_tests.sh installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def _wait_for(predicate, timeout: float, what: str, driver=None, shot: str | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if driver is not None and shot:
                _screenshot(driver, shot)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def _screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# Every query looks only inside the tab in front (window.jupyterapp: --LabApp.expose_app_in_browser).
CURRENT_JS = """
const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
const root = w ? w.node : null;
"""

VIEW_JS = CURRENT_JS + """
if (!w || !w.context || w.context.path !== arguments[0]) return null;
if (root.querySelector('.jp-Notebook .jp-Cell')) return 'notebook';
if (root.querySelector('.jp-FileEditor')) return 'editor';
return null;
"""


def _open_in_lab(driver, server, name: str) -> str:
    """Open notebooks/<name> from a link, as a student does: JupyterLab picks the default viewer."""
    base, token, _ = server
    driver.get(f"{base}/lab/tree/notebooks/{name}?token={token}")
    return _wait_for(lambda: driver.execute_script(VIEW_JS, f"notebooks/{name}"), 90, f"{name} to open",
                     driver, f"jupyterlab-{Path(name).stem}-open-failed")


ADMONITION_JS = CURRENT_JS + """
const cell = root && root.querySelector('.jp-Notebook .jp-MarkdownCell');
if (!cell) return null;
const box = Array.from(cell.querySelectorAll('[class*="admonition"]'))
  .find(el => el.innerText && el.innerText.includes(arguments[0]));
if (!box) return {text: cell.innerText.slice(0, 400)};
const r = box.getBoundingClientRect(), s = getComputedStyle(box);
return {text: cell.innerText.slice(0, 400), cls: box.className.toString(), width: r.width, height: r.height,
        border: parseFloat(s.borderLeftWidth) + parseFloat(s.borderTopWidth) + parseFloat(s.borderRightWidth),
        shadow: s.boxShadow};
"""


def _admonition(driver, title: str) -> dict | None:
    found = driver.execute_script(ADMONITION_JS, title)
    return found if found and found.get("cls") else None


@pytest.mark.browser
def test_level1_opens_as_a_notebook_with_rendered_admonition(server, browser):
    view = _open_in_lab(browser, server, "level1_basics.py")
    assert view == "notebook", "level1_basics.py opened in the text editor: the default-viewer setting did not apply"
    box = _wait_for(lambda: _admonition(browser, "このページで学ぶこと"), 60, "the objectives admonition to render",
                    browser, "jupyterlab-level1-no-admonition")
    _screenshot(browser, "jupyterlab-level1")
    assert "{admonition}" not in box["text"] and "```" not in box["text"], box["text"]
    assert "admonition" in box["cls"]
    assert box["width"] > 300 and box["height"] > 60, box  # a box, not a line of text
    assert box["border"] > 0 or box["shadow"] != "none", box


EXPLORER_JS = CURRENT_JS + """
if (!root) return null;
const q = sel => Array.from(root.querySelectorAll(sel));
const img = q('.widget-output img, .jupyter-widget-output img, .jupyter-widgets-output-area img')[0];
const sliders = q('.widget-slider');
const rank = sliders.find(s => s.innerText.includes('ランク'));
const button = q('button.jupyter-button').find(b => b.innerText.includes('学習'));
const info = q('.widget-html').find(h => h.innerText.includes('学習可能'));
const errors = [], stderr = [];
const cells = w.content && w.content.model ? w.content.model.cells : [];
for (let i = 0; i < cells.length; i++) {
  const outputs = cells.get(i).toJSON().outputs || [];
  for (const o of outputs) {
    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n').slice(-1500));
    if (o.output_type === 'stream' && o.name === 'stderr') stderr.push([].concat(o.text).join('').slice(0, 500));
  }
}
return {img: img ? img.getAttribute('src') : null, sliders: sliders.length,
        rank: rank ? (rank.querySelector('.widget-readout') || {}).innerText : null,
        button: button ? {text: button.innerText, disabled: button.disabled} : null,
        info: info ? info.innerText : null, errors: errors, stderr: stderr};
"""

SCROLL_TO_PLOT_JS = CURRENT_JS + """
const img = root.querySelector('.widget-output img, .jupyter-widget-output img, .jupyter-widgets-output-area img');
if (img) img.scrollIntoView({block: 'center'});
"""


def _explorer(driver, ready) -> dict | None:
    """The explorer's state when ``ready(state)``; raises at once when a cell failed."""
    state = driver.execute_script(EXPLORER_JS)
    if state and state["errors"]:
        _screenshot(driver, "jupyterlab-explorer-error")
        raise AssertionError("a cell of the stand-in notebook failed:\n" + "\n".join(state["errors"]))
    return state if state and ready(state) else None


@pytest.mark.browser
def test_level2_widget_explorer_reacts_to_a_slider(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # The lesson itself opens as a notebook, its MyST rendered ...
    assert _open_in_lab(browser, server, "level2_parameters.py") == "notebook"
    _wait_for(lambda: _admonition(browser, "このページで学ぶこと"), 60, "level 2's objectives admonition",
              browser, "jupyterlab-level2-no-admonition")
    _screenshot(browser, "jupyterlab-level2")

    # ... and its explorer cell runs in a live kernel on a small setup (the stand-in notebook).
    assert _open_in_lab(browser, server, STAND_IN) == "notebook"
    _wait_for(lambda: browser.execute_script(CURRENT_JS + "return !!(w.sessionContext && w.sessionContext.session"
                                             " && w.sessionContext.session.kernel);"), 60,
              "the stand-in notebook's kernel", browser, "jupyterlab-explorer-no-kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    first = _wait_for(lambda: _explorer(browser, lambda s: s["img"] and s["button"] and not s["button"]["disabled"]),
                      150, "the explorer's widgets and first plot", browser, "jupyterlab-explorer-no-widget")
    assert first["sliders"] >= 4 and first["rank"] == "8", first
    browser.execute_script(SCROLL_TO_PLOT_JS)
    _screenshot(browser, "jupyterlab-explorer-before")

    # Move the rank slider one step with the keyboard (its noUiSlider handle takes arrow keys):
    # the parameter count follows at once.
    slider = next(s for s in browser.find_elements(By.CSS_SELECTOR, ".widget-slider")
                  if "ランク" in s.text and s.is_displayed())
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)
    moved = _wait_for(lambda: _explorer(browser, lambda s: s["rank"] == "16" and s["info"] != first["info"]), 30,
                      "the rank slider to move and the parameter count to follow", browser,
                      "jupyterlab-explorer-slider-stuck")

    # Train and redraw: the plot changes.
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "button.jupyter-button")
         if "学習" in b.text and b.is_displayed()).click()
    after = _wait_for(lambda: _explorer(browser, lambda s: s["img"] and s["img"] != first["img"] and s["button"]
                                        and not s["button"]["disabled"]),
                      90, "the plot to redraw after training with r=16", browser, "jupyterlab-explorer-no-redraw")
    browser.execute_script(SCROLL_TO_PLOT_JS)
    _screenshot(browser, "jupyterlab-explorer-after")
    assert moved["rank"] == after["rank"] == "16"
