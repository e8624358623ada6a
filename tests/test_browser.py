"""The notebooks with widgets, run in a real JupyterLab and driven in headless Chromium.

For every notebook whose code displays widgets (``widgets.<name>(`` from sideways_lab,
``ipywidgets``, ``interact``), the test starts JupyterLab on a free local port with a token
(quick mode, ``SIDEWAYS_LAB_QUICK=1``, on a copy of the notebooks in a temporary folder), opens
the notebook in headless Chromium through Playwright, runs all cells and checks that

* no cell has an error output;
* every widget output is rendered by the browser (a widget view, no "Error displaying widget",
  no widget left "Loading");
* moving each slider (one key press on its handle) changes the image in its output.

The notebooks' live training cells (tests/live_cells.py) run once more in a JupyterLab started as
a student starts it (full budget, no pytest in the kernels' environment), each after a preamble
that cuts its runs to a tiny model and a few steps: the cell draws a tqdm widget of its runs and,
for each run, one of its steps with the training loss.

Screenshots of a failing notebook are written to ``$SIDEWAYS_LAB_SCREENSHOTS`` (default: the
test's temporary folder). The server and its kernels are stopped at the end.

Chromium is the system one (Debian's ``chromium`` package, which ``.ci/run`` installs), never a
browser downloaded at run time. Without it, or without Playwright, the test is skipped, unless
``SIDEWAYS_LAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

try:
  from playwright.sync_api import sync_playwright
except ImportError:  # the test extra installs it; without it the test is skipped (or fails in CI)
  sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_CODE = re.compile(r"\bwidgets\.\w+\(|\bipywidgets\b|\binteract(ive)?\(")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

SERVER_START_S = 90  # JupyterLab up and answering
PAGE_LOAD_S = 60  # the notebook open with its kernel idle
RUN_ALL_S = 240  # all cells of one notebook in quick mode
WIDGET_UPDATE_S = 30  # a slider's new image reaches the browser
POLL_S = 0.25

pytestmark = pytest.mark.browser


def _widget_notebooks() -> list[Path]:
  out = []
  for path in NOTEBOOKS:
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    if WIDGET_CODE.search(code):
      out.append(path)
  return out


def _chromium() -> str | None:
  found = os.environ.get("SIDEWAYS_LAB_CHROMIUM") or next(
    filter(None, map(shutil.which, CHROMIUM_NAMES)), None
  )
  return found


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _missing(what: str):
  if os.environ.get("SIDEWAYS_LAB_REQUIRE_BROWSER", "") not in ("", "0"):
    pytest.fail(f"{what} (SIDEWAYS_LAB_REQUIRE_BROWSER is set)")
  pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
  if sync_playwright is None:
    _missing("Playwright is not installed (pip install -e '.[test]')")
  executable = _chromium()
  if executable is None:
    _missing("no system Chromium (apt-get install chromium)")
  with sync_playwright() as pw:
    b = pw.chromium.launch(
      executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
    )
    yield b
    b.close()


def _api(url: str, token: str, method: str = "GET"):
  req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
  with urllib.request.urlopen(req, timeout=10) as r:
    body = r.read()
  return json.loads(body) if body else None


@contextlib.contextmanager
def _jupyterlab(work: Path, notebooks: dict, **env_vars):
  """A JupyterLab server on ``notebooks`` ({file name: a notebook path or nbformat notebook})
  copied into ``work/notebooks``, with ``env_vars`` in its kernels' environment (PYTEST_CURRENT_TEST
  is left out when the value given is None): (base url, token, folder)."""
  folder = work / "notebooks"
  folder.mkdir()
  for name, nb in notebooks.items():
    if isinstance(nb, Path):
      shutil.copy(nb, folder / name)
    else:
      nbformat.write(nb, folder / name)
  # no news or update checks (nothing leaves the machine); every cell kept in the page
  for plugin, values in [
    ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ("notebook-extension/tracker", {"windowingMode": "none"}),
  ]:
    file = work / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(values))
  token, port = uuid.uuid4().hex, _free_port()
  env = dict(
    os.environ,
    SIDEWAYS_LAB_CACHE=str(work / "cache"),
    PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
    JUPYTER_CONFIG_DIR=str(work / "config"),
    JUPYTER_RUNTIME_DIR=str(work / "runtime"),
    JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
    JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
  )
  env.update(env_vars)
  env = {k: v for k, v in env.items() if v is not None}
  cmd = [
    sys.executable,
    "-m",
    "jupyterlab",
    "--no-browser",
    f"--ServerApp.port={port}",
    "--ServerApp.ip=127.0.0.1",
    "--ServerApp.port_retries=0",
    f"--IdentityProvider.token={token}",
    f"--ServerApp.root_dir={folder}",
    "--LabApp.expose_app_in_browser=True",
    "--LabApp.extension_manager=readonly",
    "--ServerApp.terminals_enabled=False",
    "--allow-root",
  ]
  log = (work / "server.log").open("w")
  server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
  base = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + SERVER_START_S
    while True:
      try:
        _api(f"{base}/api/status", token)
        break
      except OSError:
        if server.poll() is not None or time.monotonic() > deadline:
          log_text = (work / "server.log").read_text()
          raise RuntimeError(f"JupyterLab did not start:\n{log_text}") from None
        time.sleep(POLL_S)
    yield base, token, folder
  finally:
    try:
      for kernel in _api(f"{base}/api/kernels", token):
        _api(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")
    except OSError:
      pass
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()
    log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
  """A JupyterLab server on a copy of the widget notebooks, in quick mode."""
  work = tmp_path_factory.mktemp("lab")
  with _jupyterlab(work, {p.name: p for p in _widget_notebooks()}, SIDEWAYS_LAB_QUICK="1") as s:
    yield s


# JavaScript run in the page (the app is exposed by --LabApp.expose_app_in_browser).
_JS_PANEL = "() => window.jupyterapp.shell.currentWidget"
# The notebook in front is the one under test (a restored workspace may bring other tabs back
# and put one of them in front first), its kernel idle and its cells loaded.
_JS_KERNEL_IDLE = """(name) => {
  const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel;
  const path = p && p.context && p.context.path;
  return !!(k && k.status === 'idle' && path && path.endsWith(name) && p.content &&
            p.content.widgets.length);
}"""
_JS_RUN_ALL = "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
_JS_DONE = """() => {
  const p = window.jupyterapp.shell.currentWidget;
  const k = p.sessionContext.session.kernel;
  const cells = p.content.widgets.filter(c => c.model.type === 'code');
  const failed = cells.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
  return k.status === 'idle' && (failed || cells.every(c => c.model.executionCount !== null));
}"""
_JS_OUTPUTS = """() => {
  const p = window.jupyterapp.shell.currentWidget;
  return p.content.widgets.filter(c => c.model.type === 'code').map(c => c.model.outputs.toJSON());
}"""


def _wait(page, js: str, timeout_s: float, what: str) -> None:
  deadline = time.monotonic() + timeout_s
  while not page.evaluate(js):
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out after {timeout_s} s: {what}")
    time.sleep(POLL_S)


def _images(output) -> list[str]:
  return output.locator("img").evaluate_all("els => els.map(e => e.src)")


def _move(slider) -> None:
  """One step of a slider from the keyboard (right, or left when it is at its end)."""
  handle = slider.locator(".noUi-handle").first
  before = handle.get_attribute("aria-valuenow")
  handle.focus()
  handle.press("ArrowRight")
  if handle.get_attribute("aria-valuenow") == before:
    handle.press("ArrowLeft")


def _check_sliders(page) -> tuple[int, list[str]]:
  """Moves every slider: (how many, the problems: a slider whose output's image stayed)."""
  moved, problems = 0, []
  outputs = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-slider"))
  for i in range(outputs.count()):
    output = outputs.nth(i)
    sliders = output.locator(".widget-slider")
    for j in range(sliders.count()):
      slider = sliders.nth(j)
      label = slider.locator(".widget-label").first.inner_text() or f"slider {j}"
      before = _images(output)
      _move(slider)
      moved += 1
      deadline = time.monotonic() + WIDGET_UPDATE_S
      while _images(output) == before and time.monotonic() < deadline:
        time.sleep(POLL_S)
      if _images(output) == before:
        problems.append(f"output {i}: moving {label!r} did not change the image")
  return moved, problems


def _check_toggles(page) -> tuple[int, list[str]]:
  """Clicks a button not yet chosen in every group of toggle buttons: (how many, the
  problems: an output none of whose groups changed its image; a group may leave it as it is,
  e.g. the chunks of a schedule that has none)."""
  clicked, problems = 0, []
  outputs = page.locator(".jp-OutputArea-output").filter(has=page.locator(".widget-toggle-buttons"))
  for i in range(outputs.count()):
    output = outputs.nth(i)
    groups = output.locator(".widget-toggle-buttons")
    changed = 0
    for j in range(groups.count()):
      before = _images(output)
      groups.nth(j).locator("button:not(.mod-active)").first.click()
      clicked += 1
      deadline = time.monotonic() + WIDGET_UPDATE_S
      while _images(output) == before and time.monotonic() < deadline:
        time.sleep(POLL_S)
      changed += _images(output) != before
    if groups.count() and not changed:
      problems.append(f"output {i}: no toggle button changed the image")
  return clicked, problems


@pytest.mark.slow
@pytest.mark.parametrize("path", _widget_notebooks(), ids=lambda p: p.stem)
def test_notebook_widgets_render_and_respond(path, browser, lab, tmp_path):
  base, token, _ = lab
  shots = Path(os.environ.get("SIDEWAYS_LAB_SCREENSHOTS", tmp_path))
  page = browser.new_page(viewport={"width": 1400, "height": 1000})
  console = []
  page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
  try:
    # ?reset: a fresh workspace, without the tabs of the notebooks tested before
    page.goto(f"{base}/lab/tree/{path.name}?reset&token={token}", timeout=PAGE_LOAD_S * 1000)
    page.wait_for_function(_JS_KERNEL_IDLE, arg=path.name, timeout=PAGE_LOAD_S * 1000, polling=500)
    page.evaluate(_JS_RUN_ALL)
    _wait(page, _JS_DONE, RUN_ALL_S, f"running all cells of {path.name}")
    outputs = page.evaluate(_JS_OUTPUTS)
    errors = [
      f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
      for i, cell in enumerate(outputs)
      for o in cell
      if o["output_type"] == "error"
    ]
    assert not errors, errors
    views = sum(
      "application/vnd.jupyter.widget-view+json" in o.get("data", {})
      for cell in outputs
      for o in cell
    )
    assert views, f"{path.name} displays no widget"
    # every widget view is drawn by the widget manager, none failed or is still loading
    rendered = page.locator(".jupyter-widgets")
    deadline = time.monotonic() + WIDGET_UPDATE_S
    while "Loading widget" in page.inner_text("body") and time.monotonic() < deadline:
      time.sleep(POLL_S)
    text = page.inner_text("body")
    assert "Error displaying widget" not in text, console
    assert "Loading widget" not in text, console
    shown = page.locator(".jp-OutputArea-output").filter(has=rendered).count()
    assert shown >= views, f"{views} widget outputs, {shown} rendered; {console}"
    moved, problems = _check_sliders(page)
    assert moved == page.locator(".widget-slider").count(), f"{path.name}: {moved} sliders"
    clicked, more = _check_toggles(page)
    assert moved + clicked > 0, f"{path.name}: no slider or toggle button to drive"
    assert not problems + more, problems + more
    print(f"{path.name}: {views} widget outputs rendered, {moved} sliders, {clicked} toggles")
  except BaseException:
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{path.stem}.png"), full_page=True)
    raise
  finally:
    page.close()
    for kernel in _api(f"{base}/api/kernels", token):  # one kernel at a time on 2 cores
      _api(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")


# Every text a tqdm bar shows while the notebook runs (a bar of a run's steps closes at its end):
# the text of each widget box that holds a progress bar, recorded on every change of the page.
_JS_RECORD_BARS = """() => {
  window.__bars = new Set();
  const record = () => document.querySelectorAll('.jp-OutputArea-output .widget-hbox').forEach(
    b => { if (b.querySelector('.widget-hprogress')) window.__bars.add(b.innerText); });
  new MutationObserver(record).observe(document.body,
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""
_JS_BARS = "() => Array.from(window.__bars)"
PROGRESS_STEPS = 20  # a run's bar of its steps stays long enough to show its loss


@pytest.fixture(scope="module")
def lab_full(tmp_path_factory):
  """JupyterLab as a student starts it: full budget (no SIDEWAYS_LAB_QUICK) and no pytest in
  the kernels' environment, on a notebook per live training cell (tests/live_cells.py: the
  cell after a preamble that cuts every run to a tiny model and a few steps)."""
  from live_cells import live_cells, tiny_notebook

  notebooks = {
    f"progress_{nb}_{i}.ipynb": tiny_notebook(source, steps=PROGRESS_STEPS)
    for i, (nb, source) in enumerate(live_cells())
  }
  work = tmp_path_factory.mktemp("lab_full")
  with _jupyterlab(work, notebooks, SIDEWAYS_LAB_QUICK="0", PYTEST_CURRENT_TEST=None) as s:
    yield s


def _progress_notebooks() -> list[str]:
  from live_cells import live_cells

  return [f"progress_{nb}_{i}.ipynb" for i, (nb, _) in enumerate(live_cells())]


@pytest.mark.slow
@pytest.mark.parametrize("name", _progress_notebooks(), ids=lambda n: n.split("_")[1])
def test_live_training_cell_shows_progress_bars(name, browser, lab_full, tmp_path):
  """A live training cell at full budget draws a tqdm widget of its runs and, for each run,
  one of its steps with the training loss, and the bars render (no widget error)."""
  base, token, _ = lab_full
  shots = Path(os.environ.get("SIDEWAYS_LAB_SCREENSHOTS", tmp_path))
  page = browser.new_page(viewport={"width": 1400, "height": 1000})
  try:
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}", timeout=PAGE_LOAD_S * 1000)
    page.wait_for_function(_JS_KERNEL_IDLE, arg=name, timeout=PAGE_LOAD_S * 1000, polling=500)
    page.evaluate(_JS_RECORD_BARS)
    page.evaluate(_JS_RUN_ALL)
    _wait(page, _JS_DONE, RUN_ALL_S, f"running all cells of {name}")
    errors = [
      f"{o.get('ename')}: {o.get('evalue')}"
      for cell in page.evaluate(_JS_OUTPUTS)
      for o in cell
      if o["output_type"] == "error"
    ]
    assert not errors, errors
    # tqdm pads with figure spaces (U+2007): one plain space for each run of white space
    bars = [re.sub(r"\s+", " ", b) for b in page.evaluate(_JS_BARS)]
    assert "Error displaying widget" not in page.inner_text("body")
    runs = [b for b in bars if re.match(r"sweep [\w-]+/speed: 100%.*? (\d+)/\1 ", b)]
    assert runs, bars  # the bar of the runs, drawn and finished
    steps = re.compile(rf"\w+: .*? \d+/{PROGRESS_STEPS} .*loss=\d+\.\d{{4}}")
    assert any(steps.search(b) for b in bars), bars  # a run's steps with its loss
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{Path(name).stem}.png"), full_page=True)
    print(f"{name}: {len(bars)} bar texts, e.g. {bars[-1]!r}")
  except BaseException:
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"{Path(name).stem}.png"), full_page=True)
    raise
  finally:
    page.close()
    for kernel in _api(f"{base}/api/kernels", token):  # one kernel at a time on 2 cores
      _api(f"{base}/api/kernels/{kernel['id']}", token, method="DELETE")
