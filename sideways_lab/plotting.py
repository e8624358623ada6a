"""One plotting style for every figure, notebook and widget of sideways_lab.

* :data:`SCHEME_COLORS` – one colour per scheme, used by *every* figure (Okabe–Ito palette,
  safe for colour-blind readers): BP blue, Sideways orange, Skip-Sideways green, and the exact
  pipelined gradient a neutral dark grey.
* :data:`STYLE` / :func:`style` / :func:`use_style` – the rc parameters (a context manager,
  or applied globally in a notebook).
* :func:`schedule_data` / :func:`draw_schedule` – the schedule diagram in the papers' visual
  language: units (rows) × ticks (columns), every cell coloured by the frame its activation
  derives from, the gradient drawn in the colours of the frames it mixes, blocked BP units
  greyed. The data is precomputed with :mod:`sideways_lab.schedule` (plain NumPy); drawing
  only indexes it, so the tick-slider widget is cheap.
* Small pure drawing helpers (``plot_*``) that take plain arrays and an ``Axes``; the figures
  module and the notebooks compose them.

Everything draws on an ``Axes`` or ``Figure`` you pass in (no hidden pyplot state), so the
functions work headless (Agg) and inside widgets.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence

import cycler
import numpy as np

# ---------------------------------------------------------------------------------------------
# Style
# ---------------------------------------------------------------------------------------------

#: One colour per scheme, everywhere (Okabe–Ito); an exact twin has its scheme's colour and
#: a dashed line (a hatched bar); baselines are grey.
SCHEME_COLORS: dict[str, str] = {
  "backprop": "#0072B2",  # blue
  "sideways": "#E69F00",  # orange
  "sideways_exact": "#E69F00",  # the exact twin of Sideways: its colour, dashed
  "skip_sideways": "#009E73",  # bluish green
  "skip_exact": "#009E73",  # the exact twin of Skip-Sideways: its colour, dashed
  "copy_newest": "#6E6E6E",  # baselines: grey
  "mean_frame": "#A8A8A8",
}

#: Display names of the schemes.
SCHEME_LABELS: dict[str, str] = {
  "backprop": "BP",
  "sideways": "Sideways",
  "sideways_exact": "Sideways, exact twin",
  "skip_sideways": "Skip-Sideways",
  "skip_exact": "Skip-Sideways, exact twin",
  "copy_newest": "copy newest frame",
  "mean_frame": "mean frame",
}

#: Exact twins are dashed, baselines dotted; everything else solid.
SCHEME_LINESTYLES: dict[str, str] = {
  "sideways_exact": "--",
  "skip_exact": "--",
  "copy_newest": ":",
  "mean_frame": ":",
}

#: Markers per scheme (an exact twin shares its scheme's marker).
SCHEME_MARKERS: dict[str, str] = {
  "backprop": "o",
  "sideways": "s",
  "sideways_exact": "s",
  "skip_sideways": "^",
  "skip_exact": "^",
  "copy_newest": "",
  "mean_frame": "",
}

#: Exact twins (hatched bars, hollow markers).
EXACT_SCHEMES = ("sideways_exact", "skip_exact")
#: Baselines (grey reference lines).
BASELINE_SCHEMES = ("copy_newest", "mean_frame")

#: The order in which schemes appear in legends and panels.
SCHEME_ORDER: tuple[str, ...] = (
  "backprop",
  "sideways",
  "sideways_exact",
  "skip_sideways",
  "skip_exact",
  "copy_newest",
  "mean_frame",
)

#: Colour of blocked (idle) units in BP diagrams and of "nothing here" cells.
BLOCKED_COLOR = "#BDBDBD"
EMPTY_COLOR = "#F4F4F4"

#: The rc parameters of every figure.
STYLE: dict[str, object] = {
  "figure.dpi": 100,
  "savefig.dpi": 150,
  "savefig.bbox": "tight",
  "savefig.pad_inches": 0.05,
  "figure.facecolor": "white",
  "axes.facecolor": "white",
  "axes.edgecolor": "#333333",
  "axes.linewidth": 0.8,
  "axes.grid": True,
  "grid.color": "#E0E0E0",
  "grid.linewidth": 0.6,
  "axes.spines.top": False,
  "axes.spines.right": False,
  "axes.titlesize": 11,
  "axes.titleweight": "bold",
  "axes.labelsize": 10,
  "axes.prop_cycle": cycler.cycler(
    color=["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
  ),
  "font.size": 9.5,
  "font.family": "DejaVu Sans",
  "legend.fontsize": 8.5,
  "legend.frameon": False,
  "lines.linewidth": 1.8,
  "lines.markersize": 5,
  "xtick.labelsize": 8.5,
  "ytick.labelsize": 8.5,
  "image.cmap": "gray",
  "image.interpolation": "nearest",
  "pdf.fonttype": 42,
  "svg.fonttype": "none",
}


@contextlib.contextmanager
def style():
  """Context manager that applies :data:`STYLE` (``with sl.plotting.style(): ...``)."""
  import matplotlib as mpl

  with mpl.rc_context(STYLE):
    yield


def use_style() -> None:
  """Applies :data:`STYLE` globally (for notebooks)."""
  import matplotlib as mpl

  mpl.rcParams.update(STYLE)


def scheme_color(scheme: str) -> str:
  """The colour of a scheme; unknown names get a neutral grey."""
  return SCHEME_COLORS.get(scheme, "#7F7F7F")


def scheme_label(scheme: str) -> str:
  """The legend label of a scheme (``"sideways"`` -> ``"Sideways"``); unknown names as given."""
  return SCHEME_LABELS.get(scheme, str(scheme))


def scheme_kwargs(scheme: str, marker: bool = False) -> dict:
  """``plot`` keyword arguments (colour, label, line style, marker) of a scheme."""
  kw = dict(
    color=scheme_color(scheme),
    label=scheme_label(scheme),
    linestyle=SCHEME_LINESTYLES.get(scheme, "-"),
  )
  if marker:
    kw["marker"] = SCHEME_MARKERS.get(scheme, "o")
    if scheme in EXACT_SCHEMES:
      kw["markerfacecolor"] = "white"
  return kw


def order_schemes(schemes) -> list[str]:
  """Sorts scheme names in :data:`SCHEME_ORDER` (unknown names last, in the given order)."""
  schemes = list(schemes)
  known = [s for s in SCHEME_ORDER if s in schemes]
  return known + [s for s in schemes if s not in SCHEME_ORDER]


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, *, mosaic=None, **kw):
  """A ``matplotlib.figure.Figure`` (not registered with pyplot) and its axes, in the style.

  Returns ``(fig, axes)``: an (nrows, ncols) array of axes, or, with ``mosaic`` (a layout for
  ``Figure.subplot_mosaic``, e.g. ``[["a", "b"], ["c", "c"]]``), a dict from label to axes.
  """
  from matplotlib.figure import Figure

  with style():
    fig = Figure(figsize=figsize or (4.0 * ncols, 3.0 * nrows), layout="constrained")
    if mosaic is not None:
      return fig, fig.subplot_mosaic(mosaic, **kw)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
  return fig, axes


def save_figure(fig, path_stem, formats: Sequence[str] = ("png", "pdf")) -> list[str]:
  """Saves ``fig`` as ``<path_stem>.png`` and ``.pdf``; returns the paths written."""
  import os

  out = []
  with style():
    for fmt in formats:
      p = f"{os.fspath(path_stem)}.{fmt}"
      kw = (
        {"metadata": {"CreationDate": None}} if fmt == "pdf" else {"metadata": {"Software": None}}
      )
      fig.savefig(p, format=fmt, **kw)
      out.append(p)
  return out


def figure_to_png(fig, dpi: int = 90) -> bytes:
  """Renders a figure to PNG bytes (used by the widgets)."""
  import io

  buf = io.BytesIO()
  with style():
    fig.savefig(buf, format="png", dpi=dpi)
  return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Frame colours (the schedule diagram's visual language)
# ---------------------------------------------------------------------------------------------

# matplotlib's Set3 without its grey (grey means "blocked").
_FRAME_PALETTE = (
  "#8DD3C7",
  "#FFED6F",
  "#BEBADA",
  "#FB8072",
  "#80B1D3",
  "#FDB462",
  "#B3DE69",
  "#FCCDE5",
  "#BC80BD",
  "#CCEBC5",
  "#FFFFB3",
)


def frame_color(f: int) -> str:
  """The colour of frame ``f`` (cycled through an 11-colour palette)."""
  return _FRAME_PALETTE[int(f) % len(_FRAME_PALETTE)]


def _darken(color: str, factor: float = 0.62) -> tuple:
  from matplotlib.colors import to_rgb

  r, g, b = to_rgb(color)
  return (r * factor, g * factor, b * factor)


def frame_line_color(f: int) -> tuple:
  """A darker shade of :func:`frame_color` for lines and arrows."""
  return _darken(frame_color(f))


# ---------------------------------------------------------------------------------------------
# The schedule diagram
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleData:
  """Everything the schedule diagram shows, precomputed (index it by tick).

  Attributes:
    scheme: "backprop", "sideways", "skip_sideways", ... (a pipelined name for any graph).
    num_units: L.
    num_ticks: T, the number of columns.
    edges: the graph's edges ``k -> ((j, d), ...)``.
    act_frames: ``act_frames[k][t]``: sorted tuple of frame indices the activation of unit k
      at tick t derives from (row 0: the incoming frame); ``()`` when the unit has no valid
      activation (empty pipeline, or a blocked BP unit).
    grad_frames: ``grad_frames[k][t]``: sorted tuple of the origin frames of the losses whose
      gradient unit k uses at tick t (``()``: no gradient).
    messages: list of ``(m, t, j, frames)``: a gradient message from unit m at tick t to unit
      j (arriving at tick t+1 for pipelined schemes; at tick t+1 in BP as well) carrying the
      gradients of the losses on ``frames``.
    blocked: (L+1, T) bool: units idle at that tick (BP only).
    dropped: (T,) bool: frames that arrive while BP is busy and are never used (BP only).
    loss_ticks: (T,) bool: ticks at which the top unit emits a loss.
  """

  scheme: str
  num_units: int
  num_ticks: int
  edges: dict
  act_frames: tuple
  grad_frames: tuple
  messages: tuple
  blocked: np.ndarray
  dropped: np.ndarray
  loss_ticks: np.ndarray

  def mismatch(self, k: int, t: int) -> tuple[int, ...]:
    """Frames between the activation's main-path frame and each gradient origin at (k, t).

    On a chain this is ``2(L-k)`` for Sideways (docs/design.md §5) and 0 for BP.
    """
    if not self.act_frames[k][t] or not self.grad_frames[k][t]:
      return ()
    a = min(self.act_frames[k][t])  # the main path's frame (skips only bring newer ones)
    return tuple(sorted({a - g for g in self.grad_frames[k][t]}))


def _edges_of(graph_or_edges) -> dict:
  if hasattr(graph_or_edges, "edges"):
    return {k: tuple(tuple(e) for e in v) for k, v in graph_or_edges.edges.items()}
  if isinstance(graph_or_edges, Mapping):
    return {int(k): tuple(tuple(e) for e in v) for k, v in graph_or_edges.items()}
  raise TypeError(
    f"graph must be a UnitGraph or a dict of edges, got {type(graph_or_edges).__name__}"
  )


def schedule_data(graph, num_ticks: int, scheme: str | None = None) -> ScheduleData:
  """Precomputes the schedule diagram of ``graph`` over ``num_ticks`` ticks.

  For a pipelined scheme (Sideways on a chain, Skip-Sideways with skips) it uses
  :func:`sideways_lab.schedule.frames_integrated` (the activation of unit k at tick t derives
  from frame ``t-k+1`` along the main path, plus newer frames through skips) and
  :func:`~sideways_lab.schedule.gradient_sources` (the cotangent of unit k at tick t started at
  the losses of ticks s; we colour it by the origin frame ``s-L+1`` of each). For
  ``scheme="backprop"`` it draws blocking BP with one unit per device: a frame goes up the L
  units and its gradient comes back down (``2L-1`` ticks, :func:`~sideways_lab.schedule.latency`),
  every other unit is blocked, and the frames that arrive meanwhile are dropped.

  Args:
    graph: a :class:`~sideways_lab.UnitGraph` or a dict of edges ``k -> [(j, d), ...]``.
    num_ticks: number of ticks (columns) to draw, >= 1.
    scheme: "backprop" or a pipelined scheme name; defaults to the graph's name, else
      "sideways" for a chain and "skip_sideways" otherwise.
  """
  from sideways_lab import schedule as S

  if not isinstance(num_ticks, (int, np.integer)) or num_ticks < 1:
    raise ValueError(f"num_ticks must be a positive int, got {num_ticks!r}")
  num_ticks = int(num_ticks)
  edges = _edges_of(graph)
  L = len(edges)
  if scheme is None:
    scheme = getattr(graph, "name", None)
    if scheme is None:
      is_chain = all(es == ((k - 1, 0),) for k, es in edges.items())
      scheme = "sideways" if is_chain else "skip_sideways"
  T = num_ticks
  blocked = np.zeros((L + 1, T), bool)
  dropped = np.zeros(T, bool)
  if scheme == "backprop":
    P = 2 * L - 1
    act = [[() for _ in range(T)] for _ in range(L + 1)]
    grad = [[() for _ in range(T)] for _ in range(L + 1)]
    messages = []
    loss = np.zeros(T, bool)
    for t in range(T):
      n, p = divmod(t, P)
      f = n * P
      act[0][t] = (t,)
      dropped[t] = p != 0
      for k in range(1, L + 1):
        fwd, bwd = p == k - 1, p == 2 * L - 1 - k
        if fwd or bwd:
          act[k][t] = (f,)
        if bwd:
          grad[k][t] = (f,)
          if k > 1 and t + 1 < T:
            messages.append((k, t, k - 1, (f,)))
        blocked[k, t] = not (fwd or bwd)
      loss[t] = p == L - 1
    return ScheduleData(
      scheme,
      L,
      T,
      edges,
      tuple(map(tuple, act)),
      tuple(map(tuple, grad)),
      tuple(messages),
      blocked,
      dropped,
      loss,
    )

  v = S.first_valid_ticks(edges, S.PIPELINED)
  frames = S.frames_integrated(edges, T, S.PIPELINED)
  V = S.loss_ticks(edges, T)
  src = S.gradient_sources(edges, T)
  act = []
  for k in range(L + 1):
    act.append(
      tuple(tuple(sorted(f for f in frames[k][t] if f >= 0)) if t >= v[k] else () for t in range(T))
    )
  grad = []
  for k in range(L + 1):
    if k == 0:
      grad.append(tuple(() for _ in range(T)))
      continue
    grad.append(tuple(tuple(sorted(s - L + 1 for s in src[k][t] if V[s])) for t in range(T)))
  messages = []
  for m in range(2, L + 1):
    for j, _ in edges[m]:
      if j < 1:
        continue
      for t in range(T - 1):
        if grad[m][t]:
          messages.append((m, t, j, grad[m][t]))
  return ScheduleData(
    scheme, L, T, edges, tuple(act), tuple(grad), tuple(messages), blocked, dropped, V.copy()
  )


def _stripes(ax, x, y, w, h, frames, alpha=1.0, hatch=None, z=1):
  from matplotlib.patches import Rectangle

  n = max(len(frames), 1)
  for i, f in enumerate(frames):
    ax.add_patch(
      Rectangle(
        (x + i * w / n, y),
        w / n,
        h,
        facecolor=frame_color(f),
        edgecolor="none",
        alpha=alpha,
        hatch=hatch,
        zorder=z,
      )
    )


def draw_schedule(
  ax,
  data: ScheduleData,
  tick: int | None = None,
  *,
  title: str | None = None,
  show_messages: bool = True,
  show_forward: bool = True,
  labels: bool = True,
):
  """Draws the schedule diagram of :func:`schedule_data` on ``ax``.

  Rows are the incoming frame (bottom) and units 1..L (upwards), columns are ticks. The
  upper part of a cell is coloured by the frame(s) the unit's activation derives from (one
  stripe per frame a unit integrates, numbered), the lower strip by the origin frame(s) of the
  gradient it uses at that tick; arrows between lower strips are gradient messages, drawn in
  the colours of the frames they mix. Grey hatched cells are blocked BP units; hatched frames
  are dropped by BP.

  Args:
    ax: a matplotlib Axes.
    data: from :func:`schedule_data`.
    tick: the current tick (a slider); ticks after it are faded and the inputs that feed the
      units at ``tick`` are drawn as grey arrows. ``None`` draws everything at full strength.
    title: the axes title (default: the scheme's display name and L).
  """
  from matplotlib.patches import FancyArrowPatch, Rectangle

  L, T = data.num_units, data.num_ticks
  if tick is not None and not 0 <= int(tick) < T:
    raise ValueError(f"tick must be in [0, {T - 1}], got {tick!r}")
  cw, ch = 0.92, 0.84  # cell size (1 x 1 grid)
  ah = 0.56  # activation part of a cell (the rest is the gradient strip)
  ax.set_xlim(-0.6, T - 0.4)
  ax.set_ylim(-0.6, L + 0.6)
  ax.set_aspect("auto")
  ax.grid(False)
  for sp in ax.spines.values():
    sp.set_visible(False)

  def fade(t):
    return 1.0 if tick is None or t <= tick else 0.18

  for k in range(L + 1):
    for t in range(T):
      x0, y0 = t - cw / 2, k - ch / 2
      a = fade(t)
      frames = data.act_frames[k][t]
      if k == 0:
        if data.dropped[t]:
          ax.add_patch(
            Rectangle(
              (x0, y0),
              cw,
              ch,
              facecolor=EMPTY_COLOR,
              edgecolor="none",
              hatch="////",
              hatchcolor="#AAAAAA",
              lw=0,
              alpha=a,
              zorder=1,
            )
          )
        else:
          _stripes(ax, x0, y0, cw, ch, frames, alpha=a)
        if labels:
          ax.text(
            t,
            k,
            f"x{t}",
            ha="center",
            va="center",
            fontsize=7.5,
            alpha=a,
            color="#666666" if data.dropped[t] else "black",
            zorder=3,
          )
        continue
      if data.blocked[k, t]:
        ax.add_patch(
          Rectangle(
            (x0, y0),
            cw,
            ch,
            facecolor=BLOCKED_COLOR,
            edgecolor="none",
            hatch="xx",
            hatchcolor="#8A8A8A",
            alpha=0.6 * a,
            lw=0,
            zorder=1,
          )
        )
        continue
      if not frames:
        ax.add_patch(
          Rectangle((x0, y0), cw, ch, facecolor=EMPTY_COLOR, edgecolor="none", alpha=a, zorder=1)
        )
        continue
      ya = y0 + ch * (1 - ah)
      _stripes(ax, x0, ya, cw, ch * ah, frames, alpha=a)
      gf = data.grad_frames[k][t]
      if gf:
        _stripes(ax, x0 + 0.08, y0 + 0.04, cw - 0.16, ch * (1 - ah) - 0.1, gf, alpha=a, z=2)
      if labels:
        txt = ",".join(str(f) for f in frames) if len(frames) <= 3 else f"{frames[0]}..{frames[-1]}"
        ax.text(
          t,
          ya + ch * ah / 2,
          txt,
          ha="center",
          va="center",
          alpha=a,
          fontsize=7.5 if len(frames) == 1 else 6.2,
          zorder=3,
        )
      ax.add_patch(
        Rectangle(
          (x0, y0), cw, ch, facecolor="none", edgecolor="#555555", lw=0.4, alpha=a, zorder=3
        )
      )
      if k == L and data.loss_ticks[t]:
        ax.plot(
          [t],
          [k + ch / 2 + 0.1],
          marker="v",
          ms=4.5,
          color="#222222",
          alpha=a,
          zorder=5,
          clip_on=False,
        )

  if show_messages:
    gy = -ch / 2 + 0.04 + (ch * (1 - ah) - 0.1) / 2  # centre of the gradient strip, rel. to row
    for m, t, j, frames in data.messages:
      if t + 1 >= T:
        continue
      a = fade(t + 1)
      n = len(frames)
      for i, f in enumerate(frames):
        off = (i - (n - 1) / 2) * 0.07
        arr = FancyArrowPatch(
          (t + 0.12, m + gy + off),
          (t + 1 - 0.12, j + gy + off),
          arrowstyle="-|>",
          mutation_scale=7,
          lw=1.3,
          color=frame_line_color(f),
          alpha=a,
          zorder=4,
          shrinkA=0,
          shrinkB=0,
        )
        ax.add_patch(arr)

  if tick is not None:
    t = int(tick)
    ax.add_patch(
      Rectangle(
        (t - 0.5, -0.55), 1.0, L + 1.1, facecolor="none", edgecolor="black", lw=1.6, zorder=5
      )
    )
    if show_forward and data.scheme != "backprop":
      ay = ch / 2 - ch * ah / 2  # centre of the activation part
      for k in range(1, L + 1):
        if not data.act_frames[k][t]:
          continue
        for j, d in data.edges[k]:
          src_t = t - d if j == 0 else t - 1 - d
          if src_t < 0:
            continue
          arr = FancyArrowPatch(
            (src_t + 0.3, j + (0 if j == 0 else ay)),
            (t - 0.3, k + ay),
            arrowstyle="-|>",
            mutation_scale=7,
            lw=0.9,
            color="#444444",
            alpha=0.8,
            zorder=4,
            connectionstyle="arc3,rad=0.0",
            shrinkA=0,
            shrinkB=0,
          )
          ax.add_patch(arr)

  ax.set_xticks(range(T))
  ax.set_xticklabels([str(t) for t in range(T)])
  ax.set_yticks(range(L + 1))
  ax.set_yticklabels(["frame"] + [f"unit {k}" for k in range(1, L + 1)])
  ax.tick_params(length=0)
  ax.set_xlabel("tick")
  if title is None:
    title = f"{scheme_label(data.scheme)} (L = {L})"
  ax.set_title(title, color=scheme_color(data.scheme) if data.scheme in SCHEME_COLORS else "black")
  return ax


def schedule_caption(data: ScheduleData, tick: int) -> str:
  """One line per unit describing what it works on at ``tick`` (used under the widget)."""
  lines = [
    f"tick {tick}: frame x{tick} arrives" + (" (dropped: BP is busy)" if data.dropped[tick] else "")
  ]
  for k in range(1, data.num_units + 1):
    if data.blocked[k, tick]:
      lines.append(f"unit {k}: blocked (waiting for BP)")
      continue
    a, g = data.act_frames[k][tick], data.grad_frames[k][tick]
    if not a:
      lines.append(f"unit {k}: pipeline not yet filled")
      continue
    s = f"unit {k}: activation of frame(s) {', '.join(map(str, a))}"
    if g:
      mm = data.mismatch(k, tick)
      s += (
        f"; gradient of the loss on frame(s) {', '.join(map(str, g))}"
        f" (mismatch {', '.join(map(str, mm))} frames)"
      )
    else:
      s += "; no gradient yet"
    lines.append(s)
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Generic plots (plain arrays in, an Axes out)
# ---------------------------------------------------------------------------------------------


def plot_curves(
  ax,
  curves: Mapping[str, tuple],
  *,
  xlabel: str = "step",
  ylabel: str = "",
  title: str | None = None,
  logy: bool = False,
  marker: bool = False,
  smooth: int = 1,
  legend: bool = True,
):
  """Plots one curve per scheme: ``curves[scheme] = (x, y)`` (or just ``y``).

  ``smooth > 1`` applies a running mean of that width (the raw curve is drawn faintly).
  """
  for s in order_schemes(curves):
    c = curves[s]
    if isinstance(c, tuple) and len(c) == 2:
      x, y = np.asarray(c[0], float), np.asarray(c[1], float)
    else:
      y = np.asarray(c, float)
      x = np.arange(len(y))
    kw = scheme_kwargs(s, marker=marker)
    if smooth > 1 and len(y) > smooth:
      ax.plot(x, y, color=kw["color"], alpha=0.2, lw=1)
      ys = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
      ax.plot(x[smooth - 1 :], ys, **kw)
    else:
      ax.plot(x, y, **kw)
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  if legend:
    ax.legend()
  return ax


def plot_bars(
  ax,
  values: Mapping[str, float],
  *,
  errors: Mapping[str, float] | None = None,
  ylabel: str = "",
  title: str | None = None,
  chance: float | None = None,
  fmt: str = "{:.2f}",
):
  """One bar per scheme in its colour, value written on top; optional chance line."""
  schemes = order_schemes(values)
  x = np.arange(len(schemes))
  vals = [float(values[s]) for s in schemes]
  err = [float(errors[s]) for s in schemes] if errors else None
  bars = ax.bar(
    x,
    vals,
    yerr=err,
    color=[scheme_color(s) for s in schemes],
    width=0.65,
    capsize=3,
    edgecolor="white",
  )
  for bar, s in zip(bars, schemes):
    if s in EXACT_SCHEMES:
      bar.set_hatch("///")
  for xi, v in zip(x, vals):
    ax.text(xi, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
  ax.set_xticks(x)
  ax.set_xticklabels([scheme_label(s) for s in schemes])
  if chance is not None:
    ax.axhline(chance, color="#777777", ls=":", lw=1.2)
    ax.text(x[-1] + 0.45, chance, "chance", ha="right", va="bottom", fontsize=8, color="#555555")
  ax.grid(axis="x", visible=False)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  return ax


def plot_grouped_bars(
  ax,
  values: Mapping[str, Mapping[str, float]],
  *,
  ylabel: str = "",
  title: str | None = None,
  chance: float | None = None,
):
  """Grouped bars: ``values[scheme][group]``, one group per key (e.g. a class), one bar per
  scheme in its colour inside each group; an optional chance line."""
  schemes = order_schemes(values)
  if not schemes:
    raise ValueError("values must hold at least one scheme")
  groups = list(values[schemes[0]])
  x = np.arange(len(groups))
  w = 0.8 / len(schemes)
  for i, s in enumerate(schemes):
    ax.bar(
      x - 0.4 + (i + 0.5) * w,
      [float(values[s][g]) for g in groups],
      width=w,
      color=scheme_color(s),
      edgecolor="white",
      label=scheme_label(s),
      hatch="///" if s in EXACT_SCHEMES else None,
    )
  ax.set_xticks(x)
  ax.set_xticklabels(groups)
  if chance is not None:
    ax.axhline(chance, color="#777777", ls=":", lw=1.2)
  ax.grid(axis="x", visible=False)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  return ax


def plot_per_unit(
  ax,
  values: Mapping[str, np.ndarray],
  *,
  ylabel: str = "cosine",
  title: str | None = None,
  ref: float | None = 1.0,
):
  """Plots a per-unit quantity (e.g. cosine with the exact gradient) against depth k = 1..L."""
  for s in order_schemes(values):
    v = np.asarray(values[s], float)
    ax.plot(np.arange(1, len(v) + 1), v, **scheme_kwargs(s, marker=True))
  if ref is not None:
    ax.axhline(ref, color="#999999", lw=0.8, ls=":")
  L = max(len(np.asarray(v)) for v in values.values()) if values else 1
  ax.set_xticks(range(1, L + 1))
  ax.set_xlabel("unit k (depth)")
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend()
  return ax


def show_frames(
  axes, frames, *, titles: Sequence[str] | None = None, vmin=0.0, vmax=1.0, cmap="gray"
):
  """Shows frames (N, H, W[, C]) in a row of axes (axes off); returns the AxesImages."""
  frames = np.asarray(frames)
  ims = []
  for i, ax in enumerate(np.ravel(axes)):
    if i >= len(frames):
      ax.axis("off")
      continue
    f = frames[i]
    if f.ndim == 3 and f.shape[-1] == 1:
      f = f[..., 0]
    ims.append(
      ax.imshow(np.clip(f, vmin, vmax), vmin=vmin, vmax=vmax, cmap=cmap if f.ndim == 2 else None)
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if titles is not None and i < len(titles):
      ax.set_title(titles[i], fontsize=8.5)
  return ims


def color_title(ax, text: str, scheme: str | None = None, **kw):
  """An axes title in the scheme's colour."""
  return ax.set_title(text, color=scheme_color(scheme) if scheme else "black", **kw)


def plot_timeline(
  ax, tl, *, time: bool = False, annotate: bool | None = None, title: str | None = None
):
  """Draws a ``sideways_lab.analysis.latency.Timeline`` (a Gantt chart) in the frame colours.

  One row per device. A forward step is coloured by the frame it works on; a backward step
  (hatched) by the origin frame(s) ``s - L + 1`` of the loss ticks s whose gradient it uses
  (BP: its own frame); blocked time is grey, work on the empty pipeline is faded.
  ``time=False`` draws ticks (each split into a forward and a backward half per unit);
  ``time=True`` uses the items' measured start/duration.
  """
  from matplotlib.patches import Rectangle

  L, D = tl.num_units, tl.num_devices
  annotate = len(tl.items) < 200 if annotate is None else annotate
  xmax = 0.0
  for it in tl.items:
    d = it["device"]
    if time:
      x0, w = it["start"], it["duration"]
    else:
      units = tl.partition[d]
      slot = 1.0 / (2 * len(units))
      pos = units.index(it["unit"]) * 2 + (1 if it["kind"] == "backward" else 0)
      x0, w = it["tick"] + pos * slot, slot
    xmax = max(xmax, x0 + w)
    if it["kind"] == "forward":
      frames = (it["frame"],)
    elif tl.scheme == "backprop":
      frames = (it["frame"],)
    else:
      frames = tuple(s - L + 1 for s in it["loss_ticks"]) or (it["frame"],)
    n = len(frames)
    for i, f in enumerate(frames):
      ax.add_patch(
        Rectangle(
          (x0, d - 0.38 + i * 0.76 / n),
          w,
          0.76 / n,
          facecolor=frame_color(f) if f >= 0 else EMPTY_COLOR,
          alpha=1.0 if it["valid"] else 0.25,
          lw=0,
          hatch="///" if it["kind"] == "backward" else None,
          hatchcolor="#555555",
        )
      )
    ax.add_patch(Rectangle((x0, d - 0.38), w, 0.76, facecolor="none", edgecolor="white", lw=0.6))
    if annotate and it["valid"] and not time:
      label = f"{it['frame']}" if it["kind"] == "forward" else ",".join(str(f) for f in frames)
      ax.text(x0 + w / 2, d, label, ha="center", va="center", fontsize=6.5)
  if tl.scheme == "backprop" and not time:
    for d in range(D):
      for t in range(tl.num_ticks):
        if not tl.busy[d, t]:
          ax.add_patch(
            Rectangle((t, d - 0.38), 1.0, 0.76, facecolor=BLOCKED_COLOR, alpha=0.5, lw=0, zorder=0)
          )
  ax.set_xlim(0, xmax if time else tl.num_ticks)
  ax.set_ylim(D - 0.5, -0.5)
  ax.set_yticks(range(D))
  ax.set_yticklabels(
    [
      f"device {d + 1}: unit{'s' if len(g) > 1 else ''} " + ",".join(map(str, g))
      for d, g in enumerate(tl.partition)
    ]
  )
  ax.grid(False)
  ax.set_xlabel("time (s)" if time else "tick")
  ax.set_title(
    title if title is not None else f"{scheme_label(tl.scheme)}: L = {L}, D = {D}",
    color=scheme_color(tl.scheme),
  )
  return ax


# ---------------------------------------------------------------------------------------------
# Sweeps (tidy DataFrames of sideways_lab.experiments)
# ---------------------------------------------------------------------------------------------


def plot_sweep(
  ax,
  df,
  metric: str,
  *,
  schemes=None,
  xlabel: str | None = None,
  ylabel: str | None = None,
  title: str | None = None,
  chance: float | None = None,
  legend: bool = True,
  logx: bool = False,
):
  """``metric`` against the knob value, one colour per scheme: every seed as a thin line, the
  mean over seeds bold with markers; baselines (``copy_newest``, ``mean_frame``) as grey
  lines (their mean over seeds); an optional chance line.

  ``df``: a tidy DataFrame of :func:`sideways_lab.experiments.sweep` (columns ``scheme,
  value, seed`` and ``metric``). For next-frame baselines of several pipeline timings, the
  rows of each (scheme, graph, method) are drawn separately.
  """
  present = list(dict.fromkeys(df["scheme"]))
  for s in order_schemes(schemes if schemes is not None else present):
    rows = df[df["scheme"] == s]
    if rows.empty:
      continue
    kw = scheme_kwargs(s, marker=True)
    if s in BASELINE_SCHEMES:
      for (graph, method), part in rows.groupby(["graph", "method"], sort=False):
        mean = part.groupby("value")[metric].mean()
        ax.plot(
          mean.index,
          mean.values,
          color=kw["color"],
          lw=1.2,
          ls=":" if method == "synchronous" else "--" if graph == "chain" else "-.",
          label=f"{scheme_label(s)} ({'BP' if method == 'synchronous' else graph})",
        )
      continue
    for _, seed_rows in rows.groupby("seed"):
      seed_rows = seed_rows.sort_values("value")
      ax.plot(
        seed_rows["value"],
        seed_rows[metric],
        color=kw["color"],
        lw=0.7,
        alpha=0.35,
        ls=kw["linestyle"],
      )
    mean = rows.groupby("value")[metric].mean()
    ax.plot(mean.index, mean.values, lw=2.0, **kw)
  if chance is not None:
    ax.axhline(chance, color="#777777", ls=":", lw=1.2)
    ax.annotate(
      "chance",
      (1.0, chance),
      xycoords=("axes fraction", "data"),
      ha="right",
      va="bottom",
      fontsize=8,
      color="#555555",
    )
  if logx:
    ax.set_xscale("symlog", linthresh=0.25)
  ax.set_xlabel(xlabel if xlabel is not None else str(df["knob"].iloc[0]))
  ax.set_ylabel(ylabel if ylabel is not None else metric)
  if title:
    ax.set_title(title)
  if legend:
    ax.legend(fontsize=7.5)
  return ax
