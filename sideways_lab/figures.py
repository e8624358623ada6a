"""Regenerates every figure of the project (PNG and PDF) with a manifest.

    sideways-lab figures [--quick] [--out DIR] [--only NAME ...] [--seed N]
    python -m sideways_lab.figures [--quick] [--out DIR] [--only NAME ...] [--seed N]

or from Python ``sl.figures.generate(out_dir="figures", quick=False)``. Every figure is backed
by a run made right here (training with :func:`sideways_lab.training.compare`, alignment sweeps
from :mod:`sideways_lab.analysis`, the symbolic schedule); nothing is read from old results.
``out_dir/manifest.json`` records the package version, git commit, seeds, JAX and Haiku
versions, the device, the mode (quick or full) and the time taken per figure; ``--only``
regenerates some figures and keeps the other entries of a manifest of the same mode.

One style sheet (:data:`sideways_lab.plotting.STYLE`) and one colour per scheme
(:data:`sideways_lab.plotting.SCHEME_COLORS`) everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from sideways_lab import checkpoint as ckpt
from sideways_lab import plotting as P

SEED = 0


class Unavailable(RuntimeError):
  """A figure needs a part of the package that is not installed/available."""


@dataclasses.dataclass
class FigureSpec:
  """One figure of :data:`FIGURES`: its name, the sentence that says what it shows, and
  ``make(ctx) -> matplotlib Figure``."""
  name: str
  sentence: str           # one sentence on what the figure shows (README)
  make: Callable          # make(ctx) -> matplotlib Figure


FIGURES: dict[str, FigureSpec] = {}


def _figure(name: str, sentence: str):
  def deco(fn):
    if fn.__doc__ is None:
      fn.__doc__ = (f"Draws the ``{name}`` figure from ``ctx`` (a :class:`Context`); returns the "
                    f"matplotlib Figure.\n\n{sentence}")
    FIGURES[name] = FigureSpec(name, sentence, fn)
    return fn
  return deco


@dataclasses.dataclass
class Context:
  """What the figure functions share: the mode, the seed, a work dir, cached runs."""
  quick: bool
  seed: int
  work_dir: Path
  log: Callable[[str], None]
  _runs: dict = dataclasses.field(default_factory=dict)

  def compare(self, task: str) -> tuple[dict, Path]:
    """``(results, out_dir)`` of :func:`sideways_lab.training.compare` for ``task`` (cached)."""
    if task not in self._runs:
      from sideways_lab import training
      out = self.work_dir / f"compare-{task}"
      kw = compare_overrides(task, self.quick)
      self.log(f"  training the schemes on {task} ({'quick' if self.quick else 'full'})...")
      res = training.compare(task, out, quick=self.quick, seed=self.seed, overwrite=True,
                             progress=False, **kw)
      self._runs[task] = (res, out)
    return self._runs[task]


def compare_overrides(task: str, quick: bool) -> dict:
  """The training budget of the figures (on top of ``training.default_config``)."""
  if quick:
    return dict(steps=4, batch_size=2, log_every=1, eval_clips=4,
                model=dict(num_units=3, width=4), data=dict(num_frames=6, size=(8, 8)))
  return dict(steps=300 if task == "next-frame" else 400, log_every=5, eval_clips=128)


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------

@_figure("schedule", "The schedule of BP, Sideways and Skip-Sideways on four units: every cell "
         "is coloured by the frame its activation comes from and its lower strip by the frame "
         "of the loss whose gradient it uses; arrows are gradient messages, grey cells are "
         "blocked BP units and hatched frames are dropped by BP.")
def fig_schedule(ctx: Context):
  from sideways_lab.graph import chain_edges, skip_edges
  L, T = 4, 13
  fig, axes = P.new_figure(3, 1, figsize=(9.5, 9.6))
  for ax, (scheme, edges) in zip(axes[:, 0], [("backprop", chain_edges(L)),
                                             ("sideways", chain_edges(L)),
                                             ("skip_sideways", skip_edges(L, 2))]):
    d = P.schedule_data(edges, T, scheme)
    sub = {"backprop": "blocking: one frame in flight, 2L-1 ticks per frame",
           "sideways": "every unit busy every tick; gradient 2(L-k) frames older than the "
                       "activation",
           "skip_sideways": "skips (span 2) bring newer frames and shorter gradient paths"}
    P.draw_schedule(ax, d, tick=None, title=f"{P.scheme_label(scheme)} — {sub[scheme]}")
  return fig


@_figure("latency", "Latency counts from the symbolic schedule against depth L: ticks from a "
         "frame to the first output that sees it, ticks until the gradient of a loss reaches "
         "the first unit, and frames processed per tick with one unit per device.")
def fig_latency(ctx: Context):
  from sideways_lab import schedule
  from sideways_lab.graph import chain_edges, skip_edges
  Ls = list(range(2, 13))
  rows = {s: [] for s in ("backprop", "sideways", "skip_sideways")}
  for L in Ls:
    rows["backprop"].append(schedule.latency(chain_edges(L), "backprop"))
    rows["sideways"].append(schedule.latency(chain_edges(L), "sideways"))
    rows["skip_sideways"].append(schedule.latency(skip_edges(L, 2), "skip_sideways"))
  fig, axes = P.new_figure(1, 3, figsize=(11, 3.2))
  a1, a2, a3 = axes[0]
  P.plot_curves(a1, {s: (Ls, [r.output_latency for r in v]) for s, v in rows.items()},
                xlabel="units L", ylabel="ticks", title="frame → first output", marker=True)
  P.plot_curves(a2, {s: (Ls, [r.gradient_delay[0] for r in v]) for s, v in rows.items()},
                xlabel="units L", ylabel="ticks", title="loss → gradient at unit 1",
                marker=True, legend=False)
  P.plot_curves(a3, {s: (Ls, [r.frames_per_tick for r in v]) for s, v in rows.items()},
                xlabel="units L", ylabel="frames per tick", title="throughput (L devices)",
                marker=True, legend=False, logy=True)
  return fig


def _alignment_tables(ctx: Context):
  try:
    from sideways_lab.analysis import sweeps
  except ImportError as e:
    raise Unavailable(f"sideways_lab.analysis.sweeps: {e}")
  return sweeps


def sweep_kwargs(quick: bool) -> dict:
  """Sizes of the alignment sweeps (quick: tiny, for tests; full: the sweeps' defaults)."""
  if quick:
    return dict(size=(8, 8), batch_size=1, num_frames=6, seeds=1, width=8, num_units=3,
                quick=True, cache=False)
  return dict(quick=False, cache=False)


def _by(table, x: str, metric: str = "cosine", **where):
  """``{scheme: (xs, mean, std)}`` of ``metric`` vs column ``x``."""
  out = {}
  t = table.where(**where) if where else table
  for s in P.order_schemes({r["scheme"] for r in t.rows}):
    m = t.where(scheme=s).mean([x], [metric])
    rows = sorted(m.rows, key=lambda r: r[x])
    out[s] = (np.array([r[x] for r in rows], float), np.array([r[metric] for r in rows]),
              np.array([r[metric + "_std"] for r in rows]))
  return out


def _errorband(ax, curves, **kw):
  for s, (x, y, e) in curves.items():
    ax.plot(x, y, **P.scheme_kwargs(s, marker=True))
    ax.fill_between(x, y - e, y + e, color=P.scheme_color(s), alpha=0.15, lw=0)


@_figure("alignment", "Cosine between the Sideways estimate and the exact gradient of the same "
         "pipelined network, per unit (depth) and overall against the digits' speed and the "
         "frame stride: equal (cosine 1) on a static video, lower for faster or subsampled "
         "video and for units far from the top.")
def fig_alignment(ctx: Context):
  sweeps = _alignment_tables(ctx)
  speeds = (0.0, 0.5, 1.0, 2.0, 4.0)
  strides = (1, 2, 3, 4)
  sp = sweeps.sweep_speed(speeds, **sweep_kwargs(ctx.quick))
  st = sweeps.sweep_stride(strides, speed=1.0, **sweep_kwargs(ctx.quick))
  fig, axes = P.new_figure(1, 3, figsize=(11.5, 3.4))
  a1, a2, a3 = axes[0]
  units = sp.where(unit=lambda u: u != "all")
  for s in P.order_schemes({r["scheme"] for r in units.rows}):
    for i, v in enumerate([1.0, 4.0]):
      m = units.where(scheme=s, speed=v).mean(["unit"], ["cosine"])
      rows = sorted(m.rows, key=lambda r: r["unit"])
      kw = P.scheme_kwargs(s, marker=True)
      kw["label"] = f"{kw['label']}, speed {v:g}"
      kw["alpha"] = 1.0 if i == 0 else 0.55
      kw["linestyle"] = "-" if i == 0 else ":"
      a1.plot([r["unit"] for r in rows], [r["cosine"] for r in rows], **kw)
  a1.set_xlabel("unit k (depth)")
  a1.set_ylabel("cosine with the exact gradient")
  a1.set_title("per unit (at initialisation)")
  a1.legend(fontsize=7.5)
  a1.set_xticks(sorted({r["unit"] for r in units.rows}))
  _errorband(a2, _by(sp, "speed", unit="all"))
  a2.set_xlabel("speed (pixels per frame; 0 = static)")
  a2.set_ylabel("cosine (all units)")
  a2.set_title("smoothness: speed")
  _errorband(a3, _by(st, "stride", unit="all"))
  a3.set_xlabel("frame stride")
  a3.set_title("smoothness: frame stride")
  a3.set_xticks(list(strides))
  for ax in (a2, a3):
    ax.axhline(1.0, color="#999999", lw=0.8, ls=":")
  return fig


@_figure("alignment_training", "Alignment of Sideways and Skip-Sideways with the exact gradient "
         "at checkpoints of Sideways training on moving digits (mean over units), beside the "
         "training loss.")
def fig_alignment_training(ctx: Context):
  sweeps = _alignment_tables(ctx)
  steps = (0, 2, 4) if ctx.quick else (0, 25, 50, 100, 200)
  t = sweeps.sweep_progress(steps, **sweep_kwargs(ctx.quick))
  fig, axes = P.new_figure(1, 2, figsize=(8.5, 3.2))
  a1, a2 = axes[0]
  _errorband(a1, _by(t, "step", unit="all"))
  a1.set_xlabel("training step")
  a1.set_ylabel("cosine (all units)")
  a1.set_title("alignment during training")
  a1.legend()
  _errorband(a2, _by(t, "step", "train_loss", unit="all"))
  a2.set_xlabel("training step")
  a2.set_ylabel("training loss (MSE)")
  a2.set_title("training loss")
  return fig


def history(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, training losses)`` from a run directory's ``metrics.jsonl``."""
  steps, losses = [], []
  p = Path(run_dir) / "metrics.jsonl"
  if p.exists():
    for line in p.read_text().splitlines():
      r = json.loads(line)
      if "loss" in r and "test" not in r and "eval" not in r:
        steps.append(r["step"])
        losses.append(r["loss"])
  return np.asarray(steps), np.asarray(losses)


@_figure("training_next_frame", "Next-frame prediction on moving digits: training loss of BP, "
         "Sideways, Skip-Sideways and the exact pipelined gradient (same data, seed and budget), "
         "and the test MSE of each.")
def fig_training_next_frame(ctx: Context):
  res, out = ctx.compare("next-frame")
  fig, axes = P.new_figure(1, 2, figsize=(9, 3.3), gridspec_kw=dict(width_ratios=[1.6, 1]))
  a1, a2 = axes[0]
  curves = {s: history(out / s) for s in res["schemes"]}
  P.plot_curves(a1, curves, xlabel="step", ylabel="training loss (MSE)", logy=True,
                title="training", smooth=1 if ctx.quick else 5)
  P.plot_bars(a2, {s: r["test_mse"] for s, r in res["schemes"].items()}, ylabel="test MSE",
              title="held-out clips", fmt="{:.4f}")
  a2.tick_params(axis="x", labelrotation=20)
  return fig


@_figure("motion_classes", "Motion classes (the label is a motion that no single frame shows): "
         "clip accuracy of each scheme against chance, overall and per true class; only "
         "Skip-Sideways (and its exact gradient) integrates frames and beats chance, and the "
         "sense of a rotation is the hardest class.")
def fig_motion_classes(ctx: Context):
  res, out = ctx.compare("motion-classes")
  fig, ax = P.new_figure(figsize=(9, 6.2), mosaic=[["curves", "bars"], ["classes", "classes"]],
                         width_ratios=[1.6, 1])
  a1, a2, a3 = ax["curves"], ax["bars"], ax["classes"]
  curves = {s: history(out / s) for s in res["schemes"]}
  P.plot_curves(a1, curves, xlabel="step", ylabel="training loss (cross-entropy)",
                title="training", smooth=1 if ctx.quick else 5)
  P.plot_bars(a2, {s: r["test_accuracy"] for s, r in res["schemes"].items()},
              ylabel="test clip accuracy", title="held-out clips", chance=res.get("chance"))
  a2.set_ylim(0, 1.05)
  a2.tick_params(axis="x", labelrotation=20)
  P.plot_grouped_bars(a3, {s: r["test_class_accuracy"] for s, r in res["schemes"].items()},
                      ylabel="test clip accuracy", title="per true class",
                      chance=res.get("chance"))
  a3.set_ylim(0, 1.05)
  return fig


def predictions(run_root: Path, schemes, num_clips: int = 1, seed: int = 12345):
  """Predicted frames of trained next-frame runs on the same held-out clips.

  Returns ``(truth (N, T, H, W, C), {scheme: prediction like truth}, valid (T,) bool)``:
  ``truth[:, t] = x_{t+1}`` and the prediction is the scheme's output at tick t.
  """
  from sideways_lab import engine, training
  preds, truth, valid = {}, None, None
  for s in schemes:
    config, trainer, params, _ = training.load_run(Path(run_root) / s)
    video, targets, _ = trainer.task.batch(num_clips, seed)
    outputs, v = engine.forward(trainer.graph, params, video, trainer.mode)
    V = engine.schedule.loss_ticks(trainer.graph, video.shape[1], trainer.task.mask,
                                   trainer.mode)
    preds[s] = np.clip(np.asarray(outputs), 0.0, 1.0)
    truth = np.asarray(targets)
    valid = V if valid is None else (valid & V)
  return truth, preds, valid


@_figure("future_frames", "Frames predicted by the trained BP, Sideways and Skip-Sideways "
         "models beside the true next frame on a held-out clip, with the absolute error maps "
         "and the MSE per tick.")
def fig_future_frames(ctx: Context):
  from sideways_lab.tasks import psnr_from_mse
  res, out = ctx.compare("next-frame")
  schemes = [s for s in ("backprop", "sideways", "skip_sideways") if s in res["schemes"]]
  truth, preds, valid = predictions(out, schemes, num_clips=8)
  ticks = np.flatnonzero(valid)
  show = ticks[np.linspace(0, len(ticks) - 1, min(5, len(ticks))).astype(int)]
  from matplotlib.figure import Figure
  with P.style():
    fig = Figure(figsize=(1.45 * len(show) + 4.2, 1.3 * (1 + 2 * len(schemes))),
                 layout="constrained")
    sf = fig.subfigures(1, 2, width_ratios=[len(show), 3.2])
    rows = 1 + 2 * len(schemes)
    grid = sf[0].subplots(rows, len(show), squeeze=False)
    P.show_frames(grid[0], truth[0, show], titles=[f"tick {t}" for t in show])
    grid[0, 0].set_ylabel("truth", fontsize=8.5)
    for i, s in enumerate(schemes):
      P.show_frames(grid[1 + 2 * i], preds[s][0, show])
      err = np.abs(preds[s][0, show] - truth[0, show])
      P.show_frames(grid[2 + 2 * i], err, cmap="magma")
      grid[1 + 2 * i, 0].set_ylabel(P.scheme_label(s), fontsize=8.5, color=P.scheme_color(s))
      grid[2 + 2 * i, 0].set_ylabel("|error|", fontsize=8, color=P.scheme_color(s))
    ax1, ax2 = sf[1].subplots(2, 1)
    for s in schemes:
      mse_t = np.mean((preds[s] - truth) ** 2, axis=(0, 2, 3, 4))
      kw = P.scheme_kwargs(s, marker=True)
      ax1.plot(ticks, mse_t[ticks], **kw)
      per = np.mean((preds[s] - truth) ** 2, axis=(2, 3, 4))[:, ticks]
      ax2.plot(ticks, np.mean(psnr_from_mse(per), 0), **kw)
    ax1.set_ylabel("MSE")
    ax1.set_title("error per tick (8 clips)")
    ax1.legend()
    ax2.set_ylabel("PSNR (dB)")
    ax2.set_xlabel("tick")
  return fig


def measured_costs(quick: bool):
  """Per-unit forward/backward costs measured on the next-frame model (L = 8 units)."""
  import jax
  from sideways_lab.analysis import timing
  from sideways_lab.training import Trainer, default_config
  L = 4 if quick else 8
  cfg = default_config("next-frame", "sideways", quick=quick,
                       model=dict(num_units=L, width=4 if quick else 16),
                       data=dict(size=(8, 8) if quick else (32, 32)), batch_size=2 if quick else 8)
  tr = Trainer(cfg)
  params, _ = tr.init()
  video, _, _ = tr.batch(0)
  return timing.unit_costs(tr.graph, params, video[:, 0], repeats=3 if quick else 20), L


@_figure("speedup", "Projected training throughput against the number of devices, relative to "
         "BP on one device, from the latency model with per-unit forward and backward costs "
         "measured on the next-frame model: pipelined schemes scale with the devices, blocking "
         "BP does not.")
def fig_speedup(ctx: Context):
  try:
    from sideways_lab.analysis import timing
  except ImportError as e:
    raise Unavailable(f"sideways_lab.analysis.timing: {e}")
  costs, L = measured_costs(ctx.quick)
  devices = list(range(1, L + 1))
  table = timing.project_speedup(costs, L, devices)
  fig, axes = P.new_figure(1, 2, figsize=(9, 3.3))
  a1, a2 = axes[0]
  curves = {}
  for s in ("backprop", "sideways", "skip_sideways"):
    rows = sorted(table.where(scheme=s).rows, key=lambda r: r["num_devices"])
    curves[s] = ([r["num_devices"] for r in rows], [r["speedup_vs_one_device"] for r in rows])
  P.plot_curves(a1, curves, xlabel="devices D", ylabel="speed-up over BP on 1 device",
                title=f"projected speed-up (L = {L})", marker=True)
  a1.plot(devices, devices, color="#999999", ls=":", lw=1, label="ideal")
  a1.legend()
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


@_figure("timelines", "What each of four devices does at each tick under BP, Sideways and "
         "Skip-Sideways (forward steps coloured by their frame, hatched backward steps by the "
         "frame of their loss): BP leaves devices blocked, the pipelined schemes keep all busy.")
def fig_timelines(ctx: Context):
  try:
    from sideways_lab.analysis import latency as LM
  except ImportError as e:
    raise Unavailable(f"sideways_lab.analysis.latency: {e}")
  L, T = 4, 12
  fig, axes = P.new_figure(3, 1, figsize=(9.5, 6.0))
  for ax, s in zip(axes[:, 0], ("backprop", "sideways", "skip_sideways")):
    tl = LM.timeline(L, s, T)
    P.plot_timeline(ax, tl)
  return fig


# ---------------------------------------------------------------------------------------------
# generate / main
# ---------------------------------------------------------------------------------------------

def _git_commit(root: Path) -> str | None:
  try:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                       timeout=10)
    if r.returncode != 0:
      return None
    commit = r.stdout.strip()
    d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                       capture_output=True, text=True, timeout=10)
    return commit + ("-dirty" if d.returncode == 0 and d.stdout.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return None


def _versions() -> dict:
  import importlib.metadata as md
  out = {}
  for name, dist in (("jax", "jax"), ("jaxlib", "jaxlib"), ("haiku", "dm-haiku"),
                     ("optax", "optax"), ("numpy", "numpy"), ("matplotlib", "matplotlib")):
    try:
      out[name] = md.version(dist)
    except md.PackageNotFoundError:
      out[name] = None
  return out


def _device() -> str:
  import jax
  d = jax.devices()[0]
  return f"{d.platform}: {getattr(d, 'device_kind', str(d))} (x{jax.device_count()})"


def generate(out_dir="figures", quick: bool = False, *, only=None, seed: int = SEED,
             log: Callable[[str], None] | None = print, work_dir=None) -> dict:
  """Regenerates the figures (PNG and PDF) into ``out_dir`` and writes ``manifest.json``.

  Args:
    out_dir: the output directory (created).
    quick: tiny budgets (about a minute or two on a laptop CPU) instead of the full runs.
    only: an optional list of figure names (default: all of :data:`FIGURES`).
    seed: the seed of every run.
    log: a function that receives progress lines (None: silent).
    work_dir: where training runs go (default: a temporary directory, removed afterwards).

  Returns:
    The manifest (also written to ``out_dir/manifest.json``): ``package_version``,
    ``git_commit``, ``mode``, ``seeds``, ``versions`` (jax, haiku, ...), ``device``,
    ``figures`` (name -> files, sentence, time_s; or ``skipped`` with the reason) and
    ``total_time_s``.
  """
  import sideways_lab
  names = list(FIGURES) if only is None else list(only)
  for n in names:
    if n not in FIGURES:
      raise ValueError(f"unknown figure {n!r}; figures are {list(FIGURES)}")
  log = log or (lambda msg: None)
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  tmp = None
  if work_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix="sideways_figures_")
    work_dir = tmp.name
  ctx = Context(quick=bool(quick), seed=seed, work_dir=Path(work_dir), log=log)
  figures = {}
  try:
    for n in names:
      spec = FIGURES[n]
      t1 = time.perf_counter()
      log(f"[figures] {n}...")
      try:
        fig = spec.make(ctx)
      except Unavailable as e:
        figures[n] = {"skipped": str(e), "sentence": spec.sentence}
        log(f"  skipped: {e}")
        continue
      files = P.save_figure(fig, out / n)
      dt = time.perf_counter() - t1
      figures[n] = {"files": [Path(f).name for f in files], "sentence": spec.sentence,
                    "time_s": round(dt, 2)}
      log(f"  wrote {', '.join(Path(f).name for f in files)} ({dt:.1f} s)")
  finally:
    if tmp is not None:
      tmp.cleanup()
  manifest = {
      "package_version": sideways_lab.__version__,
      "git_commit": _git_commit(Path(__file__).resolve().parent.parent),
      "mode": "quick" if quick else "full",
      "seeds": {"figures": seed, "training": seed,
                "alignment_sweeps": "0..seeds-1 of sideways_lab.analysis.sweeps"},
      "versions": _versions(),
      "device": _device(),
      "python": sys.version.split()[0],
      "figures": figures,
      "total_time_s": round(time.perf_counter() - t0, 2),
      "command": "sideways-lab figures" + (" --quick" if quick else "") + f" --out {out_dir}",
  }
  old = _read_manifest(out / "manifest.json") if only is not None else None
  if old is not None and old.get("mode") == manifest["mode"]:
    # regenerating some figures keeps the others' entries (their files are still there)
    manifest["figures"] = {**{n: f for n, f in old.get("figures", {}).items()
                              if n not in figures}, **figures}
    manifest["command"] += " --only " + " ".join(names)
  ckpt.atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
  return manifest


def _read_manifest(path: Path) -> dict | None:
  """An existing figures manifest, or None when absent or unreadable."""
  try:
    m = json.loads(Path(path).read_text())
  except (OSError, ValueError):
    return None
  return m if isinstance(m, dict) and isinstance(m.get("figures"), dict) else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of ``sideways-lab figures`` (also used by ``python -m sideways_lab.figures``)."""
  parser.add_argument("--out", default="figures", help="output directory (default: figures)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny budgets (about a minute on a laptop CPU; also "
                           "SIDEWAYS_LAB_QUICK=1)")
  parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="only these figures")
  parser.add_argument("--seed", type=int, default=SEED)


def run(args: argparse.Namespace) -> int:
  """Runs :func:`generate` for parsed :func:`add_arguments` options; returns 0."""
  quick = args.quick or os.environ.get("SIDEWAYS_LAB_QUICK", "").strip().lower() in (
      "1", "true", "yes", "on")
  m = generate(args.out, quick=quick, only=args.only, seed=args.seed)
  skipped = [n for n, f in m["figures"].items() if "skipped" in f]
  print(f"wrote {len(m['figures']) - len(skipped)} figures to {args.out} in "
        f"{m['total_time_s']:.0f} s" + (f"; skipped {skipped}" if skipped else ""))
  return 0


def main(argv=None) -> int:
  """``python -m sideways_lab.figures [--quick] [--out DIR] [--only NAME ...] [--seed N]``."""
  parser = argparse.ArgumentParser(prog="sideways-lab figures",
                                   description="Regenerate every figure (PNG + PDF) and "
                                               "figures/manifest.json.")
  add_arguments(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
