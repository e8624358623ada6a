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
* :func:`alignment_along_training` measures, at the checkpoints of a sweep's own runs, the
  per-unit cosine between the approximate gradient and the exact gradient of the same graph,
  for single clips and for the expected gradient (mean over many clips).

* every run records its learning curve (:func:`learning_curve`; ``DIR/curves.csv``) and
  whether it reached its plateau (:func:`plateau_trend`, :func:`has_converged`: the
  ``converged`` column), so that no verdict is read from an under-trained run.

:mod:`sideways_lab.claims` turns these tables into verdicts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sideways_lab import checkpoint as ckpt
from sideways_lab import engine, provenance, schedule, training
from sideways_lab.models import (
  CLASSIFICATION_TASKS,
  EXACT_TWIN,
  SCHEMES,
  check_scheme,
  check_task,
  graph_of,
  method_of,
  mode_of,
)
from sideways_lab.tasks import ANCHORS, frame_metrics, grad_cosine, newest_frames
from sideways_lab.training import is_quick

__all__ = [
  "KNOBS",
  "BASELINES",
  "ID_COLUMNS",
  "CODE_COLUMNS",
  "code_versions",
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
  "frames_by_target",
  "add_skill",
  "next_frame_table",
  "gradient_alignment",
  "alignment_along_training",
  "CURVE_COLUMNS",
  "compare",
  "read_curves",
  "plateau_trend",
  "has_converged",
  "learning_curve",
  "stash_memory",
  "stash_label",
  "stash_subsets",
  "parse_stash",
  "check_seeds",
]

KNOBS = ("speed", "stride", "stash")
BASELINES = ("copy_newest", "mean_frame")
#: Columns every row of :func:`sweep` has (then the metric columns of the task).
ID_COLUMNS = (
  "task",
  "scheme",
  "graph",
  "method",
  "readout",
  "knob",
  "value",
  "seed",
  "steps",
  "anchor",
)
#: Columns of every row of :func:`sweep` that say which code computed it: ``code``, the
#: ``source`` of its :func:`~sideways_lab.provenance.code_identity` ("" for a row cached before
#: runs recorded it), ``commit``, the ``git_commit`` of the process that trained it ("" outside
#: a checkout), and ``other_code``: True where the sweep reused a run of code other than its own
#: (``reuse_other_code=True``).
CODE_COLUMNS = ("code", "commit", "other_code")
#: Columns of a learning curve row after the run's ids: the step, "train" (the training loss
#: every ``log_every`` steps) or "test" (held-out metrics at every evaluation), the metric and
#: its value ``y``.
CURVE_COLUMNS = ("step", "split", "metric", "y")
CLASSIFICATION_METRICS = ("accuracy", "tick_accuracy", "loss")
PREDICTION_METRICS = ("mse", "psnr", "ssim")
#: Clips of training data averaged into the ``mean_frame`` baseline.
MEAN_FRAME_CLIPS = 256
#: Checkpoints per run kept by a sweep (for :func:`alignment_along_training`).
CHECKPOINTS_PER_RUN = 4
#: Evaluations on held-out clips along a run (the test points of its learning curve).
EVALUATIONS_PER_RUN = 8
#: Training-loss points of a learning curve.
LOG_POINTS_PER_RUN = 100


def budget(task: str, quick: bool = False) -> dict:
  """The configuration every scheme of ``task`` is trained with in full or quick mode
  (:data:`sideways_lab.training.TASK_DEFAULTS` / :data:`~sideways_lab.training.QUICK`), as
  the dict the figures' manifest records (no scheme or seed)."""
  d = training.default_config(check_task(task), quick=quick).to_dict()
  for k in ("scheme", "seed"):
    d.pop(k)
  return d


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_knob(knob) -> str:
  """Returns ``knob`` ("speed" or "stride") or raises a ValueError naming the knobs."""
  if knob not in KNOBS:
    raise ValueError(f"knob must be one of {KNOBS}, got {knob!r}")
  return knob


def stash_label(stash) -> str:
  """The knob value of a stash: its depths ("0", "2", "full", "carry", per unit "6-0-2" or
  "6-carry-0"), then ``@bfloat16`` or ``@int8`` for a compressed store
  (:class:`~sideways_lab.schedule.Stash`): e.g. "full@int8".
  :func:`parse_stash` reads it back."""
  stash = training.check_stash(stash)
  if isinstance(stash, schedule.Stash):
    return f"{stash_label(stash.depths)}@{stash.dtype}"
  if isinstance(stash, tuple):
    return "-".join(str(s) for s in stash)
  return str(stash)


def stash_subsets(graph) -> tuple[str, ...]:
  """Every per-unit stash allocation of ``graph`` (a UnitGraph or its edges) in which each unit
  1..L-1 keeps its full exact lag ``r_k`` (docs/design.md §5) or nothing, as knob labels, from
  the fewest stashed units to the most; the empty and the full allocation are left out (they
  are ``stash=0`` and ``"full"``)."""
  r = schedule.exact_lags(graph)[1:-1]
  labels = []
  for n in range(1, len(r)):
    for keep in itertools.combinations(range(len(r)), n):
      labels.append(stash_label(tuple(r[k] if k in keep else 0 for k in range(len(r)))))
  return tuple(labels)


def parse_stash(value) -> int | str | tuple | schedule.Stash:
  """A stash knob value (:func:`stash_label`: "0", 2, "full", "carry", "6-0-2", "full@int8";
  or what ``sl.gradients`` takes) as ``sl.gradients`` takes it."""
  if not isinstance(value, (str, int, np.integer)):
    return training.check_stash(value)
  text, dtype = str(value).strip(), schedule.STASH_DTYPES[0]
  if "@" in text:
    text, dtype = text.split("@", 1)
  parts = text.split("-")
  try:
    depths = tuple(p if p in (schedule.FULL, schedule.CARRY) else int(p) for p in parts)
  except ValueError:
    raise ValueError(
      f'values of stash must be ints >= 0, "full", "carry" or per-unit depths like "6-0-2", '
      f'with "@bfloat16" or "@int8" for a compressed store, got {value!r}'
    ) from None
  if len(depths) > 1 and schedule.FULL in depths:
    raise ValueError(f'"full" is a whole stash, not a unit\'s depth, got {value!r}')
  depths = depths[0] if len(depths) == 1 else depths
  return training.check_stash(schedule.Stash(depths, dtype))


def check_values(knob: str, values) -> tuple:
  """The knob values as a tuple: numbers for ``speed``, ints for ``stride``, labels
  (:func:`stash_label`) for ``stash``; errors name ``values``."""
  if isinstance(values, str):
    values = [v for v in values.split(",") if v.strip()]
  values = tuple(values) if values is not None else ()
  if not values:
    raise ValueError(f"values must list at least one {knob}, got none")
  out = []
  for v in values:
    if knob == "stash":
      out.append(stash_label(parse_stash(v)))
      continue
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

  The task's configuration (:func:`budget`), then ``overrides`` (fields of TrainConfig;
  ``model=`` / ``data=`` dicts), then the knob's value, ``anchor`` (next-frame) and
  ``steps``.

  Two knob values are the same run as another configuration and are written as that one, so
  that sweeps share the run (the cache key is the configuration):

  * ``stride`` s on moving digits (digits, next-frame) shows the clips of speed ``s·v`` at
    stride 1 (to float rounding, tests/test_experiments.py), so it is trained as that speed;
  * ``stash="full"`` of the ``sideways`` method is the ``pipelined_exact`` gradient
    (docs/design.md §5, a theorem the tests pin), so it is the scheme's exact twin (a full
    stash in bfloat16 or int8 is not, and is trained as itself; so is ``"carry"``, equal to
    the twin to float rounding).
  """
  kw = json.loads(json.dumps(overrides or {}))
  data = kw.setdefault("data", {})
  knob = check_knob(knob)
  if knob == "stash":
    stash = parse_stash(value)
    if stash == schedule.FULL and scheme in EXACT_TWIN:
      scheme, stash = EXACT_TWIN[scheme], 0
    kw["stash"] = stash
  elif knob == "stride" and task != "motion-classes":
    base = data.get("speed", training.default_config(task).data.speed)
    data["speed"], data["stride"] = base * value, 1
  else:
    data[knob] = value
  if task == "next-frame":
    # a synchronous network's newest frame is its input (n(t) = t): both anchors are one run
    data["anchor"] = anchor if mode_of(scheme) == "pipelined" else "input"
  if steps is not None:
    kw["steps"] = training.check_int(steps, "steps")
  n = kw.get("steps", training.default_config(task, quick=quick).steps)
  kw["checkpoint_every"] = max(1, n // CHECKPOINTS_PER_RUN)
  kw["eval_every"] = max(1, n // EVALUATIONS_PER_RUN)
  kw["keep"] = CHECKPOINTS_PER_RUN + 1
  kw["log_every"] = max(1, n // LOG_POINTS_PER_RUN)
  return training.default_config(task, scheme, quick=quick, seed=seed, **kw)


def run_key(config: training.TrainConfig) -> str:
  """A short stable hash of a run's configuration (its cache key)."""
  text = json.dumps(config.to_dict(), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def _row_ids(config: training.TrainConfig, knob: str) -> dict:
  d = config.data
  value = stash_label(config.stash) if knob == "stash" else getattr(d, knob)
  return {
    "task": config.task,
    "scheme": config.scheme,
    "graph": graph_of(config.scheme),
    "method": method_of(config.scheme),
    "readout": config.model.readout if config.task in CLASSIFICATION_TASKS else "",
    "knob": knob,
    "value": value,
    "seed": config.seed,
    "steps": config.steps,
    "anchor": d.anchor if config.task == "next-frame" else "",
    **({"horizon": d.horizon} if config.task == "next-frame" else {}),
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


# ---------------------------------------------------------------------------------------------
# Convergence (docs/design.md §9)
# ---------------------------------------------------------------------------------------------

#: The last part of a run on which convergence is judged (a fifth).
PLATEAU_FRACTION = 0.2
#: A run has converged when the trend of its training loss over the last fifth changes the
#: loss by less than this (relative), or by less than twice this within noise.
PLATEAU_TOLERANCE = 0.05
#: The trend is noise when its slope is within this many standard errors of zero.
PLATEAU_T = 2.0


def plateau_trend(steps, losses, fraction: float = PLATEAU_FRACTION) -> tuple[float, float]:
  """The trend of the training loss over the last ``fraction`` of a run: ``(change, t)``.

  A least-squares line ``loss ≈ a + b·step`` through the losses logged at steps in
  ``(S(1 − f), S]`` (S the last step); ``change = −b·f·S / mean(loss)`` is the relative fall
  the trend makes over that window (positive: still falling, negative: rising) and
  ``t = b / se(b)`` its t-statistic. ``(nan, nan)`` with fewer than 4 points.
  """
  steps, losses = np.asarray(steps, float), np.asarray(losses, float)
  if steps.size == 0:
    return float("nan"), float("nan")
  last = steps.max()
  keep = (steps > last * (1 - fraction)) & np.isfinite(losses)
  x, y = steps[keep], losses[keep]
  if x.size < 4 or not y.mean():
    return float("nan"), float("nan")
  xc = x - x.mean()
  slope = float((xc * (y - y.mean())).sum() / (xc**2).sum())
  residual = y - y.mean() - slope * xc
  se = float(np.sqrt((residual**2).sum() / (x.size - 2) / (xc**2).sum()))
  change = -slope * fraction * last / float(y.mean())
  t = slope / se if se > 0 else (0.0 if slope == 0 else np.copysign(np.inf, slope))
  return float(change), float(t)


def has_converged(
  change: float, t: float, tolerance: float = PLATEAU_TOLERANCE, t_max: float = PLATEAU_T
) -> bool:
  """The convergence rule of docs/design.md §9: over the last fifth of the run the training
  loss's trend changes it by less than ``tolerance`` (5 %), or by less than twice that while
  the trend is not distinguishable from noise (``|t| < t_max``). A run still falling, or
  rising, beyond that is not at its plateau; so is a run too short to judge (NaN)."""
  if not np.isfinite(change):
    return False
  return bool(abs(change) < tolerance or (abs(t) < t_max and abs(change) < 2 * tolerance))


def learning_curve(history: Sequence[dict]) -> list[dict]:
  """Tidy rows ``{step, split, metric, y}`` of a run's history (the records of its
  ``metrics.jsonl``): the training loss at every logged step (split "train") and the scalar
  held-out metrics at every evaluation and at the end (split "test")."""
  rows = []
  for h in history:
    if "eval" in h or "test" in h:
      metrics = h.get("eval", h.get("test"))
      rows += [
        {"step": h["step"], "split": "test", "metric": k, "y": float(v)}
        for k, v in metrics.items()
        if isinstance(v, (int, float))
      ]
    elif "loss" in h:
      rows.append({"step": h["step"], "split": "train", "metric": "loss", "y": float(h["loss"])})
  # the final evaluation repeats the last periodic one when they fall on the same step
  return list({(r["step"], r["split"], r["metric"]): r for r in rows}.values())


def stash_memory(trainer: training.Trainer) -> dict:
  """The stash a run's gradient keeps: ``stash_frames`` (Σ_k s_k of docs/design.md §5) and
  ``stash_bytes`` (:func:`sideways_lab.engine.stash_bytes`: what the stash adds to Sideways'
  pipeline state for one training batch); both 0 for ``backprop``."""
  if trainer.method not in ("sideways", "pipelined_exact"):
    return {"stash_frames": 0, "stash_bytes": 0}
  stash = "full" if trainer.method == "pipelined_exact" else trainer.config.stash
  c = trainer.config
  params, _ = trainer.init()
  frame = jax.ShapeDtypeStruct((c.batch_size, *c.data.size, 1), jnp.float32)
  return {
    "stash_frames": int(schedule.stash_frames(trainer.graph, stash)),
    "stash_bytes": int(engine.stash_bytes(trainer.graph, params, frame, stash)),
  }


def train_run(config: training.TrainConfig, run_dir, knob: str, progress: bool = False) -> dict:
  """Trains one run into ``run_dir`` (resuming a checkpoint an interrupted run left there) and
  returns its row: the ids of :data:`ID_COLUMNS`, the test metrics, the final training loss,
  the convergence verdict (``plateau_change``, ``plateau_t``, ``converged``: :func:`plateau_trend`,
  :func:`has_converged`), the stash memory and the
  training time. The learning curve (:func:`learning_curve`) goes to ``run_dir/curve.json``.
  """
  run_dir = Path(run_dir)
  resume = bool(ckpt.list_checkpoints(run_dir)) if run_dir.exists() else False
  result = training.train(config, run_dir, resume=resume, progress=progress)
  trainer = training.Trainer(config)
  steps, losses = training.history(run_dir)
  change, t = plateau_trend(steps, losses)
  row = _row_ids(config, knob)
  row.update(_test_columns(trainer, result.test))
  row.update(
    final_train_loss=float(losses[-1]) if len(losses) else float("nan"),
    plateau_change=round(change, 4),
    plateau_t=round(t, 2),
    converged=has_converged(change, t),
    **stash_memory(trainer),
    train_time_s=round(result.train_time_s, 2),
    run=run_dir.name,
  )
  curve = learning_curve(_history(run_dir))
  ckpt.atomic_write_text(run_dir / "curve.json", json.dumps(curve))
  return row


def _history(run_dir: Path) -> list[dict]:
  """Every record of a run's ``metrics.jsonl`` (a resumed run's whole history)."""
  path = run_dir / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
  seeds: int | Sequence[int] = 3,
  steps: int | None = None,
  anchor: str = "newest",
  quick: bool | None = None,
  out=None,
  runs=None,
  overrides: dict | None = None,
  progress: bool | None = None,
  log: Callable[[str], None] | None = None,
  reuse_other_code: bool = False,
) -> pd.DataFrame:
  """Trains every (scheme, knob value, seed) of ``task`` and returns one row per run.

  Args:
    task: "digits", "motion-classes" or "next-frame".
    knob: "speed" (pixels per frame), "stride" (every s-th frame) or "stash" (:func:`parse_stash`).
    values: the knob's values (a sequence, or a comma-separated string).
    schemes: schemes to train (default: all five; for next-frame also the baselines
      ``copy_newest`` and ``mean_frame``, computed once per value, seed and pipeline timing).
    seeds: seeds 0..seeds-1 per (scheme, value), or distinct seeds (``(3, 4)``: the runs that
      five seeds add to three); the schemes of a seed share clips and init.
    steps: training steps (default: the task's, :data:`sideways_lab.training.TASK_DEFAULTS`).
    anchor: next-frame only, "newest" (the fair horizon) or "input" (latency counts).
    quick: tiny budgets (default: the SIDEWAYS_LAB_QUICK environment variable).
    out: a directory: each run's checkpoints, ``config.json`` and ``row.json`` go to
      ``out/runs/<run>/`` and the table to ``out/results.csv`` (rewritten after every run).
      Runs whose row exists and was computed by this code (the ``source`` of
      :func:`sideways_lab.provenance.code_identity`) are read back, not retrained; an
      interrupted run of this code resumes from its checkpoint. None: a temporary directory,
      removed at the end.
    runs: where the runs go instead of ``out/runs`` (sweeps that share it share the runs of
      equal configurations, e.g. stride 1 of a stride sweep and the same speed of a speed
      sweep).
    overrides: fields of :class:`~sideways_lab.training.TrainConfig` on top of the budget.
    progress: a tqdm bar of runs done / total and, inside each run, one of its steps with the
      current training loss (a widget in a notebook, text in a terminal). None: on when not
      quick, not under pytest, and in a Jupyter kernel or with stderr a terminal
      (:func:`sideways_lab.training.show_progress`); so a notebook at full budget shows them.
    log: a function that receives a line per run trained, retrained or reused.
    reuse_other_code: reuse cached runs computed by other code (another ``source``, or none
      recorded) instead of retraining them in place, the default (one table, one code:
      docs/design.md §9). Each is logged, then their list; their rows keep their ``code`` and
      have ``other_code`` True. An interrupted run of other code restarts either way.

  Returns:
    A tidy DataFrame: columns :data:`ID_COLUMNS`, then ``accuracy, tick_accuracy, loss,
    class_<name>..., chance`` (classification) or ``mse, psnr, ssim`` (next-frame), then
    ``final_train_loss, train_time_s, run`` and :data:`CODE_COLUMNS`.
  """
  task, knob, values, schemes, seeds = _check_sweep(
    task, knob, values, schemes, seeds, steps, anchor
  )
  quick = is_quick(quick)
  log = log or (lambda msg: None)
  # every configuration first: bad overrides fail before anything trains
  jobs = _jobs(task, knob, values, schemes, seeds, steps, anchor, quick, overrides)
  out, runs, tmp = _sweep_dirs(out, runs)
  code = provenance.code_identity()
  rows: list[dict] = []
  curves: list[pd.DataFrame] = []
  other: list[str] = []
  progress = training.show_progress(progress, quick)
  bar = tqdm(total=len(jobs), disable=not progress, desc=f"sweep {task}/{knob}", unit="run")
  try:
    for kind, value, cfg in jobs:
      run_dir = runs / f"{kind}-{cfg.scheme}-seed{cfg.seed}-{run_key(cfg)}"
      # a run is shared by sweeps of other knobs and anchors: label its rows here
      labels = dict(
        knob=knob,
        value=value,
        run=os.path.relpath(run_dir, out),
        anchor=anchor if task == "next-frame" else "",
      )
      found, reused = _run_rows(kind, cfg, run_dir, knob, log, code, reuse_other_code, progress)
      other += [run_dir.name] if reused else []
      for r in found:
        if r["scheme"] in schemes or kind == "train":
          rows.append({**r, **labels, "other_code": reused})
      if kind == "train":
        curves.append(_curve_frame(run_dir, {**_row_ids(cfg, knob), **labels}))
      bar.update(1)
      table = _order(add_skill(pd.DataFrame(rows)))
      ckpt.atomic_write_text(out / "results.csv", table.to_csv(index=False))
    if curves:
      curve_table = pd.concat(curves, ignore_index=True)
      ckpt.atomic_write_text(out / "curves.csv", curve_table.to_csv(index=False))
    if other:
      names = ", ".join(other)
      log(f"{len(other)} run(s) of other code than {code['source']} reused (other_code): {names}")
  finally:
    bar.close()
    if tmp is not None:
      tmp.cleanup()
  return table  # the table written after the last run


def _check_sweep(task, knob, values, schemes, seeds, steps, anchor) -> tuple:
  """``(task, knob, values, schemes, seeds)`` of :func:`sweep` checked and canonical."""
  task = check_task(task)
  knob = check_knob(knob)
  values = check_values(knob, values)
  schemes = check_schemes(default_schemes(task) if schemes is None else schemes, task)
  seeds = check_seeds(seeds)
  if steps is not None:
    training.check_int(steps, "steps")
  if anchor not in ANCHORS:
    raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
  if knob == "speed" and task == "motion-classes" and min(values) <= 0:
    raise ValueError("values of speed must be > 0 for motion-classes (no motion, no class)")
  return task, knob, values, schemes, seeds


def check_seeds(seeds) -> tuple[int, ...]:
  """``seeds`` of :func:`sweep` as a tuple of seeds: an int n >= 1 is ``0..n-1``; a sequence
  must hold distinct ints >= 0. Errors name ``seeds``."""
  if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
    return tuple(range(training.check_int(seeds, "seeds")))
  if not isinstance(seeds, Sequence) or isinstance(seeds, str) or not seeds:
    raise ValueError(f"seeds must be an int >= 1 or a non-empty sequence of seeds, got {seeds!r}")
  out = tuple(training.check_int(s, "seeds", 0) for s in seeds)
  if len(set(out)) != len(out):
    raise ValueError(f"seeds must be distinct, got {seeds!r}")
  return out


def _sweep_dirs(out, runs) -> tuple:
  """``(out, runs, tmp)``: a sweep's directories, created (a temporary ``out`` when None, with
  its TemporaryDirectory ``tmp`` to clean up)."""
  tmp = tempfile.TemporaryDirectory(prefix="sideways_sweep_") if out is None else None
  out = Path(tmp.name if tmp is not None else out)
  if out.exists() and not out.is_dir():
    raise NotADirectoryError(f"out {str(out)!r} exists and is not a directory")
  runs = out / "runs" if runs is None else Path(runs)
  runs.mkdir(parents=True, exist_ok=True)
  out.mkdir(parents=True, exist_ok=True)
  return out, runs, tmp


def compare(
  task: str,
  out=None,
  *,
  quick: bool | None = None,
  progress: bool | None = None,
  log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
  """Every scheme of ``task`` trained once, on the same clips and initial parameters: a
  one-seed :func:`sweep` at the task's configured speed (``sideways-lab compare``). The
  figures' sweeps are this with more seeds and knob values.

  ``progress``: a tqdm bar of the runs and, inside each, of its steps with the current training
  loss. None: on when not quick, not under pytest, and in a Jupyter kernel or with stderr a
  terminal (:func:`sideways_lab.training.show_progress`); so a notebook at full budget shows
  them, quick mode and the test suite do not."""
  speed = training.default_config(check_task(task), quick=is_quick(quick)).data.speed
  return sweep(task, "speed", [speed], seeds=1, quick=quick, out=out, progress=progress, log=log)


def read_curves(path) -> pd.DataFrame:
  """A sweep's learning curves (``curves.csv``, a file or its directory): one row per run and
  point, columns :data:`ID_COLUMNS` then :data:`CURVE_COLUMNS`."""
  return pd.read_csv(
    _sweep_file(path, "curves.csv"),
    dtype={"anchor": str, "readout": str, "value": str},
    keep_default_na=False,
  )


def _curve_frame(run_dir: Path, ids: dict) -> pd.DataFrame:
  """A run's learning curve (``curve.json``) as rows of :data:`ID_COLUMNS` then
  :data:`CURVE_COLUMNS` (empty for a run cached before curves were recorded)."""
  try:
    curve = json.loads((run_dir / "curve.json").read_text())
  except (OSError, ValueError):
    curve = []
  frame = pd.DataFrame(curve, columns=list(CURVE_COLUMNS))
  for k in reversed(ID_COLUMNS):
    frame.insert(0, k, ids[k])
  return frame


def _jobs(task, knob, values, schemes, seeds, steps, anchor, quick, overrides) -> list:
  """``[("train" | "baseline", knob value, TrainConfig)]`` in the order of the sweep: value,
  seed, scheme; the baselines of next-frame once per value, seed and pipeline timing of the
  schemes."""
  trained = [s for s in schemes if s in SCHEMES]
  timings = _timings(trained or tuple(SCHEMES)).values() if set(schemes) & set(BASELINES) else ()
  jobs = []
  for value in values:
    for seed in seeds:
      for kind, group in (("train", trained), ("baseline", timings)):
        for s in group:
          cfg = run_config(
            task, s, knob, value, seed, steps=steps, anchor=anchor, quick=quick, overrides=overrides
          )
          jobs.append((kind, value, cfg))
  return jobs


def _run_code(run_dir: Path) -> str:
  """The ``source`` of the code identity in a run's ``config.json`` ("" when none)."""
  try:
    code = json.loads((run_dir / "config.json").read_text()).get("code") or {}
  except (OSError, ValueError, AttributeError):
    return ""
  return str(code.get("source") or "") if isinstance(code, dict) else ""


def _run_rows(
  kind: str,
  config: training.TrainConfig,
  run_dir: Path,
  knob: str,
  log,
  code: dict,
  reuse_other_code: bool = False,
  progress: bool = False,
) -> tuple[list, bool]:
  """``(rows, reused)`` of one job: read back from ``run_dir/row.json`` when it finished
  before by the code of identity ``code`` (or by any code, with ``reuse_other_code``:
  ``reused`` is then True where it was other code), else trained (with a bar of its steps
  when ``progress``; or, for baselines, computed) and written there atomically with the
  ``code`` and ``commit`` columns."""
  rows = _read_rows(run_dir / "row.json")
  old = str(rows[0].get("code") or "") if rows is not None else _run_code(run_dir)
  if run_dir.exists() and old != code["source"]:
    what = f"computed by code {old or '(unrecorded)'}, this code is {code['source']}"
    if rows is not None and reuse_other_code:
      log(f"  reusing {run_dir.name}: {what}")
      return rows, True
    if rows is not None or kind == "train" and ckpt.list_checkpoints(run_dir):
      log(f"  {'retraining' if rows is not None else 'restarting'} {run_dir.name}: {what}")
    shutil.rmtree(run_dir)
    rows = None
  if rows is None:
    if kind == "train":
      log(f"  training {run_dir.name} ({config.steps} steps)")
      rows = [train_run(config, run_dir, knob, progress=progress)]
    else:
      rows = baseline_rows(config, knob)
    for r in rows:
      r.update(code=code["source"], commit=code["git_commit"] or "")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(run_dir / "row.json", json.dumps(rows, indent=1))
  return rows, False


def _sweep_file(path, name: str) -> Path:
  """``path`` if it is a file, else ``path/name``; a FileNotFoundError when it is absent."""
  path = Path(path)
  if path.is_dir():
    path = path / name
  if not path.exists():
    raise FileNotFoundError(f"no sweep output at {str(path)!r} (run `sideways-lab sweep`)")
  return path


def read_results(path) -> pd.DataFrame:
  """A sweep's ``results.csv`` (a file or its directory) as a DataFrame. A table written
  before runs recorded their code gets the columns ``code`` and ``commit`` empty (unrecorded)
  and ``other_code`` False; next-frame results written before the ``skill`` column existed get
  it (:func:`add_skill`)."""
  df = pd.read_csv(
    _sweep_file(path, "results.csv"),
    dtype={"anchor": str, "code": str, "commit": str},
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
        "skill",
        "final_train_loss",
        "chance",
      )
    },
  )
  for column, empty in zip(CODE_COLUMNS, ("", "", False)):
    if column not in df.columns:
      df[column] = empty
  return add_skill(df)


def code_versions(frames) -> pd.DataFrame:
  """The code that computed the rows of sweeps' results (DataFrames of :func:`sweep` or
  :func:`read_results`, or one of them): one row per (``code``, ``commit``) with ``runs``,
  the number of distinct runs (the ``run`` column; baselines count once per value and seed)
  it computed, most runs first. ``code`` "" is a row cached before runs recorded it."""
  if isinstance(frames, pd.DataFrame):
    frames = [frames]
  parts = [f.reindex(columns=["code", "commit", "run"]).astype(object).fillna("") for f in frames]
  df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
  if df.empty:
    return pd.DataFrame({"code": [], "commit": [], "runs": []})
  df = df.astype(str).drop_duplicates()
  out = df.groupby(["code", "commit"], sort=False).run.nunique().rename("runs").reset_index()
  return out.sort_values("runs", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def summarize(df: pd.DataFrame, metric: str, by=("scheme", "value")) -> pd.DataFrame:
  """Mean, standard deviation, min, max and count of ``metric`` over seeds, per ``by``."""
  by = list(by)
  g = df.groupby(by, sort=False)[metric]
  return g.agg(["mean", "std", "min", "max", "count"]).reset_index()


def add_skill(df: pd.DataFrame) -> pd.DataFrame:
  """Adds a ``skill`` column to next-frame rows: skill against persistence,

      skill = 1 - MSE / MSE(copy_newest),

  with ``copy_newest`` on the same pipeline (graph and forward mode), anchor, knob value and
  seed, so the same clips and loss ticks (0: no better than copying the newest frame that
  reaches the output; negative: worse; 1: perfect). Skill above 0 is not yet motion: a
  per-frame model gains skill by predicting the blur that averages over directions, so motion
  is skill above the per-frame model's (BP, or the chain's exact twin). Rows without a
  matching copy baseline (or without ``mse``) get NaN; ``df`` is returned unchanged when it
  has no ``mse`` column."""
  if "mse" not in df.columns:
    return df
  mode = [
    "synchronous" if m == "synchronous" or s == "backprop" else "pipelined"
    for s, m in zip(df.scheme, df.method)
  ]
  keys = ["value", "seed", "graph", "mode", "anchor"] + (["horizon"] if "horizon" in df else [])
  frame = df.assign(mode=mode, value=df.value.astype(str))
  copy = frame[frame.scheme == "copy_newest"].groupby(keys)["mse"].mean().rename("copy_mse")
  copy_mse = frame.join(copy, on=keys)["copy_mse"].to_numpy(dtype=float)
  skill = 1.0 - df["mse"].to_numpy(dtype=float) / copy_mse
  out = df.drop(columns=["skill"], errors="ignore")
  after = "ssim" if "ssim" in out.columns else "mse"
  out.insert(list(out.columns).index(after) + 1, "skill", skill)
  return out


def next_frame_table(df: pd.DataFrame, metrics=("skill", "mse")) -> pd.DataFrame:
  """Next-frame results as one table: a row per scheme, and per baseline and pipeline
  (``copy_newest (BP)``, ``(chain)``, ``(skip)``: each is compared with the schemes of its own
  pipeline, so they are never averaged into one), a column per metric and setting
  (``"skill, 1 px/frame, h=2"``), the mean over seeds (``df``: rows of next-frame sweeps, with
  ``skill``, :func:`add_skill`)."""
  df = add_skill(df)
  pipeline = np.where(df.method.isin(["synchronous", "backprop"]), "BP", df.graph)
  row = np.where(df.scheme.isin(BASELINES), df.scheme + " (" + pipeline + ")", df.scheme)
  h = df["horizon"] if "horizon" in df else pd.Series(1, index=df.index)
  setting = [f"{float(v):g} px/frame, h={int(x)}" for v, x in zip(df.value, h)]
  long = df.assign(row=row, setting=setting)
  table = long.pivot_table(index="row", columns="setting", values=list(metrics), sort=False)
  table.columns = [f"{m}, {st}" for m, st in table.columns]
  table.index.name = None
  return table


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


def frames_by_target(runs, num_clips: int = 1, count: int | None = None) -> dict:
  """Predicted frames of trained next-frame runs aligned by the frame they predict.

  Each scheme's output at tick t targets frame ``target_index[t]``, which differs between
  pipelines under ``anchor="newest"``; this picks the target frames j that every run predicts
  at one of its loss ticks and, for each, the output of the tick that targets it, so a column
  compares like with like.

  Args:
    runs: ``{scheme: run dir}`` of one seed (:func:`runs_at`), next-frame runs of one anchor
      and horizon.
    num_clips: held-out clips (N).
    count: how many target frames (evenly spaced over the shared ones; None: all).

  Returns:
    ``{"targets": (J,) frame indices, "truth": (N, J, H, W, C), "copy_newest": (N, J, H, W, C)
    or None, "predictions": {scheme: (N, J, H, W, C)}, "horizon": h, "anchor": anchor}``.
    ``copy_newest`` is frame ``j - h`` (anchor "newest": what copying the newest frame that
    reaches the output predicts for target j, the same on every pipeline); None with anchor
    "input", where it differs between pipelines.
  """
  runs = dict(runs)
  if not runs:
    raise ValueError("runs is empty: pass {scheme: run dir} of at least one trained run")
  video, _, preds, ticks, index = predictions(runs, num_clips)
  configs = {s: training.load_run(r)[0] for s, r in runs.items()}
  h = next(iter(configs.values())).data.horizon
  # a synchronous run's newest frame is its input, so only the pipelined runs tell the anchor
  pipelined = [c.data.anchor for s, c in configs.items() if mode_of(s) == "pipelined"]
  anchor = "input" if "input" in pipelined else "newest"
  shared = sorted(set.intersection(*[set(index[s][ticks[s]].tolist()) for s in preds]))
  if not shared:
    raise ValueError(f"no target frame is predicted by every run of {sorted(runs)}")
  if count is not None and count < len(shared):
    shared = [shared[i] for i in np.linspace(0, len(shared) - 1, count).round().astype(int)]
  J = np.asarray(shared)

  def tick_of(s, j):
    return int(np.flatnonzero(ticks[s] & (index[s] == j))[-1])

  aligned = {s: p[:, [tick_of(s, j) for j in J]] for s, p in preds.items()}
  return dict(
    targets=J,
    truth=video[:, J],
    copy_newest=video[:, J - h] if anchor == "newest" else None,
    predictions=aligned,
    horizon=h,
    anchor=anchor,
  )


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


def alignment_along_training(
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
  estimate points away from the exact gradient: it is reported as it is. ``progress``: a bar
  of the runs (None: :func:`sideways_lab.training.show_progress`'s rule).
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
  rows = []
  shown = training.show_progress(progress)
  for r in tqdm(list(runs.itertuples()), disable=not shown, desc="alignment", unit="run"):
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
