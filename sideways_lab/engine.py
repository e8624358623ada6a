"""The engines: pipelined and synchronous forward passes and the three gradient methods.

Everything here follows DESIGN.md §3–§5. Each pass is one ``lax.scan`` over ticks; frames are
indexed inside the scan (the clip is never transposed or copied), and the Sideways engine
carries only O(L) buffers, so its memory does not grow with the clip length T.

Notation (shapes): ``video`` is (B, T, H, W, C); ``out_k^t`` has unit k's output shape
(B, ...); a *buffer* of source j holds its last ``H_j = 1 + max delay`` outputs, newest first.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sideways_lab import schedule
from sideways_lab.graph import UnitGraph

METHODS = ("backprop", "pipelined_exact", "sideways")
MODES = ("pipelined", "synchronous")

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class PipelineState(NamedTuple):
  """The state of a running pipeline, carried between chunks of a stream.

  Attributes:
    buffers: ``buffers[j]`` for sources j = 0..L-1, shape (H_j, B, ...): the last H_j frames
      (j = 0) or outputs of unit j, newest first. ``buffers[0][d]`` is ``x_{t-d}`` once the
      frame of tick t is pushed; ``buffers[j][d]`` is ``out_j^{t-1-d}`` at tick t.
    messages: ``messages[j-1]`` for units j = 1..L-1, shape of ``out_j``: the sum of the
      gradient messages sent to unit j at the previous tick (its cotangent for this tick).
    tick: int32 scalar, the number of ticks run so far (the global tick of the next frame).
  """
  buffers: tuple
  messages: tuple
  tick: jax.Array


# ---------------------------------------------------------------------------------------------
# Validation at the boundary
# ---------------------------------------------------------------------------------------------

def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_graph_params(graph, params) -> None:
  if not isinstance(graph, UnitGraph):
    raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
  if not isinstance(params, (tuple, list)) or len(params) != graph.num_units:
    got = f"a {type(params).__name__} of length {len(params)}" if isinstance(params, (tuple, list)) \
        else type(params).__name__
    raise ValueError(f"params must be a tuple of {graph.num_units} per-unit parameter dicts "
                     f"(as returned by graph.init), got {got}")


def _check_video(video, name: str = "video", check_finite: bool = True) -> jax.Array:
  if not hasattr(video, "shape") or not hasattr(video, "dtype"):
    video = np.asarray(video)
  if video.ndim != 5:
    raise ValueError(f"{name} must have shape (B, T, H, W, C) (rank 5), got shape "
                     f"{tuple(video.shape)} (rank {video.ndim})")
  if not jnp.issubdtype(video.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating array (float32), got dtype {video.dtype}"
                    + ("; convert with video.astype('float32') / 255" if
                       jnp.issubdtype(video.dtype, jnp.integer) else ""))
  if video.shape[1] < 1 or video.shape[0] < 1:
    raise ValueError(f"{name} must have at least one clip and one frame, got shape "
                     f"{tuple(video.shape)}")
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
      raise ValueError(f"targets must have shape (B, T, ...) = ({B}, {T}, ...) to match the "
                       f"video, got shape {shape}" +
                       (f": its length {shape[1]} differs from the clip's {T} frames"
                        if len(shape) >= 2 and shape[0] == B else ""))
    if (check_finite and _is_concrete(leaf) and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
        and not bool(np.isfinite(np.asarray(leaf)).all())):
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
      why = (f"the clip has T={T} ticks but the first valid output of unit {graph.num_units} "
             f"is at tick {v_L}: the clip is too short for the pipeline" if T <= v_L else
             "the mask excludes every valid tick")
      raise ValueError(f"no loss tick: {why} (DESIGN.md §4: V is empty)")
    return jnp.asarray(V / n, dtype), V
  V = (tick0 + jnp.arange(T) >= v_L)
  if mask is not None:
    V = V & mask
  return (V / jnp.maximum(V.sum(), 1)).astype(dtype), V


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


def _zeros_buffers(graph: UnitGraph, structs) -> tuple:
  return tuple(jnp.zeros((max(graph.history(j), 1),) + tuple(structs[j].shape), structs[j].dtype)
               for j in range(graph.num_units))


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


def _unit_inputs(graph: UnitGraph, k: int, buffers, outs_now=None, mode="pipelined") -> list:
  """``[src(j, d, t) for (j, d) in edges[k]]`` from the buffers (DESIGN.md §3)."""
  inputs = []
  for j, d in graph.edges[k]:
    if j == 0:
      inputs.append(buffers[0][d])                      # x_{t-d}
    elif mode == "pipelined":
      inputs.append(buffers[j][d])                      # out_j^{t-1-d}
    else:
      inputs.append(outs_now[j] if d == 0 else buffers[j][d - 1])   # out_j^{t-d}
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
    outs.append(graph.apply_unit(k, params[k - 1],
                                 _unit_inputs(graph, k, bufs, outs, mode="synchronous")))
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


def _zero_state(graph, params, video) -> PipelineState:
  structs = _out_structs(graph, params, jax.ShapeDtypeStruct(
      (video.shape[0],) + tuple(video.shape[2:]), video.dtype))
  return PipelineState(_zeros_buffers(graph, structs),
                       tuple(jnp.zeros(s.shape, s.dtype) for s in structs[1:graph.num_units]),
                       jnp.zeros((), jnp.int32))


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


def forward(graph: UnitGraph, params, video, mode: str = "pipelined", *, all_units: bool = False,
            check_finite: bool = True):
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
    loss, g = jax.value_and_grad(frame_loss)(params, x, y)
    g = jax.tree_util.tree_map(lambda a: jnp.where(w > 0, w * a, 0.0).astype(a.dtype), g)
    acc = jax.tree_util.tree_map(jnp.add, acc, g)
    return acc, (loss, g if per_tick else None)

  grads, (losses, per) = lax.scan(body, zero, jnp.arange(video.shape[1]))
  return grads, losses, per


def _sideways_scan(graph, params, video, targets, weights, loss_fn, state: PipelineState,
                   num_ticks: int, per_tick: bool, last_loss_tick=None):
  """The Sideways engine (DESIGN.md §5).

  At every tick every unit k does ``(out_k^t, vjp) = VJP of f_k at its current inputs`` and
  applies ``vjp`` to its cotangent: ``c_L^t = w_t ∂loss/∂out_L^t`` (same tick) and, below,
  the sum of the messages sent to it at the previous tick. The messages of unit k (one per
  edge from a unit j >= 1) are summed into ``c_j^{t+1}``. Ticks past the clip feed its last
  frame again (the drain); ``weights`` is zero there.

  Idle units skip their work (``lax.cond``), which changes no result: a unit is idle at a
  global tick before its first valid tick ``v_k`` (its output feeds only invalid ticks and
  its cotangent is zero), and, when ``last_loss_tick`` is given (the drain of a whole clip),
  after ``last_loss_tick + long[k]``, when no gradient can reach it any more. Idle units
  output zeros, as the empty pipeline would, so Sideways does exactly the T·L unit steps
  of BP plus nothing.

  Returns ``(Ĝ, new_state, per-tick loss (num_ticks,), per-tick grads or None)``.
  """
  L = graph.num_units
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  first = schedule.first_valid_ticks(graph, "pipelined")
  _, long = schedule.message_hops(graph)

  def unit_step(k, inputs, cot_fn, tick):
    """``(out_k, g_k, messages, loss)`` of one unit, or zeros when it is idle."""
    edges = graph.edges[k]
    unit_idx = [e for e, (j, _) in enumerate(edges) if j >= 1]

    def f(p, unit_inputs):
      full = list(inputs)
      for e, a in zip(unit_idx, unit_inputs):
        full[e] = a
      return graph.apply_unit(k, p, full)

    def work(_):
      out, vjp = jax.vjp(f, params[k - 1], [inputs[e] for e in unit_idx])
      cot, loss = cot_fn(out)
      g, m = vjp(cot)
      return out, g, m, loss

    shapes = jax.eval_shape(work, None)
    idle = lambda _: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    active = tick >= first[k]
    if last_loss_tick is not None:
      active = active & (tick <= last_loss_tick + long[k])
    return lax.cond(active, work, idle, None)

  def body(carry, i):
    bufs, msgs, acc = carry
    tick = state.tick + i
    x_t = _frame(video, i)
    bufs_in = (_push(bufs[0], x_t),) + tuple(bufs[1:])
    outs, grads_t = [x_t], []
    new_msgs = [jnp.zeros_like(m) for m in msgs]
    loss_t = None
    for k in range(1, L + 1):
      if k == L:
        def cot_fn(out, i=i):
          w = weights[i]
          loss, dl = jax.value_and_grad(functools.partial(_tick_loss, loss_fn))(
              out, _target(targets, i))
          return jnp.where(w > 0, w * dl, 0.0).astype(out.dtype), loss
      else:
        def cot_fn(out, k=k):
          return msgs[k - 1], jnp.zeros((), weights.dtype)
      out, g, m, loss = unit_step(k, _unit_inputs(graph, k, bufs_in), cot_fn, tick)
      if k == L:
        loss_t = loss
      outs.append(out)
      grads_t.append(g)
      for e, msg in zip([e for e, (j, _) in enumerate(graph.edges[k]) if j >= 1], m):
        j = graph.edges[k][e][0]
        new_msgs[j - 1] = new_msgs[j - 1] + msg
    acc = jax.tree_util.tree_map(jnp.add, acc, tuple(grads_t))
    new_bufs = _advance(graph, bufs, x_t, outs)
    return (new_bufs, tuple(new_msgs), acc), (loss_t, tuple(grads_t) if per_tick else None)

  (bufs, msgs, grads), (losses, per) = lax.scan(
      body, (state.buffers, state.messages, zero), jnp.arange(num_ticks))
  new_state = PipelineState(bufs, msgs, state.tick + num_ticks)
  return grads, new_state, losses, per


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "method", "per_tick"))
def _gradients_impl(graph, params, video, targets, weights, loss_fn, method, per_tick):
  T = video.shape[1]
  if method == "sideways":
    drain = graph.num_units - 1
    w = jnp.concatenate([weights, jnp.zeros((drain,), weights.dtype)])
    state = _zero_state(graph, params, video)
    grads, _, losses, per = _sideways_scan(graph, params, video, targets, w, loss_fn, state,
                                           T + drain, per_tick, last_loss_tick=T - 1)
    losses = losses[:T]
  elif method == "pipelined_exact":
    grads, losses, per = _exact_grads(graph, params, video, targets, weights, loss_fn,
                                      "pipelined")
  elif graph.is_recurrent:
    grads, losses, per = _exact_grads(graph, params, video, targets, weights, loss_fn,
                                      "synchronous")
  else:
    grads, losses, per = _framewise_backprop(graph, params, video, targets, weights, loss_fn,
                                             per_tick)
  loss = jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))
  return grads, loss, losses, per


def gradients(graph: UnitGraph, params, video, targets, loss_fn: LossFn, method: str = "sideways",
              mask=None, *, per_tick: bool = False, check_finite: bool = True):
  """Gradients of the clip loss J (DESIGN.md §4) by one of three methods (§5).

  ``J = (1/|V|) Σ_{t∈V} loss_fn(out_L^t, y^t)``, ``V = {t : valid(L, t) and mask[t]}``.

  Args:
    graph: the unit graph (static under ``jax.jit``).
    params: tuple of L per-unit parameter dicts.
    video: (B, T, H, W, C) floating array.
    targets: (B, T, ...) — ``targets[:, t]`` is the target of the output at tick t.
    loss_fn: ``loss_fn(output (B, ...), target (B, ...)) -> scalar`` batch mean (static under
      ``jax.jit``; pass the same function object to avoid recompiling).
    method: ``"backprop"`` (synchronous forward, exact gradient, through time when the graph
      has delays), ``"pipelined_exact"`` (pipelined forward, exact gradient by BPTT through
      the unrolled pipeline) or ``"sideways"`` (pipelined forward, the forward-propagated
      estimate Ĝ = Σ_t g^t with L-1 drain ticks; Skip-Sideways on a graph with skips).
    mask: optional (T,) bool array: which ticks have a target.
    per_tick: also return the per-tick gradients (``sideways``: every unit's ``g_k^t`` for
      the T + L - 1 ticks; ``backprop`` without delays: ``w_t ∇loss_t`` for the T ticks) in
      ``info["per_tick_grads"]``, a pytree like ``params`` with a leading tick axis.
    check_finite: reject NaN/inf inputs when they are concrete arrays.

  Returns:
    ``(grads, info)``: ``grads`` has the structure of ``params``; ``info`` holds ``"loss"``
    (J, scalar), ``"loss_ticks"`` ((T,) bool, V), ``"tick_loss"`` ((T,) loss_fn at every tick,
    meaningful only on V) and ``"num_loss_ticks"``.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  _check_graph_params(graph, params)
  _check_loss_fn(loss_fn)
  video = _check_video(video, check_finite=check_finite)
  B, T = video.shape[:2]
  _check_targets(targets, B, T, check_finite)
  mask = _check_mask(mask, T)
  if per_tick and (method == "pipelined_exact" or (method == "backprop" and graph.is_recurrent)):
    raise ValueError(f"per_tick=True is available for method='sideways' and for 'backprop' on "
                     f"graphs without delays, not for method={method!r}")
  mode = "synchronous" if method == "backprop" else "pipelined"
  weights, V = _loss_weights(graph, T, mask, mode, video.dtype)
  grads, loss, losses, per = _gradients_impl(graph, params, video, targets, weights, loss_fn,
                                             method, per_tick)
  info = {"loss": loss, "loss_ticks": V, "tick_loss": losses,
          "num_loss_ticks": V.sum() if isinstance(V, np.ndarray) else jnp.sum(V)}
  if per_tick:
    info["per_tick_grads"] = per
  return grads, info


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------

def init_state(graph: UnitGraph, params, video) -> PipelineState:
  """An empty pipeline (zero buffers and messages, tick 0) for clips shaped like ``video``.

  ``video`` may be a (B, T, H, W, C) chunk or one (B, H, W, C) frame.
  """
  _check_graph_params(graph, params)
  shape = tuple(video.shape)
  if len(shape) == 4:
    video = jax.ShapeDtypeStruct((shape[0], 1) + shape[1:], video.dtype)
  _check_video(video, check_finite=False)
  return _zero_state(graph, params, video)


def _check_state(graph, state) -> None:
  if not isinstance(state, PipelineState):
    raise TypeError(f"state must be a sl.PipelineState (from sl.init_state), got "
                    f"{type(state).__name__}")
  if len(state.buffers) != graph.num_units or len(state.messages) != graph.num_units - 1:
    raise ValueError(f"state belongs to a graph with {len(state.buffers)} units, not "
                     f"{graph.num_units}")


@functools.partial(jax.jit, static_argnames=("graph",))
def _stream_forward_impl(graph, params, video, state):
  T = video.shape[1]
  bufs, outs = _forward_scan(graph, params, video, state.buffers, T, "pipelined",
                             lambda i, outs: outs[-1])
  return _time_major_to_batch(outs), PipelineState(bufs, state.messages, state.tick + T)


def stream_forward(graph: UnitGraph, params, chunk, state: PipelineState, *,
                   check_finite: bool = True):
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


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "per_tick"))
def _stream_gradients_impl(graph, params, chunk, targets, weights, loss_fn, state, per_tick):
  grads, state, losses, per = _sideways_scan(graph, params, chunk, targets, weights, loss_fn,
                                             state, chunk.shape[1], per_tick)
  loss = jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))
  return grads, loss, losses, per, state


def stream_gradients(graph: UnitGraph, params, chunk, targets, loss_fn: LossFn,
                     state: PipelineState, mask=None, *, loss_weight: str | float = "mean",
                     per_tick: bool = False, check_finite: bool = True):
  """Sideways over one chunk of a stream: no drain; buffers and messages carry over.

  For online learning with an update every K ticks, call this on chunks of K frames and
  apply the returned gradient. Messages still in flight at the end of the chunk are in the
  returned state and reach their units in the next chunk.

  Args:
    chunk: (B, K, H, W, C); targets: (B, K, ...); mask: optional (K,) bool.
    state: the state returned by the previous call (or ``sl.init_state``).
    loss_weight: ``"mean"`` weighs each loss tick of the chunk by ``1/|V_chunk|``; a float
      gives every loss tick that fixed weight (use ``1/|V|`` of a whole clip to reproduce it).

  Returns:
    ``(grads, info, new_state)``: ``grads = Σ_{t in chunk} g^t``; ``info`` has ``"loss"``,
    ``"loss_ticks"``, ``"tick_loss"`` (and ``"per_tick_grads"`` with ``per_tick``).
  """
  _check_graph_params(graph, params)
  _check_loss_fn(loss_fn)
  chunk = _check_video(chunk, "chunk", check_finite)
  B, T = chunk.shape[:2]
  _check_targets(targets, B, T, check_finite)
  mask = _check_mask(mask, T)
  _check_state(graph, state)
  v_L = schedule.first_valid_ticks(graph)[-1]
  V = state.tick + jnp.arange(T) >= v_L
  if mask is not None:
    V = V & jnp.asarray(mask)
  if isinstance(loss_weight, str):
    if loss_weight != "mean":
      raise ValueError(f"loss_weight must be 'mean' or a float, got {loss_weight!r}")
    weights = V / jnp.maximum(V.sum(), 1)
  else:
    weights = V * loss_weight
  weights = weights.astype(chunk.dtype)
  grads, loss, losses, per, state = _stream_gradients_impl(
      graph, params, chunk, targets, weights, loss_fn, state, per_tick)
  info = {"loss": loss, "loss_ticks": V, "tick_loss": losses}
  if per_tick:
    info["per_tick_grads"] = per
  return grads, info, state


# ---------------------------------------------------------------------------------------------
# One unit step (shared by the parallel routes)
# ---------------------------------------------------------------------------------------------

def unit_step(graph: UnitGraph, k: int, params_k, inputs: list, cotangent):
  """One Sideways step of unit k: its forward and the VJP at the same inputs (DESIGN.md §5).

  ``out_k = f_k(θ_k; inputs)`` and ``(g_k, messages) = VJP of f_k at (θ_k, inputs)`` applied
  to ``cotangent`` (shaped like ``out_k``).

  Args:
    graph: the unit graph; k: the unit, 1-based.
    params_k: unit k's parameter dict.
    inputs: list of arrays in the order of ``graph.edges[k]``.
    cotangent: the cotangent of ``out_k``.

  Returns:
    ``(out_k, grads_k, messages)``: ``grads_k`` is shaped like ``params_k``; ``messages`` holds
    one cotangent per edge of unit k, in the order of ``graph.edges[k]`` (the one of a frame
    edge, j = 0, is unused and removed under ``jax.jit``).
  """
  out, vjp = jax.vjp(lambda p, xs: graph.apply_unit(k, p, xs), params_k, list(inputs))
  grads, messages = vjp(cotangent)
  return out, grads, list(messages)
