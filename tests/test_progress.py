"""Progress bars: the rule of ``training.show_progress``, the bars of ``sweep`` and ``train`` in a
terminal, and the notebooks' live training cells in a Jupyter kernel (a tqdm widget at full
budget, nothing in quick mode)."""

import io
import os
import re
import sys
import types

import pytest
from live_cells import ROOT, live_cells, tiny_notebook

from sideways_lab import experiments, training

WIDGET = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT = 600


class _Terminal(io.StringIO):
  """A stderr that says it is a terminal and keeps what is written to it."""

  def isatty(self) -> bool:
    return True


def _fake_ipython(monkeypatch, kernel: bool) -> None:
  shell = types.SimpleNamespace(kernel=object()) if kernel else types.SimpleNamespace()
  fake = types.ModuleType("IPython")
  fake.get_ipython = lambda: shell
  monkeypatch.setitem(sys.modules, "IPython", fake)


def _outside_pytest(monkeypatch):
  """The environment of a notebook or a terminal: no PYTEST_CURRENT_TEST (called in the test's
  body: pytest sets the variable again at the start of each phase), no quick mode, no kernel,
  stderr not a terminal."""
  monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
  monkeypatch.delenv("SIDEWAYS_LAB_QUICK", raising=False)
  monkeypatch.delitem(sys.modules, "IPython", raising=False)
  monkeypatch.setattr(sys, "stderr", io.StringIO())


def test_show_progress_explicit_value_wins(monkeypatch):
  _outside_pytest(monkeypatch)
  assert training.show_progress(True, quick=True) is True
  assert training.show_progress(False) is False
  _fake_ipython(monkeypatch, kernel=True)
  assert training.show_progress(False) is False


def test_show_progress_default_rule(monkeypatch):
  mp = monkeypatch
  _outside_pytest(mp)
  assert training.show_progress() is False  # no kernel, no terminal: a log file
  _fake_ipython(mp, kernel=False)  # IPython in a terminal is not a kernel
  assert training.show_progress() is False
  mp.setattr(sys, "stderr", _Terminal())
  assert training.show_progress() is True
  assert training.show_progress(quick=True) is False
  mp.setenv("SIDEWAYS_LAB_QUICK", "1")
  assert training.show_progress() is False
  assert training.show_progress(quick=False) is True  # quick= given: the variable is not read
  mp.setenv("PYTEST_CURRENT_TEST", "tests/test_progress.py::x (call)")
  assert training.show_progress(quick=False) is False


def test_show_progress_in_a_kernel(monkeypatch):
  _outside_pytest(monkeypatch)
  _fake_ipython(monkeypatch, kernel=True)
  assert training.show_progress() is True
  assert training.show_progress(quick=True) is False


def test_under_pytest_the_default_is_silent():
  assert "PYTEST_CURRENT_TEST" in os.environ
  assert training.show_progress() is False
  assert training.show_progress(quick=False) is False


def test_sweep_in_a_terminal_shows_runs_and_steps_with_the_loss(monkeypatch, tmp_path):
  _outside_pytest(monkeypatch)
  term = _Terminal()
  monkeypatch.setattr(sys, "stderr", term)
  df = experiments.sweep(
    "digits", "speed", [1.0], schemes=("backprop",), seeds=1, quick=False, out=tmp_path,
    overrides=dict(training.QUICK, steps=2),
  )  # fmt: skip
  assert len(df) == 1
  text = term.getvalue()
  assert "sweep digits/speed" in text and "1/1" in text  # the bar of runs
  assert re.search(r"backprop: .*2/2 .*loss=\d\.\d{4}", text), text  # the run's steps and loss
  # the same at the quick budget: nothing
  quiet = _Terminal()
  monkeypatch.setattr(sys, "stderr", quiet)
  experiments.sweep("digits", "speed", [1.0], schemes=("backprop",), seeds=1, quick=True)
  assert quiet.getvalue() == ""


def test_live_training_cells_use_the_default_rule():
  cells = live_cells()
  assert {nb[:2] for nb, _ in cells} >= {"00", "03", "05"}
  for nb, source in cells:
    assert "progress=" not in source, f"{nb}: a training cell sets progress"
    assert "quick=QUICK" in source, f"{nb}: a training cell without quick=QUICK"


_TO_QUICK = """\
os.environ["SIDEWAYS_LAB_QUICK"] = "1"
QUICK = experiments.is_quick()
"""


def _bars(outputs) -> list[str]:
  """The text of the tqdm bars among a cell's outputs (widgets, or text written to stderr)."""
  found = []
  for o in outputs:
    if o.output_type == "display_data" and WIDGET in o.get("data", {}):
      found.append(o["data"].get("text/plain", ""))
    elif o.output_type == "stream" and re.search(r"\d+%\|", o.text):
      found.append(o.text)
  return found


@pytest.mark.slow
@pytest.mark.parametrize("nb,source", [pytest.param(*c, id=c[0][:2]) for c in live_cells()])
def test_live_cell_shows_a_bar_in_a_kernel_at_full_budget(nb, source, tmp_path):
  """The cell as a student runs it in JupyterLab (a kernel, no pytest in its environment): at
  full budget a tqdm widget of the runs and one of each run's steps; in quick mode none."""
  from nbclient import NotebookClient

  env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
  env.update(
    SIDEWAYS_LAB_QUICK="0",
    SIDEWAYS_LAB_CACHE=str(tmp_path / "cache"),
    MPLBACKEND="module://matplotlib_inline.backend_inline",
    PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
  )
  notebook = tiny_notebook(source, _TO_QUICK, source)
  client = NotebookClient(
    notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  )  # fmt: skip
  client.execute(env=env)
  full, quick = notebook.cells[1].outputs, notebook.cells[3].outputs
  errors = [o for c in notebook.cells for o in c.outputs if o.output_type == "error"]
  assert not errors, errors
  bars = _bars(full)
  widgets = [o for o in full if o.output_type == "display_data" and WIDGET in o.data]
  assert len(widgets) == len(bars) >= 2, bars  # widgets, not text
  assert re.match(r"sweep [\w-]+/speed: ", bars[0]), bars
  steps = [b for b in bars[1:] if re.search(r"\d+/3 ", b)]
  assert steps, bars  # each trained run's bar of its 3 steps
  assert _bars(quick) == [], _bars(quick)
