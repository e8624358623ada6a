"""The pipeline core: what every gradient engine shares (docs/design.md §3–§5).

The single-device engine (:mod:`sideways_lab.engine`) and the routes across devices
(:mod:`sideways_lab.parallel`) are built from these pieces, and only from these: validation at
the boundary, the loss weights ``w_t = 1{t ∈ V}/|V|`` and the top unit's cotangent
``c_L^t = w_t ∂loss_t/∂out_L^t``, the newest-first history buffers, the message delay lines of a
stash, and :func:`unit_step`, the one VJP of a unit. The schedule of a stash (depths, waits,
drain) is :mod:`sideways_lab.schedule`'s.

Notation (shapes): ``video`` is (B, T, H, W, C); ``out_k^t`` has unit k's output shape
(B, ...); a *buffer* of source j holds its last ``H_j`` values, newest first
(``H_j = schedule.buffer_depths(graph, stash)[j]``, ``1 + max delay`` without a stash).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax

from sideways_lab import schedule
from sideways_lab.graph import UnitGraph


class PipelineState(NamedTuple):
  """The state of a running pipeline, carried between chunks of a stream.

  Attributes:
    buffers: ``buffers[j]`` for sources j = 0..L-1, shape (H_j, B, ...): the last H_j frames
      (j = 0) or outputs of unit j, newest first. ``buffers[0][d]`` is ``x_{t-d}`` once the
      frame of tick t is pushed; ``buffers[j][d]`` is ``out_j^{t-1-d}`` at tick t.
      ``H_j = schedule.buffer_depths(graph, stash)[j]`` (``1 + max d`` without a stash): the
      stash of docs/design.md §5 lives here, as deeper buffers.
    messages: ``messages[j-1]`` for units j = 1..L-1, shape of ``out_j``: the sum of the
      gradient messages sent to unit j at the previous tick (its cotangent for this tick).
    tick: int32 scalar, the number of ticks run so far (the global tick of the next frame).
    delayed: ``()`` when no message waits (``stash=0``, and ``"full"`` on a chain), else
      ``delayed[j-1]`` of shape (W_j, ...) (``W_j = schedule.message_lines(graph, stash)[j]``):
      ``delayed[j-1][i]`` is the sum of the messages that reach unit j ``i + 1`` ticks after
      ``messages[j-1]``.
    carried: ``()`` when no unit carries its input down, else ``carried[j-1]`` of shape
      (C_j, ...) (``C_j = schedule.carried_rows(graph, stash)[j]``, 1 for a carrying unit):
      ``carried[j-1][0]`` is the output of unit j that arrives with ``messages[j-1]``, at
      which unit j recovers its input (docs/design.md §5).
  """

  buffers: tuple
  messages: tuple
  tick: jax.Array
  delayed: tuple = ()
  carried: tuple = ()


def is_concrete(x) -> bool:
  """Whether ``x`` holds values (not a tracer inside ``jit``), so it can be checked."""
  return not isinstance(x, jax.core.Tracer)


def check_graph_params(graph, params) -> None:
  """Raises unless ``graph`` is a UnitGraph and ``params`` a tuple of one dict per unit."""
  if not isinstance(graph, UnitGraph):
    raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
  if not isinstance(params, (tuple, list)) or len(params) != graph.num_units:
    got = (
      f"a {type(params).__name__} of length {len(params)}"
      if isinstance(params, (tuple, list))
      else type(params).__name__
    )
    raise ValueError(
      f"params must be a tuple of {graph.num_units} per-unit parameter dicts "
      f"(as returned by graph.init), got {got}"
    )


def check_video(video, name: str = "video", check_finite: bool = True) -> jax.Array:
  """``video`` as a (B, T, H, W, C) float array; errors name ``name`` and say what to do."""
  if not hasattr(video, "shape") or not hasattr(video, "dtype"):
    video = np.asarray(video)
  if video.ndim != 5:
    raise ValueError(
      f"{name} must have shape (B, T, H, W, C) (rank 5), got shape "
      f"{tuple(video.shape)} (rank {video.ndim})"
    )
  if not jnp.issubdtype(video.dtype, jnp.floating):
    raise TypeError(
      f"{name} must be a floating array (float32), got dtype {video.dtype}"
      + (
        "; convert with video.astype('float32') / 255"
        if jnp.issubdtype(video.dtype, jnp.integer)
        else ""
      )
    )
  if video.shape[1] < 1 or video.shape[0] < 1:
    raise ValueError(
      f"{name} must have at least one clip and one frame, got shape {tuple(video.shape)}"
    )
  if check_finite and is_concrete(video) and not bool(np.isfinite(np.asarray(video)).all()):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  return video


def check_targets(targets, B: int, T: int, check_finite: bool = True) -> None:
  """Raises unless every leaf of ``targets`` has shape (B, T, ...) (and finite values)."""
  leaves = jax.tree_util.tree_leaves(targets)
  if not leaves:
    raise ValueError("targets must be an array of shape (B, T, ...), got an empty pytree")
  for leaf in leaves:
    shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
    if len(shape) < 2 or shape[0] != B or shape[1] != T:
      raise ValueError(
        f"targets must have shape (B, T, ...) = ({B}, {T}, ...) to match the "
        f"video, got shape {shape}"
        + (
          f": its length {shape[1]} differs from the clip's {T} frames"
          if len(shape) >= 2 and shape[0] == B
          else ""
        )
      )
    if (
      check_finite
      and is_concrete(leaf)
      and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
      and not bool(np.isfinite(np.asarray(leaf)).all())
    ):
      raise ValueError("targets contain non-finite values (NaN or inf)")


def check_mask(mask, T: int):
  """``mask`` as a (T,) bool array, or None; errors name ``mask``."""
  if mask is None:
    return None
  shape = tuple(getattr(mask, "shape", np.shape(mask)))
  if shape != (T,):
    raise ValueError(f"mask must have shape (T,) = ({T},), got shape {shape}")
  dtype = jnp.result_type(mask)
  if dtype != jnp.bool_:
    raise TypeError(f"mask must be a bool array, got dtype {dtype}")
  return mask


def check_loss_fn(loss_fn) -> None:
  """Raises unless ``loss_fn`` is callable as ``loss_fn(output, target) -> scalar``."""
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable (output, target) -> scalar, got {loss_fn!r}")


def loss_weights(graph: UnitGraph, T: int, mask, mode: str, dtype=jnp.float32, tick0=0):
  """Per-tick weights ``1{t ∈ V} / |V|`` and the loss-tick mask V, shape (T,) each.

  With a concrete mask (or none) and a static ``tick0`` everything is NumPy and an empty V
  raises; under tracing, ``|V|`` is clamped to 1.
  """
  v_L = schedule.first_valid_ticks(graph, mode)[-1]
  static = (mask is None or is_concrete(mask)) and isinstance(tick0, int)
  if static:
    V = schedule.loss_ticks(graph, T, None if mask is None else np.asarray(mask), mode)
    n = int(V.sum())
    if n == 0:
      why = (
        f"the clip has T={T} ticks but the first valid output of unit {graph.num_units} "
        f"is at tick {v_L}: the clip is too short for the pipeline"
        if T <= v_L
        else "the mask excludes every valid tick"
      )
      raise ValueError(f"no loss tick: {why} (docs/design.md §4: V is empty)")
    return jnp.asarray(V / n, dtype), V
  V = tick0 + jnp.arange(T) >= v_L
  if mask is not None:
    V = V & mask
  return (V / jnp.maximum(V.sum(), 1)).astype(dtype), V


def unit_step(graph: UnitGraph, k: int, params_k, inputs, cotangent):
  """Forward of unit ``k`` at ``inputs`` and the VJP of that forward applied to ``cotangent``.

  ``out_k = f_k(θ_k; inputs)`` and ``(g_k, messages) = cotangent · ∂f_k/∂(θ_k, inputs)``, i.e.
  ``g_k = ∂⟨cotangent, f_k⟩/∂θ_k`` and ``messages[e] = ∂⟨cotangent, f_k⟩/∂inputs[e]``
  (docs/design.md §5). Every engine (the single-device scans and the parallel routes) does its
  per-tick work through this function.

  Args:
    graph: the unit graph.
    k: the unit, 1-based (static).
    params_k: unit k's Haiku parameters (``params[k-1]``).
    inputs: list of arrays in the order of ``graph.edges[k]``; ``inputs[e]`` has the shape of
      source ``graph.edges[k][e][0]`` (the frame (B, H, W, C) for source 0).
    cotangent: array with the shape and dtype of ``out_k``.

  Returns:
    ``(out_k, grads_k, messages)``: ``out_k`` (B, ...); ``grads_k`` with the structure of
    ``params_k``; ``messages`` a list with one cotangent per edge of unit k, in the order of
    ``graph.edges[k]``, each shaped like its input (callers drop those for source 0, the frame;
    under ``jax.jit`` their computation is then removed as dead code).
  """
  return cpu_fast_convs(_unit_step, (0, 1))(graph, k, params_k, list(inputs), cotangent)


def _unit_step(graph, k, params_k, inputs, cotangent):
  out, vjp = jax.vjp(lambda p, ins: graph.apply_unit(k, p, ins), params_k, inputs)
  grads_k, messages = vjp(cotangent)
  return out, grads_k, list(messages)


# ---------------------------------------------------------------------------------------------
# Full speed for any Haiku unit on XLA:CPU
# ---------------------------------------------------------------------------------------------
# The convolutions that autodiff emits for a conv's VJP (the kernel gradient has dimension
# labels such as f01b_i01o->01bf) are rewritten by XLA:CPU into its fast (Eigen) form only
# outside loops; inside the while loop of a lax.scan they run on a naive path, 10-25x slower
# (benchmarks/README.md). We trace the unit step to a jaxpr and bind every convolution with
# the canonical dimension order (batch, spatial..., feature) / (spatial..., in, out), the
# transposes explicit: the same numbers, the fast path everywhere. The bodies of loops (the
# scans of `bptt` and their transposes, conds, whiles) are rewritten the same way. On other
# backends the step is left as it is.


def _canonical_conv(lhs, rhs, params):
  """``conv_general_dilated`` of ``params`` computed in NHWC/HWIO/NHWC order (any rank)."""
  dn = params["dimension_numbers"]
  n = len(dn.lhs_spec) - 2
  canon = lax.ConvDimensionNumbers(
    (0, n + 1, *range(1, n + 1)), (n + 1, n, *range(n)), (0, n + 1, *range(1, n + 1))
  )
  if tuple(dn) == tuple(canon):
    return lax.conv_general_dilated_p.bind(lhs, rhs, **params)
  lhs = jnp.transpose(lhs, (dn.lhs_spec[0], *dn.lhs_spec[2:], dn.lhs_spec[1]))
  rhs = jnp.transpose(rhs, (*dn.rhs_spec[2:], dn.rhs_spec[1], dn.rhs_spec[0]))
  y = lax.conv_general_dilated_p.bind(lhs, rhs, **dict(params, dimension_numbers=canon))
  back = [0] * (n + 2)  # axis of the result that goes to each output axis
  back[dn.out_spec[1]] = n + 1
  for s in range(n):
    back[dn.out_spec[2 + s]] = 1 + s
  return jnp.transpose(y, back)


def _eval_canonical_convs(jaxpr, consts, *args) -> list:
  """``jax.core.eval_jaxpr`` with every convolution (also inside nested jits) canonical."""
  env = {}
  read = lambda v: v.val if isinstance(v, jax.extend.core.Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    if eqn.primitive is lax.conv_general_dilated_p:
      outs = [_canonical_conv(*invals, eqn.params)]
    elif eqn.primitive.name in ("pjit", "jit", "closed_call") and "jaxpr" in eqn.params:
      inner = eqn.params["jaxpr"]
      outs = _eval_canonical_convs(inner.jaxpr, inner.consts, *invals)
    elif eqn.primitive.name in _LOOPS and any(_has_conv_param(v) for v in eqn.params.values()):
      params = {k: _canonical_param(v) for k, v in eqn.params.items()}
      outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    else:
      outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


_LOOPS = ("scan", "while", "cond")  # primitives whose bodies (closed jaxprs) are rewritten too


def _has_conv_param(v) -> bool:
  if isinstance(v, tuple):
    return any(_has_conv_param(x) for x in v)
  return isinstance(v, jax.extend.core.ClosedJaxpr) and any(_has_conv(v.jaxpr))


def _canonical_param(v):
  """A loop body (or a tuple of branches) with its convolutions canonical, the same types."""
  if isinstance(v, tuple):
    return tuple(_canonical_param(x) for x in v)
  if not _has_conv_param(v):
    return v
  avals = [jax.ShapeDtypeStruct(x.aval.shape, x.aval.dtype) for x in v.jaxpr.invars]
  body = functools.partial(_eval_canonical_convs, v.jaxpr, v.consts)
  new = jax.make_jaxpr(lambda *a: body(*a))(*avals)
  return new


def cpu_fast_convs(fn: Callable, static_argnums: tuple[int, ...] = ()) -> Callable:
  """``fn`` with its convolutions in XLA:CPU's fast form (identity off the CPU).

  ``static_argnums`` name the leading arguments that are not arrays (they must come first).
  """
  if jax.default_backend() != "cpu":
    return fn

  @functools.wraps(fn)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, static_argnums=static_argnums, return_shape=True)(*args)
    if not any(_has_conv(closed.jaxpr)):
      return fn(*args)
    leaves = jax.tree_util.tree_leaves(args[len(static_argnums) :])
    outs = _eval_canonical_convs(closed.jaxpr, closed.consts, *leaves)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

  return wrapped


def _has_conv(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn.primitive is lax.conv_general_dilated_p
    if "jaxpr" in eqn.params and hasattr(eqn.params["jaxpr"], "jaxpr"):
      yield any(_has_conv(eqn.params["jaxpr"].jaxpr))


def out_structs(graph: UnitGraph, params, frame: jax.ShapeDtypeStruct) -> list:
  """Shape/dtype of every source: index 0 is the frame, k the output of unit k."""

  def sync_once(params, frame):
    outs = [frame]
    for k in range(1, graph.num_units + 1):
      outs.append(graph.apply_unit(k, params[k - 1], [outs[j] for j, _ in graph.edges[k]]))
    return outs

  return jax.eval_shape(sync_once, params, frame)


def zero_buffers(graph: UnitGraph, structs, stash=0) -> tuple:
  """Zero history buffers of every source, as deep as ``stash`` needs (docs/design.md §5)."""
  depths = schedule.buffer_depths(graph, stash)
  return tuple(
    jnp.zeros((depths[j],) + tuple(structs[j].shape), structs[j].dtype)
    for j in range(graph.num_units)
  )


def push(buf: jax.Array, x: jax.Array) -> jax.Array:
  """Puts ``x`` at the front of a newest-first history buffer."""
  if buf.shape[0] == 1:
    return x[None]
  return jnp.concatenate([x[None], buf[:-1]], axis=0)


def frame_at(video: jax.Array, i) -> jax.Array:
  """Frame ``min(i, T-1)`` of a (B, T, ...) clip, indexed inside the scan (no copy)."""
  T = video.shape[1]
  return lax.dynamic_index_in_dim(video, jnp.minimum(i, T - 1), axis=1, keepdims=False)


def target_at(targets, i):
  """The targets of tick ``i``: every leaf of ``targets`` indexed at time axis 1."""
  return jax.tree_util.tree_map(lambda y: frame_at(y, i), targets)


def unit_inputs(
  graph: UnitGraph, k: int, buffers, outs_now=None, mode="pipelined", lag: int = 0
) -> list:
  """``[src(j, d, t - lag) for (j, d) in edges[k]]`` from the buffers (docs/design.md §3)."""
  inputs = []
  for j, d in graph.edges[k]:
    if j == 0:
      inputs.append(buffers[0][d + lag])  # x_{t-lag-d}
    elif mode == "pipelined":
      inputs.append(buffers[j][d + lag])  # out_j^{t-lag-1-d}
    else:
      inputs.append(outs_now[j] if d == 0 else buffers[j][d - 1])  # out_j^{t-d}
  return inputs


def advance(graph, buffers, x_t, outs):
  """Buffers after a tick: the frame pushed first, then every unit's new output."""
  new = [push(buffers[0], x_t)]
  for j in range(1, graph.num_units):
    new.append(push(buffers[j], outs[j]))
  return tuple(new)


def zero_state(graph, params, video, stash=0) -> PipelineState:
  """An empty :class:`PipelineState` (zero buffers, messages, delay lines; tick 0)."""
  structs = out_structs(
    graph, params, jax.ShapeDtypeStruct((video.shape[0],) + tuple(video.shape[2:]), video.dtype)
  )
  L = graph.num_units

  def rows(n):  # zeros (n_j, ...) per unit j = 1..L-1, or () when every n_j is 0
    if not any(n):
      return ()
    return tuple(
      jnp.zeros((n[j],) + tuple(structs[j].shape), structs[j].dtype) for j in range(1, L)
    )

  return PipelineState(
    zero_buffers(graph, structs, stash),
    tuple(jnp.zeros(s.shape, s.dtype) for s in structs[1:L]),
    jnp.zeros((), jnp.int32),
    rows(schedule.message_lines(graph, stash)),
    rows(schedule.carried_rows(graph, stash)),
  )


def tick_loss(loss_fn, out, y):
  """``loss_fn(out, y)`` of one tick, as a float32 scalar."""
  loss = jnp.asarray(loss_fn(out, y))
  if loss.shape != ():
    raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {loss.shape}")
  return loss


def loss_cotangent(loss_fn, out, y, w):
  """``(loss_fn(out, y), w ∂loss_fn/∂out)``; the cotangent is exactly zero where ``w = 0``."""
  loss, dl = jax.value_and_grad(functools.partial(tick_loss, loss_fn))(out, y)
  return loss, jnp.where(w > 0, w * dl, 0.0).astype(out.dtype)


def stream_loss_weights(
  graph: UnitGraph,
  num_ticks: int,
  tick,
  mask=None,
  loss_weight: str | float = "mean",
  dtype=jnp.float32,
):
  """Loss weights of a chunk of a stream: ``(w (K,), V (K,) bool)``.

  ``V_t = valid(L, tick + t) and mask[t]`` for the K = ``num_ticks`` ticks of the chunk that
  starts at global tick ``tick`` (an int or a traced scalar); ``w_t = 1{t ∈ V} / |V|``
  (``loss_weight="mean"``, ``|V|`` clamped to 1) or ``1{t ∈ V} · loss_weight`` (a float: use
  ``1/|V|`` of a whole clip to reproduce it). The one home of the streaming weights: the
  single-device and the parallel engines use it.
  """
  v_L = schedule.first_valid_ticks(graph)[-1]
  V = tick + jnp.arange(num_ticks) >= v_L
  if mask is not None:
    V = V & jnp.asarray(mask, bool)
  if isinstance(loss_weight, str):
    if loss_weight != "mean":
      raise ValueError(f"loss_weight must be 'mean' or a float, got {loss_weight!r}")
    weights = V / jnp.maximum(V.sum(), 1)
  else:
    weights = V * loss_weight
  return weights.astype(dtype), V


def check_state(graph, state, stash=None) -> None:
  """Raises unless ``state`` is a PipelineState of ``graph`` (and of ``stash``, if given)."""
  if not isinstance(state, PipelineState):
    raise TypeError(
      f"state must be a sl.PipelineState (from sl.init_state), got {type(state).__name__}"
    )
  if len(state.buffers) != graph.num_units or len(state.messages) != graph.num_units - 1:
    raise ValueError(
      f"state belongs to a graph with {len(state.buffers)} units, not {graph.num_units}"
    )
  if stash is None:
    return
  depths = [b.shape[0] for b in state.buffers]
  L = graph.num_units
  got = lambda rows: [d.shape[0] for d in rows] if rows else [0] * (L - 1)
  lines, carried = schedule.message_lines(graph, stash), schedule.carried_rows(graph, stash)
  if (
    depths != schedule.buffer_depths(graph, stash)
    or got(state.delayed) != lines[1:L]
    or got(state.carried) != list(carried[1:L])
  ):
    raise ValueError(
      f"state was made for another stash than stash={stash!r} (buffer depths "
      f"{depths}, expected {schedule.buffer_depths(graph, stash)}); make it with "
      f"sl.init_state(graph, params, video, stash={stash!r})"
    )


# ---------------------------------------------------------------------------------------------
# One unit's work in one tick, with a stash, and the routing of its messages
# ---------------------------------------------------------------------------------------------


def compress(x: jax.Array, dtype: str = "float32") -> jax.Array:
  """``x`` after a round trip through a stash stored in ``dtype`` (``schedule.STASH_DTYPES``).

  ``float32``: ``x``; ``bfloat16``: ``x`` rounded to bfloat16; ``int8`` with one scale per
  tensor: ``a = max|x| / 127``, ``q = round(x / a) ∈ [-127, 127]``, the result ``a·q`` (zeros
  when ``x`` is). The result has ``x``'s dtype and shape.
  """
  if dtype == "float32":
    return x
  if dtype == "bfloat16":
    return x.astype(jnp.bfloat16).astype(x.dtype)
  if dtype != "int8":
    raise ValueError(f"dtype must be one of {schedule.STASH_DTYPES}, got {dtype!r}")
  scale = jnp.max(jnp.abs(x)) / 127
  q = jnp.clip(jnp.round(x / jnp.where(scale > 0, scale, 1)), -127, 127).astype(jnp.int8)
  return q.astype(x.dtype) * scale


def stashed_inputs(graph: UnitGraph, k: int, buffers, lag: int, dtype: str = "float32") -> list:
  """``src(j, d, τ - lag)`` for the edges of unit k (:func:`unit_inputs`), each as the stash
  stores it (:func:`compress` to ``dtype``) where it is a row the stash adds, i.e. beyond the
  ``1 + max d`` rows of source j that Sideways keeps (``d + lag >= graph.history(j)``)."""
  inputs = unit_inputs(graph, k, buffers, lag=lag)
  return [
    compress(x, dtype) if d + lag >= graph.history(j) else x
    for (j, d), x in zip(graph.edges[k], inputs)
  ]


def stashed_step(
  graph: UnitGraph, k: int, params_k, buffers, cotangent, lag: int, dtype: str = "float32"
):
  """Unit k's work at tick τ: its forward at the inputs of τ, its VJP at the inputs of τ - lag.

  ``out_k^τ = f_k(θ_k; src(·, ·, τ))`` and ``(g_k, messages) = c_k^τ · ∂f_k/∂(θ_k, inputs)``
  at ``src(·, ·, τ - lag)`` as the stash stores them in ``dtype`` (:func:`stashed_inputs`;
  docs/design.md §5; ``lag = s_k``). ``buffers`` are indexed by
  source (a dict or a sequence), newest first, with this tick's frame already pushed:
  ``buffers[0][d] = x_{τ-d}``, ``buffers[j][d] = out_j^{τ-1-d}``. One :func:`unit_step`
  when ``lag = 0``; a forward and a :func:`unit_step` otherwise.

  Returns ``(out_k, g_k, messages, inputs)`` with ``messages[e]`` for every edge e of unit k
  and ``inputs`` the inputs of the VJP (what a message carries down to a carrying unit).
  """
  cur = unit_inputs(graph, k, buffers)
  if lag == 0:
    return (*unit_step(graph, k, params_k, cur, cotangent), cur)
  out = graph.apply_unit(k, params_k, cur)
  stashed = stashed_inputs(graph, k, buffers, lag, dtype)
  _, grads, messages = unit_step(graph, k, params_k, stashed, cotangent)
  return out, grads, messages, stashed


def carried_vjp(graph: UnitGraph, k: int, params_k, carried, cotangent):
  """The VJP of a unit that carries its input down, at the input recovered from ``carried``.

  ``x = f_k^{-1}(θ_k; y)`` with ``y = carried`` the output of unit k that its reader sent
  down with the cotangent, and ``(g_k, messages) = c_k^τ · ∂f_k/∂(θ_k, x)`` at ``[x]``
  (docs/design.md §5, carry-down). Returns ``(g_k, messages, [x])``; ``x`` goes on down.
  """
  x = graph.invert_unit(k, params_k, carried)
  _, grads, messages = unit_step(graph, k, params_k, [x], cotangent)
  return grads, messages, [x]


def carry_step(graph: UnitGraph, k: int, params_k, buffers, cotangent, carried):
  """Unit k's work at tick τ when it carries its input down: its forward at the inputs of τ
  and :func:`carried_vjp`. Returns ``(out_k, g_k, messages, [x])`` like :func:`stashed_step`."""
  out = graph.apply_unit(k, params_k, unit_inputs(graph, k, buffers))
  return (out, *carried_vjp(graph, k, params_k, carried, cotangent))


def carried_posts(graph: UnitGraph, k: int, inputs, carry) -> list:
  """``[(j, y)]``: what unit k sends down to each carrying source j in ``carry`` beside its
  message, ``y = inputs[e]`` the input of its VJP on that edge (``out_j`` at the message's
  tick)."""
  return [(j, inputs[e]) for e, (j, _) in enumerate(graph.edges[k]) if j in carry]


def top_step(graph: UnitGraph, params_L, buffers, loss_fn, y, w):
  """The top unit's work at tick τ: ``out_L^τ``, ``loss_fn(out_L^τ, y^τ)`` and the VJP of
  ``f_L`` at the inputs of τ applied to ``c_L^τ = w_τ ∂loss/∂out_L^τ`` (:func:`loss_cotangent`).

  Returns ``(out_L, g_L, messages, loss, inputs)`` (``inputs``: those of the VJP, the current
  ones). The extra forward is the VJP's own, merged by CSE.
  """
  L = graph.num_units
  cur = unit_inputs(graph, L, buffers)
  out = graph.apply_unit(L, params_L, cur)
  loss, cot = loss_cotangent(loss_fn, out, y, w)
  out, grads, messages = unit_step(graph, L, params_L, cur, cot)
  return out, grads, messages, loss, cur


def shift_line(line):
  """``(line[0], line shifted by one tick)``: what a delay line (W, ...) delivers now and
  the line for the next tick (``line'[i] = line[i+1]``, zeros at the end)."""
  return line[0], jnp.concatenate([line[1:], jnp.zeros_like(line[:1])])


def post(now: dict, lines: dict, j: int, message, wait: int) -> None:
  """Adds a message for unit j that waits ``wait`` extra ticks (``schedule.message_waits``):
  into ``now[j]`` (the next tick's cotangent) when ``wait = 0``, else into ``lines[j][wait-1]``.
  ``now`` and ``lines`` are dicts updated in place."""
  if wait == 0:
    now[j] = now[j] + message if j in now else message
  else:
    lines[j] = lines[j].at[wait - 1].add(message)
