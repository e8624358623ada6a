"""The experiment layer: schemes on equal terms, seeds, trained sweeps, baselines, alignment.

This module is how the package tests the papers' claims (docs/design.md §9):

* a **scheme** is a (graph, method) pair (:data:`sideways_lab.models.SCHEMES`); every
  approximate scheme is trained beside its exact twin on the same graph
  (:data:`sideways_lab.models.EXACT_TWIN`), so the cost of the pipeline's delay
  (``backprop`` → ``sideways_exact``) and the cost of the gradient estimate (``sideways_exact``
  → ``sideways``) are measured separately;
* every setting is trained with ``seeds`` seeds; the schemes of one seed share their initial
  parameters (where the graphs allow) and their training and test clips, so differences between
  schemes are **paired by seed** (:func:`paired_difference`);
* :func:`sweep` trains every (scheme, knob value, seed) of a task, caches each run on disk
  (``DIR/runs/<run>/row.json`` beside the run's checkpoints), writes the tidy
  ``DIR/results.csv`` after every finished run (an interrupted sweep loses nothing and resumes
  where it stopped; a sweep with one more value trains only that value) and returns a pandas
  DataFrame with one row per run;
* next-frame results come with two baselines computed on the same clips and loss ticks:
  ``copy_newest`` (predict the newest frame that reaches the output) and ``mean_frame`` (the
  training clips' mean frame);
* :func:`alignment` measures, at the checkpoints of a sweep's own runs, the per-unit cosine
  between the approximate gradient and the exact gradient of the same graph, for single clips
  and for the expected gradient (mean over many clips).

The claims report (:func:`claims_report`) turns these tables into verdicts.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sideways_lab import checkpoint as ckpt
from sideways_lab import engine, schedule, training
from sideways_lab.models import (
  EXACT_TWIN,
  SCHEMES,
  check_scheme,
  check_task,
  graph_of,
  method_of,
  mode_of,
)
from sideways_lab.tasks import ANCHORS, frame_metrics, grad_cosine, newest_frames

__all__ = [
  "KNOBS",
  "BASELINES",
  "ID_COLUMNS",
  "BUDGETS",
  "QUICK_BUDGET",
  "budget",
  "is_quick",
  "check_knob",
  "check_values",
  "check_schemes",
  "run_config",
  "run_key",
  "train_run",
  "mean_frame",
  "baseline_rows",
  "default_schemes",
  "sweep",
  "read_results",
  "summarize",
  "paired_difference",
  "runs_at",
  "predictions",
  "gradient_alignment",
  "alignment",
  "Claim",
  "CLAIMS",
  "claims",
  "claims_report",
  "add_sweep_arguments",
  "run_sweep",
]

KNOBS = ("speed", "stride")
BASELINES = ("copy_newest", "mean_frame")
#: Columns every row of :func:`sweep` has (then the metric columns of the task).
ID_COLUMNS = ("task", "scheme", "graph", "method", "knob", "value", "seed", "steps", "anchor")
CLASSIFICATION_METRICS = ("accuracy", "tick_accuracy", "loss")
PREDICTION_METRICS = ("mse", "psnr", "ssim")
#: Clips of training data averaged into the ``mean_frame`` baseline.
MEAN_FRAME_CLIPS = 256
#: Checkpoints per run kept by a sweep (for :func:`alignment` along training).
CHECKPOINTS_PER_RUN = 4


def is_quick(quick: bool | None = None) -> bool:
  """``quick`` if given, else whether the environment variable SIDEWAYS_LAB_QUICK is set."""
  if quick is not None:
    return bool(quick)
  return os.environ.get("SIDEWAYS_LAB_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------------------------------
# Budgets: one home for the experiments' training budgets
# ---------------------------------------------------------------------------------------------

#: The full-mode budget of each task on top of :func:`training.default_config` (measured in
#: benchmarks/README.md "Experiments").
BUDGETS = {
  "digits": dict(
    steps=500, learning_rate=1e-2, model=dict(width=32, groups=8), data=dict(num_frames=8)
  ),
  "motion-classes": dict(steps=800),
  "next-frame": dict(steps=400),
}
#: Quick mode (tests, notebooks): seconds per run.
QUICK_BUDGET = dict(
  steps=4,
  batch_size=2,
  eval_clips=8,
  log_every=1,
  model=dict(num_units=3, width=8, groups=4, downsample=(1,)),
  data=dict(num_frames=6, size=(12, 12)),
)


def budget(task: str, quick: bool = False) -> dict:
  """The training overrides of ``task`` in full or quick mode (fresh dicts)."""
  check_task(task)
  return json.loads(json.dumps(QUICK_BUDGET if quick else BUDGETS[task]))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_knob(knob) -> str:
  """Returns ``knob`` ("speed" or "stride") or raises a ValueError naming the knobs."""
  if knob not in KNOBS:
    raise ValueError(f"knob must be one of {KNOBS}, got {knob!r}")
  return knob


def check_values(knob: str, values) -> tuple:
  """The knob values as a tuple of numbers (ints for ``stride``); errors name ``values``."""
  if isinstance(values, str):
    values = [v for v in values.split(",") if v.strip()]
  values = tuple(values) if values is not None else ()
  if not values:
    raise ValueError(f"values must list at least one {knob}, got none")
  out = []
  for v in values:
    try:
      x = float(v)
    except (TypeError, ValueError):
      raise ValueError(f"values must be numbers, got {v!r}") from None
    if not math.isfinite(x):
      raise ValueError(f"values must be finite, got {v!r}")
    if knob == "stride":
      if x != int(x) or x < 1:
        raise ValueError(f"values of stride must be ints >= 1, got {v!r}")
      out.append(int(x))
    else:
      if x < 0:
        raise ValueError(f"values of speed must be >= 0, got {v!r}")
      out.append(x)
  if len(set(out)) != len(out):
    raise ValueError(f"values must not repeat, got {list(values)}")
  return tuple(out)


def check_schemes(schemes, task: str) -> tuple:
  """Canonical scheme names, plus the baselines of next-frame (computed, not trained)."""
  if isinstance(schemes, str):
    schemes = [s for s in schemes.split(",") if s.strip()]
  schemes = tuple(schemes)
  if not schemes:
    raise ValueError("schemes must name at least one scheme")
  out = []
  for s in schemes:
    if s in BASELINES:
      if task != "next-frame":
        raise ValueError(f"schemes: the baseline {s!r} exists only for next-frame")
      out.append(s)
    else:
      out.append(check_scheme(s))
  return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def run_config(
  task: str,
  scheme: str,
  knob: str,
  value,
  seed: int,
  *,
  steps: int | None = None,
  anchor: str = "newest",
  quick: bool = False,
  overrides: dict | None = None,
) -> training.TrainConfig:
  """The :class:`~sideways_lab.training.TrainConfig` of one run of a sweep.

  The task's budget (:func:`budget`), then ``overrides`` (fields of TrainConfig; ``model=`` /
  ``data=`` dicts), then the knob's value, ``anchor`` (next-frame) and ``steps``.
  """
  kw = budget(task, quick)
  for k, v in (overrides or {}).items():
    if k in ("model", "data"):
      kw.setdefault(k, {}).update(v)
    else:
      kw[k] = v
  data = kw.setdefault("data", {})
  data[check_knob(knob)] = value
  if task == "next-frame":
    # a synchronous network's newest frame is its input (n(t) = t): both anchors are one run
    data["anchor"] = anchor if mode_of(scheme) == "pipelined" else "input"
  if steps is not None:
    kw["steps"] = training.check_int(steps, "steps")
  kw["checkpoint_every"] = max(1, kw["steps"] // CHECKPOINTS_PER_RUN)
  kw["keep"] = CHECKPOINTS_PER_RUN + 1
  kw["log_every"] = max(1, kw["steps"] // 50)
  return training.default_config(task, scheme, seed=seed, **kw)


def run_key(config: training.TrainConfig) -> str:
  """A short stable hash of a run's configuration (its cache key)."""
  text = json.dumps(config.to_dict(), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _row_ids(config: training.TrainConfig, knob: str) -> dict:
  d = config.data
  return {
    "task": config.task,
    "scheme": config.scheme,
    "graph": graph_of(config.scheme),
    "method": method_of(config.scheme),
    "knob": knob,
    "value": getattr(d, knob),
    "seed": config.seed,
    "steps": config.steps,
    "anchor": d.anchor if config.task == "next-frame" else "",
  }


def _test_columns(trainer: training.Trainer, test: dict) -> dict:
  if trainer.task.kind == "classification":
    row = {m: test[m] for m in CLASSIFICATION_METRICS}
    names = trainer.task.class_names
    confusion = np.asarray(test["confusion"])
    totals = confusion.sum(axis=1)
    for i, name in enumerate(names):
      row[f"class_{name}"] = float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
    row["chance"] = trainer.task.chance
    return row
  return {m: test[m] for m in PREDICTION_METRICS}


def train_run(config: training.TrainConfig, run_dir, knob: str, progress: bool = False) -> dict:
  """Trains one run into ``run_dir`` (resuming a checkpoint an interrupted run left there) and
  returns its row: the ids of :data:`ID_COLUMNS`, the test metrics, the final training loss
  and the training time."""
  run_dir = Path(run_dir)
  resume = bool(ckpt.list_checkpoints(run_dir)) if run_dir.exists() else False
  result = training.train(config, run_dir, resume=resume, progress=progress)
  trainer = training.Trainer(config)
  losses = [h["loss"] for h in result.history if "loss" in h]
  row = _row_ids(config, knob)
  row.update(_test_columns(trainer, result.test))
  row.update(
    final_train_loss=losses[-1] if losses else float("nan"),
    train_time_s=round(result.train_time_s, 2),
    run=run_dir.name,
  )
  return row


# ---------------------------------------------------------------------------------------------
# Baselines of next-frame prediction
# ---------------------------------------------------------------------------------------------


def _timings(schemes) -> dict:
  """The distinct (graph, forward mode) pairs of ``schemes``, each with one scheme."""
  out = {}
  for s in schemes:
    if s in SCHEMES:
      out.setdefault((graph_of(s), mode_of(s)), s)
  return out


def mean_frame(trainer: training.Trainer, num_clips: int = MEAN_FRAME_CLIPS) -> np.ndarray:
  """The mean frame (H, W, C) of the run's training clips (its first batches)."""
  total, count, step = 0.0, 0, 0
  while count < num_clips:
    video, _, _ = trainer.batch(step)
    total = total + video.sum(axis=(0, 1))
    count += video.shape[0]
    step += 1
  return (total / (count * video.shape[1])).astype(np.float32)


def baseline_rows(config: training.TrainConfig, knob: str) -> list[dict]:
  """``copy_newest`` and ``mean_frame`` on the test clips and loss ticks of ``config``'s run.

  ``copy_newest`` predicts, at tick t, the newest frame that reaches the output of the run's
  pipeline (``x_t`` synchronous, ``x_{t-L+1}`` on a pipelined chain, newer through skips);
  ``mean_frame`` predicts the training clips' mean frame at every tick.
  """
  trainer = training.Trainer(config)
  task = trainer.task
  T = config.data.num_frames
  newest = np.clip(newest_frames(trainer.graph.edges, T, trainer.mode), 0, T - 1)
  V = schedule.loss_ticks(trainer.graph, T, task.mask, trainer.mode)
  mean = mean_frame(trainer)
  totals = {b: {} for b in BASELINES}
  count, i = 0, 0
  while count < config.eval_clips:
    b = min(64, config.eval_clips - count)
    video, targets, _ = task.batch(b, training.test_seed(config.seed, i))
    preds = {"copy_newest": video[:, newest], "mean_frame": np.broadcast_to(mean, video.shape)}
    for name, pred in preds.items():
      for k, v in frame_metrics(pred, targets, V).items():
        totals[name][k] = totals[name].get(k, 0.0) + v * b
    count += b
    i += 1
  rows = []
  for name in BASELINES:
    row = _row_ids(config, knob)
    row.update(scheme=name, method=trainer.mode)
    row.update({k: totals[name][k] / count for k in PREDICTION_METRICS})
    row.update(final_train_loss=float("nan"), train_time_s=0.0, run="")
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


def default_schemes(task: str) -> tuple:
  """All five schemes, plus the two baselines for next-frame."""
  return tuple(SCHEMES) + (BASELINES if task == "next-frame" else ())


def _read_rows(path: Path) -> list[dict] | None:
  """The rows a finished run wrote (``row.json``: a list of dicts), or None when absent or
  unreadable (the run is then redone)."""
  try:
    rows = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  ok = isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
  return rows if ok else None


def _order(df: pd.DataFrame) -> pd.DataFrame:
  first = [c for c in ID_COLUMNS if c in df.columns]
  return df[first + [c for c in df.columns if c not in first]]


def sweep(
  task: str,
  knob: str,
  values,
  *,
  schemes=None,
  seeds: int = 3,
  steps: int | None = None,
  anchor: str = "newest",
  quick: bool | None = None,
  out=None,
  runs=None,
  overrides: dict | None = None,
  progress: bool | None = None,
  log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
  """Trains every (scheme, knob value, seed) of ``task`` and returns one row per run.

  Args:
    task: "digits", "motion-classes" or "next-frame".
    knob: "speed" (pixels per frame) or "stride" (keep every s-th frame).
    values: the knob's values (a sequence, or a comma-separated string).
    schemes: schemes to train (default: all five; for next-frame also the baselines
      ``copy_newest`` and ``mean_frame``, computed once per value, seed and pipeline timing).
    seeds: seeds 0..seeds-1 per (scheme, value); the schemes of a seed share clips and init.
    steps: training steps (default: the task's budget, :data:`BUDGETS`).
    anchor: next-frame only, "newest" (the fair horizon) or "input" (latency counts).
    quick: tiny budgets (default: the SIDEWAYS_LAB_QUICK environment variable).
    out: a directory: each run's checkpoints and ``row.json`` go to ``out/runs/<run>/`` and the
      table to ``out/results.csv`` (rewritten after every run). Runs whose row exists are read
      back, not retrained; an interrupted run resumes from its checkpoint. None: a temporary
      directory, removed at the end.
    runs: where the runs go instead of ``out/runs`` (sweeps that share it share the runs of
      equal configurations, e.g. stride 1 of a stride sweep and the same speed of a speed
      sweep).
    overrides: fields of :class:`~sideways_lab.training.TrainConfig` on top of the budget.
    progress: a bar of runs done / total (default: when stderr is a terminal).

  Returns:
    A tidy DataFrame: columns :data:`ID_COLUMNS`, then ``accuracy, tick_accuracy, loss,
    class_<name>..., chance`` (classification) or ``mse, psnr, ssim`` (next-frame), then
    ``final_train_loss, train_time_s, run``.
  """
  task = check_task(task)
  knob = check_knob(knob)
  values = check_values(knob, values)
  schemes = check_schemes(default_schemes(task) if schemes is None else schemes, task)
  seeds = training.check_int(seeds, "seeds")
  if steps is not None:
    training.check_int(steps, "steps")
  if anchor not in ANCHORS:
    raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
  if knob == "speed" and task == "motion-classes" and min(values) <= 0:
    raise ValueError("values of speed must be > 0 for motion-classes (no motion, no class)")
  quick = is_quick(quick)
  log = log or (lambda msg: None)
  # every configuration first: bad overrides fail before anything trains
  jobs = _jobs(task, knob, values, schemes, seeds, steps, anchor, quick, overrides)
  tmp = tempfile.TemporaryDirectory(prefix="sideways_sweep_") if out is None else None
  out = Path(tmp.name if tmp is not None else out)
  if out.exists() and not out.is_dir():
    raise NotADirectoryError(f"out {str(out)!r} exists and is not a directory")
  runs = out / "runs" if runs is None else Path(runs)
  runs.mkdir(parents=True, exist_ok=True)
  out.mkdir(parents=True, exist_ok=True)
  rows: list[dict] = []
  bar = tqdm(
    total=len(jobs),
    disable=not (os.isatty(2) if progress is None else progress),
    desc=f"sweep {task}/{knob}",
    unit="run",
  )
  try:
    for kind, cfg in jobs:
      run_dir = runs / f"{kind}-{cfg.scheme}-seed{cfg.seed}-{run_key(cfg)}"
      for r in _run_rows(kind, cfg, run_dir, knob, log):
        if r["scheme"] in schemes:
          # a run is shared by sweeps of other knobs and anchors: label its row here
          r.update(
            knob=knob,
            value=getattr(cfg.data, knob),
            run=os.path.relpath(run_dir, out),
            anchor=anchor if task == "next-frame" else "",
          )
          rows.append(r)
      bar.update(1)
      ckpt.atomic_write_text(out / "results.csv", _order(pd.DataFrame(rows)).to_csv(index=False))
  finally:
    bar.close()
    if tmp is not None:
      tmp.cleanup()
  return _order(pd.DataFrame(rows))


def _jobs(task, knob, values, schemes, seeds, steps, anchor, quick, overrides) -> list:
  """``[("train" | "baseline", TrainConfig)]`` in the order of the sweep: value, seed, scheme;
  the baselines of next-frame once per value, seed and pipeline timing of the schemes."""
  trained = [s for s in schemes if s in SCHEMES]
  timings = _timings(trained or tuple(SCHEMES)).values() if set(schemes) & set(BASELINES) else ()
  jobs = []
  for value in values:
    for seed in range(seeds):
      for kind, group in (("train", trained), ("baseline", timings)):
        jobs += [
          (
            kind,
            run_config(
              task,
              s,
              knob,
              value,
              seed,
              steps=steps,
              anchor=anchor,
              quick=quick,
              overrides=overrides,
            ),
          )
          for s in group
        ]
  return jobs


def _run_rows(kind: str, config: training.TrainConfig, run_dir: Path, knob: str, log) -> list:
  """The rows of one job: read back from ``run_dir/row.json`` when it finished before, else
  trained (or, for baselines, computed) and written there atomically."""
  rows = _read_rows(run_dir / "row.json")
  if rows is None:
    if kind == "train":
      log(f"  training {run_dir.name} ({config.steps} steps)")
      rows = [train_run(config, run_dir, knob)]
    else:
      rows = baseline_rows(config, knob)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(run_dir / "row.json", json.dumps(rows, indent=1))
  return rows


def read_results(path) -> pd.DataFrame:
  """A sweep's ``results.csv`` (a file or its directory) as a DataFrame."""
  path = Path(path)
  if path.is_dir():
    path = path / "results.csv"
  if not path.exists():
    raise FileNotFoundError(f"no sweep results at {str(path)!r} (run `sideways-lab sweep`)")
  return pd.read_csv(
    path,
    dtype={"anchor": str},
    keep_default_na=False,
    na_values={
      c: ["", "nan", "NaN"]
      for c in (
        "accuracy",
        "tick_accuracy",
        "loss",
        "mse",
        "psnr",
        "ssim",
        "final_train_loss",
        "chance",
      )
    },
  )


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def summarize(df: pd.DataFrame, metric: str, by=("scheme", "value")) -> pd.DataFrame:
  """Mean, standard deviation, min, max and count of ``metric`` over seeds, per ``by``."""
  by = list(by)
  g = df.groupby(by, sort=False)[metric]
  return g.agg(["mean", "std", "min", "max", "count"]).reset_index()


def paired_difference(df: pd.DataFrame, a: str, b: str, metric: str, by=("value",)) -> pd.DataFrame:
  """``metric(a) - metric(b)`` per seed (runs of one seed share clips and init), then its
  mean, std, min and max over seeds, per ``by``. A difference smaller than its spread is no
  difference."""
  by = list(by)
  keys = by + ["seed"]
  left = df[df.scheme == a].set_index(keys)[metric]
  right = df[df.scheme == b].set_index(keys)[metric]
  diff = (left - right).dropna().rename("diff").reset_index()
  if diff.empty:
    raise ValueError(f"no paired runs of {a!r} and {b!r} with {metric!r}")
  return (
    diff.groupby(by, sort=False)["diff"].agg(["mean", "std", "min", "max", "count"]).reset_index()
  )


# ---------------------------------------------------------------------------------------------
# Predictions of trained runs
# ---------------------------------------------------------------------------------------------


def predictions(runs, num_clips: int = 1):
  """Predicted frames of trained next-frame runs on the same held-out clips.

  ``runs`` maps a scheme to a run directory (a :func:`sideways_lab.experiments.sweep` run).
  Returns ``(video (N, T, H, W, C), targets like video, {scheme: prediction like video},
  {scheme: loss ticks (T,) bool}, {scheme: (T,) index of the frame each tick targets})``;
  every run draws the test clips of its seed, which runs of one seed share (``targets`` are
  the first run's).
  """
  preds, ticks, index, video, targets = {}, {}, {}, None, None
  for s, run_dir in runs.items():
    config, trainer, params, _ = training.load_run(run_dir)
    video, tgt, _ = trainer.task.batch(num_clips, training.test_seed(config.seed, 0))
    outputs, _ = engine.forward(trainer.graph, params, video, trainer.mode)
    ticks[s] = schedule.loss_ticks(trainer.graph, video.shape[1], trainer.task.mask, trainer.mode)
    preds[s] = np.clip(np.asarray(outputs), 0.0, 1.0)
    index[s] = trainer.task.target_index
    targets = tgt if targets is None else targets
  return video, targets, preds, ticks, index


def runs_at(df: pd.DataFrame, value, seed: int = 0) -> dict:
  """``{scheme: run dir}`` of the trained runs of ``df`` at knob ``value`` and ``seed``."""
  rows = df[np.isclose(df.value, value) & (df.seed == seed) & df.scheme.isin(SCHEMES)]
  return {r.scheme: r.run for r in rows.itertuples()}


# ---------------------------------------------------------------------------------------------
# Alignment of the trained models
# ---------------------------------------------------------------------------------------------

#: Clips of one batch of the expected gradient, and single clips per checkpoint.
EXPECTED_CLIPS = 64
SINGLE_CLIPS = 8


def _run_checkpoints(run_dir: Path, trainer: training.Trainer):
  """``[(step, params)]``: the initial parameters, then every checkpoint of the run."""
  params, _ = trainer.init()
  out = [(0, params)]
  for step, path in ckpt.list_checkpoints(run_dir):
    loaded, _, _ = ckpt.load(path, params)
    out.append((int(step), jax.tree_util.tree_map(jnp.asarray, loaded)))
  return out


def gradient_alignment(
  trainer: training.Trainer,
  params,
  seed: int,
  num_clips: int = EXPECTED_CLIPS,
  single_clips: int = SINGLE_CLIPS,
) -> list[dict]:
  """Per-unit cosine between the run's approximate gradient (``sideways``) and the exact one
  (``pipelined_exact``) of the same graph at ``params``.

  ``kind="expected"``: the gradients of the mean loss over ``num_clips`` clips (the expected
  gradient); ``kind="clip"``: the mean (and ``cosine_std``) of the per-clip cosines over
  ``single_clips`` clips. Clips come from the run's analysis stream (never trained on).
  Returns rows ``{"kind", "unit", "cosine", "cosine_std"}`` (units 1..L).
  """
  task, graph = trainer.task, trainer.graph
  video, targets, _ = task.batch(num_clips, training.data_seed(seed, training.ANALYSIS_STREAM, 0))

  def cos(v, y):
    g = [
      engine.gradients(graph, params, v, y, task.loss_fn, m, mask=task.mask)[0]
      for m in ("sideways", "pipelined_exact")
    ]
    return grad_cosine(*g)

  rows = [
    {"kind": "expected", "unit": k + 1, "cosine": float(c), "cosine_std": 0.0}
    for k, c in enumerate(cos(video, targets))
  ]
  per_clip = np.stack([cos(video[i : i + 1], targets[i : i + 1]) for i in range(single_clips)])
  rows += [
    {
      "kind": "clip",
      "unit": k + 1,
      "cosine": float(np.nanmean(per_clip[:, k])),
      "cosine_std": float(np.nanstd(per_clip[:, k])),
    }
    for k in range(per_clip.shape[1])
  ]
  return rows


def alignment(
  results_dir,
  *,
  value=None,
  schemes=tuple(EXACT_TWIN),
  num_clips: int = EXPECTED_CLIPS,
  single_clips: int = SINGLE_CLIPS,
  progress: bool | None = None,
) -> pd.DataFrame:
  """Alignment along training of a sweep's own runs of the approximate ``schemes``.

  For every run of ``results_dir`` (a :func:`sweep` directory) whose scheme is in ``schemes``
  (and whose knob value is ``value``, if given), at its initial parameters and at each saved
  checkpoint: :func:`gradient_alignment`. Returns a tidy DataFrame with columns ``task,
  scheme, value, seed, step, kind, unit, cosine, cosine_std``. A negative cosine means the
  estimate points away from the exact gradient: it is reported as it is.
  """
  df = read_results(results_dir)
  runs = df[df.scheme.isin(schemes) & (df.run != "")]
  if value is not None:
    runs = runs[np.isclose(runs.value.astype(float), float(value))]
  if runs.empty:
    raise ValueError(
      f"no runs of {tuple(schemes)} in {str(results_dir)!r}"
      + (f" at value {value}" if value is not None else "")
    )
  if progress is None:
    progress = os.isatty(2)
  rows = []
  for r in tqdm(list(runs.itertuples()), disable=not progress, desc="alignment", unit="run"):
    run_dir = Path(results_dir) / r.run
    config = training.TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    trainer = training.Trainer(config)
    for step, params in _run_checkpoints(run_dir, trainer):
      for a in gradient_alignment(trainer, params, config.seed, num_clips, single_clips):
        rows.append(
          {
            "task": config.task,
            "scheme": config.scheme,
            "value": r.value,
            "seed": config.seed,
            "step": step,
            **a,
          }
        )
  return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The claims report
# ---------------------------------------------------------------------------------------------

#: Sideways is "close to BP" when its paired accuracy gap is at most this.
CLOSE = 0.05
#: Skip-Sideways "learns what Sideways cannot" on motion classes: at least this much higher.
MOTION_MARGIN = 0.5

#: The papers' claims (docs/design.md §9).
CLAIMS = {
  "C1": "Sideways trains close to BP on smooth video (digit identity)",
  "C2": "Sideways degrades as the video gets less smooth (speed, frame stride)",
  "C3": "Skip-Sideways integrates time: it learns motion classes that Sideways cannot",
  "C4": "Skip-Sideways predicts future frames better than Sideways",
}
REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_MEASURED = (
  "reproduced",
  "partly",
  "not reproduced",
  "not measured",
)


@dataclasses.dataclass
class Claim:
  """One row of the claims report."""

  id: str
  claim: str
  measurement: str
  numbers: str
  verdict: str
  why: str = ""


def _pm(stats, digits: int = 3) -> str:
  """``mean ± std (n seeds)`` of a summary row."""
  std = 0.0 if pd.isna(stats["std"]) else stats["std"]
  return f"{stats['mean']:+.{digits}f} ± {std:.{digits}f}"


def _acc(df, scheme, value) -> str:
  s = summarize(df[df.scheme == scheme], "accuracy", by=["value"])
  r = s[np.isclose(s.value, value)].iloc[0]
  std = 0.0 if pd.isna(r["std"]) else r["std"]
  return f"{r['mean']:.3f} ± {std:.3f}"


def _diff_at(df, a, b, metric, value):
  d = paired_difference(df, a, b, metric)
  return d[np.isclose(d.value, value)].iloc[0]


def _significant(row) -> bool:
  """A paired difference larger than its own spread over seeds."""
  std = 0.0 if pd.isna(row["std"]) else row["std"]
  return abs(row["mean"]) > std


def claim_c1(digits: pd.DataFrame) -> Claim:
  """C1: Sideways trains close to BP on smooth video (digit identity, the smoothest speed)."""
  v = float(digits.value.min())
  gap = _diff_at(digits, "sideways", "backprop", "accuracy", v)
  delay = _diff_at(digits, "sideways_exact", "backprop", "accuracy", v)
  estimate = _diff_at(digits, "sideways", "sideways_exact", "accuracy", v)
  numbers = (
    f"speed {v:g}: BP {_acc(digits, 'backprop', v)}, Sideways "
    f"{_acc(digits, 'sideways', v)}, exact twin {_acc(digits, 'sideways_exact', v)}; "
    f"paired Sideways − BP {_pm(gap)} (delay: exact twin − BP {_pm(delay)}; "
    f"estimate: Sideways − exact twin {_pm(estimate)})"
  )
  if gap["mean"] >= -CLOSE or not _significant(gap):
    verdict, why = REPRODUCED, ""
  elif gap["mean"] >= -3 * CLOSE:
    verdict = PARTLY
  else:
    verdict = NOT_REPRODUCED
  if verdict != REPRODUCED:
    part = "the gradient estimate" if estimate["mean"] < delay["mean"] else "the pipeline's delay"
    why = (
      f"the gap exceeds {CLOSE:.2f}; most of it is {part} (paired differences above, "
      f"same clips and initial parameters per seed)"
    )
  return Claim(
    "C1",
    CLAIMS["C1"],
    f"test clip accuracy after training, smoothest speed of the digits sweep, "
    f"{digits.seed.nunique()} seeds",
    numbers,
    verdict,
    why,
  )


def _at(df, scheme, value, metric="accuracy") -> pd.Series:
  """``metric`` of ``scheme`` at knob ``value``, indexed by seed."""
  return df[(df.scheme == scheme) & np.isclose(df.value, value)].set_index("seed")[metric]


def _stats(x: pd.Series) -> dict:
  x = x.dropna()
  return {"mean": float(x.mean()), "std": float(x.std()) if len(x) > 1 else 0.0}


def _degrades(df) -> tuple[bool, str]:
  """Whether the estimate's cost (Sideways − its exact twin, paired by seed) grows from the
  smoothest to the roughest setting by more than its spread over seeds."""
  lo, hi = float(df.value.min()), float(df.value.max())
  gap_lo = _at(df, "sideways", lo) - _at(df, "sideways_exact", lo)
  gap_hi = _at(df, "sideways", hi) - _at(df, "sideways_exact", hi)
  widening = _stats(gap_lo - gap_hi)
  drops = {
    s: _stats(_at(df, s, lo) - _at(df, s, hi)) for s in ("sideways", "sideways_exact", "backprop")
  }
  knob = df.knob.iloc[0]
  text = (
    f"{knob} {lo:g} → {hi:g}: Sideways − exact twin {_pm(_stats(gap_lo))} → "
    f"{_pm(_stats(gap_hi))} (widens by {_pm(widening)}); accuracy drop Sideways "
    f"{_pm(drops['sideways'])}, exact twin {_pm(drops['sideways_exact'])}, BP "
    f"{_pm(drops['backprop'])}"
  )
  return widening["mean"] > widening["std"], text


def claim_c2(speed: pd.DataFrame, stride: pd.DataFrame | None) -> Claim:
  """C2: Sideways degrades as the video gets less smooth (speed, frame stride).

  The control is Sideways' exact twin (same graph, same delay, same clips and initial
  parameters per seed): the claim holds where the estimate's cost, Sideways − exact twin,
  grows from the smoothest to the roughest video by more than its spread over seeds.
  """
  results = [_degrades(speed)] + ([_degrades(stride)] if stride is not None else [])
  numbers = "; ".join(t for _, t in results)
  hits = sum(ok for ok, _ in results)
  verdict = REPRODUCED if hits == len(results) else PARTLY if hits else NOT_REPRODUCED
  why = (
    ""
    if verdict == REPRODUCED
    else (
      "the gap between Sideways and its exact twin does not widen beyond the spread over "
      "seeds in " + ("any sweep" if not hits else "every sweep")
    )
  )
  return Claim(
    "C2",
    CLAIMS["C2"],
    "digits: paired accuracy gap Sideways − exact twin at the "
    "smoothest and the roughest setting (the exact twin controls for the data and the "
    "pipeline's delay), and each scheme's own drop",
    numbers,
    verdict,
    why,
  )


def claim_c3(motion: pd.DataFrame) -> Claim:
  """C3: Skip-Sideways integrates time: it learns motion classes that Sideways cannot."""
  v = float(motion.value.iloc[0])
  gain = _diff_at(motion, "skip_sideways", "sideways", "accuracy", v)
  twin = _diff_at(motion, "skip_sideways", "skip_exact", "accuracy", v)
  chance = float(motion.chance.dropna().iloc[0])
  numbers = (
    f"chance {chance:.3f}; BP {_acc(motion, 'backprop', v)}, Sideways "
    f"{_acc(motion, 'sideways', v)}, Skip-Sideways {_acc(motion, 'skip_sideways', v)}, "
    f"its exact twin {_acc(motion, 'skip_exact', v)}; paired Skip − Sideways "
    f"{_pm(gain)}, Skip − exact twin {_pm(twin)}"
  )
  if gain["mean"] >= MOTION_MARGIN:
    verdict, why = REPRODUCED, ""
  elif gain["mean"] > 0 and _significant(gain):
    verdict = PARTLY
    why = f"Skip-Sideways beats Sideways by less than {MOTION_MARGIN}"
  else:
    verdict, why = NOT_REPRODUCED, "Skip-Sideways does not beat Sideways beyond the spread"
  cols = [c for c in motion.columns if c.startswith("class_")]
  if cols and (verdict != REPRODUCED or twin["mean"] < -CLOSE):
    per = motion[motion.scheme.isin(["skip_sideways", "skip_exact"])].groupby("scheme")[cols]
    gaps = (per.mean().loc["skip_exact"] - per.mean().loc["skip_sideways"]).sort_values()
    worst = ", ".join(f"{c[6:]} {g:+.2f}" for c, g in gaps[::-1].head(3).items())
    why = (why + "; " if why else "") + f"largest per-class gaps to the exact twin: {worst}"
  return Claim(
    "C3",
    CLAIMS["C3"],
    f"motion classes, test clip accuracy at speed {v:g}, {motion.seed.nunique()} seeds",
    numbers,
    verdict,
    why,
  )


def claim_c4(next_frame: dict) -> Claim:
  """C4: Skip-Sideways predicts future frames better than Sideways (next-frame MSE).

  Tested at each anchor: ``"input"`` (the pipeline's latency counts: Skip-Sideways' skips
  bring newer frames to the output) and ``"newest"`` (every scheme forecasts the same horizon
  from what it has seen: only the gradient estimate differs); beside the copy baseline of the
  skip pipeline."""
  parts, wins, losses, short_of_copy = [], [], [], []
  for anchor, df in next_frame.items():
    v = float(df.value.min())
    d = _diff_at(df, "skip_sideways", "sideways", "mse", v)
    mse = summarize(df, "mse", by=["scheme", "value"])
    at = mse[np.isclose(mse.value, v)].set_index("scheme")["mean"]
    copy = df[(df.scheme == "copy_newest") & np.isclose(df.value, v)]
    copy_mse = float(copy[copy.graph == "skip"].mse.mean()) if len(copy) else float("nan")
    parts.append(
      f"anchor {anchor}, speed {v:g}: MSE Skip-Sideways {at['skip_sideways']:.4f}, "
      f"Sideways {at['sideways']:.4f}, BP {at['backprop']:.4f}, copy-newest "
      f"(skip pipeline) {copy_mse:.4f}; paired Skip − Sideways {_pm(d, 4)}"
    )
    if _significant(d):
      (wins if d["mean"] < 0 else losses).append(anchor)
    if not at["skip_sideways"] < copy_mse:
      short_of_copy.append(anchor)
  reasons = []
  if losses:
    reasons.append(f"with anchor {', '.join(losses)} Skip-Sideways' MSE is higher than Sideways'")
  if len(wins) + len(losses) < len(next_frame):
    reasons.append("a difference within the spread over seeds at another anchor")
  if short_of_copy:
    reasons.append(
      f"Skip-Sideways does not beat copying the newest frame it sees (anchor "
      f"{', '.join(short_of_copy)})"
    )
  if len(wins) == len(next_frame) and not short_of_copy:
    verdict = REPRODUCED
  elif wins:
    verdict = PARTLY
  else:
    verdict = NOT_REPRODUCED
  why = "; ".join(reasons) if verdict != REPRODUCED else ""
  if wins and verdict != REPRODUCED:
    why = f"lower MSE with anchor {', '.join(wins)} only; " + why
  return Claim(
    "C4",
    CLAIMS["C4"],
    "next-frame prediction, test MSE at the smoothest speed, both anchors, with the "
    "copy-newest baseline",
    "; ".join(parts),
    verdict,
    why,
  )


def claims(results: dict) -> list[Claim]:
  """The claims C1–C4 from the figures' sweeps: ``results`` maps ``"digits-speed"``,
  ``"digits-stride"``, ``"motion-classes"``, ``"next-frame-newest"``, ``"next-frame-input"``
  to DataFrames of :func:`sweep`; a claim whose sweep is missing is "not measured"."""
  digits, motion = results.get("digits-speed"), results.get("motion-classes")
  next_frame = {
    a: results[f"next-frame-{a}"] for a in ANCHORS if results.get(f"next-frame-{a}") is not None
  }

  def unmeasured(cid: str, what: str) -> Claim:
    return Claim(cid, CLAIMS[cid], "", "", NOT_MEASURED, f"no {what} sweep")

  return [
    claim_c1(digits) if digits is not None else unmeasured("C1", "digits-speed"),
    (
      claim_c2(digits, results.get("digits-stride"))
      if digits is not None
      else unmeasured("C2", "digits-speed")
    ),
    claim_c3(motion) if motion is not None else unmeasured("C3", "motion-classes"),
    claim_c4(next_frame) if next_frame else unmeasured("C4", "next-frame"),
  ]


def claims_report(claim_list: Sequence[Claim], header: str = "") -> str:
  """The claims as a Markdown table (``figures/claims.md``)."""
  lines = ["# Claims of the papers, tested", ""]
  if header:
    lines += [header, ""]
  lines += [
    "| claim | measurement | numbers (mean ± std over seeds) | verdict | why |",
    "| --- | --- | --- | --- | --- |",
  ]
  for c in claim_list:
    lines.append(
      f"| **{c.id}** {c.claim} | {c.measurement} | {c.numbers} | **{c.verdict}** | {c.why} |"
    )
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line: sideways-lab sweep
# ---------------------------------------------------------------------------------------------


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of ``sideways-lab sweep``."""
  parser.add_argument("--task", required=True, help="digits, motion-classes or next-frame")
  parser.add_argument("--knob", required=True, help="speed (pixels per frame) or stride")
  parser.add_argument("--values", required=True, help="comma-separated knob values, e.g. 0.5,1,2")
  parser.add_argument(
    "--schemes",
    default=None,
    help="comma-separated schemes (default: backprop, sideways, sideways_exact, "
    "skip_sideways, skip_exact; next-frame adds copy_newest, mean_frame)",
  )
  parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
  parser.add_argument(
    "--steps", type=int, default=None, help="training steps per run (default: the task's budget)"
  )
  parser.add_argument(
    "--anchor", default="newest", help="next-frame: newest (default) or input (latency counts)"
  )
  parser.add_argument("--quick", action="store_true", help="tiny budgets (seconds per run)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  parser.add_argument("--out", required=True, help="directory of results.csv and the runs")


def run_sweep(args: argparse.Namespace) -> int:
  """``sideways-lab sweep``: runs :func:`sweep` and prints the mean ± std table."""
  df = sweep(
    args.task,
    args.knob,
    args.values,
    schemes=args.schemes,
    seeds=args.seeds,
    steps=args.steps,
    anchor=args.anchor,
    quick=args.quick or None,
    out=args.out,
    progress=False if args.no_progress else None,
    log=print,
  )
  metric = "accuracy" if "accuracy" in df.columns else "mse"
  table = summarize(df, metric).pivot(index="scheme", columns="value", values="mean")
  print(f"{metric} (mean over {df.seed.nunique()} seeds):")
  print(table.to_string(float_format=lambda x: f"{x:.4f}"))
  print(f"wrote {Path(args.out) / 'results.csv'} ({len(df)} rows)")
  return 0
