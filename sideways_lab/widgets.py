"""Interactive explorers (ipywidgets) that only index precomputed arrays.

Every explorer is an :class:`Explorer`: a set of ipywidgets controls, a pure drawing function
``draw(fig, **values)`` and a ``matplotlib.figure.Figure`` that is redrawn when a control
changes and shown as a PNG in an ``ipywidgets.Image``. Nothing is computed in a callback except
indexing and drawing, so the explorers are instant.

* :func:`schedule_explorer` – the schedule diagram with a tick slider (docs/design.md §3–§5).
* :func:`alignment_explorer` – cosine with the exact gradient: unit, knob (speed or stride),
  schemes.
* :func:`frames_explorer` – predicted frames of the schemes beside the truth, with a Play button.
* :func:`schedule_grid_explorer` – a pipeline schedule's (device, time) grid and its measured
  numbers: schedule, devices p, micro-batches m, chunks v (docs/design.md §10).

They work in JupyterLab (display the explorer, or ``explorer.widget``) and fall back to a
static figure when there is no widget front end (``explorer.static()``, or simply displaying
the explorer in a plain IPython/terminal session). Tests drive them headlessly: set a
control's ``.value`` and inspect ``explorer.fig``.

The pure drawing functions (:func:`draw_schedule_tick`, :func:`draw_alignment`,
:func:`draw_frames`, :func:`draw_schedule_grid`) can be called directly.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence

import ipywidgets
import numpy as np
from IPython import get_ipython
from IPython.display import display

from sideways_lab import plotting, schedule


def has_frontend() -> bool:
  """True inside an IPython kernel (a notebook front end that can show ipywidgets).

  Set the environment variable ``SIDEWAYS_LAB_STATIC=1`` to force static figures.
  """
  if os.environ.get("SIDEWAYS_LAB_STATIC", "") not in ("", "0"):
    return False
  ip = get_ipython()
  return ip is not None and getattr(ip, "kernel", None) is not None


class Explorer:
  """Controls + a figure redrawn by a pure ``draw(fig, **values)`` when a control changes.

  Attributes:
    fig: the ``matplotlib.figure.Figure`` drawn at the current values.
    controls: ``name -> ipywidgets`` value widget (sliders, dropdowns, ...).
    image: the ``ipywidgets.Image`` that shows the figure as PNG.
    widget: the whole ipywidgets layout (controls above the image, a caption below).
    draws: how many times the figure has been drawn (handy in tests).
  """

  def __init__(
    self,
    draw: Callable,
    controls: Mapping[str, object],
    *,
    figsize=(8, 4),
    caption: Callable | None = None,
    extra: Sequence = (),
    dpi: int = 90,
  ):
    self._draw = draw
    self._caption = caption
    self.controls = dict(controls)
    self.dpi = dpi
    self.fig, _ = plotting.new_figure(1, 1, figsize=figsize)
    self.fig.clear()
    self.draws = 0
    self.image = ipywidgets.Image(format="png")
    self.caption = ipywidgets.HTML()
    for c in self.controls.values():
      c.observe(self._on_change, names="value")
    self.widget = ipywidgets.VBox(
      [ipywidgets.HBox(list(extra) + list(self.controls.values())), self.image, self.caption]
    )
    self.update()

  def values(self) -> dict:
    """The current value of every control, by name."""
    return {name: c.value for name, c in self.controls.items()}

  def _on_change(self, change=None):
    self.update()

  def update(self) -> None:
    """Redraws the figure at the current control values and refreshes the image."""
    with plotting.style():
      self.fig.clear()
      self._draw(self.fig, **self.values())
    self.draws += 1
    self.image.value = plotting.figure_to_png(self.fig, dpi=self.dpi)
    if self._caption is not None:
      self.caption.value = (
        "<pre style='font-size:11px;line-height:1.25'>"
        + html.escape(self._caption(**self.values()))
        + "</pre>"
      )

  def static(self):
    """The figure at the current values (what is shown without a widget front end)."""
    return self.fig

  def _ipython_display_(self):
    if has_frontend():
      display(self.widget)
    else:
      # the PNG itself, not the Figure: a Figure made without pyplot has no PNG formatter until
      # the inline backend is loaded, so it would show as text if it is a notebook's first
      display(
        {"image/png": plotting.figure_to_png(self.fig, dpi=self.dpi), "text/plain": repr(self.fig)},
        raw=True,
      )


def _int_slider(description, lo, hi, value=None, play: bool = False):
  s = ipywidgets.IntSlider(
    value=lo if value is None else value,
    min=lo,
    max=hi,
    step=1,
    description=description,
    continuous_update=True,
    layout=ipywidgets.Layout(width="420px"),
  )
  if not play:
    return s, ()
  p = ipywidgets.Play(value=s.value, min=lo, max=hi, step=1, interval=250, description="play")
  ipywidgets.jslink((p, "value"), (s, "value"))
  return s, (p,)


# ---------------------------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------------------------


def draw_schedule_tick(fig, datas: Sequence[schedule.ScheduleData], tick: int) -> None:
  """Draws one schedule diagram per ``ScheduleData`` (stacked) at ``tick``."""
  axes = fig.subplots(len(datas), 1, squeeze=False)[:, 0]
  for ax, d in zip(axes, datas):
    plotting.draw_schedule(ax, d, tick=tick)
  fig.suptitle(f"tick {tick}", fontsize=10)


def schedule_explorer(graphs, num_ticks: int = 12, *, tick: int | None = None):
  """The schedule diagram with a tick slider.

  Args:
    graphs: a dict ``scheme -> graph or edges`` (e.g. ``{"backprop": sl.chain_edges(4),
      "sideways": sl.chain_edges(4), "skip_sideways": sl.skip_edges(4)}``), or one graph.
    num_ticks: the number of ticks drawn.
    tick: the initial tick (default: the middle).
  """
  if not isinstance(graphs, Mapping):
    graphs = {None: graphs}
  datas = [schedule.schedule_data(g, num_ticks, s) for s, g in graphs.items()]
  slider, extra = _int_slider(
    "tick", 0, num_ticks - 1, num_ticks // 2 if tick is None else tick, play=True
  )

  def caption(tick):
    return "\n\n".join(
      f"[{plotting.scheme_label(d.scheme)}]\n" + plotting.schedule_caption(d, tick) for d in datas
    )

  ex = Explorer(
    lambda fig, tick: draw_schedule_tick(fig, datas, tick),
    {"tick": slider},
    figsize=(0.62 * num_ticks + 1.5, 2.0 + 0.55 * sum(d.num_units + 1 for d in datas)),
    caption=caption,
    extra=extra,
  )
  ex.data = datas
  return ex


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------


def draw_alignment(
  fig,
  cosine: Mapping[str, np.ndarray],
  knob_values: Sequence,
  *,
  unit: int,
  knob_index: int,
  schemes: Sequence[str] | None = None,
  knob_name: str = "speed",
) -> None:
  """Two panels: cosine vs depth at one knob value, and cosine vs knob for one unit.

  Args:
    cosine: ``scheme -> array (num_knob_values, L)``: cosine similarity between the scheme's
      per-unit gradient and the exact one (``pipelined_exact``), e.g. from the alignment sweep.
    knob_values: the speeds (pixels per frame) or strides of the rows.
    unit: the unit (1..L) of the right panel (highlighted on the left).
    knob_index: the row of the left panel (highlighted on the right).
    schemes: the schemes to show (default all).
  """
  schemes = plotting.order_schemes(schemes if schemes is not None else list(cosine))
  knob_values = list(knob_values)
  ax1, ax2 = fig.subplots(1, 2)
  L = None
  for s in schemes:
    c = np.asarray(cosine[s], float)
    L = c.shape[1]
    kw = plotting.scheme_kwargs(s, marker=True)
    ax1.plot(np.arange(1, L + 1), c[knob_index], **kw)
    ax2.plot(knob_values, c[:, unit - 1], **kw)
    ax1.plot([unit], [c[knob_index, unit - 1]], marker="o", ms=10, mfc="none", color="black", lw=0)
    ax2.plot(
      [knob_values[knob_index]],
      [c[knob_index, unit - 1]],
      marker="o",
      ms=10,
      mfc="none",
      color="black",
      lw=0,
    )
  for ax in (ax1, ax2):
    ax.axhline(1.0, color="#999999", lw=0.8, ls=":")
    ax.set_ylabel("cosine with the exact gradient")
  if L:
    ax1.set_xticks(range(1, L + 1))
  ax1.set_xlabel("unit k (depth)")
  ax1.set_title(f"{knob_name} = {knob_values[knob_index]}")
  ax2.set_xlabel(knob_name)
  ax2.set_title(f"unit {unit}")
  if schemes:
    ax1.legend()


def alignment_explorer(
  cosine: Mapping[str, np.ndarray], knob_values: Sequence, *, knob_name: str = "speed"
):
  """Explore gradient alignment: unit slider, knob slider (speed or stride), schemes.

  ``cosine[scheme]`` is an array (len(knob_values), L); see :func:`draw_alignment`.
  """
  cosine = {s: np.asarray(v, float) for s, v in cosine.items()}
  if not cosine:
    raise ValueError("cosine must hold at least one scheme")
  shapes = {v.shape for v in cosine.values()}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(
      f"every cosine[scheme] must have the same shape (num_knob_values, L), "
      f"got {[v.shape for v in cosine.values()]}"
    )
  K, L = next(iter(shapes))
  if K != len(knob_values):
    raise ValueError(f"knob_values has {len(knob_values)} values but cosine has {K} rows")
  unit, _ = _int_slider("unit", 1, L, 1)
  knob = ipywidgets.SelectionSlider(
    options=[(str(v), i) for i, v in enumerate(knob_values)],
    value=0,
    description=knob_name,
    layout=ipywidgets.Layout(width="360px"),
  )
  names = plotting.order_schemes(cosine)
  schemes = ipywidgets.SelectMultiple(
    options=[(plotting.scheme_label(s), s) for s in names],
    value=tuple(names),
    description="schemes",
    rows=min(4, len(names)),
  )
  return Explorer(
    lambda fig, unit, knob_index, schemes: draw_alignment(
      fig,
      cosine,
      knob_values,
      unit=unit,
      knob_index=knob_index,
      schemes=schemes,
      knob_name=knob_name,
    ),
    {"unit": unit, "knob_index": knob, "schemes": schemes},
    figsize=(9, 3.4),
  )


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def _gray(x):
  x = np.asarray(x, float)
  return x[..., 0] if x.ndim >= 3 and x.shape[-1] == 1 else x


def draw_frames(
  fig,
  truth: np.ndarray,
  predictions: Mapping[str, np.ndarray],
  index: int,
  *,
  valid: np.ndarray | None = None,
  errors: bool = True,
) -> None:
  """Truth and every scheme's prediction at one index; error maps below.

  Args:
    truth: (T, H, W) or (T, H, W, C) frames in [0, 1]: the targets.
    predictions: ``scheme -> array like truth``.
    index: the tick shown.
    valid: optional (T,) bool: ticks where the predictions are meaningful.
    errors: also draw ``|prediction - truth|`` maps.
  """
  schemes = plotting.order_schemes(predictions)
  n = 1 + len(schemes)
  axes = fig.subplots(2 if errors else 1, n, squeeze=False)
  ok = True if valid is None else bool(np.asarray(valid)[index])
  t = _gray(truth[index])
  frames = [t] + [_gray(predictions[s][index]) for s in schemes]
  titles = ["truth"] + [plotting.scheme_label(s) for s in schemes]
  plotting.show_frames(axes[0], frames, titles=titles)
  for ax, s in zip(axes[0, 1:], schemes):
    ax.title.set_color(plotting.scheme_color(s))
  if errors:
    axes[1, 0].axis("off")
    axes[1, 0].text(
      0.5,
      0.5,
      "|prediction − truth|",
      ha="center",
      va="center",
      transform=axes[1, 0].transAxes,
      fontsize=8.5,
    )
    errs = [np.abs(f - t) for f in frames[1:]]
    ims = plotting.show_frames(axes[1, 1:], errs, vmin=0.0, vmax=1.0, cmap="magma")
    for ax, e in zip(axes[1, 1:], errs):
      ax.set_title(f"MSE {float(np.mean(e**2)):.4f}", fontsize=8)
    del ims
  fig.suptitle(f"tick {index}" + ("" if ok else " (no valid prediction yet)"), fontsize=10)


def frames_explorer(
  truth: np.ndarray,
  predictions: Mapping[str, np.ndarray],
  *,
  valid: np.ndarray | None = None,
  errors: bool = True,
  index: int | None = None,
):
  """Predicted frames of the schemes beside the truth, scrubbed with a Play button + slider.

  ``truth`` is (T, H, W[, C]) and every ``predictions[scheme]`` has the same shape.
  """
  truth = np.asarray(truth, float)
  predictions = {s: np.asarray(v, float) for s, v in predictions.items()}
  for s, v in predictions.items():
    if v.shape != truth.shape:
      raise ValueError(f"predictions[{s!r}] has shape {v.shape}, expected truth's {truth.shape}")
  T = truth.shape[0]
  if valid is not None and len(valid) != T:
    raise ValueError(f"valid has length {len(valid)}, expected T = {T}")
  first = 0 if valid is None else int(np.argmax(np.asarray(valid)))
  slider, extra = _int_slider("tick", 0, T - 1, first if index is None else index, play=True)
  n = 1 + len(predictions)
  return Explorer(
    lambda fig, index: draw_frames(fig, truth, predictions, index, valid=valid, errors=errors),
    {"index": slider},
    figsize=(1.7 * n, 3.7 if errors else 2.1),
    extra=extra,
  )


# ---------------------------------------------------------------------------------------------
# Pipeline schedules
# ---------------------------------------------------------------------------------------------


def _lookup(grids: Mapping, name: str, p: int, m: int, v: int):
  """``grids[(name, p, m, v)]``; a schedule without chunks (simulated under v = 1 only) is the
  same whatever v is; None when the combination was not simulated."""
  if (name, p, m, v) in grids:
    return grids[(name, p, m, v)]
  return None if name == "interleaved_1f1b" else grids.get((name, p, m, 1))


def draw_schedule_grid(fig, grids: Mapping, name: str, p: int, m: int, v: int) -> None:
  """Draws ``grids[(name, p, m, v)]`` (a ``ScheduleGrid``), or says that the combination was
  not simulated (interleaved 1F1B needs m <= p or m a multiple of p)."""
  ax = fig.subplots(1, 1)
  g = _lookup(grids, name, p, m, v)
  if g is None:
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}, p = {p}, m = {m}, v = {v}: not simulated", ha="center")
    return
  chunks = f", v = {g.chunks}" if g.chunks > 1 else ""
  plotting.plot_schedule_grid(ax, g, title=f"{name}: p = {p}, m = {m}{chunks}", numbers=False)
  ax.set_xlabel("time (forward passes of one stage)")


def schedule_grid_explorer(grids: Mapping, *, name: str = "sideways", p=None, m=None, v=None):
  """Explore precomputed pipeline-schedule grids: schedule, devices p, micro-batches m, chunks v.

  Args:
    grids: ``{(name, p, m, v): ScheduleGrid}``, e.g.
      ``sl.analysis.schedule_grids()`` (a schedule without chunks under v = 1 only).
    name, p, m, v: the initial values (default: the first of each that ``grids`` has).
  """
  if not grids:
    raise ValueError("grids must hold at least one (name, p, m, v) -> ScheduleGrid")
  names = list(dict.fromkeys(k[0] for k in grids))
  values = [sorted({k[i] for k in grids}) for i in (1, 2, 3)]
  if name not in names:
    raise ValueError(f"name must be one of the schedules in grids {names}, got {name!r}")
  initial = [x if x is not None else vals[len(vals) // 2] for x, vals in zip((p, m, v), values)]
  controls = {
    "name": ipywidgets.Dropdown(options=names, value=name, description="schedule"),
    **{
      label: ipywidgets.ToggleButtons(
        options=vals, value=x, description=label, style={"button_width": "42px"}
      )
      for label, vals, x in zip(("p", "m", "v"), values, initial)
    },
  }

  def caption(name, p, m, v):
    g = _lookup(grids, name, p, m, v)
    return "not simulated" if g is None else plotting.schedule_grid_numbers(g)

  return Explorer(
    lambda fig, name, p, m, v: draw_schedule_grid(fig, grids, name, p, m, v),
    controls,
    figsize=(11, 3.2),
    caption=caption,
  )
