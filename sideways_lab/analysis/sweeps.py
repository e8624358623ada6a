"""Sweeps of gradient alignment: vs depth, smoothness (speed, frame stride), training, clip length.

Every sweep measures, for Sideways (chain) and Skip-Sideways (skips of span 2), the alignment
(:func:`sideways_lab.analysis.alignment.alignment`) of the Sideways estimate Ĝ with a reference
gradient — ``pipelined_exact`` by default (the exact gradient of the same pipelined network,
which Ĝ approximates; equality on static video) or ``backprop`` — per unit and overall, on
next-frame prediction (MSE) with small conv units (:mod:`sideways_lab.analysis.toy`).

The work is one jitted, ``vmap``-ed function per graph and shape: all conditions × repeats
of a sweep (speeds, strides, seeds...) run as one batch. Results are tidy
:class:`~sideways_lab.analysis.tables.Table` s with one row per
(scheme, condition, seed, unit) — ``unit`` is 1..L or ``"all"`` — and are cached on disk
(:func:`~sideways_lab.analysis.tables.cached`), so notebooks and figures reuse them.

Quick mode (``quick=True`` or env ``SIDEWAYS_LAB_QUICK=1``) shrinks the default sizes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab import engine
from sideways_lab.analysis import toy
from sideways_lab.analysis.alignment import METRICS, alignment
from sideways_lab.analysis.tables import Table, cached, is_quick

REFERENCES = ("pipelined_exact", "backprop")

_FULL = dict(size=(32, 32), batch_size=4, num_frames=12, seeds=4, width=64, num_units=4,
             model="mlp")
_QUICK = dict(size=(16, 16), batch_size=2, num_frames=8, seeds=2, width=32, num_units=4,
              model="mlp")


def _defaults(quick, **given) -> dict:
  base = _QUICK if is_quick(quick) else _FULL
  return {k: (base[k] if given.get(k) is None else given[k]) for k in base} | {
      k: v for k, v in given.items() if k not in base}


def _check_schemes(schemes) -> tuple:
  if isinstance(schemes, str):
    schemes = (schemes,)
  return tuple(toy.check_scheme(s) for s in schemes)


def _check_reference(reference) -> str:
  if reference not in REFERENCES:
    raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
  return reference


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
  """Parameters for each seed, stacked on a leading axis (vmapped ``graph.init``)."""
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  return _init_many(graph, keys, jnp.asarray(frame))


def _rows(al, conditions: list[dict], num_units: int) -> list[dict]:
  """Tidy rows from a batched Alignment (leading axis matching ``conditions``)."""
  pu = {m: np.asarray(getattr(al.per_unit, m)) for m in METRICS}
  ov = {m: np.asarray(getattr(al.overall, m)) for m in METRICS}
  rows = []
  for i, cond in enumerate(conditions):
    for k in range(num_units):
      rows.append(dict(cond, unit=k + 1, num_units=num_units, distance_from_top=num_units - k - 1,
                       **{m: float(pu[m][i, k]) for m in METRICS}))
    rows.append(dict(cond, unit="all", num_units=num_units, distance_from_top=None,
                     **{m: float(ov[m][i]) for m in METRICS}))
  return rows


def measure(scheme: str, videos, *, num_units: int, width: int, seeds: Sequence[int],
            conditions: Sequence[dict], reference: str = "pipelined_exact",
            params=None, model: str = "mlp") -> list[dict]:
  """Alignment rows for a stack of clips, one (params seed, clip batch) pair per condition.

  Args:
    scheme: "sideways" or "skip_sideways".
    videos: (N, B, T, H, W, C) — N batches of clips, one per entry of ``conditions``.
    seeds: N parameter seeds (params are initialised with ``PRNGKey(seed)``) unless
      ``params`` (stacked, leading axis N) is given.
    conditions: N dicts of the condition's columns (speed, seed, ...), copied into the rows.
  Returns:
    rows: one per (condition, unit) plus one ``unit="all"`` row per condition.
  """
  toy.check_scheme(scheme)
  _check_reference(reference)
  videos = np.asarray(videos, np.float32)
  if videos.ndim != 6 or len(videos) != len(conditions):
    raise ValueError(f"videos must be (N, B, T, H, W, C) with N = len(conditions) = "
                     f"{len(conditions)}, got shape {videos.shape}")
  graph = toy.graph_for(scheme, num_units, width, videos.shape[-3:], model)
  targets, mask = zip(*[toy.next_frame_task(v) for v in videos])
  targets = np.stack(targets)
  if params is None:
    params = init_params(graph, seeds, videos[0, :, 0])
  al = _aligned(graph, toy.mse, reference, params, jnp.asarray(videos), jnp.asarray(targets),
                jnp.asarray(mask[0]))
  return _rows(al, [dict(c, scheme=scheme, reference=reference) for c in conditions], num_units)


def _digits_stack(values, key, seeds, cfg, **fixed) -> np.ndarray:
  """(len(values)*len(seeds), B, T, H, W, 1) moving digits; clip content depends on the seed."""
  out = []
  for v in values:
    for s in seeds:
      kw = dict(batch_size=cfg["batch_size"], num_frames=cfg["num_frames"], size=cfg["size"],
                seed=1000 + int(s))
      kw.update(fixed)
      kw[key] = v
      out.append(toy.digits_video(**kw))
  return np.stack(out)


def _sweep(name, x_name, values, make_videos, schemes, cfg, reference, cache, extra_args=None):
  seeds = list(range(cfg["seeds"]))
  args = dict(values=list(values), schemes=list(schemes), reference=reference, **cfg,
              **(extra_args or {}))

  def compute():
    videos = make_videos(values, seeds, cfg)
    conds = [{x_name: _num(v), "seed": s} for v in values for s in seeds]
    pseeds = [s for _ in values for s in seeds]
    rows = []
    for scheme in schemes:
      rows += measure(scheme, videos, num_units=cfg["num_units"], width=cfg["width"], model=cfg["model"],
                      seeds=pseeds, conditions=conds, reference=reference)
    return Table(rows, dict(sweep=name, x=x_name, reference=reference,
                            task="next-frame prediction (MSE)",
                            **{k: v for k, v in cfg.items()}))
  return cached(name, args, compute, cache)


def _num(v):
  v = float(v)
  return int(v) if v.is_integer() else v


def sweep_speed(speeds: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0), *,
                schemes=toy.SCHEMES, reference: str = "pipelined_exact", num_units=None,
                size=None, batch_size=None, num_frames=None, seeds=None, width=None, model=None,
                quick=None, cache=True) -> Table:
  """Alignment vs the speed of moving digits (pixels per frame; 0 = static video).

  At speed 0 Sideways equals the exact gradient (cosine 1 for every unit); the alignment
  falls as the speed grows, faster for units far from the top (mismatch 2(L-k) frames).
  Columns: scheme, speed, seed, unit, num_units, distance_from_top, and the metrics.
  """
  schemes = _check_schemes(schemes)
  _check_reference(reference)
  cfg = _defaults(quick, num_units=num_units, size=size, batch_size=batch_size,
                  num_frames=num_frames, seeds=seeds, width=width, model=model)
  make = lambda values, seeds, cfg: _digits_stack(values, "speed", seeds, cfg)
  return _sweep("sweep_speed", "speed", speeds, make, schemes, cfg, reference, cache)


def _load_source(video, stride_max, cfg, speed):
  """A long (B, T*stride_max, H, W, C) source for the stride sweep (array, path(s) or digits)."""
  need = cfg["num_frames"] * stride_max
  if video is None:
    return None
  if isinstance(video, (str, Path)) or (isinstance(video, (list, tuple)) and video
                                        and isinstance(video[0], (str, Path))):
    from sideways_lab import data
    paths = [video] if isinstance(video, (str, Path)) else list(video)
    clips = [data.read_video(p, size=tuple(cfg["size"]), max_frames=need) for p in paths]
    n = min(len(c) for c in clips)
    video = np.stack([c[:n] for c in clips])
  video = np.asarray(video, np.float32)
  if video.ndim == 4:
    video = video[None]
  if video.ndim != 5:
    raise ValueError(f"video must be (T, H, W, C), (B, T, H, W, C), a path or a list of paths, "
                     f"got shape {video.shape}")
  if video.shape[1] < need - stride_max + 1:
    raise ValueError(f"video has {video.shape[1]} frames; the stride sweep needs at least "
                     f"{need - stride_max + 1} (num_frames={cfg['num_frames']} at stride "
                     f"{stride_max})")
  return video


def sweep_stride(strides: Sequence[int] = (1, 2, 3, 4), *, video=None, speed: float = 1.0,
                 schemes=toy.SCHEMES, reference: str = "pipelined_exact", num_units=None,
                 size=None, batch_size=None, num_frames=None, seeds=None, width=None,
                 model=None, quick=None, cache=True) -> Table:
  """Alignment vs the frame stride: every ``stride``-th frame of a video (rougher video).

  ``video`` is an array (T, H, W, C) / (B, T, H, W, C), a video file or folder path
  (``sl.data.read_video``, resized to ``size``), a list of paths, or None for moving digits
  at ``speed``. The same clips are used for every seed; seeds vary the parameters.
  Columns: scheme, stride, seed, unit, ... and the metrics.
  """
  schemes = _check_schemes(schemes)
  strides = [int(s) for s in strides]
  if not strides or min(strides) < 1:
    raise ValueError(f"strides must be positive ints, got {strides!r}")
  cfg = _defaults(quick, num_units=num_units, size=size, batch_size=batch_size,
                  num_frames=num_frames, seeds=seeds, width=width, model=model)
  smax = max(strides)
  src = _load_source(video, smax, cfg, speed)
  T = cfg["num_frames"]

  def make(values, seeds, cfg):
    out = []
    for st in values:
      for s in seeds:
        if src is None:
          long = toy.digits_video(cfg["batch_size"], T * smax, cfg["size"], speed, 1000 + s)
        else:
          long = src
        clip = long[:, ::st][:, :T]
        out.append(clip)
    return np.stack(out)

  extra = dict(video=src if src is not None else None, speed=speed)
  if src is not None:
    cfg = dict(cfg, batch_size=src.shape[0], size=tuple(src.shape[2:4]))
  return _sweep("sweep_stride", "stride", strides, make, schemes, cfg, reference, cache, extra)


def sweep_clip_length(clip_lengths: Sequence[int] = (6, 8, 12, 16), *, speed: float = 1.0,
                      schemes=toy.SCHEMES, reference: str = "pipelined_exact", num_units=None,
                      size=None, batch_size=None, seeds=None, width=None, model=None, quick=None,
                      cache=True) -> Table:
  """Alignment vs the clip length T (one compiled function per T).

  Columns: scheme, clip_length, seed, unit, ... and the metrics.
  """
  schemes = _check_schemes(schemes)
  cfg = _defaults(quick, num_units=num_units, size=size, batch_size=batch_size, seeds=seeds,
                  width=width, model=model)
  Lmin = cfg["num_units"] + 1
  for T in clip_lengths:
    if int(T) < Lmin:
      raise ValueError(f"clip_lengths must be >= num_units + 1 = {Lmin} (a loss tick needs a "
                       f"full pipeline and a next frame), got {T}")
  args = dict(clip_lengths=list(clip_lengths), schemes=list(schemes), reference=reference,
              speed=speed, **cfg)

  def compute():
    seeds_ = list(range(cfg["seeds"]))
    rows = []
    for T in clip_lengths:
      c = dict(cfg, num_frames=int(T))
      videos = _digits_stack([speed], "speed", seeds_, c)
      for scheme in schemes:
        rows += measure(scheme, videos, num_units=cfg["num_units"], width=cfg["width"], model=cfg["model"],
                        seeds=seeds_, conditions=[{"clip_length": int(T), "seed": s}
                                                  for s in seeds_], reference=reference)
    return Table(rows, dict(sweep="sweep_clip_length", x="clip_length", speed=speed,
                            reference=reference, **cfg))
  return cached("sweep_clip_length", args, compute, cache)


def sweep_depth(num_units: Sequence[int] = (2, 3, 4, 6), *, speed: float = 1.0,
                schemes=toy.SCHEMES, reference: str = "pipelined_exact", size=None,
                batch_size=None, num_frames=None, seeds=None, width=None, model=None, quick=None,
                cache=True) -> Table:
  """Alignment vs the unit's depth, for networks of several depths L.

  Rows carry ``unit`` (k), ``num_units`` (L) and ``distance_from_top`` (L - k); Sideways'
  gradient at unit k is 2(L-k) frames stale, so alignment falls with distance from the top.
  """
  schemes = _check_schemes(schemes)
  cfg = _defaults(quick, size=size, batch_size=batch_size, num_frames=num_frames, seeds=seeds,
                  width=width, model=model)
  Ls = [int(L) for L in num_units]
  if min(Ls) < 1 or max(Ls) + 1 >= cfg["num_frames"] + 1:
    raise ValueError(f"num_units must be in 1..num_frames-1 = {cfg['num_frames'] - 1}, got {Ls}")
  args = dict(num_units=Ls, schemes=list(schemes), reference=reference, speed=speed,
              **{k: v for k, v in cfg.items() if k != "num_units"})

  def compute():
    seeds_ = list(range(cfg["seeds"]))
    videos = _digits_stack([speed], "speed", seeds_, cfg)
    rows = []
    for L in Ls:
      for scheme in schemes:
        rows += measure(scheme, videos, num_units=L, width=cfg["width"], model=cfg["model"], seeds=seeds_,
                        conditions=[{"seed": s} for s in seeds_], reference=reference)
    return Table(rows, dict(sweep="sweep_depth", x="unit", speed=speed, reference=reference,
                            **{k: v for k, v in cfg.items() if k != "num_units"}))
  return cached("sweep_depth", args, compute, cache)


def sweep_progress(steps: Sequence[int] = (0, 25, 50, 100), *, speed: float = 1.0,
                   schemes=toy.SCHEMES, reference: str = "pipelined_exact",
                   learning_rate: float = 3e-3, num_units=None, size=None, batch_size=None,
                   num_frames=None, seeds=None, width=None, model=None, quick=None, cache=True) -> Table:
  """Alignment at checkpoints of a training run (Sideways training with Adam, next-frame MSE).

  Each seed trains its own network (all seeds in one vmapped, jitted update) on fresh
  moving-digits batches; at every step in ``steps`` the alignment is measured on a fixed
  evaluation batch. Columns: scheme, step, seed, unit, ..., the metrics and ``train_loss``.
  """
  import optax
  schemes = _check_schemes(schemes)
  steps = sorted(int(s) for s in steps)
  if not steps or steps[0] < 0:
    raise ValueError(f"steps must be non-negative ints, got {steps!r}")
  cfg = _defaults(quick, num_units=num_units, size=size, batch_size=batch_size,
                  num_frames=num_frames, seeds=seeds, width=width, model=model)
  args = dict(steps=steps, schemes=list(schemes), reference=reference, speed=speed,
              learning_rate=learning_rate, **cfg)

  def compute():
    seeds_ = list(range(cfg["seeds"]))
    R = len(seeds_)
    eval_videos = _digits_stack([speed], "speed", seeds_, cfg)
    rows = []
    opt = optax.adam(learning_rate)
    for scheme in schemes:
      graph = toy.graph_for(scheme, cfg["num_units"], cfg["width"],
                            tuple(cfg["size"]) + (1,), cfg["model"])
      params = init_params(graph, seeds_, eval_videos[0, :, 0])
      opt_state = jax.vmap(opt.init)(params)

      @jax.jit
      def update(params, opt_state, videos, targets, mask):
        def one(p, s, v, y):
          g, info = engine.gradients(graph, p, v, y, toy.mse, "sideways", mask,
                                     check_finite=False)
          u, s = opt.update(g, s, p)
          return optax.apply_updates(p, u), s, info["loss"]
        return jax.vmap(one)(params, opt_state, videos, targets)

      step, loss = 0, np.full(R, np.nan)
      for target_step in steps:
        while step < target_step:
          vids = np.stack([toy.digits_video(cfg["batch_size"], cfg["num_frames"], cfg["size"],
                                            speed, seed=50_000 + 1000 * s + step)
                           for s in seeds_])
          tg, mask = zip(*[toy.next_frame_task(v) for v in vids])
          params, opt_state, loss = update(params, opt_state, jnp.asarray(vids),
                                           jnp.asarray(np.stack(tg)), jnp.asarray(mask[0]))
          step += 1
        conds = [{"step": target_step, "seed": s, "train_loss": float(np.asarray(loss)[i])}
                 for i, s in enumerate(seeds_)]
        rows += measure(scheme, eval_videos, num_units=cfg["num_units"], width=cfg["width"], model=cfg["model"],
                        seeds=seeds_, conditions=conds, reference=reference, params=params)
    return Table(rows, dict(sweep="sweep_progress", x="step", speed=speed, reference=reference,
                            learning_rate=learning_rate, **cfg))
  return cached("sweep_progress", args, compute, cache)
