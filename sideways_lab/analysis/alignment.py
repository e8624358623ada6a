"""Alignment of a gradient estimate with a reference gradient, per unit and overall.

For two gradient pytrees ``g`` (the estimate, e.g. Sideways' Ĝ) and ``r`` (the reference,
e.g. the exact gradient of ``pipelined_exact``; :func:`stash_alignment` compares a stash's
gradient with it) flattened into vectors — per unit ``k`` (the
k-th element of a tuple of L per-unit parameter dicts) and overall (all units concatenated)::

    cosine          = <g, r> / (|g| |r|)            (NaN when either is zero:
                      ``sl.tasks.cosine``, the package's one cosine)
    angle_deg       = arccos(cosine) in degrees (computed as 2 atan2(|u-v|, |u+v|) of the
                      unit vectors, accurate near 0 and 180; NaN when either is zero)
    norm_ratio      = |g| / |r|                     (inf when r = 0 and g != 0, 1 when both are)
    rel_error       = |g - r| / |r|                 (inf/0 likewise)
    sign_agreement  = mean over coordinates of 1{sign(g_i) = sign(r_i)}

Everything is a pure jittable function of arrays; :class:`Alignment` is a pytree (NamedTuple)
so it can be returned from ``jax.jit``/``jax.vmap`` (metrics then gain leading axes).

:func:`per_tick_alignment` compares, for a graph, the gradient ``g_k^t`` that unit k uses at
tick t of Sideways with the exact gradient of the loss ticks it came from (docs/design.md §5,
``sl.schedule.gradient_sources``).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab import engine, schedule
from sideways_lab.tasks import cosine, flatten

METRICS = ("cosine", "angle_deg", "norm_ratio", "rel_error", "sign_agreement")


class Metrics(NamedTuple):
  """The five alignment metrics; each an array (scalar, or with leading/unit axes)."""

  cosine: Any
  angle_deg: Any
  norm_ratio: Any
  rel_error: Any
  sign_agreement: Any


class Alignment(NamedTuple):
  """Alignment per unit (``per_unit``: metrics with a trailing unit axis of size L) and
  ``overall`` (all parameters concatenated). Any leading axes come from ``vmap``."""

  per_unit: Metrics
  overall: Metrics

  def to_rows(self, **extra) -> list[dict]:
    """Tidy rows: one per unit (``unit`` = 1..L) and one with ``unit = "all"``.

    Only for an unbatched alignment (scalar metrics per unit). ``extra`` key/values are
    added to every row.
    """
    pu = {m: np.asarray(getattr(self.per_unit, m)) for m in METRICS}
    if pu["cosine"].ndim != 1:
      raise ValueError(
        f"to_rows needs an unbatched Alignment (per-unit metrics of shape (L,)), "
        f"got shape {pu['cosine'].shape}"
      )
    L = pu["cosine"].shape[0]
    rows = [dict(extra, unit=k + 1, **{m: float(pu[m][k]) for m in METRICS}) for k in range(L)]
    rows.append(
      dict(extra, unit="all", **{m: float(np.asarray(getattr(self.overall, m))) for m in METRICS})
    )
    return rows


def _units_of(tree) -> list:
  """The per-unit subtrees: the elements of a tuple/list, else the whole tree as one unit."""
  if isinstance(tree, (tuple, list)):
    return list(tree)
  return [tree]


def _safe_div(num, den, both_zero):
  """num / den with den = 0: ``both_zero`` when num = 0 too, else inf."""
  den_ok = den > 0
  q = num / jnp.where(den_ok, den, 1.0)
  return jnp.where(den_ok, q, jnp.where(num > 0, jnp.inf, both_zero))


def vector_metrics(g: jax.Array, r: jax.Array) -> Metrics:
  """Metrics of two vectors along their last axis (leading axes broadcast)."""
  g = jnp.asarray(g, jnp.float32)
  r = jnp.asarray(r, jnp.float32)
  if g.shape != r.shape:
    raise ValueError(
      f"the estimate and the reference must have the same shape, got {g.shape} and {r.shape}"
    )
  ng = jnp.linalg.norm(g, axis=-1)
  nr = jnp.linalg.norm(r, axis=-1)
  # 2 atan2(|u - v|, |u + v|) of the unit vectors: accurate near 0 and 180 degrees.
  u = g / jnp.where(ng > 0, ng, 1.0)[..., None]
  w = r / jnp.where(nr > 0, nr, 1.0)[..., None]
  angle = jnp.where(
    (ng > 0) & (nr > 0),
    jnp.degrees(2 * jnp.arctan2(jnp.linalg.norm(u - w, axis=-1), jnp.linalg.norm(u + w, axis=-1))),
    jnp.nan,
  )
  ratio = _safe_div(ng, nr, 1.0)
  rel = _safe_div(jnp.linalg.norm(g - r, axis=-1), nr, 0.0)
  sign = (
    jnp.mean((jnp.sign(g) == jnp.sign(r)).astype(jnp.float32), axis=-1)
    if g.shape[-1]
    else jnp.ones(g.shape[:-1], jnp.float32)
  )
  return Metrics(cosine(g, r), angle, ratio, rel, sign)


def _check_same_structure(g, r) -> None:
  sg, sr = jax.tree_util.tree_structure(g), jax.tree_util.tree_structure(r)
  if sg != sr:
    raise ValueError(
      f"the estimate and the reference must be pytrees of the same structure, got {sg} and {sr}"
    )


def alignment(estimate, reference) -> Alignment:
  """Alignment of a gradient ``estimate`` with a ``reference``, per unit and overall.

  Args:
    estimate, reference: gradient pytrees of the same structure — typically tuples of L
      per-unit dicts (the structure of ``params``); any other pytree counts as one unit.

  Returns:
    :class:`Alignment` with ``per_unit`` metrics of shape (L,) and scalar ``overall``.
    Jittable and vmappable.
  """
  _check_same_structure(estimate, reference)
  gu, ru = _units_of(estimate), _units_of(reference)
  per = [vector_metrics(flatten(a), flatten(b)) for a, b in zip(gu, ru)]
  per_unit = Metrics(*[jnp.stack([getattr(p, m) for p in per], axis=-1) for m in METRICS])
  overall = vector_metrics(flatten(estimate), flatten(reference))
  return Alignment(per_unit, overall)


def stash_alignment(graph, params, video, targets, loss_fn, stash, mask=None) -> Alignment:
  """How far ``sideways`` with ``stash`` is from the exact gradient, per unit and overall.

  :func:`alignment` of ``Ĝ(stash) = engine.gradients(..., "sideways", mask, stash)`` with
  ``G = engine.gradients(..., "pipelined_exact", mask)``: cosine, relative error
  ``|Ĝ - G| / |G|``, norm ratio, ... per unit (docs/design.md §5). ``stash`` is any stash
  ``engine.gradients`` takes, a :class:`sideways_lab.schedule.Stash` with a storage dtype
  included. Shapes as in ``engine.gradients``.
  """
  estimate, _ = engine.gradients(graph, params, video, targets, loss_fn, "sideways", mask, stash)
  exact, _ = engine.gradients(graph, params, video, targets, loss_fn, "pipelined_exact", mask)
  return alignment(estimate, exact)


# ---------------------------------------------------------------------------------------------
# Per-tick alignment
# ---------------------------------------------------------------------------------------------


class PerTickAlignment(NamedTuple):
  """Alignment of ``g_k^t`` with the exact gradient of the loss ticks it came from.

  Attributes:
    metrics: :class:`Metrics`, each of shape (N, L) with N = T + L - 1 ticks (clip + drain);
      NaN where the tick carries no gradient for the unit (``has_gradient`` False).
    has_gradient: (N, L) bool: ``gradient_sources[k][t] ∩ V`` is not empty.
    source_tick: (N, L) int: the loss tick the gradient came from when there is exactly one
      (always so on a chain: ``t - (L - k)``), -1 otherwise.
    mismatch: (N, L) int: frames between the activation used and the gradient's origin
      (``2(L-k)`` on a chain), -1 where undefined.
    estimate_norm, reference_norm: (N, L) float norms of ``g_k^t`` and of the reference.
  """

  metrics: Metrics
  has_gradient: np.ndarray
  source_tick: np.ndarray
  mismatch: np.ndarray
  estimate_norm: np.ndarray
  reference_norm: np.ndarray

  def to_rows(self, **extra) -> list[dict]:
    """Tidy rows, one per (tick, unit) that carries a gradient."""
    rows = []
    N, L = self.has_gradient.shape
    for t in range(N):
      for k in range(L):
        if not self.has_gradient[t, k]:
          continue
        rows.append(
          dict(
            extra,
            tick=t,
            unit=k + 1,
            source_tick=int(self.source_tick[t, k]),
            mismatch=int(self.mismatch[t, k]),
            **{m: float(np.asarray(getattr(self.metrics, m))[t, k]) for m in METRICS},
          )
        )
    return rows


def source_matrix(graph, num_ticks: int, mask=None) -> np.ndarray:
  """``M[k-1, t, s] = 1`` when loss tick s is in ``gradient_sources[k][t] ∩ V``.

  Shape (L, T + L - 1, T), float32. The reference gradient of unit k at tick t is
  ``Σ_s M[k-1, t, s] w_s ∇_{θ_k} loss_s`` with ``w_s = 1/|V|``.
  """
  L = graph.num_units
  N = num_ticks + L - 1
  V = schedule.loss_ticks(graph, num_ticks, mask)
  src = schedule.gradient_sources(graph, N)
  M = np.zeros((L, N, num_ticks), np.float32)
  for k in range(1, L + 1):
    for t in range(N):
      for s in src[k][t]:
        if s < num_ticks and V[s]:
          M[k - 1, t, s] = 1.0
  return M


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn"))
def _per_tick_reference(graph, loss_fn, params, video, targets, weighted_M):
  """Per-unit references ``(N, P_k)`` and per-tick flattened Sideways grads ``(N, P_k)``."""

  def tick_losses(p):
    outs, _ = engine.forward(graph, p, video, "pipelined", check_finite=False)
    return jax.vmap(lambda o, y: loss_fn(o, y), in_axes=(1, 1))(outs, targets)

  jac = jax.jacrev(tick_losses)(params)  # leaves (T, ...)
  refs = []
  for k in range(graph.num_units):
    J = jax.vmap(flatten)(jac[k])  # (T, P_k)
    refs.append(weighted_M[k] @ J)  # (N, P_k)
  return refs


def per_tick_alignment(graph, params, video, targets, loss_fn, mask=None) -> PerTickAlignment:
  """Per-tick alignment of Sideways with the exact gradient of each gradient's loss tick.

  At tick t (of the T + L - 1 ticks, drain included) unit k of Sideways uses ``g_k^t``; its
  cotangent started at the loss ticks ``S = gradient_sources[k][t] ∩ V`` (one tick
  ``s = t - (L - k)`` on a chain). The reference is the exact gradient of those losses alone,
  through the pipelined forward, with the same weights ``w_s = 1/|V|``:

      r_k^t = Σ_{s∈S} w_s ∇_{θ_k} loss_fn(out_L^s, y^s)

  computed for every s at once (``jax.jacrev`` of the per-tick losses: T backward passes,
  vectorised) and mixed with the source matrix. On a chain ``g_k^t = r_k^t`` exactly for a
  static video; otherwise the gap measures the 2(L-k)-frame mismatch. On graphs with skips the
  reference sums *every* path of those loss ticks while ``g_k^t`` holds only the paths of
  the right length, so per-tick equality is not expected there even for static video; compare
  totals with :func:`alignment` instead.

  Args:
    graph, params, video (B, T, H, W, C), targets (B, T, ...), loss_fn, mask: as for
      ``sl.gradients``.

  Returns:
    :class:`PerTickAlignment`.
  """
  grads, info = engine.gradients(
    graph, params, video, targets, loss_fn, "sideways", mask, per_tick=True
  )  # validates the arguments
  video = jnp.asarray(video)
  T = video.shape[1]
  V = np.asarray(info["loss_ticks"])
  w = V / V.sum()
  M = source_matrix(graph, T, mask)
  refs = _per_tick_reference(
    graph, loss_fn, params, video, targets, jnp.asarray(M * w[None, None, :].astype(np.float32))
  )
  per = info["per_tick_grads"]
  L = graph.num_units
  ms, gn, rn = [], [], []
  for k in range(L):
    G = jax.vmap(flatten)(per[k])  # (N, P_k)
    ms.append(vector_metrics(G, refs[k]))
    gn.append(np.asarray(jnp.linalg.norm(G, axis=-1)))
    rn.append(np.asarray(jnp.linalg.norm(refs[k], axis=-1)))
  has = M.sum(-1).T > 0  # (N, L)
  metrics = Metrics(
    *[
      np.where(has, np.stack([np.asarray(getattr(m, name)) for m in ms], -1), np.nan)
      for name in METRICS
    ]
  )
  N = T + L - 1
  src_tick = np.full((N, L), -1, np.int64)
  mis = np.full((N, L), -1, np.int64)
  for k in range(L):
    for t in range(N):
      s = np.flatnonzero(M[k, t])
      if len(s) == 1:
        src_tick[t, k] = s[0]
        mis[t, k] = (t - (k + 1) + 1) - (s[0] - L + 1)
  return PerTickAlignment(metrics, has, src_tick, mis, np.stack(gn, -1), np.stack(rn, -1))
