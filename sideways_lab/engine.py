"""The engines: pipelined and synchronous forward passes and the four gradient methods.

Everything here follows docs/design.md §3–§5. Each pass is one ``lax.scan`` over ticks; frames are
indexed inside the scan (the clip is never transposed or copied). The forward-in-time engine
(``_pipeline_scan``: ``sideways``, its ``stash`` knob and ``pipelined_exact``) carries
O(L) buffers plus the stash and the message delay lines, so its memory does not grow with the
clip length T; ``bptt`` (the reverse-mode reference) keeps every tick. Every per-tick unit
computation goes through :func:`unit_step`.

Notation (shapes): ``video`` is (B, T, H, W, C); ``out_k^t`` has unit k's output shape
(B, ...); a *buffer* of source j holds its last ``H_j`` outputs, newest first
(``H_j = 1 + max delay`` without a stash, ``schedule.buffer_depths`` with one). The pieces
every engine shares (validation, loss weights, buffers, :func:`unit_step`) are
:mod:`sideways_lab.pipeline`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sideways_lab import pipeline, schedule
from sideways_lab.graph import UnitGraph
from sideways_lab.pipeline import PipelineState, unit_step

METHODS = ("backprop", "bptt", "pipelined_exact", "sideways")
MODES = ("pipelined", "synchronous")

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = [
  "METHODS",
  "MODES",
  "PipelineState",
  "forward",
  "gradients",
  "init_state",
  "stash_bytes",
  "stream_forward",
  "stream_gradients",
  "unit_step",
]


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


def _pipelined_tick(graph, params, buffers, x_t):
  """One pipelined forward tick: returns every unit's output [x_t, out_1, ..., out_L]."""
  bufs = (pipeline.push(buffers[0], x_t),) + tuple(buffers[1:])
  outs = [x_t]
  for k in range(1, graph.num_units + 1):
    outs.append(graph.apply_unit(k, params[k - 1], pipeline.unit_inputs(graph, k, bufs)))
  return outs


def _synchronous_tick(graph, params, buffers, x_t):
  bufs = (pipeline.push(buffers[0], x_t),) + tuple(buffers[1:])
  outs = [x_t]
  for k in range(1, graph.num_units + 1):
    outs.append(
      graph.apply_unit(
        k, params[k - 1], pipeline.unit_inputs(graph, k, bufs, outs, mode="synchronous")
      )
    )
  return outs


def _forward_scan(graph, params, video, buffers, num_ticks, mode, emit):
  """Scans the forward pass; ``emit(i, outs)`` picks what each tick returns."""
  tick_fn = _pipelined_tick if mode == "pipelined" else _synchronous_tick

  def body(bufs, i):
    x_t = pipeline.frame_at(video, i)
    outs = tick_fn(graph, params, bufs, x_t)
    return pipeline.advance(graph, bufs, x_t, outs), emit(i, outs)

  return lax.scan(body, buffers, jnp.arange(num_ticks))


def _time_major_to_batch(x):
  return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), x)


# ---------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graph", "mode", "all_units"))
def _forward_impl(graph, params, video, mode, all_units):
  T = video.shape[1]
  state = pipeline.zero_state(graph, params, video)
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
  pipeline.check_graph_params(graph, params)
  video = pipeline.check_video(video, check_finite=check_finite)
  T = video.shape[1]
  outputs = _forward_impl(graph, params, video, mode, all_units)
  return outputs, schedule.loss_ticks(graph, T, None, mode)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def _exact_grads(graph, params, video, targets, weights, loss_fn, mode):
  """BPTT through the unrolled forward: ``∇ Σ_t w_t loss_t``. Returns (grads, per-tick loss)."""
  T = video.shape[1]
  state = pipeline.zero_state(graph, params, video)

  def J(params):
    emit = lambda i, outs: pipeline.tick_loss(loss_fn, outs[-1], pipeline.target_at(targets, i))
    _, losses = _forward_scan(graph, params, video, state.buffers, T, mode, emit)
    losses_safe = jnp.where(weights > 0, losses, 0.0)
    return jnp.sum(weights * losses_safe), losses

  grads, losses = pipeline.cpu_fast_convs(jax.grad(J, has_aux=True))(params)
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
    return pipeline.tick_loss(loss_fn, outs[-1], y)

  def body(acc, i):
    x, y, w = pipeline.frame_at(video, i), pipeline.target_at(targets, i), weights[i]
    loss, g = pipeline.cpu_fast_convs(jax.value_and_grad(frame_loss))(params, x, y)
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


def _to_units(graph: UnitGraph, k: int, messages) -> list:
  """The messages of unit k's edges from units (``j >= 1``), in edge order: those to the
  frame are dropped, so that their computation is dead code."""
  return [m for (j, _), m in zip(graph.edges[k], messages) if j >= 1]


def _unit_messages(graph: UnitGraph, k: int, params_k, inputs, cotangent):
  """:func:`unit_step` without the messages to the frame: ``(out_k, g_k, [message per edge
  with j >= 1])``."""
  out, g, msgs = unit_step(graph, k, params_k, inputs, cotangent)
  return out, g, _to_units(graph, k, msgs)


def _carried_messages(graph: UnitGraph, k: int, params_k, carried, cotangent):
  """:func:`pipeline.carried_vjp` without the messages to the frame: ``(g_k, messages, [x])``."""
  g, msgs, x = pipeline.carried_vjp(graph, k, params_k, carried, cotangent)
  return g, _to_units(graph, k, msgs), x


def _unit_tick(
  graph, k, params_k, bufs, cot, carried, lag, carries, fwd, vjp, tick, top=None, dtype="float32"
):
  """Unit k's work at one tick of the single-device scan, idle work skipped (:func:`_windows`):
  ``(out_k, g_k, messages to units, the VJP's inputs, loss or None)``. ``top`` (unit L only)
  computes ``(out_L, g_L, messages, loss)`` from the loss; ``carried`` is the output carried
  down to a unit that ``carries`` its input (docs/design.md §5); ``dtype`` the stash's storage
  (:func:`pipeline.stashed_inputs`)."""
  cur = pipeline.unit_inputs(graph, k, bufs)
  if top is not None:
    out, g, m, loss = _when(_between(tick, *fwd), top)
    return out, g, m, cur, loss
  if lag == 0:
    active = _between(tick, *fwd) | _between(tick, *vjp)
    out, g, m = _when(active, functools.partial(_unit_messages, graph, k, params_k, cur, cot))
    return out, g, m, cur, None
  out = _when(_between(tick, *fwd), functools.partial(graph.apply_unit, k, params_k, cur))
  if carries:
    fn = functools.partial(_carried_messages, graph, k, params_k, carried, cot)
    g, m, ins = _when(_between(tick, *vjp), fn)
  else:
    ins = pipeline.stashed_inputs(graph, k, bufs, lag, dtype)
    fn = functools.partial(_unit_messages, graph, k, params_k, ins, cot)
    _, g, m = _when(_between(tick, *vjp), fn)
  return out, g, m, ins, None


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
  s = (0, *schedule.stash_depths(graph, stash))
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


def _route(graph, k: int, messages, waits: dict, nxt: list, line: list) -> None:
  """Sends unit k's messages (one per edge whose source is a unit j ≥ 1): a message that waits
  ``w = waits[(k, e)]`` ticks is added to slot w − 1 of source j's delay line ``line[j - 1]``,
  one that waits none to the cotangent of the next tick, ``nxt[j - 1]`` (both lists updated in
  place)."""
  sources = [(e, j) for e, (j, _) in enumerate(graph.edges[k]) if j >= 1]
  for (e, j), msg in zip(sources, messages):
    w = waits[(k, e)]
    if w == 0:
      nxt[j - 1] = nxt[j - 1] + msg
    else:
      line[j - 1] = line[j - 1].at[w - 1].add(msg)


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
  * takes the VJP of f_k at its inputs of tick ``τ - s_k`` (read from the deeper buffers, or
    recovered by inverting the output carried down to it, ``x = f_k^{-1}(y)``, for a unit of
    ``schedule.carry_units``) applied to its cotangent: ``c_L^τ = w_τ ∂loss/∂out_L^τ`` at the
    top (``s_L = 0``) and, below, the sum of the messages that arrive at τ;

  (:func:`_unit_tick`). The message on edge e = (j, d) of unit k waits
  ``schedule.message_waits`` extra ticks before it joins ``c_j``; to a carrying unit j it
  carries the input of unit k's VJP on that edge. ``stash=0`` is Sideways, ``stash="full"``
  and ``"carry"`` the exact gradient. Ticks past the clip feed its last frame again (the
  drain); ``weights`` is zero there. Idle units skip their work with ``lax.cond``.

  Returns ``(Ĝ, new_state, per-tick loss (num_ticks,), per-tick grads or None)``.
  """
  L = graph.num_units
  s = (0, *schedule.stash_depths(graph, stash))
  waits = schedule.message_waits(graph, stash)
  lines = schedule.message_lines(graph, stash)
  carry, dtype = schedule.carry_units(graph, stash), schedule.stash_dtype(stash)
  fwd, vjp = _windows(graph, stash, last_loss_tick)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)

  def body(c, i):
    bufs, msgs, delayed, carried, acc = c
    tick = state.tick + i
    x_t = pipeline.frame_at(video, i)
    bufs_in = (pipeline.push(bufs[0], x_t),) + tuple(bufs[1:])
    outs, grads_t, loss_t = [x_t], [], None
    # messages for the next tick (c^{τ+1}) and the delay lines, shifted by one tick
    nxt, line, nxt_y = [], [], list(carried)
    for j in range(1, L):
      now, later = pipeline.shift_line(delayed[j - 1]) if lines[j] else (None, None)
      nxt.append(jnp.zeros_like(msgs[j - 1]) if now is None else now)
      line.append(later)
    cur_L = pipeline.unit_inputs(graph, L, bufs_in)
    for k in range(1, L + 1):
      top = None
      if k == L:

        def top(p=params[L - 1], cur=cur_L):
          out = graph.apply_unit(L, p, cur)
          y = pipeline.target_at(targets, i)
          loss, cot = pipeline.loss_cotangent(loss_fn, out, y, weights[i])
          return _unit_messages(graph, L, p, cur, cot) + (loss,)

      cot = msgs[k - 1] if k < L else None
      y_k = carried[k - 1][0] if k in carry else None
      out, g, m, ins, loss = _unit_tick(
        graph,
        k,
        params[k - 1],
        bufs_in,
        cot,
        y_k,
        s[k],
        k in carry,
        fwd[k],
        vjp[k],
        tick,
        top,
        dtype,
      )
      loss_t = loss if k == L else loss_t
      outs.append(out)
      grads_t.append(g)
      _route(graph, k, m, waits, nxt, line)
      for j, y in pipeline.carried_posts(graph, k, ins, carry):
        nxt_y[j - 1] = y[None]
    new_delayed = tuple(line[j - 1] if lines[j] else delayed[j - 1] for j in range(1, L) if delayed)
    acc = jax.tree_util.tree_map(jnp.add, acc, tuple(grads_t))
    new_bufs = pipeline.advance(graph, bufs, x_t, outs)
    c = (new_bufs, tuple(nxt), new_delayed, tuple(nxt_y), acc)
    return c, (loss_t, tuple(grads_t) if per_tick else None)

  init = (state.buffers, state.messages, state.delayed, state.carried, zero)
  (bufs, msgs, delayed, carried, grads), (losses, per) = lax.scan(body, init, jnp.arange(num_ticks))
  new_state = PipelineState(bufs, msgs, state.tick + num_ticks, delayed, carried)
  return grads, new_state, losses, per


@functools.partial(jax.jit, static_argnames=("graph", "loss_fn", "method", "per_tick", "stash"))
def _gradients_impl(graph, params, video, targets, weights, loss_fn, method, per_tick, stash):
  T = video.shape[1]
  if method in ("sideways", "pipelined_exact"):
    stash = schedule.FULL if method == "pipelined_exact" else stash
    drain = schedule.drain_ticks(graph, stash)
    w = jnp.concatenate([weights, jnp.zeros((drain,), weights.dtype)])
    state = pipeline.zero_state(graph, params, video, stash)
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


def _check_stash_method(graph, stash, method: str) -> None:
  schedule.check_stash(graph, stash)
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
    stash: ``method="sideways"`` only (static): an int m >= 0, ``"full"``, ``"carry"`` or a
      per-unit tuple ``(s_1, ..., s_{L-1})`` with ``0 <= s_k <= r_k`` (``schedule.exact_lags``)
      or ``s_k = "carry"``; unit k takes its VJP at its inputs of ``s_k = min(m, r_k)`` (or the
      given ``s_k``) ticks earlier (``schedule.stash_depths``). ``0`` is Sideways; ``"full"``
      and ``(r_1, ..., r_{L-1})`` equal ``pipelined_exact``. A unit that *carries* (``"carry"``:
      every reversible unit with one input and one reader, ``schedule.carry_units``) recovers
      that input by inverting the output its reader sends down with its message, instead of
      stashing it; ``"carry"`` equals ``pipelined_exact`` (docs/design.md §5).
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
  pipeline.check_graph_params(graph, params)
  _check_stash_method(graph, stash, method)
  stash = schedule.static_stash(stash)
  pipeline.check_loss_fn(loss_fn)
  video = pipeline.check_video(video, check_finite=check_finite)
  B, T = video.shape[:2]
  pipeline.check_targets(targets, B, T, check_finite)
  mask = pipeline.check_mask(mask, T)
  if per_tick and (method == "bptt" or (method == "backprop" and graph.is_recurrent)):
    raise ValueError(
      f"per_tick=True is available for methods 'sideways' and 'pipelined_exact' "
      f"and for 'backprop' on graphs without delays, not for method={method!r}"
    )
  mode = "synchronous" if method == "backprop" else "pipelined"
  weights, V = pipeline.loss_weights(graph, T, mask, mode, video.dtype)
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

  ``video`` may be a (B, T, H, W, C) chunk or one (B, H, W, C) frame; ``stash`` (as in
  :func:`gradients`) sizes the buffers, message delay lines and carried outputs for
  ``stream_gradients(..., stash=stash)``.
  """
  pipeline.check_graph_params(graph, params)
  schedule.check_stash(graph, stash)
  stash = schedule.static_stash(stash)
  shape = tuple(video.shape)
  if len(shape) == 4:
    video = jax.ShapeDtypeStruct((shape[0], 1) + shape[1:], video.dtype)
  pipeline.check_video(video, check_finite=False)
  return pipeline.zero_state(graph, params, video, stash)


def stash_bytes(graph: UnitGraph, params, frame, stash) -> int:
  """Bytes a stash adds to Sideways' pipeline state for frames shaped like ``frame``.

  ``Σ_j R_j · bytes(out_j)`` over the sources j = 0..L-1 (the frame for j = 0), with ``R_j``
  the extra stored values of source j (``schedule.stash_rows``: the deeper history buffer,
  the message delay line and, for a unit that carries its input down, the carried output).
  The history rows count in the stash's storage dtype (``schedule.Stash``: ``n`` values
  take ``2n`` bytes in bfloat16, ``n + 4`` in int8 with its float32 scale); delay lines and
  carried outputs in the activations' dtype. ``frame`` is one (B, H, W, C) frame (an array
  or a ``jax.ShapeDtypeStruct``); ``stash`` as in :func:`gradients`. ``stash=0`` gives 0.
  """
  pipeline.check_graph_params(graph, params)
  schedule.check_stash(graph, stash)
  shape = tuple(frame.shape)
  if len(shape) != 4:
    raise ValueError(f"frame must have shape (B, H, W, C) (rank 4), got shape {shape}")
  structs = pipeline.out_structs(graph, params, jax.ShapeDtypeStruct(shape, frame.dtype))
  stash = schedule.static_stash(stash)
  H, H0 = schedule.buffer_depths(graph, stash), schedule.buffer_depths(graph, 0)
  kept = [r - (h - h0) for r, h, h0 in zip(schedule.stash_rows(graph, stash), H, H0)]
  dtype = schedule.stash_dtype(stash)
  total = 0
  for j in range(graph.num_units):
    n = int(np.prod(structs[j].shape, dtype=int))
    stored = n * jnp.dtype(dtype).itemsize + (4 if dtype == "int8" else 0)
    total += (H[j] - H0[j]) * stored + kept[j] * n * np.dtype(structs[j].dtype).itemsize
  return int(total)


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
  pipeline.check_graph_params(graph, params)
  chunk = pipeline.check_video(chunk, "chunk", check_finite)
  pipeline.check_state(graph, state)
  v_L = schedule.first_valid_ticks(graph)[-1]
  valid = state.tick + jnp.arange(chunk.shape[1]) >= v_L
  outputs, state = _stream_forward_impl(graph, params, chunk, state)
  return outputs, valid, state


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
    stash: as in :func:`gradients` (static); the state must have been made with the same
      stash.

  Returns:
    ``(grads, info, new_state)``: ``grads = Σ_{t in chunk} g^t``; ``info`` has ``"loss"``,
    ``"loss_ticks"``, ``"tick_loss"`` (and ``"per_tick_grads"`` with ``per_tick``).
  """
  pipeline.check_graph_params(graph, params)
  pipeline.check_loss_fn(loss_fn)
  schedule.check_stash(graph, stash)
  stash = schedule.static_stash(stash)
  chunk = pipeline.check_video(chunk, "chunk", check_finite)
  B, T = chunk.shape[:2]
  pipeline.check_targets(targets, B, T, check_finite)
  mask = pipeline.check_mask(mask, T)
  pipeline.check_state(graph, state, stash)
  weights, V = pipeline.stream_loss_weights(graph, T, state.tick, mask, loss_weight, chunk.dtype)
  grads, loss, losses, per, state = _stream_gradients_impl(
    graph, params, chunk, targets, weights, loss_fn, state, per_tick, stash
  )
  info = {"loss": loss, "loss_ticks": V, "tick_loss": losses}
  if per_tick:
    info["per_tick_grads"] = per
  return grads, info, state
