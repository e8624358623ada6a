"""Tests of sideways_lab.plotting: the style, scheme colours and the schedule diagram."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import numpy as np
import pytest

import sideways_lab as sl
from sideways_lab import plotting, schedule


def test_one_distinct_colour_per_scheme():
  for s in ("backprop", "sideways", "sideways_exact", "skip_sideways", "skip_exact"):
    assert s in plotting.SCHEME_COLORS
  # one colour per scheme; an exact twin takes its scheme's colour with a dashed line
  own = {s: c for s, c in plotting.SCHEME_COLORS.items() if s not in plotting.EXACT_SCHEMES}
  assert len(set(own.values())) == len(own)
  for approx, exact in (("sideways", "sideways_exact"), ("skip_sideways", "skip_exact")):
    assert plotting.SCHEME_COLORS[exact] == plotting.SCHEME_COLORS[approx]
    assert plotting.scheme_kwargs(exact)["linestyle"] == "--"
    assert plotting.scheme_kwargs(approx)["linestyle"] == "-"
  kw = plotting.scheme_kwargs("skip_sideways", marker=True)
  assert kw["color"] == plotting.SCHEME_COLORS["skip_sideways"] and kw["label"] == "Skip-Sideways"


def test_style_context_applies_and_restores():
  before = matplotlib.rcParams["axes.spines.top"]
  with plotting.style():
    assert matplotlib.rcParams["axes.spines.top"] is False
  assert matplotlib.rcParams["axes.spines.top"] == before


def test_schedule_data_chain_matches_the_design():
  L, T = 4, 12
  d = schedule.schedule_data(sl.chain_edges(L), T, "sideways")
  for t in range(T):
    for k in range(1, L + 1):
      # pipelined: unit k at tick t works on frame t-k+1 (valid from tick k-1)
      assert d.act_frames[k][t] == ((t - k + 1,) if t >= k - 1 else ())
  # gradient at unit k, tick t comes from loss tick t-(L-k): mismatch 2(L-k) frames
  t = 10
  for k in range(1, L + 1):
    assert d.grad_frames[k][t] == (t - (L - k) - L + 1,)
    assert d.mismatch(k, t) == (2 * (L - k),)
  assert not d.blocked.any()


def test_schedule_data_skips_integrate_newer_frames():
  d = schedule.schedule_data(sl.skip_edges(4, 2), 10, "skip_sideways")
  assert d.act_frames[4][8] == (5, 6, 7)  # main path 5, skips bring 6 and 7
  assert any(len(f) > 1 for row in d.grad_frames for f in row)  # gradients mix frames
  assert any(len(m[3]) > 1 for m in d.messages)


def test_schedule_data_backprop_blocks():
  L, T = 3, 12
  d = schedule.schedule_data(sl.chain_edges(L), T, "backprop")
  busy = ~d.blocked[1:]
  assert busy.sum(axis=0).max() == 1  # one unit at a time
  assert (busy.sum(axis=0) == 1).all()
  assert d.dropped.sum() == T - len(range(0, T, 2 * L - 1))
  assert d.mismatch(L, L - 1) == (0,)  # BP: exact, no mismatch


def test_draw_schedule_draws_frames_and_messages():
  d = schedule.schedule_data(sl.chain_edges(3), 8, "sideways")
  fig, axes = plotting.new_figure(1, 1)
  ax = axes[0, 0]
  plotting.draw_schedule(ax, d, tick=5)
  texts = [t.get_text() for t in ax.texts]
  assert "x5" in texts and "3" in texts
  assert ax.get_title().startswith("Sideways")
  arrows = [p for p in ax.patches if type(p).__name__ == "FancyArrowPatch"]
  assert len(arrows) >= len([m for m in d.messages if m[1] + 1 < 8])
  with pytest.raises(ValueError, match="tick"):
    plotting.draw_schedule(ax, d, tick=8)
  with pytest.raises(ValueError, match="num_ticks"):
    schedule.schedule_data(sl.chain_edges(3), 0)


def test_caption_and_plots(tmp_path):
  d = schedule.schedule_data(sl.chain_edges(4), 12, "sideways")
  cap = plotting.schedule_caption(d, 9)
  assert "mismatch 6 frames" in cap and "unit 4" in cap
  fig, axes = plotting.new_figure(1, 3)
  plotting.plot_curves(axes[0, 0], {"sideways": [3, 2, 1], "backprop": ([0, 1, 2], [3, 1, 0.5])})
  lines = axes[0, 0].get_lines()
  assert lines[0].get_color() == plotting.SCHEME_COLORS["backprop"]
  plotting.plot_bars(axes[0, 1], {"skip_sideways": 0.9, "sideways": 0.25}, chance=0.25)
  plotting.plot_per_unit(axes[0, 2], {"sideways": np.array([0.5, 0.8, 1.0])})
  fig2, mosaic = plotting.new_figure(mosaic=[["top"], ["bottom"]])
  assert set(mosaic) == {"top", "bottom"}
  ax = mosaic["bottom"]
  plotting.plot_grouped_bars(
    ax, {"skip_sideways": {"a": 0.9, "b": 0.5}, "backprop": {"a": 0.1, "b": 0.2}}, chance=0.125
  )
  bars = ax.patches
  assert len(bars) == 4  # 2 groups x 2 schemes, schemes in order
  assert [round(b.get_height(), 2) for b in bars] == [0.1, 0.2, 0.9, 0.5]
  assert bars[0].get_facecolor() == matplotlib.colors.to_rgba(plotting.SCHEME_COLORS["backprop"])
  assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
  with pytest.raises(ValueError, match="values"):
    plotting.plot_grouped_bars(ax, {})
  files = plotting.save_figure(fig, tmp_path / "x")
  assert [f[-3:] for f in files] == ["png", "pdf"]
  assert (tmp_path / "x.png").stat().st_size > 1000


def _one_value_sweep():
  import pandas as pd

  rows = []
  for seed in (0, 1):
    rows.append(dict(scheme="sideways", graph="chain", method="sideways", value=1.0, seed=seed))
    for graph, method in (("chain", "synchronous"), ("skip", "pipelined")):
      rows.append(dict(scheme="copy_newest", graph=graph, method=method, value=1.0, seed=seed))
  df = pd.DataFrame(rows).assign(knob="speed")
  return df.assign(mse=[0.01, 0.02, 0.03, 0.012, 0.022, 0.032])


def test_plot_sweep_with_one_value_draws_every_line_it_lists():
  fig, axes = plotting.new_figure(1, 1)
  ax = plotting.plot_sweep(axes[0, 0], _one_value_sweep(), "mse")
  handles, labels = ax.get_legend_handles_labels()
  copy = plotting.scheme_label("copy_newest")
  assert labels == ["Sideways", f"{copy} (BP)", f"{copy} (skip)"]
  for h in handles:  # a baseline drawn through one point would be invisible: it spans the axes
    x = np.asarray(h.get_xdata(), float)
    assert len(x) >= 2 and np.ptp(x) > 0 or h.get_marker() not in (None, "None", "")
  assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]
  lo, hi = ax.get_xlim()
  assert hi - lo >= 1.0  # not an axis from 0.98 to 1.02


def test_integer_axis_has_no_fractional_ticks():
  fig, axes = plotting.new_figure(1, 1)
  ax = axes[0, 0]
  ax.plot([1, 2, 3, 4], [1, 2, 3, 4])
  plotting.integer_axis(ax, "both")
  fig.canvas.draw()
  for ticks in (ax.get_xticks(), ax.get_yticks()):
    assert np.allclose(ticks, np.round(ticks))


def test_grouped_bars_with_errors_and_seeds():
  fig, axes = plotting.new_figure(1, 1)
  ax = axes[0, 0]
  plotting.plot_grouped_bars(
    ax,
    {"sideways": {"a": 0.5}, "sideways_exact": {"a": 0.7}},
    errors={"sideways": {"a": 0.1}, "sideways_exact": {"a": 0.0}},
    points={"sideways": {"a": [0.4, 0.6]}, "sideways_exact": {"a": [0.7]}},
  )
  assert ax.patches[1].get_hatch() == "///"  # the exact twin hatched
  dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
  assert sorted(np.concatenate([d.get_ydata() for d in dots])) == [0.4, 0.6, 0.7]
