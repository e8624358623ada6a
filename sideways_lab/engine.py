"""The engines: pipelined and synchronous forward passes and the four gradient methods.

Everything here follows docs/design.md §3–§5. Each pass is one ``lax.scan`` over ticks; frames are
indexed inside the scan (the clip is never transposed or copied). The forward-in-time engine
(``_pipeline_scan``: ``sideways``, its ``stash`` knob and ``pipelined_exact``) carries
O(L) buffers plus the stash and the message delay lines, so its memory does not grow with the
clip length T; ``bptt`` (the reverse-mode reference) keeps every tick. Every per-tick unit
computation goes through :func:`unit_step`.

Notation (shapes): ``video`` is (B, T, H, W, C); ``out_k^t`` has unit k's output shape
(B, ...); a *buffer* of source j holds its last ``H_j`` outputs, newest first
(``H_j = 1 + max delay`` without a stash, ``schedule.buffer_depths`` with one).
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

METHODS = ("backprop", "bptt", "pipelined_exact", "sideways")
MODES = ("pipelined", "synchronous")

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


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
  """

  buffers: tuple
  messages: tuple
  tick: jax.Array
  delayed: tuple = ()


# ---------------------------------------------------------------------------------------------
# Validation at the boundary
# ---------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_graph_params(graph, params) -> None:
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


def _check_video(video, name: str = "video", check_finite: bool = True) -> jax.Array:
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
  if check_finite and _is_concrete(video) and not bool(np.isfinite(np.asarray(video)).all()):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  return video


def _check_targets(targets, B: int, T: int, check_finite: bool = True) -> None:
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
      and _is_concrete(leaf)
      and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
      and not bool(np.isfinite(np.asarray(leaf)).all())
    ):
      raise ValueError("targets contain non-finite values (NaN or inf)")


def _check_mask(mask, T: int):
  if mask is None:
    return None
  shape = tuple(getattr(mask, "shape", np.shape(mask)))
  if shape != (T,):
    raise ValueError(f"mask must have shape (T,) = ({T},), got shape {shape}")
  dtype = jnp.result_type(mask)
  if dtype != jnp.bool_:
    raise TypeError(f"mask must be a bool array, got dtype {dtype}")
  return mask


def _check_loss_fn(loss_fn) -> None:
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable (output, target) -> scalar, got {loss_fn!r}")


def _loss_weights(graph: UnitGraph, T: int, mask, mode: str, dtype=jnp.float32, tick0=0):
  """Per-tick weights ``1{t ∈ V} / |V|`` and the loss-tick mask V, shape (T,) each.

  With a concrete mask (or none) and a static ``tick0`` everything is NumPy and an empty V
  raises; under tracing, ``|V|`` is clamped to 1.
  """
  v_L = schedule.first_valid_ticks(graph, mode)[-1]
  static = (mask is None or _is_concrete(mask)) and isinstance(tick0, int)
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


# ---------------------------------------------------------------------------------------------
# The unit step: the one place where a unit's forward and VJP are written
# ---------------------------------------------------------------------------------------------


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
  return _cpu_fast_convs(_unit_step, (0, 1))(graph, k, params_k, list(inputs), cotangent)


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
# transposes explicit: the same numbers, the fast path everywhere. On other backends the step
# is left as it is.


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
    else:
      outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _cpu_fast_convs(fn: Callable, static_argnums: tuple[int, ...] = ()) -> Callable:
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


# ---------------------------------------------------------------------------------------------
# Shared pieces of the scans
# ---------------------------------------------------------------------------------------------


def _out_structs(graph: UnitGraph, params, frame: jax.ShapeDtypeStruct) -> list:
  """Shape/dtype of every source: index 0 is the frame, k the output of unit k."""

  def sync_once(params, frame):
    outs = [frame]
    for k in range(1, graph.num_units + 1):
      outs.append(graph.apply_unit(k, params[k - 1], [outs[j] for j, _ in graph.edges[k]]))
    return outs

  return jax.eval_shape(sync_once, params, frame)


def _zeros_buffers(graph: UnitGraph, structs, stash=0) -> tuple:
  depths = schedule.buffer_depths(graph, stash)
  return tuple(
    jnp.zeros((depths[j],) + tuple(structs[j].shape), structs[j].dtype)
    for j in range(graph.num_units)
  )


def _push(buf: jax.Array, x: jax.Array) -> jax.Array:
  """Puts ``x`` at the front of a newest-first history buffer."""
  if buf.shape[0] == 1:
    return x[None]
  return jnp.concatenate([x[None], buf[:-1]], axis=0)


def _frame(video: jax.Array, i) -> jax.Array:
  """Frame ``min(i, T-1)`` of a (B, T, ...) clip, indexed inside the scan (no copy)."""
  T = video.shape[1]
  return lax.dynamic_index_in_dim(video, jnp.minimum(i, T - 1), axis=1, keepdims=False)


def _target(targets, i):
  return jax.tree_util.tree_map(lambda y: _frame(y, i), targets)


def _unit_inputs(
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


def _advance(graph, buffers, x_t, outs):
  """Buffers after a tick: the frame pushed first, then every unit's new output."""
  new = [_push(buffers[0], x_t)]
  for j in range(1, graph.num_units):
    new.append(_push(buffers[j], outs[j]))
  return tuple(new)


def _pipelined_tick(graph, params, buffers, x_t):
  """One pipelined forward tick: returns every unit's output [x_t, out_1, ..., out_L]."""
  bufs = (_push(buffers[0], x_t),) + tuple(buffers[1:])
  outs = [x_t]
  for k in range(1, graph.num_units + 1):
    outs.append(graph.apply_unit(k, params[k - 1], _unit_inputs(graph, k, bufs)))
  return outs


def _synchronous_tick(graph, params, buffers, x_t):
  bufs = (_push(buffers[0], x_t),) + tuple(buffers[1:])
  outs = [x_t]
  for k in range(1, graph.num_units + 1):
    outs.append(
      graph.apply_unit(k, params[k - 1], _unit_inputs(graph, k, bufs, outs, mode="synchronous"))
    )
  return outs


def _forward_scan(graph, params, video, buffers, num_ticks, mode, emit):
  """Scans the forward pass; ``emit(i, outs)`` picks what each tick returns."""
  tick_fn = _pipelined_tick if mode == "pipelined" else _synchronous_tick

  def body(bufs, i):
    x_t = _frame(video, i)
    outs = tick_fn(graph, params, bufs, x_t)
    return _advance(graph, bufs, x_t, outs), emit(i, outs)

  return lax.scan(body, buffers, jnp.arange(num_ticks))


def _time_major_to_batch(x):
  return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), x)


def _zero_state(graph, params, video, stash=0) -> PipelineState:
  structs = _out_structs(
    graph, params, jax.ShapeDtypeStruct((video.shape[0],) + tuple(video.shape[2:]), video.dtype)
  )
  L = graph.num_units
  lines = schedule.message_lines(graph, stash)
  delayed = (
    ()
    if not any(lines)
    else tuple(
      jnp.zeros((lines[j],) + tuple(structs[j].shape), structs[j].dtype) for j in range(1, L)
    )
  )
  return PipelineState(
    _zeros_buffers(graph, structs, stash),
    tuple(jnp.zeros(s.shape, s.dtype) for s in structs[1:L]),
    jnp.zeros((), jnp.int32),
    delayed,
  )


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graph", "mode", "all_units"))
def _forward_impl(graph, params, video, mode, all_units):
  T = video.shape[1]
  state = _zero_state(graph, params, video)
  emit = (lambda i, outs: tuple(outs[1:])) if all_units else (lambda i, outs: outs[-1])
  _, ys = _forward_scan(graph, params, video, state.buffers, T, mode, emit)
  return _time_major_to_batch(ys)


def forward(
  graph: UnitGraph,
  params,
  video,
  mode: str = "pipelined",
  *,
  all_units: bool = False,
  check_finite: bool = True,
):
  """Runs the clip through the graph, one tick per frame.

  Args:
    graph: the unit graph.
    params: tuple of L per-unit parameter dicts (``graph.init``).
    video: (B, T, H, W, C) floating array.
    mode: ``"pipelined"`` (Sideways: unit k reads what its sources produced at the previous
      tick) or ``"synchronous"`` (BP: every source read at the same tick).
    all_units: return every unit's outputs, not only unit L's.
    check_finite: reject NaN/inf frames when ``video`` is concrete.

  Returns:
    ``(outputs, valid)``: ``outputs`` is (B, T, ...) — unit L's output at every tick (a tuple
    of L such arrays when ``all_units``); ``valid`` is a (T,) bool NumPy array, ``valid(L, t)``.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  _check_graph_params(graph, params)
  video = _check_video(video, check_finite=check_finite)
  T = video.shape[1]
  outputs = _forward_impl(graph, params, video, mode, all_units)
  return outputs, schedule.loss_ticks(graph, T, None, mode)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def _tick_loss(loss_fn, out, y):
  loss = jnp.asarray(loss_fn(out, y))
  if loss.shape != ():
    raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {loss.shape}")
  return loss


def _exact_grads(graph, params, video, targets, weights, loss_fn, mode):
  """BPTT through the unrolled forward: ``∇ Σ_t w_t loss_t``. Returns (grads, per-tick loss)."""
  T = video.shape[1]
  state = _zero_state(graph, params, video)

  def J(params):
    emit = lambda i, outs: _tick_loss(loss_fn, outs[-1], _target(targets, i))
    _, losses = _forward_scan(graph, params, video, state.buffers, T, mode, emit)
    losses_safe = jnp.where(weights > 0, losses, 0.0)
    return jnp.sum(weights * losses_safe), losses

  grads, losses = jax.grad(J, has_aux=True)(params)
  return grads, losses, None


def _framewise_backprop(graph, params, video, targets, weights, loss_fn, per_tick):
  """BP on a graph without delays: one forward+backward per frame, O(L) memory.

  ``∇J = Σ_t w_t ∇ loss_fn(f(x_t), y_t)``, accumulated in the scan carry.
  """
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)

  def frame_loss(params, x, y):
    outs = [x]
    for k in range(1, graph.num_units + 1):
      outs.append(graph.apply_unit(k, params[k - 1], [outs[j] for j, _ in graph.edges[k]]))
    return _tick_loss(loss_fn, outs[-1], y)

  def body(acc, i):
    x, y, w = _frame(video, i), _target(targets, i), weights[i]
    loss, g = _cpu_fast_convs(jax.value_and_grad(frame_loss))(params, x, y)
    g = jax.tree_util.tree_map(lambda a: jnp.where(w > 0, w * a, 0.0).astype(a.dtype), g)
    acc = jax.tree_util.tree_map(jnp.add, acc, g)
    return acc, (loss, g if per_tick else None)

  grads, (losses, per) = lax.scan(body, zero, jnp.arange(video.shape[1]))
  return grads, losses, per


def _when(active, fn):
  """``fn()`` when ``active`` (a traced bool), else zeros shaped like its result."""
  shapes = jax.eval_shape(fn)
  zeros = lambda: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return lax.cond(active, fn, zeros)


def _between(tick, lo: int, hi: int | None):
  """``lo <= tick <= hi`` (no upper bound when ``hi`` is None)."""
  return (tick >= lo) if hi is None else ((tick >= lo) & (tick <= hi))


def _loss_cotangent(loss_fn, out, y, w):
  """``(loss_fn(out, y), w ∂loss_fn/∂out)``; the cotangent is exactly zero where ``w = 0``."""
  loss, dl = jax.value_and_grad(functools.partial(_tick_loss, loss_fn))(out, y)
  return loss, jnp.where(w > 0, w * dl, 0.0).astype(out.dtype)


def _unit_messages(graph: UnitGraph, k: int, params_k, inputs, cotangent):
  """:func:`unit_step` without the messages to the frame: ``(out_k, g_k, [(j, wait-free
  message) for the edges with j >= 1])``, so that their computation is dead code."""
  out, g, msgs = unit_step(graph, k, params_k, inputs, cotangent)
  return out, g, [m for (j, _), m in zip(graph.edges[k], msgs) if j >= 1]


def _windows(graph: UnitGraph, stash, last_loss_tick: int | None):
  """Global ticks at which each unit has work, so that idle units can skip it exactly.

  Returns ``(fwd, vjp)``: dicts k -> (lo, hi) (``hi`` None without a last loss tick).
  The VJP of unit k can have a non-zero cotangent only at ticks ``v_L + fewest[k] ..
  last + most[k]`` (:func:`schedule.gradient_arrivals`); its forward output matters from its
  first valid tick ``v_k`` until the last tick at which a reader's forward or stashed VJP reads
  it: ``need_L = last``, ``need_j = max over readers (k, d) of max(need_k, last + most[k] - s_k)
  - 1 - d``. Outside the windows a unit outputs zeros, as the empty pipeline would; a non-zero
  cotangent always meets a valid (stashed) input (docs/design.md §5), so nothing changes.
  """
  L = graph.num_units
  first = schedule.first_valid_ticks(graph, "pipelined")
  s = schedule.stash_depths(graph, stash)
  fewest, most = schedule.gradient_arrivals(graph, stash)
  last = last_loss_tick
  need = {L: last}
  for j in range(L - 1, 0, -1):
    need[j] = (
      None
      if last is None
      else max(max(need[k], last + most[k] - s[k]) - 1 - d for k, _, d in graph.readers(j))
    )
  fwd = {k: (first[k], need[k]) for k in range(1, L + 1)}
  vjp = {
    k: (first[L] + fewest[k], None if last is None else last + most[k]) for k in range(1, L + 1)
  }
  return fwd, vjp


def _pipeline_scan(
  graph,
  params,
  video,
  targets,
  weights,
  loss_fn,
  state: PipelineState,
  num_ticks: int,
  per_tick: bool,
  stash=0,
  last_loss_tick=None,
):
  """The forward-in-time gradient engine: Sideways with a stash (docs/design.md §5).

  With ``s = schedule.stash_depths(graph, stash)``, at every tick τ every unit k

  * runs its forward at its current inputs, ``out_k^τ = f_k(θ_k; src(·, ·, τ))``, and
  * takes the VJP of f_k at its inputs of tick ``τ - s_k`` (read from the deeper buffers)
    applied to its cotangent: ``c_L^τ = w_τ ∂loss/∂out_L^τ`` at the top (``s_L = 0``) and,
    below, the sum of the messages that arrive at τ;

  (one :func:`unit_step` when ``s_k = 0``; a forward and a :func:`unit_step` otherwise). The
  message on edge e = (j, d) of unit k waits ``schedule.message_waits`` extra ticks before it
  joins ``c_j``. ``stash=0`` is Sideways, ``stash="full"`` the exact gradient. Ticks past the
  clip feed its last frame again (the drain); ``weights`` is zero there. Idle units skip their
  work with ``lax.cond`` (see :func:`_windows`), so no result changes.

  Returns ``(Ĝ, new_state, per-tick loss (num_ticks,), per-tick grads or None)``.
  """
  L = graph.num_units
  s = schedule.stash_depths(graph, stash)
  waits = schedule.message_waits(graph, stash)
  lines = schedule.message_lines(graph, stash)
  fwd, vjp = _windows(graph, stash, last_loss_tick)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  has_lines = bool(state.delayed)

  def body(carry, i):
    bufs, msgs, delayed, acc = carry
    tick = state.tick + i
    x_t = _frame(video, i)
    bufs_in = (_push(bufs[0], x_t),) + tuple(bufs[1:])
    outs, grads_t, loss_t = [x_t], [], None
    # messages for the next tick (c^{τ+1}) and the delay lines, shifted by one tick
    nxt = [delayed[j - 1][0] if lines[j] else jnp.zeros_like(msgs[j - 1]) for j in range(1, L)]
    line = [
      jnp.concatenate([delayed[j - 1][1:], jnp.zeros_like(delayed[j - 1][:1])])
      if lines[j]
      else None
      for j in range(1, L)
    ]
    for k in range(1, L + 1):
      p, cur = params[k - 1], _unit_inputs(graph, k, bufs_in)
      if k == L:

        def top(p=p, cur=cur):
          out = graph.apply_unit(L, p, cur)
          loss, cot = _loss_cotangent(loss_fn, out, _target(targets, i), weights[i])
          return _unit_messages(graph, L, p, cur, cot) + (loss,)

        out, g, m, loss_t = _when(_between(tick, *fwd[L]), top)
      elif s[k] == 0:
        active = _between(tick, *fwd[k]) | _between(tick, *vjp[k])
        out, g, m = _when(active, functools.partial(_unit_messages, graph, k, p, cur, msgs[k - 1]))
      else:
        out = _when(_between(tick, *fwd[k]), functools.partial(graph.apply_unit, k, p, cur))
        stashed = _unit_inputs(graph, k, bufs_in, lag=s[k])
        _, g, m = _when(
          _between(tick, *vjp[k]),
          functools.partial(_unit_messages, graph, k, p, stashed, msgs[k - 1]),
        )
      outs.append(out)
      grads_t.append(g)
      sources = [(e, j) for e, (j, _) in enumerate(graph.edges[k]) if j >= 1]
      for (e, j), msg in zip(sources, m):
        w = waits[(k, e)]
        if w == 0:
          nxt[j - 1] = nxt[j - 1] + msg
        else:
          line[j - 1] = line[j - 1].at[w - 1].add(msg)
    new_delayed = (
      tuple(line[j - 1] if lines[j] else delayed[j - 1] for j in range(1, L)) if has_lines else ()
    )
    acc = jax.tree_util.tree_map(jnp.add, acc, tuple(grads_t))
    carry = (_advance(graph, bufs, x_t, outs), tuple(nxt), new_delayed, acc)
    return carry, (loss_t, tuple(grads_t) if per_tick else None)

  (bufs, msgs, delayed, grads), (losses, per) = lax.scan(
    body, (state.buffers, state.messages, state.delayed, zero), jnp.arange(num_ticks)
  )
  new_state = PipelineState(bufs, msgs, state.tick + num_ticks, delayed)
  return grads, new_state, losses, per


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "method", "per_tick", "stash"))
def _gradients_impl(graph, params, video, targets, weights, loss_fn, method, per_tick, stash):
  T = video.shape[1]
  if method in ("sideways", "pipelined_exact"):
    stash = schedule.FULL if method == "pipelined_exact" else stash
    drain = schedule.drain_ticks(graph, stash)
    w = jnp.concatenate([weights, jnp.zeros((drain,), weights.dtype)])
    state = _zero_state(graph, params, video, stash)
    grads, _, losses, per = _pipeline_scan(
      graph,
      params,
      video,
      targets,
      w,
      loss_fn,
      state,
      T + drain,
      per_tick,
      stash,
      last_loss_tick=T - 1,
    )
    losses = losses[:T]
  elif method == "bptt":
    grads, losses, per = _exact_grads(graph, params, video, targets, weights, loss_fn, "pipelined")
  elif graph.is_recurrent:
    grads, losses, per = _exact_grads(
      graph, params, video, targets, weights, loss_fn, "synchronous"
    )
  else:
    grads, losses, per = _framewise_backprop(
      graph, params, video, targets, weights, loss_fn, per_tick
    )
  loss = jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))
  return grads, loss, losses, per


def _check_stash_method(stash, method: str) -> None:
  schedule.check_stash(stash)
  if method != "sideways" and not (isinstance(stash, int) and stash == 0):
    raise ValueError(
      f"stash={stash!r} is only meaningful for method='sideways' (stash='full' "
      f"is method='pipelined_exact'), got method={method!r}"
    )


def gradients(
  graph: UnitGraph,
  params,
  video,
  targets,
  loss_fn: LossFn,
  method: str = "sideways",
  mask=None,
  stash=0,
  *,
  per_tick: bool = False,
  check_finite: bool = True,
):
  """Gradients of the clip loss J (docs/design.md §4) by one of four methods (§5).

  ``J = (1/|V|) Σ_{t∈V} loss_fn(out_L^t, y^t)``, ``V = {t : valid(L, t) and mask[t]}``.

  Args:
    graph: the unit graph (static under ``jax.jit``).
    params: tuple of L per-unit parameter dicts.
    video: (B, T, H, W, C) floating array.
    targets: (B, T, ...) — ``targets[:, t]`` is the target of the output at tick t.
    loss_fn: ``loss_fn(output (B, ...), target (B, ...)) -> scalar`` batch mean (static under
      ``jax.jit``; pass the same function object to avoid recompiling).
    method: ``"backprop"`` (synchronous forward, exact gradient, through time when the graph
      has delays), ``"bptt"`` (pipelined forward, exact gradient by reverse mode through the
      unrolled pipeline: the reference, O(T·L) memory), ``"pipelined_exact"`` (the same
      gradient computed forward in time with stashed inputs, memory independent of T) or
      ``"sideways"`` (pipelined forward, the forward-propagated estimate Ĝ = Σ_t g^t;
      Skip-Sideways on a graph with skips). The forward-in-time methods run
      ``schedule.drain_ticks(graph, stash)`` drain ticks after the clip (L - 1 for Sideways).
    mask: optional (T,) bool array: which ticks have a target.
    stash: ``method="sideways"`` only (static): an int m >= 0 or ``"full"``; unit k takes its
      VJP at its inputs of ``min(m, r_k)`` ticks earlier (``schedule.stash_depths``).
      ``0`` is Sideways, ``"full"`` equals ``pipelined_exact``.
    per_tick: also return the per-tick gradients (forward-in-time methods: every unit's
      ``g_k^t`` for the T + drain ticks; ``backprop`` without delays: ``w_t ∇loss_t`` for the
      T ticks) in ``info["per_tick_grads"]``, a pytree like ``params`` with a leading tick axis.
    check_finite: reject NaN/inf inputs when they are concrete arrays.

  Returns:
    ``(grads, info)``: ``grads`` has the structure of ``params``; ``info`` holds ``"loss"``
    (J, scalar), ``"loss_ticks"`` ((T,) bool, V), ``"tick_loss"`` ((T,) loss_fn at every tick,
    meaningful only on V) and ``"num_loss_ticks"``.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  _check_stash_method(stash, method)
  _check_graph_params(graph, params)
  _check_loss_fn(loss_fn)
  video = _check_video(video, check_finite=check_finite)
  B, T = video.shape[:2]
  _check_targets(targets, B, T, check_finite)
  mask = _check_mask(mask, T)
  if per_tick and (method == "bptt" or (method == "backprop" and graph.is_recurrent)):
    raise ValueError(
      f"per_tick=True is available for methods 'sideways' and 'pipelined_exact' "
      f"and for 'backprop' on graphs without delays, not for method={method!r}"
    )
  mode = "synchronous" if method == "backprop" else "pipelined"
  weights, V = _loss_weights(graph, T, mask, mode, video.dtype)
  grads, loss, losses, per = _gradients_impl(
    graph, params, video, targets, weights, loss_fn, method, per_tick, stash
  )
  info = {
    "loss": loss,
    "loss_ticks": V,
    "tick_loss": losses,
    "num_loss_ticks": V.sum() if isinstance(V, np.ndarray) else jnp.sum(V),
  }
  if per_tick:
    info["per_tick_grads"] = per
  return grads, info


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


def init_state(graph: UnitGraph, params, video, stash=0) -> PipelineState:
  """An empty pipeline (zero buffers and messages, tick 0) for clips shaped like ``video``.

  ``video`` may be a (B, T, H, W, C) chunk or one (B, H, W, C) frame; ``stash`` (an int >= 0
  or ``"full"``) sizes the buffers and message delay lines for ``stream_gradients(...,
  stash=stash)``.
  """
  _check_graph_params(graph, params)
  schedule.check_stash(stash)
  shape = tuple(video.shape)
  if len(shape) == 4:
    video = jax.ShapeDtypeStruct((shape[0], 1) + shape[1:], video.dtype)
  _check_video(video, check_finite=False)
  return _zero_state(graph, params, video, stash)


def _check_state(graph, state, stash=None) -> None:
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
  lines = schedule.message_lines(graph, stash)
  got_lines = [d.shape[0] for d in state.delayed] if state.delayed else [0] * len(state.messages)
  if depths != schedule.buffer_depths(graph, stash) or got_lines != lines[1 : graph.num_units]:
    raise ValueError(
      f"state was made for another stash than stash={stash!r} (buffer depths "
      f"{depths}, expected {schedule.buffer_depths(graph, stash)}); make it with "
      f"sl.init_state(graph, params, video, stash={stash!r})"
    )


@functools.partial(jax.jit, static_argnames=("graph",))
def _stream_forward_impl(graph, params, video, state):
  T = video.shape[1]
  bufs, outs = _forward_scan(
    graph, params, video, state.buffers, T, "pipelined", lambda i, outs: outs[-1]
  )
  return (
    _time_major_to_batch(outs),
    PipelineState(bufs, state.messages, state.tick + T, state.delayed),
  )


def stream_forward(
  graph: UnitGraph, params, chunk, state: PipelineState, *, check_finite: bool = True
):
  """Pipelined forward over one chunk of a stream, carrying the pipeline state.

  Returns ``(outputs (B, T_chunk, ...), valid (T_chunk,) bool, new_state)``; running a clip
  in chunks gives the same outputs as running it whole.
  """
  _check_graph_params(graph, params)
  chunk = _check_video(chunk, "chunk", check_finite)
  _check_state(graph, state)
  v_L = schedule.first_valid_ticks(graph)[-1]
  valid = state.tick + jnp.arange(chunk.shape[1]) >= v_L
  outputs, state = _stream_forward_impl(graph, params, chunk, state)
  return outputs, valid, state


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


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "per_tick", "stash"))
def _stream_gradients_impl(graph, params, chunk, targets, weights, loss_fn, state, per_tick, stash):
  grads, state, losses, per = _pipeline_scan(
    graph, params, chunk, targets, weights, loss_fn, state, chunk.shape[1], per_tick, stash
  )
  loss = jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))
  return grads, loss, losses, per, state


def stream_gradients(
  graph: UnitGraph,
  params,
  chunk,
  targets,
  loss_fn: LossFn,
  state: PipelineState,
  mask=None,
  *,
  loss_weight: str | float = "mean",
  stash=0,
  per_tick: bool = False,
  check_finite: bool = True,
):
  """Sideways (with a stash) over one chunk of a stream: no drain; the state carries over.

  For online learning with an update every K ticks, call this on chunks of K frames and
  apply the returned gradient. Messages still in flight at the end of the chunk (and the
  stashed inputs) are in the returned state and reach their units in the next chunk.

  Args:
    chunk: (B, K, H, W, C); targets: (B, K, ...); mask: optional (K,) bool.
    state: the state returned by the previous call (or ``sl.init_state(..., stash=stash)``).
    loss_weight: ``"mean"`` weighs each loss tick of the chunk by ``1/|V_chunk|``; a float
      gives every loss tick that fixed weight (use ``1/|V|`` of a whole clip to reproduce it).
    stash: an int >= 0 or ``"full"`` (static), as in :func:`gradients`; the state must have
      been made with the same stash.

  Returns:
    ``(grads, info, new_state)``: ``grads = Σ_{t in chunk} g^t``; ``info`` has ``"loss"``,
    ``"loss_ticks"``, ``"tick_loss"`` (and ``"per_tick_grads"`` with ``per_tick``).
  """
  _check_graph_params(graph, params)
  _check_loss_fn(loss_fn)
  schedule.check_stash(stash)
  chunk = _check_video(chunk, "chunk", check_finite)
  B, T = chunk.shape[:2]
  _check_targets(targets, B, T, check_finite)
  mask = _check_mask(mask, T)
  _check_state(graph, state, stash)
  weights, V = stream_loss_weights(graph, T, state.tick, mask, loss_weight, chunk.dtype)
  grads, loss, losses, per, state = _stream_gradients_impl(
    graph, params, chunk, targets, weights, loss_fn, state, per_tick, stash
  )
  info = {"loss": loss, "loss_ticks": V, "tick_loss": losses}
  if per_tick:
    info["per_tick_grads"] = per
  return grads, info, state
