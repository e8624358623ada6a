"""Generic plots: plain arrays or tidy DataFrames in, an ``Axes`` out, in the house style.

Curves, bars and per-unit values with one colour per scheme; frames; the Gantt chart of a
latency timeline (``sl.analysis.latency.timeline``); the grid of a pipeline schedule
(``sl.analysis.simulate_schedule``) with its measured numbers; the seeds-and-mean plot of a sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from sideways_lab.plotting.style import (
  BASELINE_SCHEMES,
  BLOCKED_COLOR,
  EMPTY_COLOR,
  EXACT_SCHEMES,
  frame_color,
  order_schemes,
  scheme_color,
  scheme_kwargs,
  scheme_label,
)


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
  errors: Mapping[str, Mapping[str, float]] | None = None,
  points: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
):
  """Grouped bars: ``values[scheme][group]``, one group per key (e.g. a class), one bar per
  scheme in its colour inside each group (an exact twin hatched); optional error bars
  ``errors[scheme][group]``, the individual values ``points[scheme][group]`` (e.g. seeds) as
  black dots, and a chance line."""
  schemes = order_schemes(values)
  if not schemes:
    raise ValueError("values must hold at least one scheme")
  groups = list(values[schemes[0]])
  x = np.arange(len(groups))
  w = 0.8 / len(schemes)
  for i, s in enumerate(schemes):
    xs = x - 0.4 + (i + 0.5) * w
    ax.bar(
      xs,
      [float(values[s][g]) for g in groups],
      yerr=[float(errors[s][g]) for g in groups] if errors else None,
      capsize=2,
      width=w,
      color=scheme_color(s),
      edgecolor="white",
      label=scheme_label(s),
      hatch="///" if s in EXACT_SCHEMES else None,
    )
    for xi, g in zip(xs, groups):
      ys = list(points[s][g]) if points else []
      ax.plot(np.full(len(ys), xi), ys, "o", color="black", ms=2.2, zorder=3)
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


def integer_axis(ax, which: str = "x"):
  """Integer ticks only on the axis ``which`` ("x", "y" or "both") of an axis that counts
  (devices, units, ticks, strides): no 1.25 devices."""
  for name in ("x", "y") if which == "both" else (which,):
    getattr(ax, f"{name}axis").set_major_locator(MaxNLocator(integer=True))
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


def schedule_grid_numbers(grid) -> str:
  """The measured numbers of a ``sideways_lab.analysis.schedules.ScheduleGrid``, in three lines
  (bubble; inputs held and weight versions per device; staleness per stage and exactness)."""
  join = lambda xs: " ".join(f"{x:g}" for x in xs)
  per_iteration = (
    f" (per iteration {grid.steady_bubble:.2f})"
    if abs(grid.steady_bubble - grid.bubble) > 1e-12
    else ""
  )
  return (
    f"bubble {grid.bubble:.2f}{per_iteration}\n"
    f"inputs held {join(grid.peak_activations)} · weight versions {join(grid.weight_versions)}\n"
    f"stale: weights {join(grid.weight_staleness)} upd., inputs {join(grid.input_staleness)} · "
    + ("exact" if grid.exact else "not exact")
  )


def plot_schedule_grid(
  ax, grid, *, title: str | None = None, numbers: bool = True, annotate: bool | None = None
):
  """Draws a pipeline schedule's (device, slot) grid (``sl.analysis.simulate_schedule``).

  One row per device, time in forward passes of one stage (a slot lasts ``grid.slot_time``). A
  forward is coloured by its micro-batch (the frame, for Sideways); a backward is hatched in
  the colour(s) of the micro-batch(es) whose gradient it carries; a weight-gradient cell (W) is
  dotted; idle slots are blank. A chunk c > 0 of interleaved 1F1B is marked with c primes.
  ``numbers`` writes :func:`schedule_grid_numbers` to the right of the grid.
  """
  w = grid.slot_time
  cells = [(d, t, c) for d, row in enumerate(grid.cells) for t, c in enumerate(row) if c]
  annotate = len(cells) <= 300 if annotate is None else annotate
  for d, t, c in cells:
    n = len(c.microbatches)
    for i, mb in enumerate(c.microbatches):
      ax.add_patch(
        Rectangle(
          (t * w, d - 0.4 + i * 0.8 / n),
          w,
          0.8 / n,
          facecolor=frame_color(mb),
          lw=0,
          hatch={"F": None, "B": "///", "W": "..."}[c.kind],
          hatchcolor="#555555",
        )
      )
    ax.add_patch(Rectangle((t * w, d - 0.4), w, 0.8, facecolor="none", edgecolor="white", lw=0.5))
    if annotate:
      chunk = "′" * (c.stage // grid.stages) if grid.chunks > 1 else ""
      ax.text(
        (t + 0.5) * w, d, f"{c.microbatches[0]}{chunk}", ha="center", va="center", fontsize=5.5
      )
  ax.set_xlim(0, grid.num_slots * w)
  ax.set_ylim(grid.stages - 0.5, -0.5)
  ax.set_yticks(range(grid.stages))
  ax.set_yticklabels([f"device {d + 1}" for d in range(grid.stages)], fontsize=7)
  ax.grid(False)
  sideways = grid.name in ("sideways", "sideways_exact", "skip_sideways")
  color = scheme_color(grid.name) if sideways else "#333333"  # one colour per scheme
  ax.set_title(title if title is not None else grid.name, loc="left", fontsize=9.5, color=color)
  if numbers:
    ax.text(
      1.01,
      0.5,
      schedule_grid_numbers(grid),
      transform=ax.transAxes,
      va="center",
      ha="left",
      fontsize=7,
      linespacing=1.4,
    )
  return ax


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
  one_value = df["value"].nunique() == 1
  for s in order_schemes(schemes if schemes is not None else present):
    rows = df[df["scheme"] == s]
    if rows.empty:
      continue
    kw = scheme_kwargs(s, marker=True)
    if s in BASELINE_SCHEMES:
      for (graph, method), part in rows.groupby(["graph", "method"], sort=False):
        mean = part.groupby("value")[metric].mean()
        line = dict(
          color=kw["color"],
          lw=1.2,
          ls=":" if method == "synchronous" else "--" if graph == "chain" else "-.",
          label=f"{scheme_label(s)} ({'BP' if method == 'synchronous' else graph})",
        )
        if one_value:  # a line through one point draws nothing: a reference line instead
          ax.axhline(float(mean.iloc[0]), **line)
        else:
          ax.plot(mean.index, mean.values, **line)
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
  if one_value:  # one knob value: its tick only, not an axis from v - 0.02 to v + 0.02
    v = float(df["value"].iloc[0])
    ax.set_xticks([v], [f"{v:g}"])
    if not logx:
      ax.set_xlim(v - 1.0, v + 1.0)
  ax.set_xlabel(xlabel if xlabel is not None else str(df["knob"].iloc[0]))
  ax.set_ylabel(ylabel if ylabel is not None else metric)
  if title:
    ax.set_title(title)
  if legend:
    ax.legend(fontsize=7.5)
  return ax


def plot_ladder(
  ax,
  table,
  *,
  color: str = "#333333",
  label: str | None = None,
  linestyle: str = "-",
  marker: str = "o",
  offset: float = 0.0,
  longer=None,
  decides_from: float | None = None,
):
  """An effect against the training budget: ``table`` (a DataFrame with columns ``step,
  mean, low, high``, e.g. :func:`sideways_lab.claims.ladder_intervals`) as markers joined by a
  line with the interval ``[low, high]`` as error bars, on a log2 step axis; ``longer`` (the
  same columns, longer runs) as open diamonds with their intervals where they have one;
  ``decides_from`` shades the steps before it (the rungs that do not decide a verdict).

  ``offset`` shifts the points by a factor 2**offset along the axis, so that several effects
  on one axes do not hide each other's bars.
  """
  shift = 2.0**offset
  x = np.asarray(table["step"], float) * shift
  mean = np.asarray(table["mean"], float)
  err = np.stack([mean - np.asarray(table["low"], float), np.asarray(table["high"], float) - mean])
  ax.errorbar(
    x,
    mean,
    yerr=np.nan_to_num(err),
    color=color,
    ls=linestyle,
    marker=marker,
    ms=4.5,
    lw=1.4,
    capsize=2.5,
    label=label,
  )
  if longer is not None and len(longer):
    lx = np.asarray(longer["step"], float) * shift
    lm = np.asarray(longer["mean"], float)
    lerr = np.stack([lm - np.asarray(longer["low"], float), np.asarray(longer["high"], float) - lm])
    ax.errorbar(
      lx,
      lm,
      yerr=np.nan_to_num(lerr),
      color=color,
      ls="none",
      marker="D",
      mfc="white",
      ms=6,
      label="longer run" if label else None,
    )
    ax.plot([x[-1], lx[0]], [mean[-1], lm[0]], color=color, ls=":", lw=1.0)
  ax.set_xscale("log", base=2)
  if decides_from is not None:
    left = x.min() / 2**0.3
    ax.axvspan(left, decides_from / 2**0.12, color="#999999", alpha=0.1, lw=0)
    ax.set_xlim(left=left)
  return ax
