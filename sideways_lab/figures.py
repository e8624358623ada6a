"""Regenerates every figure of the project (PNG and PDF) with a manifest.

    sideways-lab figures [--quick] [--out DIR] [--only NAME ...] [--sweeps NAME ...]
    sideways-lab figures --from-results figures/results --only claim_budgets

or from Python ``sl.figures.generate(out_dir="figures", quick=False)``. Every figure is backed
by runs made right here: the sweeps of :data:`SWEEPS` (:func:`sideways_lab.experiments.sweep`:
schemes × knob values × seeds, trained), the alignment of their checkpoints, the symbolic
schedule and measured unit costs. Besides the figures it writes the sweeps' tidy results and
learning curves (``out_dir/results/*.csv``, ``curves-*.csv``) and the claims report
(``out_dir/claims.md``). ``--sweeps`` only trains sweeps into the run cache (processes that
share it may train disjoint sweeps); a later run draws everything from the cache.
``--from-results DIR`` draws from the results an earlier run wrote (no training, no run
cache; the figures that need checkpoints are skipped) and rewrites only the figures and
``claims.md``.
``out_dir/manifest.json`` records the package version, git commit, seeds, JAX and Haiku
versions, the device, the mode (quick or full), each figure's configuration (its sweeps and
budgets), the time taken per figure and the code identities of the runs behind the figures
(:mod:`sideways_lab.provenance`; claims.md's header names them too); ``--only`` regenerates
some figures and keeps the other entries of a manifest of the same mode. A cached run computed
by other code is retrained unless ``--reuse-other-code`` (:func:`sideways_lab.experiments.sweep`).

One style sheet (:data:`sideways_lab.plotting.STYLE`) and one colour per scheme
(:data:`sideways_lab.plotting.SCHEME_COLORS`) everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import os
import platform
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import sideways_lab
from sideways_lab import checkpoint as ckpt
from sideways_lab import claims, experiments, plotting, provenance, schedule, training
from sideways_lab.analysis import latency, schedules, timing
from sideways_lab.graph import chain_edges, skip_edges
from sideways_lab.models import SCHEMES


@dataclasses.dataclass
class FigureSpec:
  """One figure of :data:`FIGURES`: its name, the sentence that says what it shows, and
  ``make(ctx) -> matplotlib Figure``."""

  name: str
  sentence: str  # one sentence on what the figure shows (README)
  make: Callable  # make(ctx) -> matplotlib Figure
  sweeps: tuple = ()  # the sweeps (names of SWEEPS) it draws from
  needs_runs: bool = False  # it reads the trained runs' checkpoints (not in committed results)


FIGURES: dict[str, FigureSpec] = {}


def _figure(name: str, sentence: str, sweeps: tuple = (), needs_runs: bool = False):
  def deco(fn):
    if fn.__doc__ is None:
      fn.__doc__ = (
        f"Draws the ``{name}`` figure from ``ctx`` (a :class:`Context`); returns the "
        f"matplotlib Figure.\n\n{sentence}"
      )
    FIGURES[name] = FigureSpec(name, sentence, fn, tuple(sweeps), needs_runs)
    return fn

  return deco


#: The schemes of the digit-identity sweeps: per-frame BP, Sideways and its exact twin (the
#: claims C1 and C2 compare these three; the skip graph's claims are tested on motion and
#: next-frame).
DIGIT_SCHEMES = ("backprop", "sideways", "sideways_exact")
#: The schemes of motion classes: Sideways (a chain: one frame reaches the head at a time, so
#: it is at chance), Skip-Sideways and its exact twin.
MOTION_SCHEMES = ("sideways", "skip_sideways", "skip_exact")
#: The schemes of next-frame prediction (claim C4): every scheme beside its exact twin, with the
#: two baselines.
NEXT_FRAME_SCHEMES = tuple(SCHEMES) + experiments.BASELINES
#: Seeds of the next-frame sweeps that decide claim C4 (anchor "newest").
NEXT_FRAME_SEEDS = 5
#: A stash sweep's values on the four-unit digits chain: no stash (Sideways), depth 1 at every
#: unit, every allocation in which each hidden unit keeps its full exact lag (6, 4, 2 frames)
#: or nothing (:func:`sideways_lab.experiments.stash_subsets`), and the full stash (the exact
#: twin).
STASH_VALUES = ("0", "1", "6-0-0", "0-4-0", "0-0-2", "6-4-0", "6-0-2", "0-4-2", "full")
#: The full stash stored in bfloat16 and in int8 with a per-tensor scale.
COMPRESSED = ("full@bfloat16", "full@int8")
#: The reversible chain's values: its Sideways, carry-down (also with unit 1's frames stored in
#: int8), the full stash compressed, and its exact twin.
REVERSIBLE_VALUES = ("0", "carry", "carry@int8", "full@bfloat16", "full@int8", "full")
#: Seeds of the sweeps that decide claims C1, C2, C3 and C5 (docs/design.md §9).
CLAIM_SEEDS = 5
#: The head's other readout (global max pooling), for the robustness of claims C1–C3.
MAX_POOLING = dict(model=dict(readout="max"))

#: Next-frame at 1 px/frame with the anchor that decides C4 (one frame ahead unless overridden).
_NEWEST = dict(
  task="next-frame",
  knob="speed",
  values=(1.0,),
  anchor="newest",
  schemes=NEXT_FRAME_SCHEMES,
  seeds=NEXT_FRAME_SEEDS,
)

#: The sweeps behind the figures and the claims report (full mode; seeds per setting).
SWEEPS: dict[str, dict] = {
  "digits-speed": dict(
    task="digits",
    knob="speed",
    values=(0.125, 0.5, 1.0, 2.0, 4.0),
    schemes=DIGIT_SCHEMES,
    seeds=CLAIM_SEEDS,
  ),
  # stride s at speed v shows the clips of speed s·v (tests/test_experiments.py), so strides
  # 1 to 32 at 0.125 px/frame are the speed sweep's runs, not trained again
  "digits-stride": dict(
    task="digits",
    knob="stride",
    values=(1, 4, 8, 16, 32),
    schemes=DIGIT_SCHEMES,
    seeds=CLAIM_SEEDS,
    overrides=dict(data=dict(speed=0.125)),
  ),
  "motion-classes": dict(
    task="motion-classes",
    knob="speed",
    values=(2.0,),
    schemes=MOTION_SCHEMES,
    seeds=CLAIM_SEEDS,
  ),
  # the same claims under the other readout: the smoothest and the roughest digits, and motion
  "digits-speed-max": dict(
    task="digits",
    knob="speed",
    values=(0.125, 4.0),
    schemes=DIGIT_SCHEMES,
    overrides=MAX_POOLING,
  ),
  "motion-classes-max": dict(
    task="motion-classes",
    knob="speed",
    values=(2.0,),
    schemes=MOTION_SCHEMES,
    overrides=MAX_POOLING,
  ),
  # next-frame where motion matters (benchmarks/README.md "Next-frame settings"): 1 px/frame,
  # one and two frames ahead; the anchor "newest" decides C4 (5 seeds), "input" (the
  # pipeline's latency counts) is shown beside it at one frame ahead
  "next-frame-newest": _NEWEST,
  "next-frame-newest-h2": dict(_NEWEST, overrides=dict(data=dict(horizon=2))),
  "next-frame-input": dict(
    task="next-frame", knob="speed", values=(1.0,), anchor="input", schemes=NEXT_FRAME_SCHEMES
  ),
  # the stash knob where it matters: the roughest digits, from Sideways to its exact twin
  "stash-digits": dict(
    task="digits",
    knob="stash",
    values=STASH_VALUES + COMPRESSED,
    schemes=("sideways",),
    seeds=CLAIM_SEEDS,
    overrides=dict(data=dict(speed=4.0)),
  ),
  # the same digits on the chain whose hidden units are reversible: carry-down beside that
  # chain's own Sideways and exact twin
  "stash-digits-rev": dict(
    task="digits",
    knob="stash",
    values=REVERSIBLE_VALUES,
    schemes=("sideways",),
    seeds=CLAIM_SEEDS,
    overrides=dict(data=dict(speed=4.0), model=dict(reversible=True)),
  ),
}
#: The stash frontier's sweeps: today's digits chain and the chain with reversible units.
STASH_SWEEPS = ("stash-digits", "stash-digits-rev")
#: The next-frame sweeps (every anchor and setting) that the next-frame figure draws.
NEXT_FRAME_SWEEPS = tuple(n for n in SWEEPS if n.startswith("next-frame-"))
#: The next-frame sweeps of anchor "newest" (one per horizon), which decide claim C4.
NEWEST_SWEEPS = tuple(n for n in NEXT_FRAME_SWEEPS if SWEEPS[n]["anchor"] == "newest")
SEEDS = 3
#: Quick mode: fewer values per sweep, two seeds, tiny budgets.
QUICK_VALUES = {
  "digits-speed": (0.5, 2.0),
  "digits-stride": (1, 4),
  "digits-speed-max": (0.5, 2.0),
  "stash-digits": ("0", "1", "4-0", "full@int8", "full"),
  "stash-digits-rev": ("0", "carry", "full"),
}
QUICK_SEEDS = 2
#: The runs whose checkpoints the alignment figure measures: (sweep, knob value).
ALIGNMENT_RUNS = (("digits-speed", 1.0), ("next-frame-newest", 1.0))
#: The learning curves drawn: (sweep, knob value or None for the smoothest and roughest).
CURVE_SWEEPS = ("digits-speed", "motion-classes", "next-frame-newest")


#: Where the committed full-run results live (in a checkout of the repository).
RESULTS_DIR = Path(__file__).resolve().parent.parent / "figures" / "results"


def results(name: str) -> pd.DataFrame:
  """The committed full-run results of figure sweep ``name`` (``figures/results/<name>.csv``,
  or ``alignment``, ``curves-<sweep>``, ``longer-<sweep>``), as the DataFrame
  :func:`sideways_lab.experiments.sweep` returned (:func:`~sideways_lab.experiments.read_curves`'
  for curves; longer runs of a sweep's settings in the results' columns)."""
  names = list(SWEEPS) + ["alignment"] + [f"{k}-{n}" for k in ("curves", "longer") for n in SWEEPS]
  if name not in names:
    raise ValueError(f"name must be one of {names}, got {name!r}")
  path = RESULTS_DIR / f"{name}.csv"
  if not path.exists():
    raise FileNotFoundError(
      f"{str(path)!r} does not exist: regenerate the figures with "
      f"`sideways-lab figures` in a checkout of the repository"
    )
  if name == "alignment":
    return pd.read_csv(path)
  if name.startswith("curves-"):
    return experiments.read_curves(path)
  return experiments.read_results(path)


def sweep_spec(name: str, quick: bool) -> dict:
  """The arguments of :func:`sideways_lab.experiments.sweep` for figure sweep ``name``."""
  spec = dict(SWEEPS[name])
  spec["seeds"] = QUICK_SEEDS if quick else spec.get("seeds", SEEDS)
  if quick:
    spec["values"] = QUICK_VALUES.get(name, spec["values"])
  return spec


def figure_config(name: str, quick: bool = False) -> dict:
  """What a figure's numbers depend on: its sweeps (arguments and training budgets) and, for
  the alignment figure, the runs and clips it measures. Recorded in ``manifest.json``."""
  spec = FIGURES[name]
  out = {}
  for sw in spec.sweeps:
    args = sweep_spec(sw, quick)
    out[sw] = {**json.loads(json.dumps(args)), "budget": experiments.budget(args["task"], quick)}
  if name == "alignment_training":
    out["alignment"] = {
      "runs": [list(r) for r in _alignment_runs(quick)],
      "expected_clips": experiments.EXPECTED_CLIPS,
      "single_clips": experiments.SINGLE_CLIPS,
    }
  return out


def _alignment_runs(quick: bool) -> list:
  return [(sw, sweep_spec(sw, quick)["values"][0] if quick else v) for sw, v in ALIGNMENT_RUNS]


@dataclasses.dataclass
class Context:
  """What the figure functions share: the mode, a work dir, the sweeps run so far.

  With ``results_dir`` (committed results, e.g. ``figures/results``) nothing is trained: a
  sweep is read from ``<results_dir>/<sweep>.csv``, its curves from ``curves-<sweep>.csv`` and
  the alignment from ``alignment.csv``; a figure that needs the runs' checkpoints raises.
  Longer runs of a sweep's settings are read from ``<longer_dir>/longer-<sweep>.csv`` where
  present."""

  quick: bool
  work_dir: Path
  log: Callable[[str], None]
  reuse_other_code: bool = False
  results: dict = dataclasses.field(default_factory=dict)
  results_dir: Path | None = None
  longer_dir: Path | None = None
  _alignment: pd.DataFrame | None = None

  def _committed(self, file: str) -> Path:
    path = Path(self.results_dir) / file
    if not path.exists():
      raise FileNotFoundError(
        f"{str(path)!r} does not exist: drawing from results needs the sweeps' results, "
        f"curves and alignment that `sideways-lab figures` writes to <out>/results"
      )
    return path

  def sweep(self, name: str) -> pd.DataFrame:
    """The DataFrame of figure sweep ``name`` (:data:`SWEEPS`), run once (and cached on disk
    in ``work_dir``: an interrupted figures run resumes), or read from ``results_dir``."""
    if name not in self.results:
      if self.results_dir is not None:
        self.results[name] = experiments.read_results(self._committed(f"{name}.csv"))
        return self.results[name]
      spec = sweep_spec(name, self.quick)
      self.log(f"  sweep {name}: {spec}")
      self.results[name] = experiments.sweep(
        **spec,
        quick=self.quick,
        out=self.work_dir / name,
        runs=self.work_dir / "runs",
        progress=False,
        log=self.log,
        reuse_other_code=self.reuse_other_code,
      )
    return self.results[name]

  def curves(self, name: str) -> pd.DataFrame:
    """The learning curves of figure sweep ``name`` (its ``curves.csv``)."""
    if self.results_dir is not None:
      return experiments.read_curves(self._committed(f"curves-{name}.csv"))
    self.sweep(name)
    return experiments.read_curves(self.work_dir / name)

  def longer(self, name: str) -> pd.DataFrame | None:
    """Longer runs of sweep ``name``'s settings (``longer-<name>.csv``), or None."""
    path = Path(self.longer_dir or self.results_dir or ".") / f"longer-{name}.csv"
    return experiments.read_results(path) if path.exists() else None

  def run_dir(self, name: str) -> Path:
    """Where the runs of sweep ``name`` are (their checkpoints); committed results have none."""
    if self.results_dir is not None:
      raise FileNotFoundError(
        f"the runs of {name!r} (their checkpoints) are not in the results "
        f"{str(self.results_dir)!r}: draw this figure without --from-results"
      )
    return self.work_dir / name

  def alignment(self) -> pd.DataFrame:
    """Alignment along training of the runs of :data:`ALIGNMENT_RUNS`."""
    if self._alignment is None and self.results_dir is not None:
      self._alignment = pd.read_csv(self._committed("alignment.csv"))
    if self._alignment is None:
      parts = []
      for name, value in _alignment_runs(self.quick):
        self.sweep(name)
        self.log(f"  alignment of {name} at {value:g}")
        parts.append(
          experiments.alignment_along_training(
            self.work_dir / name,
            value=value,
            single_clips=2 if self.quick else experiments.SINGLE_CLIPS,
            num_clips=8 if self.quick else experiments.EXPECTED_CLIPS,
            progress=False,
          )
        )
      self._alignment = pd.concat(parts, ignore_index=True)
    return self._alignment


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------


@_figure(
  "schedule",
  "The schedule of BP, Sideways and Skip-Sideways on four units: every cell "
  "is coloured by the frame its activation comes from and its lower strip by the frame "
  "of the loss whose gradient it uses; arrows are gradient messages, grey cells are "
  "blocked BP units and hatched frames are dropped by BP.",
)
def fig_schedule(ctx: Context):
  L, T = 4, 13
  fig, axes = plotting.new_figure(3, 1, figsize=(9.5, 9.6))
  for ax, (scheme, edges) in zip(
    axes[:, 0],
    [
      ("backprop", chain_edges(L)),
      ("sideways", chain_edges(L)),
      ("skip_sideways", skip_edges(L, 2)),
    ],
  ):
    d = schedule.schedule_data(edges, T, scheme)
    sub = {
      "backprop": "blocking: one frame in flight, 2L-1 ticks per frame",
      "sideways": "every unit busy every tick; gradient 2(L-k) frames older than the activation",
      "skip_sideways": "skips (span 2) bring newer frames and shorter gradient paths",
    }
    plotting.draw_schedule(
      ax, d, tick=None, title=f"{plotting.scheme_label(scheme)} — {sub[scheme]}"
    )
  return fig


@_figure(
  "latency",
  "Latency counts from the symbolic schedule against depth L: ticks from a "
  "frame to the first output that sees it, ticks until the gradient of a loss reaches "
  "the first unit, and frames processed per tick with one unit per device.",
)
def fig_latency(ctx: Context):
  Ls = list(range(2, 13))
  rows = {s: [] for s in ("backprop", "sideways", "skip_sideways")}
  for L in Ls:
    rows["backprop"].append(schedule.latency(chain_edges(L), "backprop"))
    rows["sideways"].append(schedule.latency(chain_edges(L), "sideways"))
    rows["skip_sideways"].append(schedule.latency(skip_edges(L, 2), "skip_sideways"))
  fig, axes = plotting.new_figure(1, 3, figsize=(11, 3.2))
  a1, a2, a3 = axes[0]
  plotting.plot_curves(
    a1,
    {s: (Ls, [r.output_latency for r in v]) for s, v in rows.items()},
    xlabel="units L",
    ylabel="ticks",
    title="frame → first output",
    marker=True,
  )
  plotting.plot_curves(
    a2,
    {s: (Ls, [r.gradient_delay[0] for r in v]) for s, v in rows.items()},
    xlabel="units L",
    ylabel="ticks",
    title="loss → gradient at unit 1",
    marker=True,
    legend=False,
  )
  plotting.plot_curves(
    a3,
    {s: (Ls, [r.frames_per_tick for r in v]) for s, v in rows.items()},
    xlabel="units L",
    ylabel="frames per tick",
    title="throughput (L devices)",
    marker=True,
    legend=False,
    logy=True,
  )
  for ax in (a1, a2, a3):
    plotting.integer_axis(ax, "both" if ax is not a3 else "x")
  return fig


def _sweep_figure(ctx: Context, name: str):
  """Accuracy against the knob (left) and the paired differences that split Sideways' gap to
  BP into the pipeline's delay and the gradient estimate (right); the knob on a log2 axis."""
  df = ctx.sweep(name)
  fig, axes = plotting.new_figure(1, 2, figsize=(11, 3.6))
  a1, a2 = axes[0]
  knob = df.knob.iloc[0]
  xlabel = {"speed": "speed (pixels per frame)", "stride": "frame stride"}[knob]
  chance = float(df.chance.dropna().iloc[0]) if "chance" in df else None
  plotting.plot_sweep(
    a1,
    df,
    "accuracy",
    xlabel=xlabel,
    ylabel="test clip accuracy",
    chance=chance,
    title=f"trained ({df.seed.nunique()} seeds; thin: each seed)",
  )
  pairs = [  # (a, b, label, line style): a − b paired by seed
    ("sideways", "backprop", "Sideways − BP", ":"),
    ("sideways_exact", "backprop", "exact twin − BP (the delay)", "--"),
    ("sideways", "sideways_exact", "Sideways − exact twin (the estimate)", "-"),
    ("skip_sideways", "skip_exact", "Skip − its exact twin (the estimate)", "-"),
  ]
  present = set(df.scheme)
  pairs = [p for p in pairs if {p[0], p[1]} <= present]
  for i, (x, y, label, ls) in enumerate(pairs):
    d = experiments.paired_difference(df, x, y, "accuracy")
    kw = plotting.scheme_kwargs(x, marker=True)
    kw.update(label=label, capsize=3, linestyle=ls)
    if y == "backprop" and x == "sideways_exact":
      kw.update(color="#555555", markerfacecolor="white")
    a2.errorbar(d.value * 2 ** (0.04 * (i - 1.5)), d["mean"], yerr=d["std"].fillna(0), **kw)
  a2.axhline(0, color="#999999", lw=0.8)
  a2.set_xlabel(xlabel)
  a2.set_ylabel("paired accuracy difference")
  a2.set_title("differences paired by seed (± std)")
  a2.legend(fontsize=7.5)
  for ax in (a1, a2):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(df.value.unique()), [f"{v:g}" for v in sorted(df.value.unique())])
  return fig


@_figure(
  "digits_speed",
  sweeps=("digits-speed",),
  sentence="Digit identity on moving digits: test accuracy of BP, Sideways and its exact "
  "twin after training against the speed of the digits (left), and the paired differences "
  "that split Sideways' gap to BP into the pipeline's delay and the gradient estimate "
  "(right); tests claims C1 and C2.",
)
def fig_digits_speed(ctx: Context):
  return _sweep_figure(ctx, "digits-speed")


@_figure(
  "digits_stride",
  sweeps=("digits-stride",),
  sentence="Digit identity against the frame stride (every s-th frame kept, at "
  "0.125 px/frame): the same schemes and paired differences; tests claim C2.",
)
def fig_digits_stride(ctx: Context):
  return _sweep_figure(ctx, "digits-stride")


@_figure(
  "motion_classes",
  sweeps=("motion-classes",),
  sentence="Motion classes (the label is a motion no single frame shows): test "
  "accuracy of every scheme over seeds (dots) against chance, and per true class; only "
  "the skip graph integrates frames, so only Skip-Sideways and its exact twin beat "
  "chance; tests claim C3.",
)
def fig_motion_classes(ctx: Context):
  df = ctx.sweep("motion-classes")
  fig, ax = plotting.new_figure(
    figsize=(11, 6.4), mosaic=[["bars", "classes"]], width_ratios=[1, 2.2]
  )
  a1, a2 = ax["bars"], ax["classes"]
  stats = experiments.summarize(df, "accuracy", by=["scheme"]).set_index("scheme")
  chance = float(df.chance.dropna().iloc[0])
  plotting.plot_bars(
    a1,
    stats["mean"].to_dict(),
    errors=stats["std"].fillna(0).to_dict(),
    ylabel="test clip accuracy",
    title=f"held-out clips ({df.seed.nunique()} seeds)",
    chance=chance,
  )
  order = plotting.order_schemes(stats.index)
  for i, s in enumerate(order):
    acc = df[df.scheme == s].accuracy
    a1.plot(np.full(len(acc), i), acc, "o", color="black", ms=3, zorder=3)
  a1.set_ylim(0, 1.05)
  a1.tick_params(axis="x", labelrotation=35)
  cols = [c for c in df.columns if c.startswith("class_")]
  per = df.groupby("scheme")[cols].mean()
  plotting.plot_grouped_bars(
    a2,
    {s: {c[6:]: per.loc[s, c] for c in cols} for s in order},
    ylabel="test clip accuracy",
    title="per true class (mean over seeds)",
    chance=chance,
  )
  a2.set_ylim(0, 1.05)
  a2.legend(fontsize=7.5, ncols=3)
  a2.tick_params(axis="x", labelrotation=25)
  return fig


@_figure(
  "readout",
  sweeps=("digits-speed", "digits-speed-max", "motion-classes", "motion-classes-max"),
  sentence="The head's readout, the same for every scheme: test accuracy with mean pooling "
  "over positions (solid bars) and with max pooling (pale bars), on digits at the smoothest "
  "and the roughest speed (left) and on motion classes (right), each seed a dot; claims.md "
  "says which verdicts of C1–C3 hold under both.",
)
def fig_readout(ctx: Context):
  fig, axes = plotting.new_figure(1, 2, figsize=(11, 5.0), width_ratios=[2, 1])
  for ax, (mean_name, max_name) in zip(axes[0], claims.MAX_READOUT.items()):
    by_readout = {"mean": ctx.sweep(mean_name), "max": ctx.sweep(max_name)}
    values = sorted(set(by_readout["max"].value))
    schemes = plotting.order_schemes(set(by_readout["max"].scheme))
    width = 0.8 / (2 * len(schemes))
    for i, v in enumerate(values):
      for j, s in enumerate(schemes):
        for k, (readout, df) in enumerate(by_readout.items()):
          acc = df[(df.scheme == s) & np.isclose(df.value, v)].accuracy.to_numpy()
          if not len(acc):
            continue
          x = i + (2 * j + k + 0.5 - len(schemes)) * width
          color = plotting.scheme_color(s)
          ax.bar(
            x,
            acc.mean(),
            width,
            color=color,
            alpha=1.0 if readout == "mean" else 0.4,
            edgecolor="white",
            hatch="///" if s in plotting.EXACT_SCHEMES else None,
            label=f"{plotting.scheme_label(s)}, {readout}" if i == 0 else None,
          )
          ax.plot(np.full(len(acc), x), acc, "o", color="black", ms=2.5, zorder=3)
    chance = by_readout["mean"].chance.dropna()
    if len(chance):
      ax.axhline(float(chance.iloc[0]), color="#999999", lw=0.8, ls=":", label="chance")
    ax.set_xticks(range(len(values)), [f"{v:g} px/frame" for v in values])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test clip accuracy")
    task = by_readout["mean"].task.iloc[0]
    ax.set_title(f"{task.replace('-', ' ')} ({by_readout['max'].seed.nunique()} seeds)")
    ax.legend(fontsize=7, ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))
  return fig


def _setting_label(v: float, h) -> str:
  return f"{v:g} px/frame, h = {int(h)}"


@_figure(
  "next_frame",
  sweeps=NEXT_FRAME_SWEEPS,
  sentence="Next-frame prediction on moving digits at 1 px/frame, one and two frames ahead (h): "
  "skill against copying the newest frame the output has seen (1 − MSE / MSE of copy-newest "
  "on the same clips and loss ticks; 0 = copying, dashed) of every scheme and its exact twin "
  "(hatched), with the target counted from that newest frame (top: every scheme forecasts the "
  "same horizon, so only the graph and the gradient differ), and the test MSE beside copying "
  "and the mean frame (grey) with that anchor (middle) and with the target counted from the "
  "input (bottom: the pipeline's latency counts, so each pipeline copies another frame); dots "
  "are seeds. Skill above per-frame BP's is motion; tests claim C4.",
)
def fig_next_frame(ctx: Context):
  df = pd.concat([ctx.sweep(n) for n in NEXT_FRAME_SWEEPS], ignore_index=True)
  df = df.assign(horizon=df.get("horizon", 1))
  df = df.assign(setting=[_setting_label(float(v), h) for v, h in zip(df.value, df.horizon)])
  panels = [("newest", "skill"), ("newest", "mse"), ("input", "mse")]
  panels = [(a, m) for a, m in panels if a in set(df.anchor)]
  fig, axes = plotting.new_figure(len(panels), 1, figsize=(10.5, 3.1 * len(panels)))
  for ax, (anchor, metric) in zip(axes[:, 0], panels):
    part = df[df.anchor == anchor]
    settings = list(dict.fromkeys(part.sort_values(["horizon", "value"]).setting))
    _grouped(ax, part[part.scheme.isin(list(SCHEMES))], metric, settings)
    n = part.seed.nunique()
    if metric == "skill":
      ax.axhline(0, color="#777777", lw=1.1, ls="--", label="copy-newest (skill 0)")
      ax.set_ylabel("skill against copying")
      ax.set_title(f"skill, anchor = {anchor!r} ({n} seeds; error bars: 95 % t-interval)")
    else:
      _baseline_marks(ax, part, settings, per_pipeline=anchor == "input")
      ax.set_yscale("log")
      ax.set_ylabel("test MSE")
      ax.set_title(f"test MSE, anchor = {anchor!r} ({n} seeds; error bars: 95 % t-interval)")
  handles, labels = axes[0, 0].get_legend_handles_labels()
  for ax in axes[1:, 0]:  # the baselines' marks, once
    for h, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in labels:
        handles.append(h)
        labels.append(lab)
  fig.legend(handles, labels, loc="outside right upper", fontsize=7.5)
  return fig


def _baseline_marks(ax, part: pd.DataFrame, settings: list, per_pipeline: bool) -> None:
  """The copy-newest and mean-frame MSE of each setting, as grey segments across its group of
  bars; with ``per_pipeline`` one copy mark per pipeline (anchor "input": each copies its own
  newest frame), else one (anchor "newest": every pipeline copies frame j − h)."""
  styles = {"BP": "--", "chain": (0, (5, 1, 1, 1)), "skip": "-.", "": "--"}
  for i, setting in enumerate(settings):
    here = part[part.setting == setting]
    copies = here[here.scheme == "copy_newest"]
    pipe = np.where(copies.method == "synchronous", "BP", copies.graph)
    for p, g in copies.groupby(pipe if per_pipeline else np.full(len(copies), ""), sort=False):
      ax.hlines(
        g.mse.mean(),
        i - 0.45,
        i + 0.45,
        color="#777777",
        ls=styles.get(p, "--"),
        lw=1.2,
        label=f"copy-newest ({p})" if p else "copy-newest",
      )
    mean = here[here.scheme == "mean_frame"].mse.mean()
    ax.hlines(mean, i - 0.45, i + 0.45, color="#777777", ls=":", lw=1.2, label="mean frame")


def _grouped(ax, df: pd.DataFrame, metric: str, settings: list) -> None:
  """Grouped bars of ``metric`` per scheme and setting: the mean, its 95 % Student-t interval
  over seeds and every seed."""
  schemes = plotting.order_schemes(dict.fromkeys(df.scheme))
  g = df.groupby(["scheme", "setting"])[metric]
  mean = g.mean()
  half = {key: (x.mean() - claims.t_interval(x).low) if len(x) > 1 else 0.0 for key, x in g}
  plotting.plot_grouped_bars(
    ax,
    {s: {k: mean.get((s, k), np.nan) for k in settings} for s in schemes},
    errors={s: {k: half.get((s, k), 0.0) for k in settings} for s in schemes},
    points={
      s: {k: g.get_group((s, k)).tolist() if (s, k) in mean else [] for k in settings}
      for s in schemes
    },
  )


@_figure(
  "future_frames",
  sweeps=NEWEST_SWEEPS,
  needs_runs=True,
  sentence="Frames predicted by every trained scheme and its exact twin (anchor 'newest', "
  "seed 0) on a held-out clip, aligned by the frame they predict: the true frame, copying the "
  "newest frame, then each scheme, with the absolute error on the right; one and two "
  "frames ahead at 1 px/frame. Motion shows as a digit moved to where the truth has it, not "
  "left behind (copy) or blurred (a per-frame model); tests claim C4.",
)
def fig_future_frames(ctx: Context, count: int = 3):
  settings = [
    (name, v)
    for name in NEWEST_SWEEPS
    for v in sorted(ctx.sweep(name).value.astype(float).unique())
  ]
  with plotting.style():
    fig = Figure(figsize=(5.2 * len(settings), 9.0), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(1, len(settings), wspace=0.03))
    for sf, (name, v) in zip(subs, settings):
      work = ctx.run_dir(name)
      runs = {s: work / r for s, r in experiments.runs_at(ctx.sweep(name), v).items()}
      al = experiments.frames_by_target(runs, count=count)
      schemes = plotting.order_schemes(al["predictions"])
      rows = [("truth", al["truth"][0])]
      if al["copy_newest"] is not None:
        rows.append(("copy_newest", al["copy_newest"][0]))
      rows += [(s, al["predictions"][s][0]) for s in schemes]
      grid = sf.subplots(len(rows), 2 * count, squeeze=False)
      truth = al["truth"][0]
      titles = [f"x_{j}" for j in al["targets"]]
      for i, (name, frames) in enumerate(rows):
        plotting.show_frames(grid[i, :count], frames, titles=titles if i == 0 else None)
        err = np.abs(np.clip(frames, 0, 1) - truth)
        if name == "truth":
          for ax in grid[i, count:]:
            ax.axis("off")
        else:
          plotting.show_frames(grid[i, count:], err, cmap="magma", vmax=0.6)
        label = "truth" if name == "truth" else plotting.scheme_label(name)
        color = "black" if name == "truth" else plotting.scheme_color(name)
        grid[i, 0].set_ylabel(label.replace(", ", "\n"), fontsize=7.5, color=color)
      grid[0, count].set_title("|prediction − truth|", fontsize=8.5, loc="left")
      sf.suptitle(
        f"{v:g} px/frame, horizon {al['horizon']} (target frame x_j)",
        fontsize=10,
        fontweight="bold",
      )
  return fig


@_figure(
  "alignment_training",
  sweeps=("digits-speed", "next-frame-newest"),
  sentence="Cosine between the approximate gradient and the exact gradient "
  "of the same graph, per unit, at checkpoints along the experiment's own training runs "
  "(digits and next-frame; solid: the expected gradient over 64 clips, dotted: single "
  "clips; mean over seeds): negative values mean the estimate points away from the "
  "true gradient.",
)
def fig_alignment_training(ctx: Context):
  al = ctx.alignment()
  # one panel per (task, scheme) that has runs: the digits sweeps train no skip scheme
  order = {s: i for i, s in enumerate(plotting.order_schemes(dict.fromkeys(al.scheme)))}
  tasks = list(dict.fromkeys(al.task))
  pairs = sorted(
    dict.fromkeys(zip(al.task, al.scheme)), key=lambda p: (tasks.index(p[0]), order[p[1]])
  )
  ncols = min(len(pairs), 3)
  nrows = -(-len(pairs) // ncols)
  fig, axes = plotting.new_figure(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), sharey=True)
  for ax in axes.flat[len(pairs) :]:
    ax.remove()
  for k, ((task, s), ax) in enumerate(zip(pairs, axes.flat)):
    part = al[(al.task == task) & (al.scheme == s)]
    units = sorted(part.unit.unique())
    for u in units:
      shade = 0.35 + 0.65 * (u / max(units))
      for kind, ls in (("expected", "-"), ("clip", ":")):
        m = part[(part.unit == u) & (part.kind == kind)].groupby("step").cosine.mean()
        ax.plot(
          m.index,
          m.values,
          ls=ls,
          marker="o" if kind == "expected" else None,
          ms=3,
          color=plotting.scheme_color(s),
          alpha=shade,
          label=f"unit {u}" if kind == "expected" else None,
        )
    ax.axhline(0, color="#999999", lw=0.8)
    ax.set_title(f"{task}: {plotting.scheme_label(s)}")
    ax.set_xlabel("training step")
    if k % ncols == 0:
      ax.set_ylabel("cosine with exact gradient")
    if ax.get_legend_handles_labels()[0]:  # no legend box without an expected-gradient curve
      ax.legend(fontsize=7, ncols=2)
  return fig


def _band(ax, part: pd.DataFrame, scheme: str, smooth: int = 1, label: bool = True) -> None:
  """Mean over seeds (bold, the scheme's style) and the min–max band of one metric's curve."""
  wide = part.pivot_table(index="step", columns="seed", values="y")
  if smooth > 1:
    wide = wide.rolling(smooth, min_periods=1).mean()
  kw = plotting.scheme_kwargs(scheme)
  ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=kw["color"], alpha=0.15)
  ax.plot(
    wide.index,
    wide.mean(axis=1),
    color=kw["color"],
    ls=kw["linestyle"],
    lw=1.8,
    label=plotting.scheme_label(scheme) if label else None,
  )


@_figure(
  "learning_curves",
  sweeps=CURVE_SWEEPS,
  sentence="Learning curves of every scheme (mean over seeds, band: min to max): held-out "
  "accuracy (test MSE on next-frame) at the evaluations along training (top) and the "
  "training loss (bottom), on digits at the smoothest and the roughest speed, on motion "
  "classes and on next-frame one frame ahead; a verdict is read "
  "only from runs whose loss has flattened (docs/design.md §9).",
)
def fig_learning_curves(ctx: Context):
  panels = []
  for name in CURVE_SWEEPS:
    df = ctx.sweep(name)
    values = sorted(pd.to_numeric(df.value).unique())
    for v in sorted({values[0], values[-1]}):
      panels.append((name, v))
  fig, axes = plotting.new_figure(2, len(panels), figsize=(4.2 * len(panels), 6.2))
  for j, (name, v) in enumerate(panels):
    curves = ctx.curves(name)
    curves = curves[np.isclose(pd.to_numeric(curves.value), v)]
    task = curves.task.iloc[0]
    metric = "accuracy" if task != "next-frame" else "mse"
    for s in plotting.order_schemes(dict.fromkeys(curves.scheme)):
      mine = curves[curves.scheme == s]
      _band(axes[0, j], mine[(mine.split == "test") & (mine.metric == metric)], s)
      _band(axes[1, j], mine[(mine.split == "train") & (mine.metric == "loss")], s, smooth=5)
    df = ctx.sweep(name)
    if "chance" in df and df.chance.notna().any():
      axes[0, j].axhline(float(df.chance.dropna().iloc[0]), color="#777777", ls=":", lw=1.1)
    axes[0, j].set_title(f"{task}, {v:g} px/frame")
    axes[0, j].set_ylabel(f"test {metric}" if j == 0 else "")
    axes[1, j].set_ylabel("training loss" if j == 0 else "")
    axes[1, j].set_xlabel("training step")
    axes[1, j].set_yscale("log")
  for ax in axes[0]:
    ax.legend(fontsize=7)
  return fig


#: The sweeps behind each claim's effect against the budget (C1–C5).
CLAIM_SWEEPS = ("digits-speed", "motion-classes", *NEXT_FRAME_SWEEPS, *STASH_SWEEPS)


def _claim_inputs(ctx: Context) -> tuple[dict, dict, dict]:
  """The results, curves and longer runs of :data:`CLAIM_SWEEPS` (by sweep name)."""
  results = {n: ctx.sweep(n) for n in CLAIM_SWEEPS}
  curves = {n: ctx.curves(n) for n in CLAIM_SWEEPS}
  longer = {n: df for n in CLAIM_SWEEPS if (df := ctx.longer(n)) is not None}
  return results, curves, longer


def _draw_bound(ax, test) -> None:
  """The bound of a claim's test: the equivalence band, or a dashed line (and 0)."""
  ax.axhline(0, color="#999999", lw=0.8)
  if test.kind == "within":
    ax.axhspan(-test.bound, test.bound, color="#999999", alpha=0.2, lw=0, label=f"±{test.bound:g}")
  elif test.bound:
    ax.axhline(test.bound, color="#777777", ls="--", lw=1.0, label=f"bound {test.bound:g}")


def _budget_ticks(ax, effect) -> None:
  """Labels at the evaluations a doubling apart from the first, the last and the longer runs;
  the other evaluations as unlabelled minor ticks."""
  steps = sorted(set(effect.ladder.step))
  more = sorted(set(effect.longer.step)) if effect.longer is not None else []
  major = [s for s in steps if np.log2(s / steps[0]) % 1 == 0] + [steps[-1]] + more
  major = sorted(set(major))
  ax.set_xticks(major, [f"{s:g}" for s in major], fontsize=7.5)
  ax.set_xticks([s for s in steps if s not in major], minor=True)
  ax.xaxis.set_minor_formatter("")


@_figure(
  "claim_budgets",
  sweeps=CLAIM_SWEEPS,
  sentence="Each claim's effect against the training budget: the difference paired by seed "
  "(mean and 95 % Student-t interval over seeds) at every held-out evaluation along the runs, "
  "steps on a log2 axis; the grey first half does not decide, the grey band (C1's equivalence "
  "margin) or dashed line is the claim's bound, open diamonds are longer runs (seed 0); the "
  "last panel gives the verdicts of claims.md (docs/design.md §9).",
)
def fig_claim_budgets(ctx: Context):
  results, curves, longer = _claim_inputs(ctx)
  effects = claims.effects(results, curves, longer)
  verdicts = claims.claims(results, curves, longer)
  fig, axes = plotting.new_figure(2, 3, figsize=(14, 8.2))
  for ax, c in zip(axes.flat, verdicts):
    lines = effects.get(c.id, [])
    for i, e in enumerate(lines):
      table = claims.ladder_intervals(e.ladder)
      plotting.plot_ladder(
        ax,
        table,
        color=plotting.scheme_color(e.scheme) if i == 0 else "#555555",
        label=e.label,
        linestyle="-" if i == 0 else "--",
        marker="o" if i == 0 else "s",
        offset=0.03 * (i - (len(lines) - 1) / 2),
        longer=None if e.longer is None else claims.ladder_intervals(e.longer),
        decides_from=claims.LADDER_FROM * table.step.max(),
      )
    if lines:
      _draw_bound(ax, lines[0].test)
      _budget_ticks(ax, lines[0])
      ax.set_ylabel(f"paired {lines[0].metric.replace('mse', 'MSE')} difference")
    ax.set_xlabel("training step (log scale)")
    ax.set_title("\n".join(textwrap.wrap(f"{c.id}: {c.claim}", 48)), fontsize=9)
    ax.margins(y=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
  text = axes[1, 2]
  text.axis("off")
  body = [
    f"{c.id}: {c.verdict}, {c.seeds} seeds" + (f" — {c.budgets.split(';')[0]}" if c.budgets else "")
    for c in verdicts
  ]
  text.text(
    0.0,
    1.0,
    "\n\n".join("\n".join(textwrap.wrap(b, 52)) for b in body),
    va="top",
    fontsize=8.5,
    transform=text.transAxes,
  )
  return fig


#: How the stash frontier draws each kind of stash (:func:`stash_kind`): marker and label.
STASH_KINDS = {
  "none": ("o", "Sideways (no stash)"),
  "stash": ("s", "stash (per unit or uniform)"),
  "compressed": ("D", "full stash, compressed"),
  "carry": ("*", "carry-down"),
  "exact": ("o", "exact twin (full stash)"),
}


def stash_kind(value: str) -> str:
  """The kind of a stash knob value (:data:`STASH_KINDS`): "none" ("0"), "exact" ("full"),
  "carry" (any carry-down), "compressed" (``@bfloat16``/``@int8``) or "stash"."""
  value = str(value)
  if value == "0":
    return "none"
  if value == "full":
    return "exact"
  if "carry" in value:
    return "carry"
  return "compressed" if "@" in value else "stash"


@_figure(
  "stash_frontier",
  sweeps=STASH_SWEEPS,
  sentence="Every way to close Sideways' gap at 4 px/frame: test accuracy (mean and 95 % "
  "t-interval over seeds) against the bytes each keeps beyond Sideways for one batch, on "
  "today's digits chain (left: per-unit and uniform stashes, the full stash in bfloat16 and "
  "int8) and on the chain whose hidden units are reversible (right: "
  "carry-down beside that chain's own Sideways and exact twin); the band is the exact twin's "
  "interval and the dotted line 0.02 below its mean; the line joins the best point at each "
  "memory; tests claim C5.",
)
def fig_stash_frontier(ctx: Context):
  fig, axes = plotting.new_figure(1, len(STASH_SWEEPS), figsize=(12.4, 4.4), sharey=True)
  for ax, name in zip(axes[0], STASH_SWEEPS):
    _frontier_panel(ax, ctx.sweep(name), name, ctx.quick)
  handles = [
    Line2D(
      [],
      [],
      ls="",
      marker=m,
      color=plotting.scheme_color("sideways"),
      label=label,
      mfc="white" if kind == "exact" else plotting.scheme_color("sideways"),
    )
    for kind, (m, label) in STASH_KINDS.items()
  ]
  axes[0][-1].legend(handles=handles, loc="lower right", fontsize=7.5)
  return fig


def _frontier_panel(ax, df, name: str, quick: bool) -> None:
  """One chain's stash frontier (:func:`fig_stash_frontier`)."""
  front = claims.stash_frontier(df)
  color = plotting.scheme_color("sideways")
  kib = front.stash_bytes / 2**10
  full = front[front.value == "full"].iloc[0]
  exact = df[df.value.astype(str) == "full"].accuracy
  iv = claims.t_interval(exact) if len(exact) > 1 else None
  if iv is not None:
    ax.axhspan(iv.low, iv.high, color=color, alpha=0.10, lw=0)
  ax.axhline(full.accuracy - claims.STASH_CLOSE, color=color, ls=":", lw=1.0)
  labelled: list[tuple[float, int]] = []  # (memory, row) of the labels so far
  for r, x in zip(front.itertuples(), kib):
    kind = stash_kind(r.value)
    acc = df[(df.value.astype(str) == r.value) & (df.scheme == r.scheme)].accuracy
    half = (claims.t_interval(acc).high - r.accuracy) if len(acc) > 1 else 0.0
    ax.errorbar(
      x,
      r.accuracy,
      yerr=half,
      fmt=STASH_KINDS[kind][0],
      color=color,
      mfc="white" if kind == "exact" else color,
      capsize=3,
      ms=8 if kind == "carry" else 6,
    )
    near = {n for x0, n in labelled if abs(x - x0) < 0.1 * kib.max()}
    n = min(set(range(len(near) + 1)) - near)  # the first label row free near this memory
    labelled.append((x, n))
    ax.annotate(
      r.value, (x, r.accuracy), textcoords="offset points", xytext=(5, 4 - 11 * n), fontsize=7
    )
  best = front[front.frontier]
  ax.plot(best.stash_bytes / 2**10, best.accuracy, color=color, lw=1.0, alpha=0.7)
  speed = float(sweep_spec(name, quick).get("overrides", {}).get("data", {}).get("speed", 0))
  network = claims.stash_network(name[len("stash-") :])
  ax.set_title(f"{network} at {speed:g} px/frame ({df.seed.nunique()} seeds)", fontsize=10)
  ax.set_xlabel("bytes beyond Sideways per batch (KiB)")
  ax.set_ylabel("test clip accuracy")


def measured_costs(quick: bool):
  """Per-unit forward/backward costs measured on the next-frame model (L = 8 units)."""
  L = 4 if quick else 8
  cfg = training.default_config(
    "next-frame",
    "sideways",
    quick=quick,
    model=dict(num_units=L, width=4 if quick else 16),
    data=dict(size=(8, 8) if quick else (32, 32)),
    batch_size=2 if quick else 8,
  )
  tr = training.Trainer(cfg)
  params, _ = tr.init()
  video, _, _ = tr.batch(0)
  return timing.unit_costs(tr.graph, params, video[:, 0], repeats=3 if quick else 20), L


@_figure(
  "speedup",
  "Projected training throughput against the number of devices, relative to "
  "BP on one device, from the latency model with per-unit forward and backward costs "
  "measured on the next-frame model: pipelined schemes scale with the devices, blocking "
  "BP does not.",
)
def fig_speedup(ctx: Context):
  costs, L = measured_costs(ctx.quick)
  devices = list(range(1, L + 1))
  table = timing.project_speedup(costs, L, devices)
  fig, axes = plotting.new_figure(1, 2, figsize=(9, 3.3))
  a1, a2 = axes[0]
  curves = {}
  for s in ("backprop", "sideways", "skip_sideways"):
    rows = table[table.scheme == s].sort_values("num_devices")
    curves[s] = (rows.num_devices.to_numpy(), rows.speedup_vs_one_device.to_numpy())
  plotting.plot_curves(
    a1,
    curves,
    xlabel="devices D",
    ylabel="speed-up over BP on 1 device",
    title=f"projected speed-up (L = {L})",
    marker=True,
  )
  a1.plot(devices, devices, color="#999999", ls=":", lw=1, label="ideal")
  a1.legend()
  plotting.integer_axis(a1, "x")
  x = np.arange(1, L + 1)
  a2.bar(x - 0.2, np.asarray(costs.forward) * 1e3, width=0.4, color="#8C8C8C", label="forward")
  a2.bar(x + 0.2, np.asarray(costs.backward) * 1e3, width=0.4, color="#4D4D4D", label="backward")
  a2.set_xticks(x)
  a2.set_xlabel("unit k")
  a2.set_ylabel("ms per step")
  a2.set_title(f"measured unit costs ({costs.device})")
  a2.legend()
  a2.grid(axis="x", visible=False)
  return fig


@_figure(
  "timelines",
  "What each of four devices does at each tick under BP, Sideways and "
  "Skip-Sideways (forward steps coloured by their frame, hatched backward steps by the "
  "frame of their loss): BP leaves devices blocked, the pipelined schemes keep all busy.",
)
def fig_timelines(ctx: Context):
  L, T = 4, 12
  fig, axes = plotting.new_figure(3, 1, figsize=(9.5, 6.0))
  for ax, s in zip(axes[:, 0], ("backprop", "sideways", "skip_sideways")):
    tl = latency.timeline(L, s, T)
    plotting.plot_timeline(ax, tl)
  return fig


#: The schedules of the ``schedules`` figure (blocking BP is in ``timelines``) and its grid.
SCHEDULE_FIGURE = dict(
  names=tuple(n for n in schedules.SCHEDULES if n != "backprop"), stages=4, microbatches=8, chunks=2
)


@_figure(
  "schedules",
  "Sideways among the pipeline schedules: the (device, time) grid of GPipe, 1F1B, "
  "interleaved 1F1B (2 chunks), ZB-H1, ZB-H2, PipeDream, Sideways, its exact twin and "
  "Skip-Sideways on 4 devices and 8 micro-batches (frames), simulated from each schedule's "
  "rule and dependencies, with the bubble, inputs held, weight versions and staleness "
  "measured from each grid: Sideways' backward meets an input 2(L-k) frames newer than its "
  "gradient, where 1F1B's meets its own (docs/design.md §10).",
)
def fig_schedules(ctx: Context):
  spec = SCHEDULE_FIGURE
  grids = [
    schedules.simulate_schedule(
      n, spec["stages"], spec["microbatches"], spec["chunks"] if n == "interleaved_1f1b" else 1
    )
    for n in spec["names"]
  ]
  fig, axes = plotting.new_figure(len(grids), 1, figsize=(13, 1.45 * len(grids)), sharex=True)
  for ax, g in zip(axes[:, 0], grids):
    label = schedules.SCHEDULE_LABELS[g.name] + (f" (v = {g.chunks})" if g.chunks > 1 else "")
    plotting.plot_schedule_grid(ax, g, title=label)
  axes[-1, 0].set_xlim(0, max(g.num_slots * g.slot_time for g in grids))  # the longest grid
  axes[-1, 0].set_xlabel(
    "time (forward passes of one stage; every cell, F, B hatched or W dotted, lasts one)"
  )
  return fig


# ---------------------------------------------------------------------------------------------
# generate / main
# ---------------------------------------------------------------------------------------------


def _versions() -> dict:
  out = {}
  for name, dist in (
    ("jax", "jax"),
    ("jaxlib", "jaxlib"),
    ("haiku", "dm-haiku"),
    ("optax", "optax"),
    ("numpy", "numpy"),
    ("matplotlib", "matplotlib"),
  ):
    try:
      out[name] = md.version(dist)
    except md.PackageNotFoundError:
      out[name] = None
  return out


def _cpu_name() -> str:
  """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.lower().startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _device() -> str:
  """The machine in words: "CPU, 2 cores (<model>)" or "1 × NVIDIA H200 GPU"."""
  d = jax.devices()[0]
  if d.platform == "cpu":
    return f"CPU, {os.cpu_count()} cores ({_cpu_name()})"
  kind = getattr(d, "device_kind", d.platform)
  return f"{jax.device_count()} × {kind} ({d.platform.upper()})"


def _work_dir(work_dir, quick: bool) -> Path:
  mode = "quick" if quick else "full"
  return Path(work_dir) if work_dir is not None else Path(".sideways_cache") / f"figures-{mode}"


def run_sweeps(
  names, quick: bool = False, *, work_dir=None, log=print, reuse_other_code: bool = False
) -> dict:
  """Trains the figure sweeps ``names`` into ``work_dir`` (as :func:`generate` would) and
  returns their DataFrames; draws nothing."""
  for n in names:
    if n not in SWEEPS:
      raise ValueError(f"unknown sweep {n!r}; sweeps are {list(SWEEPS)}")
  log = log or (lambda msg: None)
  ctx = Context(
    quick=bool(quick),
    work_dir=_work_dir(work_dir, quick),
    log=log,
    reuse_other_code=bool(reuse_other_code),
  )
  return {n: ctx.sweep(n) for n in names}


def _names(only, from_results, log) -> list[str]:
  """The figures to draw: ``only`` (checked) or all; drawn from results, the figures that need
  the runs' checkpoints are skipped with a message (named in ``only``: an error)."""
  names = list(FIGURES) if only is None else list(only)
  for n in names:
    if n not in FIGURES:
      raise ValueError(f"unknown figure {n!r}; figures are {list(FIGURES)}")
  if from_results is None:
    return names
  runs = [n for n in names if FIGURES[n].needs_runs]
  if runs and only is not None:
    raise ValueError(
      f"{runs} need the trained runs' checkpoints, which results do not hold: draw them "
      f"without from_results (--from-results)"
    )
  for n in runs:
    log(f"[figures] {n}: skipped (needs the trained runs' checkpoints, not in the results)")
  return [n for n in names if n not in runs]


def _context(quick, work_dir, log, out: Path, from_results, reuse_other_code=False) -> Context:
  if from_results is None:
    return Context(
      bool(quick),
      _work_dir(work_dir, quick),
      log,
      bool(reuse_other_code),
      longer_dir=out / "results",
    )
  path = Path(from_results)
  if not path.is_dir():
    raise NotADirectoryError(f"from_results {str(path)!r} is not a directory of results")
  return Context(bool(quick), _work_dir(work_dir, quick), log, results_dir=path)


def generate(
  out_dir="figures",
  quick: bool = False,
  *,
  only=None,
  log: Callable[[str], None] | None = print,
  work_dir=None,
  reuse_other_code: bool = False,
  from_results=None,
) -> dict:
  """Regenerates the figures (PNG and PDF), their results and the claims report.

  Args:
    out_dir: the output directory (created).
    quick: tiny budgets (a minute or two on a laptop CPU) instead of the full runs.
    only: an optional list of figure names (default: all of :data:`FIGURES`).
    log: a function that receives progress lines (None: silent).
    work_dir: where the sweeps' runs go (default: ``.sideways_cache/figures-<mode>``, so an
      interrupted run resumes and a rerun reuses the finished runs of the same code).
    reuse_other_code: reuse cached runs computed by other code instead of retraining them
      (:func:`sideways_lab.experiments.sweep`; they are listed in the log, in the results'
      ``other_code`` column and in the manifest's ``runs_code``).
    from_results: a directory of results that an earlier run wrote (``figures/results``): the
      figures and the claims are drawn from its ``<sweep>.csv``, ``curves-<sweep>.csv``,
      ``longer-<sweep>.csv`` and ``alignment.csv`` without training; the figures that need
      the runs' checkpoints (``future_frames``) are skipped, or refused when named in
      ``only``. The results are not rewritten.

  Writes ``out_dir/<figure>.png|pdf``, ``out_dir/results/<sweep>.csv`` (the tidy results of
  every sweep behind a figure), ``out_dir/results/alignment.csv``, ``out_dir/claims.md``
  (when a sweep ran or was read) and ``out_dir/manifest.json``; ``only`` keeps the other
  entries of a manifest of the same mode (from results: its other fields too, and each
  figure drawn records ``from_results``, its commit and command).

  Returns:
    The manifest: ``package_version``, ``git_commit`` (of the checkout that draws), ``code``
    (the code identity of this process, :func:`sideways_lab.provenance.code_identity`),
    ``runs_code`` (the code that computed the runs behind the figures:
    :func:`sideways_lab.experiments.code_versions` as records, one ideally), ``mode``,
    ``seeds``, ``versions``, ``device``, ``figures`` (name -> files, sentence, config, time_s)
    and ``total_time_s``.
  """
  log = log or (lambda msg: None)
  names = _names(only, from_results, log)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  # the commit of the code that draws: read before anything is written into the tree
  commit = provenance.git_commit(Path(__file__).resolve().parent.parent)
  t0 = time.perf_counter()
  ctx = _context(quick, work_dir, log, out, from_results, reuse_other_code)
  command = "sideways-lab figures" + (" --quick" if quick else "") + f" --out {out_dir}"
  if from_results is not None:
    command += f" --from-results {from_results}"
  figures = {}
  for n in names:
    spec = FIGURES[n]
    t1 = time.perf_counter()
    log(f"[figures] {n}...")
    files = plotting.save_figure(spec.make(ctx), out / n)
    dt = time.perf_counter() - t1
    figures[n] = {
      "files": [Path(f).name for f in files],
      "sentence": spec.sentence,
      "config": figure_config(n, quick),
      "time_s": round(dt, 2),
    }
    if from_results is not None:
      figures[n].update(
        from_results=str(from_results), git_commit=commit, command=f"{command} --only {n}"
      )
    log(f"  wrote {', '.join(Path(f).name for f in files)} ({dt:.1f} s)")
  _write_results(out, ctx, quick, commit, command)
  manifest = {
    "package_version": sideways_lab.__version__,
    "git_commit": commit,
    "code": provenance.code_identity(),
    "runs_code": experiments.code_versions(list(ctx.results.values())).to_dict("records"),
    "mode": "quick" if quick else "full",
    "seeds": {n: sweep_spec(n, quick)["seeds"] for n in SWEEPS},
    "versions": _versions(),
    "device": _device(),
    "python": sys.version.split()[0],
    "figures": figures,
    "total_time_s": round(time.perf_counter() - t0, 2),
    # the training time of every run behind the figures (runs read from the cache of an
    # earlier, interrupted or identical run count too, so this is the cost from scratch)
    "sweeps_train_time_s": {
      n: round(float(df.train_time_s.sum()), 1) for n, df in ctx.results.items()
    },
    "command": command,
  }
  if from_results is not None:
    manifest["from_results"] = str(from_results)
  old = _read_manifest(out / "manifest.json") if only is not None or from_results else None
  manifest = _merge_manifest(manifest, old, names, from_results, partial=only is not None)
  if reuse_other_code:
    manifest["command"] += " --reuse-other-code"
  ckpt.atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
  return manifest


def _merge_manifest(manifest: dict, old: dict | None, names, from_results, partial=True) -> dict:
  """``manifest`` of some figures merged into ``old``, an earlier manifest of the same mode:
  the other figures keep their entries (their files are still there) and, drawn from results,
  the run that trained them keeps its record as well. Every figure drawn from results
  (``partial`` False) keeps the new record, and only the figures that need the runs'
  checkpoints, which results cannot draw, keep their old entries."""
  if old is None or old.get("mode") != manifest["mode"]:
    return manifest
  figures = manifest["figures"]
  kept = {
    n: f
    for n, f in old.get("figures", {}).items()
    if n not in figures and (partial or (n in FIGURES and FIGURES[n].needs_runs))
  }
  figures = {**kept, **figures}
  if not partial:
    return {**manifest, "figures": figures}
  if from_results is not None:
    manifest = dict(old)
  else:
    manifest["command"] += " --only " + " ".join(names)
  return {**manifest, "figures": figures}


def draw(name: str, *, from_results=None, quick: bool = False, work_dir=None, log=None) -> Figure:
  """The matplotlib Figure ``name`` of :data:`FIGURES`, drawn and returned without writing
  anything: from the results in ``from_results`` (e.g. :data:`RESULTS_DIR`, the committed
  ones) or, without it, from the sweeps in ``work_dir`` (trained there if missing)."""
  if name not in FIGURES:
    raise ValueError(f"unknown figure {name!r}; figures are {list(FIGURES)}")
  log = log or (lambda msg: None)
  _names([name], from_results, log)
  ctx = _context(quick, work_dir, log, Path("."), from_results)
  return FIGURES[name].make(ctx)


def _claims_inputs(source: Path, have: dict) -> tuple[dict, dict, dict]:
  """Every sweep's results, curves and longer runs in ``source`` (``have`` first)."""
  results, curves, longer = dict(have), {}, {}
  for name in SWEEPS:  # claims read every sweep this directory has
    path = source / f"{name}.csv"
    if name not in results and path.exists():
      results[name] = experiments.read_results(path)
    if (source / f"curves-{name}.csv").exists():
      curves[name] = experiments.read_curves(source / f"curves-{name}.csv")
    if (source / f"longer-{name}.csv").exists():
      longer[name] = experiments.read_results(source / f"longer-{name}.csv")
  return results, curves, longer


def _write_results(out: Path, ctx: Context, quick: bool, commit: str | None, command: str) -> None:
  """The sweeps' CSVs and the alignment CSV (not when drawn from results) and, when any sweep
  ran or was read, ``claims.md``."""
  if not ctx.results:
    return
  if ctx.results_dir is None:
    (out / "results").mkdir(exist_ok=True)
    for name, df in ctx.results.items():
      ckpt.atomic_write_text(out / "results" / f"{name}.csv", df.to_csv(index=False))
      curves = ctx.work_dir / name / "curves.csv"
      if curves.exists():
        ckpt.atomic_write_text(out / "results" / f"curves-{name}.csv", curves.read_text())
    if ctx._alignment is not None:
      alignment = ctx._alignment.to_csv(index=False)
      ckpt.atomic_write_text(out / "results" / "alignment.csv", alignment)
  source = Path(ctx.results_dir) if ctx.results_dir is not None else out / "results"
  results, curves, longer = _claims_inputs(source, ctx.results)
  how = "quick mode: tiny budgets, the verdicts mean nothing" if quick else "full mode"
  if ctx.results_dir is not None:
    how += f", drawn from the results in `{ctx.results_dir}` without training"
  header = (
    f"Generated by `{command}` ({how}, drawn at commit {commit}); runs trained by "
    f"{runs_code_text(results.values())}; numbers are means ± std over seeds; differences are "
    f"paired by seed (same clips and initial parameters), with their 95 % Student-t intervals "
    f"over seeds in brackets. Results: `results/*.csv`."
  )
  report = claims.claims_report(claims.claims(results, curves, longer), header)
  ckpt.atomic_write_text(out / "claims.md", report)


def runs_code_text(frames) -> str:
  """The code that computed the runs of sweeps' results, in words: "code <source> (commit
  <commit>)" when one did, else each with its number of runs, most first
  (:func:`sideways_lab.experiments.code_versions`)."""
  versions = experiments.code_versions(list(frames))

  def one(r) -> str:
    code = f"code {r.code}" if r.code else "code not recorded"
    return code + (f" (commit {r.commit})" if r.commit else "")

  if len(versions) <= 1:
    return one(versions.iloc[0]) if len(versions) else "no recorded code"
  parts = [f"{one(r)}: {r.runs} runs" for r in versions.itertuples()]
  return f"{len(versions)} versions of the code: " + "; ".join(parts)


def _read_manifest(path: Path) -> dict | None:
  """An existing figures manifest, or None when absent or unreadable."""
  try:
    m = json.loads(Path(path).read_text())
  except (OSError, ValueError):
    return None
  return m if isinstance(m, dict) and isinstance(m.get("figures"), dict) else None
