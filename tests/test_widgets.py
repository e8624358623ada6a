"""Headless tests of the explorers: set a control's value, check the figure they draw."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import sideways_lab as sl
from sideways_lab import widgets as W


def test_no_frontend_outside_a_kernel(monkeypatch):
  assert W.has_frontend() is False
  monkeypatch.setenv("SIDEWAYS_LAB_STATIC", "1")
  assert W.has_frontend() is False


def test_schedule_explorer_tick_slider():
  ex = W.schedule_explorer(
    {"sideways": sl.chain_edges(3), "backprop": sl.chain_edges(3)}, num_ticks=8, tick=2
  )
  assert ex.fig._suptitle.get_text() == "tick 2"
  png = ex.image.value
  assert png[:4] == b"\x89PNG"
  ex.controls["tick"].value = 6
  assert ex.draws == 2
  assert ex.fig._suptitle.get_text() == "tick 6"
  assert ex.image.value != png
  assert "tick 6" in ex.caption.value and "mismatch" in ex.caption.value
  assert [a.get_title() for a in ex.fig.axes] == ["Sideways (L = 3)", "BP (L = 3)"]
  assert ex.static() is ex.fig


def test_alignment_explorer_controls():
  cos = {
    "sideways": np.array([[1.0, 1.0, 1.0], [0.5, 0.7, 1.0]]),
    "skip_sideways": np.array([[1.0, 1.0, 1.0], [0.6, 0.8, 1.0]]),
  }
  ex = W.alignment_explorer(cos, [0.0, 2.0])
  ex.controls["unit"].value = 1
  ex.controls["knob_index"].value = 1
  left, right = ex.fig.axes
  assert left.get_title() == "speed = 2.0" and right.get_title() == "unit 1"
  ys = {tuple(np.round(l.get_ydata(), 3)) for l in left.get_lines()}
  assert (0.5, 0.7, 1.0) in ys
  ex.controls["schemes"].value = ("skip_sideways",)
  assert ex.fig.axes[0].get_legend().get_texts()[0].get_text() == "Skip-Sideways"
  with pytest.raises(ValueError, match="knob_values"):
    W.alignment_explorer(cos, [0.0])


def test_frames_explorer_shows_the_indexed_frames():
  rng = np.random.default_rng(0)
  truth = rng.random((5, 6, 6, 1))
  preds = {"backprop": truth * 0.0, "sideways": truth, "skip_sideways": 1 - truth}
  ex = W.frames_explorer(truth, preds, valid=np.array([0, 1, 1, 1, 0], bool))
  assert ex.controls["index"].value == 1  # the first valid tick
  ex.controls["index"].value = 3
  axes = ex.fig.axes
  np.testing.assert_allclose(axes[0].images[0].get_array(), truth[3, ..., 0])
  np.testing.assert_allclose(axes[3].images[0].get_array(), 1 - truth[3, ..., 0])
  assert axes[1].get_title() == "BP"
  assert "MSE 0.0000" in [a.get_title() for a in axes]  # sideways == truth
  ex.controls["index"].value = 4
  assert "no valid prediction" in ex.fig._suptitle.get_text()
  with pytest.raises(ValueError, match="predictions"):
    W.frames_explorer(truth, {"sideways": truth[:3]})


def test_static_display_publishes_a_png(monkeypatch):
  # a docs build (SIDEWAYS_LAB_STATIC) shows the figure even when no pyplot figure came before
  from IPython.core.interactiveshell import InteractiveShell
  from IPython.utils.capture import capture_output

  monkeypatch.setenv("SIDEWAYS_LAB_STATIC", "1")
  InteractiveShell.instance()
  ex = W.schedule_explorer({"sideways": sl.chain_edges(3)}, num_ticks=6, tick=3)
  with capture_output() as captured:
    ex._ipython_display_()
  (output,) = captured.outputs
  assert output.data["image/png"][:4] == b"\x89PNG"
  assert output.data["text/plain"].startswith("<Figure")


def test_schedule_grid_explorer_indexes_the_precomputed_grids():
  grids = sl.analysis.schedule_grids(
    names=("1f1b", "interleaved_1f1b", "sideways"), stages=(2, 4), microbatches=(4, 6)
  )
  ex = W.schedule_grid_explorer(grids, name="sideways")
  assert ex.values() == {"name": "sideways", "p": 4, "m": 6, "v": 2}
  (ax,) = ex.fig.axes
  assert ax.get_title(loc="left") == "sideways: p = 4, m = 6"
  assert "inputs 6 4 2 0" in ex.caption.value and "not exact" in ex.caption.value
  drawn = len(ax.patches)
  ex.controls["m"].value = 4
  assert ex.draws == 2 and len(ex.fig.axes[0].patches) < drawn  # fewer frames, fewer cells
  ex.controls["name"].value = "interleaved_1f1b"  # v = 2 indexes the two-chunk grid
  assert ex.fig.axes[0].get_title(loc="left") == "interleaved_1f1b: p = 4, m = 4, v = 2"
  assert "bubble 0.27" in ex.caption.value  # (p-1)/(vm+p-1) = 3/11
  ex.controls["m"].value = 6  # m > p and not a multiple of p: not simulated
  assert "not simulated" in ex.caption.value and ex.fig.axes[0].texts
  ex.controls["name"].value = "1f1b"  # no chunks: the v = 1 grid, whatever v is
  assert "bubble 0.33" in ex.caption.value  # (p-1)/(m+p-1) = 3/9
  with pytest.raises(ValueError, match="name"):
    W.schedule_grid_explorer(grids, name="gpipe")
