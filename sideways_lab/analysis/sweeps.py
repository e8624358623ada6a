"""Sweeps of gradient alignment at initialisation: vs speed, frame stride, clip length, depth.

Every sweep measures, for Sideways (chain) and Skip-Sideways (skips of span 2), the alignment
(:func:`sideways_lab.analysis.alignment.alignment`) of the Sideways estimate Ĝ with a reference
gradient — ``pipelined_exact`` by default (the exact gradient of the same pipelined network,
which Ĝ approximates; equality on static video) or ``backprop`` — per unit and overall, on the
package's next-frame task (``sl.tasks``: moving digits, ``y^t = x_{t+1}``, MSE, the last tick
masked) with the package's next-frame network (``sl.models.predictor_units`` built by
``sl.models.build_graph``; a :class:`~sideways_lab.models.ModelConfig` with ``task="next-frame"``).

The work is one jitted, ``vmap``-ed function per graph and shape: all conditions × seeds of a
sweep run as one batch. Results are tidy :class:`pandas.DataFrame` s, one row per
(scheme, condition, seed, unit): ``unit`` is 1..L, or ``"all"`` for the row of all parameters
together; the sweep's settings are in ``DataFrame.attrs``. They are cached on disk as JSON
(:func:`sideways_lab.analysis.cache.cached`), so notebooks and figures reuse them.
:func:`per_unit_mean` pivots a sweep into the (knob × unit) arrays of the widgets.

Quick mode (``quick=True``, or :func:`sideways_lab.experiments.is_quick` when ``quick`` is
None) shrinks the default sizes. The clips of seed s are ``training.data_seed(s,
ANALYSIS_STREAM, 0)``. Alignment along training is measured on the checkpoints of trained runs
(:func:`sideways_lab.experiments.alignment_along_training`), not here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from sideways_lab import data, engine, schedule, training
from sideways_lab.analysis.alignment import METRICS, alignment, stash_alignment
from sideways_lab.analysis.cache import cached
from sideways_lab.experiments import is_quick, parse_stash, stash_label
from sideways_lab.graph import UnitGraph
from sideways_lab.models import EXACT_TWIN, ModelConfig, build_graph
from sideways_lab.tasks import TaskConfig, make_task, mse, shift_targets

#: The approximate schemes whose gradient estimate the sweeps measure.
APPROXIMATE_SCHEMES = tuple(EXACT_TWIN)
#: The exact gradients an estimate is compared with (methods of ``sl.gradients``).
REFERENCES = ("pipelined_exact", "backprop")
HORIZON = 1  # next-frame prediction: the target of tick t is x_{t+1}
DEFAULT_SPEED = 1.0  # pixels per frame of the digits where a sweep does not vary it

# The sizes of a measurement at initialisation: full, and quick (tiny: tests, notebook smoke
# runs). Parameters of seed s are graph.init(PRNGKey(s)).
_FULL = dict(size=(32, 32), batch_size=4, num_frames=12, seeds=4, width=64, num_units=4)
_QUICK = dict(size=(8, 8), batch_size=1, num_frames=6, seeds=1, width=8, num_units=3)


def _defaults(quick, **given) -> dict:
  """The sweep's sizes: the given values, the rest from the quick or full defaults."""
  base = _QUICK if is_quick(quick) else _FULL
  return {k: (base[k] if given.get(k) is None else given[k]) for k in base} | {
    k: v for k, v in given.items() if k not in base
  }


def _check_schemes(schemes) -> tuple:
  if isinstance(schemes, str):
    schemes = (schemes,)
  for s in schemes:
    if s not in APPROXIMATE_SCHEMES:
      raise ValueError(f"scheme must be one of {APPROXIMATE_SCHEMES}, got {s!r}")
  return tuple(schemes)


def _check_reference(reference) -> str:
  if reference not in REFERENCES:
    raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
  return reference


def model_config(num_units: int, width: int, channels: int = 1) -> ModelConfig:
  """The network of the sweeps: ``sl.models``' next-frame units, L = ``num_units``, predicting
  frames of ``channels`` channels."""
  return ModelConfig(
    task="next-frame", num_units=int(num_units), width=int(width), channels=int(channels)
  )


@functools.lru_cache(maxsize=64)
def _graph(config: ModelConfig, scheme: str) -> UnitGraph:
  """``build_graph``, cached: the same graph object reuses the engine's compiled functions."""
  return build_graph(config, scheme)


def _task(num_frames: int, size, speed: float = DEFAULT_SPEED):
  """The next-frame task (``sl.tasks.NextFrame``): its clips, targets, mask and loss."""
  return make_task(
    TaskConfig(
      task="next-frame",
      num_frames=int(num_frames),
      size=tuple(int(s) for s in size),
      speed=float(speed),
      horizon=HORIZON,
    )
  )


# ---------------------------------------------------------------------------------------------
# One batch of measurements
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "reference"))
def _aligned(graph, loss_fn, reference, params, videos, targets, mask):
  """Alignment of Sideways with ``reference`` for a batch of (params, video) pairs.

  ``params`` leaves and ``videos``/``targets`` carry a leading axis N; returns an
  :class:`Alignment` with leading axis N.
  """

  def one(p, v, y):
    G, _ = engine.gradients(graph, p, v, y, loss_fn, "sideways", mask, check_finite=False)
    R, _ = engine.gradients(graph, p, v, y, loss_fn, reference, mask, check_finite=False)
    return alignment(G, R)

  return jax.vmap(one)(params, videos, targets)


@functools.partial(jax.jit, static_argnames=("graph",))
def _init_many(graph, keys, frame):
  return jax.vmap(lambda k: graph.init(k, frame))(keys)


def init_params(graph, seeds: Sequence[int], frame) -> tuple:
  """Parameters for each seed (``PRNGKey(seed)``), stacked on a leading axis N = len(seeds).

  ``frame``: (B, H, W, C), one frame of the batch.
  """
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  return _init_many(graph, keys, jnp.asarray(frame))


def _rows(al, conditions: list[dict], num_units: int) -> list[dict]:
  """Tidy rows from a batched Alignment (leading axis matching ``conditions``)."""
  pu = {m: np.asarray(getattr(al.per_unit, m)) for m in METRICS}
  ov = {m: np.asarray(getattr(al.overall, m)) for m in METRICS}
  rows = []
  for i, cond in enumerate(conditions):
    for k in range(num_units):
      rows.append(
        dict(
          cond,
          unit=k + 1,
          num_units=num_units,
          distance_from_top=num_units - k - 1,
          **{m: float(pu[m][i, k]) for m in METRICS},
        )
      )
    rows.append(
      dict(
        cond,
        unit="all",
        num_units=num_units,
        distance_from_top=None,
        **{m: float(ov[m][i]) for m in METRICS},
      )
    )
  return rows


def measure(
  scheme: str,
  videos,
  *,
  num_units: int,
  width: int,
  seeds: Sequence[int],
  conditions: Sequence[dict],
  reference: str = "pipelined_exact",
  params=None,
) -> pd.DataFrame:
  """Alignment of one scheme for a stack of clips, one (params seed, clip batch) per condition.

  The targets are ``y^t = x_{t+1}`` (``sl.tasks.shift_targets``), the last tick masked; the
  network is :func:`model_config` ``(num_units, width, C)`` wired for ``scheme``.

  Args:
    scheme: "sideways" (chain) or "skip_sideways" (skips of span 2).
    videos: (N, B, T, H, W, C) — N batches of clips, one per entry of ``conditions``.
    num_units, width: L and the width of the network.
    seeds: N parameter seeds (params are ``graph.init`` with ``PRNGKey(seed)``) unless
      ``params`` (stacked, leading axis N) is given.
    conditions: N dicts of the condition's columns (speed, seed, ...), copied into the rows.
    reference: the exact gradient: "pipelined_exact" or "backprop".
  Returns:
    a DataFrame with N·(L+1) rows: per condition one per unit (``unit`` = 1..L,
    ``distance_from_top`` = L - k) and one with ``unit = "all"``; columns ``scheme``,
    ``reference``, the condition's columns, ``unit``, ``num_units``, ``distance_from_top`` and
    the metrics of :data:`~sideways_lab.analysis.alignment.METRICS`.
  """
  _check_schemes(scheme)
  _check_reference(reference)
  videos = np.asarray(videos, np.float32)
  if videos.ndim != 6 or len(videos) != len(conditions):
    raise ValueError(
      f"videos must be (N, B, T, H, W, C) with N = len(conditions) = "
      f"{len(conditions)}, got shape {videos.shape}"
    )
  graph = _graph(model_config(num_units, width, videos.shape[-1]), scheme)
  targets = np.stack([shift_targets(v, HORIZON) for v in videos])
  mask = _task(videos.shape[2], videos.shape[3:5]).mask
  if params is None:
    params = init_params(graph, seeds, videos[0, :, 0])
  al = _aligned(
    graph, mse, reference, params, jnp.asarray(videos), jnp.asarray(targets), jnp.asarray(mask)
  )
  conds = [dict(scheme=scheme, reference=reference, **c) for c in conditions]
  return pd.DataFrame.from_records(_rows(al, conds, num_units))


def _measure_all(
  schemes,
  videos,
  cfg,
  seeds,
  conditions,
  reference,
  num_units=None,
) -> pd.DataFrame:
  """:func:`measure` for every scheme, concatenated."""
  L = cfg["num_units"] if num_units is None else num_units
  return pd.concat(
    [
      measure(
        s,
        videos,
        num_units=L,
        width=cfg["width"],
        seeds=seeds,
        conditions=conditions,
        reference=reference,
      )
      for s in schemes
    ],
    ignore_index=True,
  )


def _attrs(sweep: str, x: str, reference: str, cfg: dict, channels: int = 1, **extra) -> dict:
  """The sweep's settings, for ``DataFrame.attrs``."""
  model = model_config(
    cfg.get("num_units", ModelConfig.num_units), cfg["width"], channels
  ).to_dict()
  return dict(
    sweep=sweep,
    x=x,
    reference=reference,
    task="next-frame prediction (MSE)",
    model={k: v for k, v in model.items() if k != "num_units"},
    **cfg,
    **extra,
  )


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------


def _digits(cfg: dict, speed: float, seed: int, num_frames: int | None = None) -> np.ndarray:
  """(B, T, H, W, 1) moving digits of the next-frame task, from the analysis stream of ``seed``."""
  task = _task(num_frames or cfg["num_frames"], cfg["size"], speed)
  video, _, _ = task.batch(cfg["batch_size"], training.data_seed(seed, training.ANALYSIS_STREAM, 0))
  return video


def _digits_stack(speeds, seeds, cfg) -> np.ndarray:
  """(len(speeds)·len(seeds), B, T, H, W, 1): for each speed, one batch per seed."""
  return np.stack([_digits(cfg, v, s) for v in speeds for s in seeds])


def _num(v):
  v = float(v)
  return int(v) if v.is_integer() else v


def _load_source(video, stride_max: int, cfg: dict) -> np.ndarray | None:
  """A long (B, T', H, W, C) source for the stride sweep from an array, path(s) or None."""
  need = cfg["num_frames"] * stride_max
  if video is None:
    return None
  if isinstance(video, (str, Path)) or (
    isinstance(video, (list, tuple)) and video and isinstance(video[0], (str, Path))
  ):
    paths = [video] if isinstance(video, (str, Path)) else list(video)
    clips = [data.read_video(p, size=tuple(cfg["size"]), max_frames=need) for p in paths]
    n = min(len(c) for c in clips)
    video = np.stack([c[:n] for c in clips])
  video = np.asarray(video, np.float32)
  if video.ndim == 4:
    video = video[None]
  if video.ndim != 5:
    raise ValueError(
      f"video must be (T, H, W, C), (B, T, H, W, C), a path or a list of paths, "
      f"got shape {video.shape}"
    )
  if video.shape[1] < need - stride_max + 1:
    raise ValueError(
      f"video has {video.shape[1]} frames; the stride sweep needs at least "
      f"{need - stride_max + 1} (num_frames={cfg['num_frames']} at stride "
      f"{stride_max})"
    )
  return video


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------


def sweep_speed(
  speeds: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0),
  *,
  schemes=APPROXIMATE_SCHEMES,
  reference: str = "pipelined_exact",
  num_units=None,
  size=None,
  batch_size=None,
  num_frames=None,
  seeds=None,
  width=None,
  quick=None,
  cache=True,
) -> pd.DataFrame:
  """Alignment vs the speed of moving digits (pixels per frame; 0 = static video).

  At speed 0 Sideways equals the exact gradient (cosine 1 for every unit); the alignment
  falls as the speed grows, faster for units far from the top (mismatch 2(L-k) frames).
  Columns: scheme, reference, speed, seed, unit, num_units, distance_from_top, the metrics.
  """
  schemes = _check_schemes(schemes)
  _check_reference(reference)
  cfg = _defaults(
    quick,
    num_units=num_units,
    size=size,
    batch_size=batch_size,
    num_frames=num_frames,
    seeds=seeds,
    width=width,
  )
  seeds_ = list(range(cfg["seeds"]))
  args = dict(speeds=list(speeds), schemes=list(schemes), reference=reference, **cfg)

  def compute():
    videos = _digits_stack(speeds, seeds_, cfg)
    conds = [{"speed": _num(v), "seed": s} for v in speeds for s in seeds_]
    df = _measure_all(schemes, videos, cfg, [s for _ in speeds for s in seeds_], conds, reference)
    df.attrs = _attrs("sweep_speed", "speed", reference, cfg)
    return df

  return cached("sweep_speed", args, compute, cache)


def sweep_stride(
  strides: Sequence[int] = (1, 2, 3, 4),
  *,
  video=None,
  speed: float | None = None,
  schemes=APPROXIMATE_SCHEMES,
  reference: str = "pipelined_exact",
  num_units=None,
  size=None,
  batch_size=None,
  num_frames=None,
  seeds=None,
  width=None,
  quick=None,
  cache=True,
) -> pd.DataFrame:
  """Alignment vs the frame stride: every ``stride``-th frame of a video (rougher video).

  ``video`` is an array (T, H, W, C) / (B, T, H, W, C), a video file or folder path
  (``sl.data.read_video``, resized to ``size``), a list of paths, or None for moving digits
  at ``speed`` (default :data:`DEFAULT_SPEED`; a given video has its own motion, so
  ``speed`` with ``video`` is an error). A given video is used for every seed, and seeds vary
  the parameters; digits differ per seed. Columns: scheme, reference, stride, seed, unit, ...
  and the metrics.
  """
  schemes = _check_schemes(schemes)
  _check_reference(reference)
  strides = [int(s) for s in strides]
  if not strides or min(strides) < 1:
    raise ValueError(f"strides must be positive ints, got {strides!r}")
  if video is not None and speed is not None:
    raise ValueError(
      "speed applies to the moving digits only; a given video has its own "
      "motion: pass video or speed, not both"
    )
  cfg = _defaults(
    quick,
    num_units=num_units,
    size=size,
    batch_size=batch_size,
    num_frames=num_frames,
    seeds=seeds,
    width=width,
  )
  smax = max(strides)
  src = _load_source(video, smax, cfg)
  T = cfg["num_frames"]
  seeds_ = list(range(cfg["seeds"]))
  if src is None:
    speed = DEFAULT_SPEED if speed is None else float(speed)
    extra = dict(speed=speed)
  else:
    cfg = dict(cfg, batch_size=src.shape[0], size=tuple(src.shape[2:4]))
    extra = dict(video=src)
  args = dict(strides=strides, schemes=list(schemes), reference=reference, **cfg, **extra)

  def compute():
    if src is None:
      longs = {s: _digits(cfg, speed, s, T * smax) for s in seeds_}
    else:
      longs = {s: src for s in seeds_}
    videos = np.stack([longs[s][:, ::st][:, :T] for st in strides for s in seeds_])
    conds = [{"stride": st, "seed": s} for st in strides for s in seeds_]
    df = _measure_all(schemes, videos, cfg, [s for _ in strides for s in seeds_], conds, reference)
    source = dict(source="moving digits", speed=speed) if src is None else dict(source="video")
    df.attrs = _attrs("sweep_stride", "stride", reference, cfg, videos.shape[-1], **source)
    return df

  return cached("sweep_stride", args, compute, cache)


def sweep_clip_length(
  clip_lengths: Sequence[int] = (6, 8, 12, 16),
  *,
  speed: float = DEFAULT_SPEED,
  schemes=APPROXIMATE_SCHEMES,
  reference: str = "pipelined_exact",
  num_units=None,
  size=None,
  batch_size=None,
  seeds=None,
  width=None,
  quick=None,
  cache=True,
) -> pd.DataFrame:
  """Alignment vs the clip length T (one compiled function per T).

  Columns: scheme, reference, clip_length, seed, unit, ... and the metrics.
  """
  schemes = _check_schemes(schemes)
  _check_reference(reference)
  cfg = _defaults(
    quick, num_units=num_units, size=size, batch_size=batch_size, seeds=seeds, width=width
  )
  Lmin = cfg["num_units"] + 1
  for T in clip_lengths:
    if int(T) < Lmin:
      raise ValueError(
        f"clip_lengths must be >= num_units + 1 = {Lmin} (a loss tick needs a "
        f"full pipeline and a next frame), got {T}"
      )
  seeds_ = list(range(cfg["seeds"]))
  args = dict(
    clip_lengths=list(clip_lengths), schemes=list(schemes), reference=reference, speed=speed, **cfg
  )

  def compute():
    parts = []
    for T in clip_lengths:
      c = dict(cfg, num_frames=int(T))
      videos = _digits_stack([speed], seeds_, c)
      conds = [{"clip_length": int(T), "seed": s} for s in seeds_]
      parts.append(_measure_all(schemes, videos, c, seeds_, conds, reference))
    df = pd.concat(parts, ignore_index=True)
    df.attrs = _attrs("sweep_clip_length", "clip_length", reference, cfg, speed=speed)
    return df

  return cached("sweep_clip_length", args, compute, cache)


def sweep_depth(
  num_units: Sequence[int] = (2, 3, 4, 6),
  *,
  speed: float = DEFAULT_SPEED,
  schemes=APPROXIMATE_SCHEMES,
  reference: str = "pipelined_exact",
  size=None,
  batch_size=None,
  num_frames=None,
  seeds=None,
  width=None,
  quick=None,
  cache=True,
) -> pd.DataFrame:
  """Alignment vs the unit's depth, for networks of several depths L.

  Rows carry ``unit`` (k), ``num_units`` (L) and ``distance_from_top`` (L - k); Sideways'
  gradient at unit k is 2(L-k) frames stale, so alignment falls with distance from the top.
  """
  schemes = _check_schemes(schemes)
  _check_reference(reference)
  cfg = _defaults(
    quick, size=size, batch_size=batch_size, num_frames=num_frames, seeds=seeds, width=width
  )
  cfg.pop("num_units")
  Ls = [int(L) for L in num_units]
  if min(Ls) < 2 or max(Ls) >= cfg["num_frames"]:
    raise ValueError(f"num_units must be in 2..num_frames-1 = {cfg['num_frames'] - 1}, got {Ls}")
  seeds_ = list(range(cfg["seeds"]))
  args = dict(num_units=Ls, schemes=list(schemes), reference=reference, speed=speed, **cfg)

  def compute():
    videos = _digits_stack([speed], seeds_, cfg)
    conds = [{"seed": s} for s in seeds_]
    df = pd.concat(
      [_measure_all(schemes, videos, cfg, seeds_, conds, reference, num_units=L) for L in Ls],
      ignore_index=True,
    )
    df.attrs = _attrs("sweep_depth", "unit", reference, cfg, speed=speed)
    return df

  return cached("sweep_depth", args, compute, cache)


#: The per-unit stash allocations of the four-unit digits chain that :func:`sweep_stash` measures
#: by default: each hidden unit keeps its exact lag (6, 4, 2) or nothing, and the full stash.
STASH_ALLOCATIONS = ("0", "6-0-0", "0-4-0", "0-0-2", "6-4-0", "6-0-2", "0-4-2", "full")


def sweep_stash(
  values: Sequence = STASH_ALLOCATIONS,
  *,
  task: str = "digits",
  speed: float = 4.0,
  dtypes: Sequence[str] = ("float32",),
  seeds: int = 3,
  quick=None,
  cache=True,
) -> pd.DataFrame:
  """The distance of each stash's gradient to the exact gradient, at initialisation.

  On the chain of ``task``'s configuration (``training.default_config(task, "sideways")``: the
  network, batch and clips the stash sweeps train with) at ``speed`` pixels per frame, for
  every stash allocation in ``values`` (``experiments.parse_stash``: "0", "6-0-0", "full", ...)
  and storage dtype in ``dtypes`` (``schedule.Stash``):
  :func:`~sideways_lab.analysis.alignment.stash_alignment` on the first training batch of seeds
  0..seeds-1 (parameters of the seed's run). Rows: ``value``, ``dtype``, ``seed``,
  ``unit`` (1..L and "all"), the :data:`METRICS` and ``stash_bytes``
  (``engine.stash_bytes`` for one batch's frame).
  """
  values = [stash_label(parse_stash(v)) for v in values]
  args = dict(values=values, task=task, speed=float(speed), dtypes=list(dtypes))
  args.update(seeds=int(seeds), quick=is_quick(quick))

  def compute():
    rows = []
    for seed in range(int(seeds)):
      cfg = training.default_config(
        task, "sideways", quick=quick, seed=seed, data=dict(speed=float(speed))
      )
      tr = training.Trainer(cfg)
      params, _ = tr.init()
      video, targets, _ = tr.batch(0)
      for value in values:
        for dtype in dtypes:
          stash = schedule.Stash(parse_stash(value), dtype)
          al = stash_alignment(
            tr.graph, params, video, targets, tr.task.loss_fn, stash, tr.task.mask
          )
          size = engine.stash_bytes(tr.graph, params, video[:, 0], stash)
          rows += al.to_rows(value=value, dtype=dtype, seed=seed, stash_bytes=size)
    df = pd.DataFrame(rows)
    df.attrs = dict(sweep="sweep_stash", reference="pipelined_exact", **args)
    return df

  return cached("sweep_stash", args, compute, cache)


# ---------------------------------------------------------------------------------------------
# Reshaping
# ---------------------------------------------------------------------------------------------


def per_unit_mean(table: pd.DataFrame, knob: str, metric: str = "cosine") -> dict:
  """``{scheme: array (K, L)}``: the mean over seeds of ``metric`` per knob value and unit.

  Row i is the i-th knob value in ascending order (``sorted(table[knob].unique())``), column
  k-1 is unit k; the ``unit="all"`` rows are left out. The input of
  :func:`sideways_lab.widgets.alignment_explorer`.
  """
  for col in ("scheme", "unit", knob, metric):
    if col not in table.columns:
      raise KeyError(f"table has no column {col!r}; columns are {list(table.columns)}")
  units = table[table["unit"] != "all"].astype({"unit": int})
  return {
    s: g.pivot_table(index=knob, columns="unit", values=metric, aggfunc="mean").to_numpy()
    for s, g in units.groupby("scheme", sort=False)
  }
