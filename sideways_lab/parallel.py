"""Model parallelism: every unit on its own device, all devices computing at once.

Sideways (docs/design.md §1, §5) is depth-parallel: at tick t unit k needs only what its sources
produced at tick t-1 and the messages its readers sent at tick t-1. So units can live on
different devices, every device steps its units at every tick, and between ticks each
device sends the outputs of its units up (to the devices of their readers) and the gradient
messages down (to the devices of their sources). This module gives two routes for that, both
computing *exactly* the single-device ``sl.gradients(..., method, stash=...)`` for the
forward-in-time methods (``sideways`` with any stash, ``pipelined_exact``)

    G_k = Σ_t g_k^t,   (g_k^t, messages_k^t) = VJP of f_k at inputs_k^{t - s_k} applied to c_k^t

with ``c_L^t = w_t ∂loss_t/∂out_L^t`` (same tick), ``c_k^t`` = the sum of the messages that
arrive at unit k at tick t (one tick after they are sent, plus the wait of a stash),
``w_t = 1{t∈V}/|V|``, ``s_k = schedule.stash_depths`` and ``schedule.drain_ticks`` drain
ticks (docs/design.md §5). Every piece of it comes from :mod:`sideways_lab.pipeline`.

:class:`ShardedGraph` — the SPMD route, for any graph (chains, skips, dense and delayed edges,
  units of different shapes) on the devices of one process *or of several processes*
  (``jax.distributed``; see :mod:`sideways_lab.launch`). Units are split contiguously over a
  ``stage`` mesh axis (:func:`sideways_lab.partition.assignment`). One jitted ``lax.scan``
  over ticks runs a ``jax.shard_map`` in which, per tick, every stage runs *its own* units through
  ``lax.switch`` on the stage index, on flat padded vectors (parameters, state and messages),
  and ``lax.ppermute`` moves the packed outputs up and the packed messages down over every
  stage distance that an edge spans. No host loop.

:class:`DevicePipeline` — the per-device route (one process): each device has one jitted
  *step* that advances its units by one tick; a Python loop dispatches, per tick, one step per
  device and the ``jax.device_put`` of the outputs and messages that cross devices. It allows
  any assignment of units to devices, including non-contiguous ones.

Both routes share ``_Route`` (validation, loss weights, the clip and streaming drivers)
and ``_unit_work`` (one unit's work in one tick); both accept and produce the
single-device :class:`sl.PipelineState` for streaming (``gather_state``/``scatter_state``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sideways_lab import partition, pipeline, schedule
from sideways_lab.graph import UnitGraph
from sideways_lab.pipeline import PipelineState

__all__ = [
  "DevicePipeline",
  "ParallelState",
  "ShardedGraph",
  "ShardedState",
  "engine_for",
  "gradients",
  "message_bytes",
  "stream_gradients",
  "tick_time_model",
]

STAGE = "stage"  # the mesh axis of the sharded route


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------


def tick_time_model(
  costs: Sequence[float], assignment: Sequence[int], comm: float | Sequence[float] = 0.0
) -> float:
  """The simple latency model of one Sideways tick on several devices.

  ``tick_time = max_p ( Σ_{k on p} (F_k + B_k) + comm_p )``: devices work at once, a tick ends
  when the slowest device has done its units and its transfers. ``costs[k-1] = F_k + B_k``;
  ``comm`` is one number for every device or one per device. On one device it is Σ_k c_k.
  """
  costs = np.asarray(costs, float)
  assignment = np.asarray(assignment, int)
  if costs.shape != assignment.shape:
    raise ValueError(
      f"costs and assignment must have the same length, got {costs.shape} and {assignment.shape}"
    )
  D = int(assignment.max()) + 1
  comm = np.broadcast_to(np.asarray(comm, float), (D,))
  return float(max(costs[assignment == p].sum() + comm[p] for p in range(D)))


def _shape_key(params, video) -> tuple:
  shape = tuple(video.shape)
  frame = (shape[0],) + shape[2:] if len(shape) == 5 else shape
  return (
    frame,
    str(video.dtype),
    jax.tree_util.tree_structure(params),
    tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(params)),
  )


def _resolve_devices(devices, pool: list | None = None) -> list:
  """``devices`` as a list: ``None`` is all of ``pool`` (default ``jax.devices()``, every
  process's), an int the first n."""
  pool = list(jax.devices()) if pool is None else pool
  if devices is None:
    return pool
  if isinstance(devices, int):
    if devices < 1 or devices > len(pool):
      raise ValueError(
        f"devices={devices}: this process has {len(pool)} device(s) "
        f"(set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX "
        f"starts to simulate N CPU devices)"
      )
    return pool[:devices]
  devices = list(devices)
  if not devices or not all(isinstance(d, jax.Device) for d in devices):
    raise TypeError("devices must be None, an int or a non-empty list of jax.Device")
  return devices


def _resolve_assignment(graph: UnitGraph, devices: list, assignment, costs) -> tuple[int, ...]:
  L = graph.num_units
  if assignment is None or assignment == "contiguous":
    return partition.assignment(L, len(devices), costs)
  if assignment == "one_per_device":
    if len(devices) < L:
      raise ValueError(
        f"assignment='one_per_device' needs at least L={L} devices, got {len(devices)}"
      )
    return tuple(range(L))
  if isinstance(assignment, str):
    raise ValueError(
      f"assignment must be 'contiguous', 'one_per_device' or a sequence of L "
      f"device indices, got {assignment!r}"
    )
  a = tuple(int(x) for x in assignment)
  if len(a) != L or any(not 0 <= x < len(devices) for x in a):
    raise ValueError(
      f"assignment must give a device index in 0..{len(devices) - 1} for each "
      f"of the {L} units, got {assignment!r}"
    )
  return a


# ---------------------------------------------------------------------------------------------
# What both routes share: validation, loss weights, one unit's tick, the drivers
# ---------------------------------------------------------------------------------------------


METHODS = ("sideways", "pipelined_exact")


def _check_inputs(graph, params, video, targets, loss_fn, mask, name="video"):
  pipeline.check_graph_params(graph, params)
  pipeline.check_loss_fn(loss_fn)
  video = pipeline.check_video(video, name)
  B, T = video.shape[:2]
  pipeline.check_targets(targets, B, T)
  mask = pipeline.check_mask(mask, T)
  return video, mask


def _resolve_stash(graph: UnitGraph, method: str, stash):
  """The stash a route runs (docs/design.md §5): ``"full"`` for ``pipelined_exact``, else
  ``stash`` (an int >= 0, ``"full"`` or per unit), validated and hashable."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS} on several devices, got {method!r}")
  if method == "pipelined_exact":
    if not (isinstance(stash, int) and stash == 0) and stash != schedule.FULL:
      raise ValueError(
        f"stash={stash!r} is only meaningful for method='sideways' (stash='full' is "
        f"method='pipelined_exact'), got method={method!r}"
      )
    return schedule.FULL
  schedule.check_stash(graph, stash)
  return schedule.static_stash(stash)


class _Route:
  """The common driver of both routes: a clip (T ticks + ``schedule.drain_ticks`` drain ticks
  from an empty pipeline) and a streaming chunk (T ticks, state carried). A route has
  ``graph`` and ``stash`` and implements ``init_state``, ``scatter_state``, ``gather_state``
  and ``_run(params, video, targets, weights, loss_fn, state, num_ticks) -> (grads, loss,
  tick_loss, new_state)`` where ``loss = Σ_{w_t > 0} w_t loss_t`` and ``tick_loss`` covers
  ``num_ticks`` ticks."""

  graph: UnitGraph
  stash: object
  _state_type: type

  @property
  def drain(self) -> int:
    """Drain ticks after a clip: ``schedule.drain_ticks(graph, stash)``."""
    return schedule.drain_ticks(self.graph, self.stash)

  def gradients(self, params, video, targets, loss_fn, mask=None):
    """``sl.gradients(graph, params, video, targets, loss_fn, method, mask, stash)`` on
    several devices: T ticks then :attr:`drain` drain ticks from an empty pipeline.

    Returns ``(grads, info)`` as the single-device call; ``info`` has ``"loss"``,
    ``"loss_ticks"``, ``"tick_loss"`` (T,) and ``"num_loss_ticks"``.
    """
    video, mask = _check_inputs(self.graph, params, video, targets, loss_fn, mask)
    T = video.shape[1]
    weights, V = pipeline.loss_weights(self.graph, T, mask, "pipelined", video.dtype)
    weights = np.asarray(weights)
    w = np.concatenate([weights, np.zeros(self.drain, weights.dtype)])
    state = self.init_state(params, video)
    grads, loss, tick_loss, _ = self._run(params, video, targets, w, loss_fn, state, len(w))
    return grads, {
      "loss": loss,
      "loss_ticks": V,
      "tick_loss": tick_loss[:T],
      "num_loss_ticks": V.sum(),
    }

  def stream_gradients(
    self, params, chunk, targets, loss_fn, state, mask=None, *, loss_weight="mean"
  ):
    """``sl.stream_gradients(..., stash=self.stash)`` on several devices: one chunk, no
    drain, state carried over.

    ``state`` is this route's state (from :meth:`init_state` or a previous call) or a
    single-device :class:`sl.PipelineState` made with the same stash (scattered first).
    Returns ``(grads, info, new state)``; :meth:`gather_state` turns it back.
    """
    chunk, mask = _check_inputs(self.graph, params, chunk, targets, loss_fn, mask, "chunk")
    if isinstance(state, PipelineState):
      pipeline.check_state(self.graph, state, self.stash)
      state = self.scatter_state(state, params)
    if not isinstance(state, self._state_type):
      raise TypeError(
        f"state must be a {self._state_type.__name__} or sl.PipelineState, got "
        f"{type(state).__name__}"
      )
    T = chunk.shape[1]
    w, V = pipeline.stream_loss_weights(self.graph, T, state.tick, mask, loss_weight, chunk.dtype)
    w, V = np.asarray(w), np.asarray(V)
    grads, loss, tick_loss, state = self._run(params, chunk, targets, w, loss_fn, state, T)
    return grads, {"loss": loss, "loss_ticks": V, "tick_loss": tick_loss}, state

  def _zero_state(self, params, video) -> PipelineState:
    return pipeline.zero_state(self.graph, params, video, self.stash)


# The "wait" that tags, in the message routing of both routes, the output carried down to a
# unit that recovers its input from it (``schedule.carry_units``; docs/design.md §5).
_CARRIED = -1


def _unit_work(
  graph: UnitGraph, k: int, lag: int, params_k, bufs, cot_in, carried, loss_fn, y, w, dtype
):
  """Unit k's tick on any route: ``(out_k, g_k, messages, loss or None, the VJP's inputs)``;
  ``carried`` maps the local units that carry their input down to the output carried to them;
  ``dtype`` is the stash's storage (``schedule.stash_dtype``)."""
  if k == graph.num_units:
    return pipeline.top_step(graph, params_k, bufs, loss_fn, y, w)
  if k in carried:
    out, g, ms, ins = pipeline.carry_step(graph, k, params_k, bufs, cot_in[k], carried[k])
  else:
    out, g, ms, ins = pipeline.stashed_step(graph, k, params_k, bufs, cot_in[k], lag, dtype)
  return out, g, ms, None, ins


def _post_carried(graph: UnitGraph, k: int, ins, carry: tuple, local: dict, remote: dict) -> None:
  """What unit k carries down (``pipeline.carried_posts``): into ``local[j]`` for a carrying
  unit j of this device, else into ``remote[key]`` with ``key`` ``(j, _CARRIED)``."""
  for j, y in pipeline.carried_posts(graph, k, ins, carry):
    if j in local:
      local[j] = y
    else:
      remote[(j, _CARRIED)] = y


def _lines_before_tick(lines: dict, cots: dict):
  """The cotangents of this tick's messages for local units: each delay line's front (zeros
  without a line), and the lines shifted by one tick."""
  new_cots, lines = {}, dict(lines)
  for j, c in cots.items():
    if j in lines:
      new_cots[j], lines[j] = pipeline.shift_line(lines[j])
    else:
      new_cots[j] = jnp.zeros_like(c)
  return new_cots, lines


# ---------------------------------------------------------------------------------------------
# The per-device route: per-device jitted steps and a host loop (one process)
# ---------------------------------------------------------------------------------------------


# Small jitted helpers: eager ops would compile one program per shape *and device*.
@functools.cache
def _zeros_on(device):
  """A jitted ``zeros_like`` whose result is committed to ``device`` (a plain jitted
  ``zeros_like`` drops its unused input and lands, uncommitted, on the default device)."""
  return jax.jit(
    lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree),
    out_shardings=jax.sharding.SingleDeviceSharding(device),
  )


_stack_list = jax.jit(lambda xs: jnp.stack(xs))


@jax.jit
def _split_time(tree):
  """``[x[:, t] for t < T]`` for every (B, T, ...) leaf: one dispatch per clip, not per tick."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  T = leaves[0].shape[1]
  return [jax.tree_util.tree_unflatten(treedef, [a[:, t] for a in leaves]) for t in range(T)]


_split_vector = jax.jit(lambda w: [w[i] for i in range(w.shape[0])])


@jax.jit
def _clip_loss(weights, tick_loss):
  """``(Σ_t w_t loss_t over w_t > 0, tick_loss[:T])`` for T = len(weights)."""
  tick_loss = tick_loss[: weights.shape[0]]
  return jnp.sum(jnp.where(weights > 0, weights * tick_loss, 0.0)), tick_loss


@dataclasses.dataclass(frozen=True)
class _DeviceSpec:
  """What one device does each tick (static: a hashable argument of the jitted step).

  units: the units k on this device, ascending; lags: their stash depths ``s_k``. sources:
    every source j this device reads (0 is the frame). remote: the sources j >= 1 owned by
    another device (mirrored here; the newest output arrives as a pending value and is pushed
    at the start of the next tick). local_cots: local units j < L that receive messages.
    lines: local units j with a message delay line (``W_j > 0``). send_outs: local units whose
    outputs other devices read. send_msgs: ``(j, wait)`` pairs of messages to remote units j.
    recv_msgs: ``(j, wait, from_device)`` triples of messages arriving for local units.
    waits: ``((k, e), wait)`` for the edges of local units from units. carry: every unit that
    carries its input down (``schedule.carry_units``); the output carried to a remote one is
    sent as ``(j, _CARRIED)``, received as ``(j, _CARRIED, from_device)``. dtype: the stash's
    storage (``schedule.stash_dtype``).
  """

  units: tuple
  lags: tuple
  sources: tuple
  remote: tuple
  local_cots: tuple
  lines: tuple
  send_outs: tuple
  send_msgs: tuple
  recv_msgs: tuple
  waits: tuple
  top: bool
  carry: tuple = ()
  dtype: str = "float32"


def _device_specs(graph: UnitGraph, assignment: tuple, stash) -> tuple:
  L = graph.num_units
  owner = {k: assignment[k - 1] for k in range(1, L + 1)}
  s = (0, *schedule.stash_depths(graph, stash))
  waits = schedule.message_waits(graph, stash)
  W = schedule.message_lines(graph, stash)
  carry = schedule.carry_units(graph, stash)
  D = max(assignment) + 1
  specs = []
  for p in range(D):
    units = tuple(k for k in range(1, L + 1) if owner[k] == p)
    sources = tuple(sorted({j for k in units for j, _ in graph.edges[k]}))
    remote = tuple(j for j in sources if j >= 1 and owner[j] != p)
    local_cots = tuple(j for j in units if j < L)
    send_outs = tuple(
      j for j in units if j < L and any(owner[k] != p for k, _, _ in graph.readers(j))
    )
    send_msgs = tuple(
      sorted(
        {
          (j, waits[(k, e)])
          for k in units
          for e, (j, _) in enumerate(graph.edges[k])
          if j >= 1 and owner[j] != p
        }
        | {(j, _CARRIED) for k in units for j, _ in graph.edges[k] if j in carry and owner[j] != p}
      )
    )
    recv_msgs = tuple(
      sorted(
        {
          (j, waits[(k, e)], owner[k])
          for j in local_cots
          for k, e, _ in graph.readers(j)
          if owner[k] != p
        }
        | {
          (j, _CARRIED, owner[k])
          for j in units
          if j in carry
          for k, _, _ in graph.readers(j)
          if owner[k] != p
        }
      )
    )
    specs.append(
      _DeviceSpec(
        units,
        tuple(s[k] for k in units),
        sources,
        remote,
        local_cots,
        tuple(j for j in local_cots if W[j]),
        send_outs,
        send_msgs,
        recv_msgs,
        tuple(sorted((ke, w) for ke, w in waits.items() if ke[0] in units)),
        L in units,
        carry,
        schedule.stash_dtype(stash),
      )
    )
  return tuple(specs)


class ParallelState(NamedTuple):
  """The pipeline state of a :class:`DevicePipeline`, spread over its devices.

  ``per_device[p] = (buffers, cotangents, pending_outs, pending_msgs, lines, carried)`` lives on
  device
  p: ``buffers`` (dict j -> (H_j, B, ...)) for every source p reads — mirrors of remote sources
  lack their newest output, which is in ``pending_outs`` (dict j -> (B, ...)) and is pushed at
  the start of the next tick; ``cotangents`` (dict j -> out_j shape) are the messages that
  reach local unit j at the next tick from this device; ``pending_msgs`` (tuple in
  ``spec.recv_msgs`` order) are the messages other devices sent; ``lines`` (dict j ->
  (W_j, ...)) the delay lines of a stash for local units j; ``carried`` (dict j -> out_j shape)
  the outputs carried down to local carrying units j from this device (those from other devices
  are in ``pending_msgs``). ``tick`` is the global tick of the next frame (a Python int).
  """

  per_device: tuple
  tick: int


@functools.partial(jax.jit, static_argnames=("graph", "spec", "loss_fn"))
def _device_step(graph, spec, loss_fn, params, carry, pending_outs, pending_msgs, x_t, y_t, w):
  """One tick of the units of one device (the forward-in-time engine, restricted).

  ``carry = (buffers, cotangents, lines, carried, acc)``; ``x_t`` is the frame of this tick
  (B, H, W, C) when the device reads the frame, ``y_t`` and ``w`` the target and loss weight
  when it holds unit L (else ``None``), so the compiled step does not depend on the clip
  length. Returns ``(carry, sent_outs, sent_msgs, loss_t)`` with ``sent_outs`` in
  ``spec.send_outs`` order and ``sent_msgs`` in ``spec.send_msgs`` order.
  """
  bufs, cots, lines, carried, acc = carry
  bufs, lines = dict(bufs), dict(lines)
  for j in spec.remote:  # absorb what arrived from below
    bufs[j] = pipeline.push(bufs[j], pending_outs[j])
  cot_in, carried_in = dict(cots), dict(carried)
  for (j, wait, _), m in zip(spec.recv_msgs, pending_msgs):  # ... and from above
    if wait == _CARRIED:
      carried_in[j] = carried_in[j] + m
    elif wait == 0:
      cot_in[j] = cot_in[j] + m
    else:
      lines[j] = lines[j].at[wait - 1].add(m)
  if 0 in spec.sources:
    bufs[0] = pipeline.push(bufs[0], x_t)
  new_cots, lines = _lines_before_tick(lines, cots)
  waits = dict(spec.waits)
  outs, grads, loss_t, sent = {}, [], jnp.zeros((), jnp.float32), {}
  new_carried = {j: jnp.zeros_like(y) for j, y in carried.items()}
  for k, lag, p_k in zip(spec.units, spec.lags, params):
    out, g, ms, loss, ins = _unit_work(
      graph, k, lag, p_k, bufs, cot_in, carried_in, loss_fn, y_t, w, spec.dtype
    )
    _post_carried(graph, k, ins, spec.carry, new_carried, sent)
    outs[k] = out
    if loss is not None:
      loss_t = loss
    grads.append(g)
    for e, ((j, _), m) in enumerate(zip(graph.edges[k], ms)):
      if j == 0:
        continue
      if j in new_cots:
        pipeline.post(new_cots, lines, j, m, waits[(k, e)])
      else:
        key = (j, waits[(k, e)])
        sent[key] = sent[key] + m if key in sent else m
  acc = jax.tree_util.tree_map(jnp.add, acc, tuple(grads))
  for j in spec.sources:  # local outputs join local buffers
    if j >= 1 and j not in spec.remote:
      bufs[j] = pipeline.push(bufs[j], outs[j])
  return (
    (bufs, new_cots, lines, new_carried, acc),
    tuple(outs[j] for j in spec.send_outs),
    tuple(sent[key] for key in spec.send_msgs),
    loss_t,
  )


class DevicePipeline(_Route):
  """The forward-in-time engine with the units of ``graph`` spread over several devices.

  Args:
    graph: any unit graph (skips, delays, heterogeneous units).
    devices: ``None`` (all of ``jax.devices()``), an int (the first n) or a list of devices.
    assignment: ``"contiguous"`` (default: :func:`sideways_lab.partition.assignment` with
      ``costs``), ``"one_per_device"`` or a sequence giving the device index of each unit.
    costs: per-unit costs for the contiguous partition (default: all equal).
    method: ``"sideways"`` or ``"pipelined_exact"`` (docs/design.md §5).
    stash: ``method="sideways"`` only: an int >= 0, ``"full"`` or a per-unit tuple, as in
      ``sl.gradients``.

  Each tick, device p runs one jitted step for its units, then the outputs that other devices
  read and the messages to units on other devices are ``jax.device_put`` to those devices;
  they are consumed at the next tick, as in the single-device engine (a message that waits
  joins its unit's delay line there). All of it is dispatched asynchronously, so the devices
  compute their ticks concurrently.
  """

  _state_type = ParallelState

  def __init__(
    self,
    graph: UnitGraph,
    devices=None,
    assignment="contiguous",
    costs=None,
    *,
    method: str = "sideways",
    stash=0,
  ):
    if not isinstance(graph, UnitGraph):
      raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
    self.graph = graph
    self.method, self.stash = method, _resolve_stash(graph, method, stash)
    devices = _resolve_devices(devices, jax.local_devices())
    self.assignment = _resolve_assignment(graph, devices, assignment, costs)
    used = sorted(set(self.assignment))
    remap = {p: n for n, p in enumerate(used)}  # drop devices without units
    self.assignment = tuple(remap[p] for p in self.assignment)
    self.devices = tuple(devices[p] for p in used)
    self.specs = _device_specs(graph, self.assignment, self.stash)
    L = graph.num_units
    self._owner = {k: self.assignment[k - 1] for k in range(1, L + 1)}
    # routes: for each device q, where each pending output / message comes from
    self._out_routes = [
      [(self._owner[j], self.specs[self._owner[j]].send_outs.index(j), j) for j in spec.remote]
      for spec in self.specs
    ]
    self._msg_routes = [
      [(src, self.specs[src].send_msgs.index((j, w))) for j, w, src in spec.recv_msgs]
      for spec in self.specs
    ]
    self._empty = {}

  def __repr__(self):
    return (
      f"DevicePipeline(L={self.graph.num_units}, devices={len(self.devices)}, "
      f"assignment={self.assignment}, method={self.method!r}, stash={self.stash!r})"
    )

  @property
  def num_devices(self) -> int:
    """D, the number of devices the units are split over."""
    return len(self.devices)

  def units_on(self, p: int) -> tuple:
    """The units (1-based) on device index ``p``."""
    return self.specs[p].units

  # -- placement of params and state ---------------------------------------------------------
  def place_params(self, params) -> tuple:
    """``params`` with unit k's dict committed to the device of unit k (do it once)."""
    pipeline.check_graph_params(self.graph, params)
    return tuple(
      jax.device_put(params[k - 1], self.devices[self._owner[k]])
      for k in range(1, self.graph.num_units + 1)
    )

  def _device_params(self, params):
    params = self.place_params(params)
    return [tuple(params[k - 1] for k in spec.units) for spec in self.specs]

  def scatter_state(self, state: PipelineState, params=None) -> ParallelState:
    """Spreads a single-device :class:`sl.PipelineState` (made with this route's stash) over
    the devices (``params`` is unused: the per-device layout does not depend on it)."""
    pipeline.check_state(self.graph, state, self.stash)
    buffers = [np.asarray(b) for b in state.buffers]  # a one-off move, through the host
    messages = [np.asarray(m) for m in state.messages]
    delayed = [np.asarray(d) for d in state.delayed]
    carried = [np.asarray(c) for c in state.carried]
    per = []
    for p, spec in enumerate(self.specs):
      dev = self.devices[p]
      put = functools.partial(jax.device_put, device=dev)
      bufs, pend = {}, {}
      for j in spec.sources:
        b = buffers[j]
        if j in spec.remote:  # mirror without its newest output, which is pending
          bufs[j] = put(np.concatenate([b[1:], b[-1:]], axis=0))
          pend[j] = put(b[0])
        else:
          bufs[j] = put(b)
      cots = {j: put(messages[j - 1]) for j in spec.local_cots}
      msgs = tuple(put(np.zeros_like(messages[j - 1])) for j, _, _ in spec.recv_msgs)
      lines = {j: put(delayed[j - 1]) for j in spec.lines}
      ys = {j: put(carried[j - 1][0]) for j in spec.units if j in spec.carry}
      per.append((bufs, cots, pend, msgs, lines, ys))
    return ParallelState(tuple(per), int(state.tick))

  def gather_state(self, state: ParallelState, device=None) -> PipelineState:
    """The single-device :class:`sl.PipelineState` of a :class:`ParallelState`, on ``device``
    (default: the first device)."""
    if not isinstance(state, ParallelState):
      raise TypeError(f"state must be a sl.parallel.ParallelState, got {type(state).__name__}")
    dev = self.devices[0] if device is None else device
    L = self.graph.num_units
    W = schedule.message_lines(self.graph, self.stash)
    buffers = [None] * L  # a one-off move, through the host
    for p, spec in enumerate(self.specs):
      bufs, _, pend, _, _, _ = state.per_device[p]
      for j in spec.sources:
        if j < L and buffers[j] is None:
          b = np.asarray(bufs[j])
          if j in spec.remote:
            b = np.concatenate([np.asarray(pend[j])[None], b[:-1]], axis=0)
          buffers[j] = b
    messages, delayed = [None] * (L - 1), [None] * (L - 1)
    C = schedule.carried_rows(self.graph, self.stash)
    carried = [None] * (L - 1)
    for p, spec in enumerate(self.specs):
      _, cots, _, msgs, lines, ys = state.per_device[p]
      for j in spec.local_cots:
        messages[j - 1] = np.asarray(cots[j])
        delayed[j - 1] = (
          np.asarray(lines[j]).copy()
          if j in lines
          else np.zeros((W[j],) + messages[j - 1].shape, messages[j - 1].dtype)
        )
        carried[j - 1] = np.zeros((C[j],) + messages[j - 1].shape, messages[j - 1].dtype)
        if j in ys:
          carried[j - 1] = carried[j - 1] + np.asarray(ys[j])
      for (j, wait, _), m in zip(spec.recv_msgs, msgs):
        if wait == _CARRIED:
          carried[j - 1] = carried[j - 1] + np.asarray(m)
        elif wait == 0:
          messages[j - 1] = messages[j - 1] + np.asarray(m)
        else:
          delayed[j - 1][wait - 1] += np.asarray(m)
    put = functools.partial(jax.device_put, device=dev)
    return PipelineState(
      tuple(put(b) for b in buffers),
      tuple(put(m) for m in messages),
      put(np.int32(state.tick)),
      tuple(put(d) for d in delayed) if any(W) else (),
      tuple(put(c) for c in carried) if any(C) else (),
    )

  def init_state(self, params, video) -> ParallelState:
    """An empty pipeline spread over the devices (see :func:`sl.init_state`).

    Cached per clip and parameter shapes (the arrays are immutable zeros), so a training loop
    does not pay for tracing the shapes and moving zeros at every clip."""
    key = _shape_key(params, video)
    if key not in self._empty:
      self._empty[key] = self.scatter_state(self._zero_state(params, video))
    return self._empty[key]

  # -- running -------------------------------------------------------------------------------
  def _run(self, params, video, targets, weights, loss_fn, state: ParallelState, num_ticks):
    """The tick loop. Returns ``(grads, loss, per-tick losses (num_ticks,), new ParallelState)``."""
    dparams = self._device_params(params)
    L = self.graph.num_units
    top = self._owner[L]
    T = video.shape[1]
    frames, carries, pend_outs, pend_msgs = [], [], [], []
    for p, spec in enumerate(self.specs):
      dev = self.devices[p]
      bufs, cots, pend, msgs, lines, ys = state.per_device[p]
      # the clip goes once to every device that reads it, split there into its T frames
      frames.append(_split_time(jax.device_put(video, dev)) if 0 in spec.sources else None)
      carries.append((bufs, cots, lines, ys, _zeros_on(dev)(dparams[p])))
      pend_outs.append(pend)
      pend_msgs.append(msgs)
    tdev = self.devices[top]
    ys = _split_time(jax.device_put(targets, tdev))
    ws = _split_vector(jax.device_put(np.asarray(weights), tdev))
    losses = []
    for i in range(num_ticks):
      sent = []
      t = min(i, T - 1)  # drain ticks feed the last frame
      for p, spec in enumerate(self.specs):  # every device steps its units
        is_top = p == top
        carry, outs, msgs, loss_t = _device_step(
          self.graph,
          spec,
          loss_fn if is_top else None,
          dparams[p],
          carries[p],
          pend_outs[p],
          pend_msgs[p],
          frames[p][t] if frames[p] is not None else None,
          ys[t] if is_top else None,
          ws[i] if is_top else None,
        )
        carries[p] = carry
        sent.append((outs, msgs))
        if is_top:
          losses.append(loss_t)
      for q in range(len(self.specs)):  # activations up, messages down
        dev = self.devices[q]
        pend_outs[q] = {j: jax.device_put(sent[p][0][n], dev) for p, n, j in self._out_routes[q]}
        pend_msgs[q] = tuple(jax.device_put(sent[p][1][n], dev) for p, n in self._msg_routes[q])
    grads = [None] * L
    per = []
    for p, spec in enumerate(self.specs):
      bufs, cots, lines, ys, acc = carries[p]
      for k, g in zip(spec.units, acc):
        grads[k - 1] = g
      per.append((bufs, cots, pend_outs[p], pend_msgs[p], lines, ys))
    tick_loss = _stack_list(losses) if losses else jnp.zeros((0,), jnp.float32)
    loss, _ = _clip_loss(jax.device_put(np.asarray(weights), tdev), tick_loss)
    return tuple(grads), loss, tick_loss, ParallelState(tuple(per), state.tick + num_ticks)


# ---------------------------------------------------------------------------------------------
# The SPMD route: shard_map + lax.switch + ppermute over a `stage` mesh axis
# ---------------------------------------------------------------------------------------------


class _Layout:
  """Named arrays packed into one flat vector: ``name -> (offset, shape)``, ``size`` entries."""

  def __init__(self, items: Sequence[tuple]):
    self.slots, offset = {}, 0
    for name, shape in items:
      n = int(np.prod(shape, dtype=int))
      self.slots[name] = (offset, tuple(shape))
      offset += n
    self.size = offset

  def unpack(self, vec) -> dict:
    """The named arrays of ``vec`` (views by static slices; works on jax and NumPy arrays)."""
    return {
      name: vec[o : o + int(np.prod(shape, dtype=int))].reshape(shape)
      for name, (o, shape) in self.slots.items()
    }

  def pack(self, arrays: dict, size: int, dtype, xp=jnp):
    """The flat vector of ``size`` entries (zeros past ``self.size``; missing names are zero)."""
    parts = [
      xp.ravel(arrays[name]).astype(dtype)
      if name in arrays
      else xp.zeros(int(np.prod(shape, dtype=int)), dtype)
      for name, (_, shape) in self.slots.items()
    ]
    parts.append(xp.zeros(size - self.size, dtype))
    return xp.concatenate(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class _Stage:
  """What one stage holds and sends (static).

  ``state`` packs ``("x",)`` its frame buffer (newest first, before this tick's frame),
  ``("b", j)`` the buffers of local units j read locally (``[0] = out_j^{t-1}``), ``("m", j)``
  mirrors of remote sources j (``[0] = out_j^{t-2}``: the newest arrives this tick),
  ``("c", j)`` the messages that reach local unit j at the next tick from this stage,
  ``("l", j)`` its delay line (a stash's waiting messages) and ``("y", j)`` the output carried
  down to a local carrying unit j from this stage (``schedule.carry_units``). Depths cover the
  stashed VJPs of the local readers (``1 + d + s_k``). ``up[δ]`` packs ``("o", j)``: outputs
  of local units read on stage s+δ; ``down[δ]`` packs ``("g", j, w)``: the messages of local
  units to unit j on stage s-δ that wait w extra ticks (``w = _CARRIED``: the output carried
  down to unit j). ``params`` packs ``(k, leaf)``.
  """

  units: tuple
  lags: tuple  # s_k of the units
  lines: tuple  # local units j with a delay line
  frame_depth: int
  local: dict  # j -> depth of its local buffer
  mirrors: dict  # j -> depth of its mirror
  state: _Layout
  up: dict  # δ -> _Layout
  down: dict  # δ -> _Layout
  params: _Layout
  carries: tuple = ()  # local units that carry their input down


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
  """The static layout of a :class:`ShardedGraph` for one clip and parameter shape (hashable
  by identity: a static argument of the jitted scan)."""

  graph: UnitGraph
  owner: dict  # k -> stage
  stages: tuple  # of _Stage
  deltas: tuple  # stage distances spanned by some edge, ascending
  state_size: int
  up_size: dict  # δ -> padded size
  down_size: dict
  param_size: int
  treedefs: tuple  # per unit
  dtype: np.dtype
  stash: object
  waits: dict  # (k, e) -> extra ticks (schedule.message_waits)
  carry: tuple = ()  # every unit that carries its input down (schedule.carry_units)


def _check_one_dtype(structs, params, dtype) -> None:
  """Raises unless every unit's output and parameters have ``dtype`` (the video's): the sharded
  route packs everything into vectors of one dtype."""
  L = len(params)
  bad = [
    f"unit {k}'s output ({structs[k].dtype})" for k in range(1, L + 1) if structs[k].dtype != dtype
  ]
  bad += [
    f"unit {k}'s parameters"
    for k in range(1, L + 1)
    if any(a.dtype != dtype for a in jax.tree_util.tree_leaves(params[k - 1]))
  ]
  if bad:
    raise TypeError(
      f"the sharded route packs everything into {dtype} vectors (the video's "
      f"dtype); {', '.join(bad)} differ: cast the parameters or use "
      f"DevicePipeline"
    )


def _make_plan(graph: UnitGraph, assignment: tuple, params, frame, stash=0) -> _Plan:
  """Layouts of every stage from the unit output shapes (``pipeline.out_structs``)."""
  L, D = graph.num_units, max(assignment) + 1
  owner = {k: assignment[k - 1] for k in range(1, L + 1)}
  lag = (0, *schedule.stash_depths(graph, stash))
  waits = schedule.message_waits(graph, stash)
  W = schedule.message_lines(graph, stash)
  carry = schedule.carry_units(graph, stash)
  structs = pipeline.out_structs(graph, params, frame)
  dtype = np.dtype(frame.dtype)
  _check_one_dtype(structs, params, dtype)
  shape = {j: tuple(structs[j].shape) for j in range(L + 1)}
  deltas = sorted(
    {
      owner[k] - owner[j]
      for k in range(1, L + 1)
      for j, _ in graph.edges[k]
      if j >= 1 and owner[k] != owner[j]
    }
  )
  stages = []
  for s in range(D):
    units = tuple(k for k in range(1, L + 1) if owner[k] == s)
    # the deepest reads (a unit that carries its input down reads no past input)
    reads = [(j, d + (0 if k in carry else lag[k])) for k in units for j, d in graph.edges[k]]
    depth = {j: 1 + max(d for jj, d in reads if jj == j) for j, _ in reads if j >= 1}
    local = {j: depth[j] for j in sorted(depth) if owner[j] == s}
    mirrors = {j: depth[j] for j in sorted(depth) if owner[j] != s}
    frame_depth = 1 + max((d for j, d in reads if j == 0), default=-1)
    lines = tuple(j for j in units if j < L and W[j])
    items = [(("x",), (frame_depth,) + shape[0])] if frame_depth else []
    items += [(("b", j), (n,) + shape[j]) for j, n in local.items()]
    items += [(("m", j), (n,) + shape[j]) for j, n in mirrors.items()]
    items += [(("c", j), shape[j]) for j in units if j < L]
    items += [(("l", j), (W[j],) + shape[j]) for j in lines]
    items += [(("y", j), shape[j]) for j in units if j in carry]
    sends = sorted(
      {
        (j, waits[(k, e)])
        for k in units
        for e, (j, _) in enumerate(graph.edges[k])
        if j >= 1 and owner[j] != s
      }
      | {(j, _CARRIED) for k in units for j, _ in graph.edges[k] if j in carry and owner[j] != s}
    )
    up = {
      δ: _Layout(
        [
          (("o", j), shape[j])
          for j in units
          if any(owner[k] == s + δ for k, _, _ in graph.readers(j))
        ]
      )
      for δ in deltas
    }
    down = {
      δ: _Layout([(("g", j, w), shape[j]) for j, w in sends if owner[j] == s - δ]) for δ in deltas
    }
    par = _Layout(
      [
        ((k, n), a.shape)
        for k in units
        for n, a in enumerate(jax.tree_util.tree_leaves(params[k - 1]))
      ]
    )
    stages.append(
      _Stage(
        units,
        tuple(lag[k] for k in units),
        lines,
        frame_depth,
        local,
        mirrors,
        _Layout(items),
        up,
        down,
        par,
        tuple(j for j in units if j in carry),
      )
    )
  size = lambda f: max(max(f(st) for st in stages), 1)
  return _Plan(
    graph,
    owner,
    tuple(stages),
    tuple(deltas),
    size(lambda st: st.state.size),
    {δ: size(lambda st, δ=δ: st.up[δ].size) for δ in deltas},
    {δ: size(lambda st, δ=δ: st.down[δ].size) for δ in deltas},
    size(lambda st: st.params.size),
    tuple(jax.tree_util.tree_structure(p) for p in params),
    dtype,
    stash,
    waits,
    carry,
  )


def _stage_tick(plan: _Plan, s: int, loss_fn, params, state, recv_up, recv_down, x_t, y_t, w):
  """One tick of stage s on flat vectors (a branch of ``lax.switch``).

  Receives ``recv_up[δ]`` (outputs from stage s-δ, of tick t-1) and ``recv_down[δ]``
  (messages from stage s+δ, sent at t-1); returns ``(state, up, down, g, loss_t)`` with
  ``up``/``down`` what this stage sends at the start of the next tick and ``g`` this tick's
  gradients, packed like ``params``.
  """
  graph, st, L = plan.graph, plan.stages[s], plan.graph.num_units
  dtype = plan.dtype
  cur = st.state.unpack(state)
  flat = st.params.unpack(params)
  theta = {
    k: jax.tree_util.tree_unflatten(
      plan.treedefs[k - 1], [flat[(k, n)] for n in range(plan.treedefs[k - 1].num_leaves)]
    )
    for k in st.units
  }
  bufs = {j: cur[("b", j)] for j in st.local}
  if st.frame_depth:
    bufs[0] = pipeline.push(cur[("x",)], x_t)
  for j in st.mirrors:  # out_j^{t-1} from stage owner[j]
    δ = s - plan.owner[j]
    got = plan.stages[s - δ].up[δ].unpack(recv_up[plan.deltas.index(δ)])
    bufs[j] = pipeline.push(cur[("m", j)], got[("o", j)])
  cots = {j: cur[("c", j)] for j in st.units if j < L}
  lines = {j: cur[("l", j)] for j in st.lines}
  carried = {j: cur[("y", j)] for j in st.carries}
  for δ in plan.deltas:  # messages from stage s+δ
    if s + δ < len(plan.stages):
      got = plan.stages[s + δ].down[δ].unpack(recv_down[plan.deltas.index(δ)])
      for (_, j, wait), m in got.items():
        if wait == _CARRIED:
          carried[j] = carried[j] + m
        elif wait == 0:
          cots[j] = cots[j] + m
        else:
          lines[j] = lines[j].at[wait - 1].add(m)
  new_cots, lines = _lines_before_tick(lines, cots)
  down = {δ: {} for δ in plan.deltas}
  outs, grads, loss_t = {}, {}, jnp.zeros((), dtype)
  new_carried, sent = {j: jnp.zeros_like(y) for j, y in carried.items()}, {}
  for k, lag in zip(st.units, st.lags):
    out, g, ms, loss, ins = _unit_work(
      graph,
      k,
      lag,
      theta[k],
      bufs,
      cots,
      carried,
      loss_fn,
      y_t,
      w,
      schedule.stash_dtype(plan.stash),
    )
    _post_carried(graph, k, ins, plan.carry, new_carried, sent)
    outs[k], grads[k] = out, g
    if loss is not None:
      loss_t = loss.astype(dtype)
    for e, ((j, _), m) in enumerate(zip(graph.edges[k], ms)):
      if j == 0:
        continue
      wait = plan.waits[(k, e)]
      if plan.owner[j] == s:
        pipeline.post(new_cots, lines, j, m, wait)
      else:
        box = down[s - plan.owner[j]]
        key = ("g", j, wait)
        box[key] = box[key] + m if key in box else m
  for (j, _), y in sent.items():  # outputs carried down to other stages
    down[s - plan.owner[j]][("g", j, _CARRIED)] = y
  new = {("b", j): pipeline.push(bufs[j], outs[j]) for j in st.local}
  new.update({("y", j): y for j, y in new_carried.items()})
  new.update({("m", j): bufs[j] for j in st.mirrors})
  new.update({("c", j): c for j, c in new_cots.items()})
  new.update({("l", j): line for j, line in lines.items()})
  if st.frame_depth:
    new[("x",)] = bufs[0]
  g_flat = {(k, n): a for k in st.units for n, a in enumerate(jax.tree_util.tree_leaves(grads[k]))}
  return (
    st.state.pack(new, plan.state_size, dtype),
    tuple(
      st.up[δ].pack({("o", j): outs[j] for j in st.units}, plan.up_size[δ], dtype)
      for δ in plan.deltas
    ),
    tuple(st.down[δ].pack(down[δ], plan.down_size[δ], dtype) for δ in plan.deltas),
    st.params.pack(g_flat, plan.param_size, dtype),
    loss_t,
  )


@functools.partial(jax.jit, static_argnames=("plan", "mesh", "loss_fn", "num_ticks"))
def _sharded_scan(plan, mesh, loss_fn, num_ticks, params, carry, video, targets, weights):
  """One jitted scan over ticks; each tick is SPMD over the ``stage`` axis of ``mesh``.

  Returns ``(Σ_t g^t packed (D, P), new carry, tick losses (num_ticks,), clip loss)``.
  """
  D = mesh.shape[STAGE]
  branches = [functools.partial(_stage_tick, plan, s, loss_fn) for s in range(D)]
  # the pairs that carry something: stage q sends up (down) by δ only if it has a payload
  ups = [[(q, q + δ) for q in range(D - δ) if plan.stages[q].up[δ].size] for δ in plan.deltas]
  downs = [
    [(q + δ, q) for q in range(D - δ) if plan.stages[q + δ].down[δ].size] for δ in plan.deltas
  ]

  def per_device(params, carry, video, targets, weights):
    params = params[0]
    carry = jax.tree_util.tree_map(lambda a: a[0], carry)
    s = lax.axis_index(STAGE)

    def body(c, i):
      state, up, down, acc = c
      recv_up = tuple(lax.ppermute(u, STAGE, perm) for perm, u in zip(ups, up))
      recv_down = tuple(lax.ppermute(m, STAGE, perm) for perm, m in zip(downs, down))
      state, up, down, g, loss_t = lax.switch(
        s,
        branches,
        params,
        state,
        recv_up,
        recv_down,
        pipeline.frame_at(video, i),
        pipeline.target_at(targets, i),
        weights[i],
      )
      return (state, up, down, acc + g), loss_t  # zero below the top stage

    state, up, down = carry
    (state, up, down, acc), losses = lax.scan(
      body, (state, up, down, jnp.zeros_like(params)), jnp.arange(num_ticks)
    )
    losses = lax.psum(losses, STAGE)  # one collective per clip, not tick
    loss = jnp.sum(jnp.where(weights > 0, weights * losses, 0.0))
    expand = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)
    return expand(acc), expand((state, up, down)), losses, loss

  stage = P(STAGE)
  f = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(stage, stage, P(), P(), P()),
    out_specs=(stage, stage, P(), P()),
    check_vma=False,
  )
  return f(params, carry, video, targets, weights)


class ShardedState(NamedTuple):
  """The pipeline state of a :class:`ShardedGraph`: global (D, ·) arrays sharded over
  ``stage``, row s the flat vectors of stage s (see ``_Stage``): ``state``, ``up`` and
  ``down`` (tuples over the stage distances δ, what each stage sends at the next tick);
  ``tick`` is the global tick of the next frame (a Python int); ``plan`` the layouts."""

  state: jax.Array
  up: tuple
  down: tuple
  tick: int
  plan: _Plan


class ShardedGraph(_Route):
  """The forward-in-time engine on any graph with ``jax.shard_map`` over a ``stage`` mesh.

  Args:
    graph: any unit graph (chains, skips, dense and delayed edges, units of any shapes).
    devices: ``None`` (all of ``jax.devices()``, every process's), an int or a list; or
    mesh: a :class:`jax.sharding.Mesh` with the single axis ``"stage"`` (e.g. over hosts).
    costs: per-unit costs for the contiguous split (default all equal;
      :func:`sideways_lab.partition.assignment`).
    method: ``"sideways"`` or ``"pipelined_exact"`` (docs/design.md §5).
    stash: ``method="sideways"`` only: an int >= 0, ``"full"`` or a per-unit tuple, as in
      ``sl.gradients``.

  Stage s owns a contiguous block of units. Per tick each stage runs its own units (the
  branch ``s`` of a ``lax.switch``: every stage compiles every branch, runs one) on flat
  vectors padded to the largest stage; for each stage distance δ that some edge spans, one
  ``ppermute`` sends the outputs read δ stages up (packed) and one sends the messages to
  units δ stages down (summed per unit, packed). A chain uses δ = 1 only; a span-2 skip with
  one unit per stage adds δ = 2. Parameters, state and gradients stay on their stage;
  :meth:`gradients` returns every unit's gradients replicated on every device (one
  all-gather per clip), as per-unit dicts like the single-device call.
  """

  _state_type = ShardedState

  def __init__(
    self,
    graph: UnitGraph,
    devices=None,
    mesh: Mesh | None = None,
    costs=None,
    *,
    method: str = "sideways",
    stash=0,
  ):
    if not isinstance(graph, UnitGraph):
      raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
    self.method, self.stash = method, _resolve_stash(graph, method, stash)
    if mesh is None:
      mesh = Mesh(np.array(_resolve_devices(devices)), (STAGE,))
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != (STAGE,):
      raise ValueError(
        f"mesh must be a jax.sharding.Mesh with the single axis 'stage', got "
        f"{getattr(mesh, 'axis_names', mesh)!r}"
      )
    D, L = mesh.shape[STAGE], graph.num_units
    if L < D:
      raise ValueError(
        f"the graph has L={L} units but the mesh has {D} devices: every "
        f"device (stage) needs at least one unit; use at most {L} devices "
        f"(processes x local devices)"
      )
    self.graph, self.mesh = graph, mesh
    self.assignment = partition.assignment(L, D, costs)
    self._plans, self._empty, self._unpack_fns = {}, {}, {}

  def __repr__(self):
    return (
      f"ShardedGraph(L={self.graph.num_units}, stages={self.num_devices}, "
      f"assignment={self.assignment}, method={self.method!r}, stash={self.stash!r})"
    )

  @property
  def num_devices(self) -> int:
    """D, the number of devices (the mesh's stage axis)."""
    return self.mesh.shape[STAGE]

  def units_on(self, s: int) -> tuple:
    """The units (1-based) of stage ``s``."""
    return tuple(k for k, p in enumerate(self.assignment, 1) if p == s)

  def _sharding(self, spec: P | None = None):
    return NamedSharding(self.mesh, P(STAGE) if spec is None else spec)

  def _global(self, x, spec: P | None = None):
    """A global array from a host value that every process holds in full (sharded over
    ``stage`` by default)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, self._sharding(spec), lambda idx: x[idx])

  def plan(self, params, frame) -> _Plan:
    """The static layout for clips whose frames are shaped like ``frame`` (cached)."""
    frame = jax.ShapeDtypeStruct(tuple(frame.shape), frame.dtype)
    key = _shape_key(params, frame)
    if key not in self._plans:
      self._plans[key] = _make_plan(self.graph, self.assignment, params, frame, self.stash)
    return self._plans[key]

  def _plan_for(self, params, video):
    return self.plan(
      params, jax.ShapeDtypeStruct((video.shape[0],) + tuple(video.shape[2:]), video.dtype)
    )

  def place_params(self, params, video) -> jax.Array:
    """The parameters packed per stage for clips shaped like ``video``: a (D, P) array
    sharded over ``stage`` (row s: the units of stage s, flattened and zero-padded)."""
    pipeline.check_graph_params(self.graph, params)
    plan = self._plan_for(params, video)
    leaves = [[np.asarray(a) for a in jax.tree_util.tree_leaves(p)] for p in params]
    rows = [
      st.params.pack(
        {(k, n): a for k in st.units for n, a in enumerate(leaves[k - 1])},
        plan.param_size,
        plan.dtype,
        np,
      )
      for st in plan.stages
    ]
    return self._global(np.stack(rows))

  # -- state -----------------------------------------------------------------------------------
  def init_state(self, params, video) -> ShardedState:
    """An empty pipeline sharded over ``stage`` (see :func:`sl.init_state`)."""
    key = _shape_key(params, video)
    if key not in self._empty:
      self._empty[key] = self.scatter_state(self._zero_state(params, video), params)
    return self._empty[key]

  def scatter_state(self, state: PipelineState, params=None) -> ShardedState:
    """Spreads a single-device :class:`sl.PipelineState` over the stages (every process
    passes the same state; ``params`` give the layout)."""
    pipeline.check_state(self.graph, state)
    if params is None:
      raise ValueError(
        "ShardedGraph.scatter_state needs params (the layout of the stages "
        "depends on the parameter shapes)"
      )
    bufs = [np.asarray(b) for b in state.buffers]  # a one-off move, through the host
    msgs = [np.asarray(m) for m in state.messages]
    delayed = [np.asarray(d) for d in state.delayed]
    carried = [np.asarray(c) for c in state.carried]
    plan = self.plan(params, jax.ShapeDtypeStruct(bufs[0].shape[1:], bufs[0].dtype))
    rows, ups, downs = [], {δ: [] for δ in plan.deltas}, {δ: [] for δ in plan.deltas}
    for st in plan.stages:
      named = {}
      if st.frame_depth:
        named[("x",)] = bufs[0][: st.frame_depth]
      for j, n in st.local.items():
        named[("b", j)] = bufs[j][:n]
      for j, n in st.mirrors.items():  # without the newest, which arrives this tick
        named[("m", j)] = np.concatenate([bufs[j][1:n], np.zeros_like(bufs[j][:1])])
      for j in st.units:
        if j < self.graph.num_units:
          named[("c", j)] = msgs[j - 1]
      for j in st.lines:
        named[("l", j)] = delayed[j - 1]
      for j in st.carries:
        named[("y", j)] = carried[j - 1][0]
      rows.append(st.state.pack(named, plan.state_size, plan.dtype, np))
      for δ in plan.deltas:
        ups[δ].append(
          st.up[δ].pack(
            {("o", j): bufs[j][0] for j in st.units if j < self.graph.num_units},
            plan.up_size[δ],
            plan.dtype,
            np,
          )
        )
        downs[δ].append(np.zeros(plan.down_size[δ], plan.dtype))
    return ShardedState(
      self._global(np.stack(rows)),
      tuple(self._global(np.stack(ups[δ])) for δ in plan.deltas),
      tuple(self._global(np.stack(downs[δ])) for δ in plan.deltas),
      int(state.tick),
      plan,
    )

  def gather_state(self, state: ShardedState, device=None) -> PipelineState:
    """The single-device :class:`sl.PipelineState` of a :class:`ShardedState` (on every
    process; through the host), placed on ``device`` (default: this process's first)."""
    if not isinstance(state, ShardedState):
      raise TypeError(f"state must be a sl.parallel.ShardedState, got {type(state).__name__}")
    plan = state.plan
    fetch = lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
    rows = fetch(state.state)
    downs = {δ: fetch(d) for δ, d in zip(plan.deltas, state.down)}
    L = self.graph.num_units
    named = [st.state.unpack(rows[s]) for s, st in enumerate(plan.stages)]
    shape = {j: None for j in range(L)}
    hist = schedule.buffer_depths(self.graph, self.stash)
    W = schedule.message_lines(self.graph, self.stash)
    buffers = [None] * L
    for j in range(L):
      rows_j = {}
      for s, st in enumerate(plan.stages):
        if j == 0 and st.frame_depth:
          rows_j.update({d: named[s][("x",)][d] for d in range(st.frame_depth)})
        elif j in st.local:
          rows_j.update({d: named[s][("b", j)][d] for d in range(st.local[j])})
        elif j in st.mirrors:
          rows_j.update({d + 1: named[s][("m", j)][d] for d in range(st.mirrors[j] - 1)})
      if j >= 1 and 0 not in rows_j:  # read only remotely: the outbox
        s = plan.owner[j]
        δ = min(δ for δ in plan.deltas if ("o", j) in plan.stages[s].up[δ].slots)
        rows_j[0] = plan.stages[s].up[δ].unpack(fetch(state.up[plan.deltas.index(δ)])[s])[("o", j)]
      shape[j] = rows_j[0].shape
      buffers[j] = np.stack([rows_j.get(d, np.zeros(shape[j], plan.dtype)) for d in range(hist[j])])
    messages, delayed, carried = [], [], []
    for j in range(1, L):
      mine = named[plan.owner[j]]
      m = mine[("c", j)].copy()
      line = mine[("l", j)].copy() if ("l", j) in mine else np.zeros((W[j],) + m.shape, m.dtype)
      y = mine[("y", j)][None].copy() if ("y", j) in mine else np.zeros((0,) + m.shape, m.dtype)
      for δ in plan.deltas:
        s = plan.owner[j] + δ
        if s >= len(plan.stages):
          continue
        for (_, jj, wait), x in plan.stages[s].down[δ].unpack(downs[δ][s]).items():
          if jj != j:
            continue
          if wait == _CARRIED:
            y = y + x
          elif wait == 0:
            m = m + x
          else:
            line[wait - 1] += x
      messages.append(m)
      delayed.append(line)
      carried.append(y)
    dev = jax.local_devices()[0] if device is None else device
    put = functools.partial(jax.device_put, device=dev)
    return PipelineState(
      tuple(put(b) for b in buffers),
      tuple(put(m) for m in messages),
      put(np.int32(state.tick)),
      tuple(put(d) for d in delayed) if any(W) else (),
      tuple(put(c) for c in carried) if plan.carry else (),
    )

  # -- running ---------------------------------------------------------------------------------
  def _run(self, params, video, targets, weights, loss_fn, state, num_ticks):
    plan = self._plan_for(params, video)
    placed = self.place_params(params, video)
    acc, (st, up, down), losses, loss = _sharded_scan(
      plan,
      self.mesh,
      loss_fn,
      num_ticks,
      placed,
      (state.state, state.up, state.down),
      self._global(video, P()),
      jax.tree_util.tree_map(lambda y: self._global(y, P()), targets),
      self._global(np.asarray(weights), P()),
    )
    grads = self._unpack(plan, acc)
    return (
      grads,
      np.asarray(loss),
      np.asarray(losses),
      ShardedState(st, tuple(up), tuple(down), state.tick + num_ticks, plan),
    )

  def _unpack(self, plan, acc):
    """Per-unit gradient dicts from the packed (D, P) array, replicated on every device."""
    fn = self._unpack_fns.get(plan)
    if fn is None:

      def unpack(acc):
        out = []
        for k in range(1, self.graph.num_units + 1):
          s = plan.owner[k]
          flat = plan.stages[s].params.unpack(acc[s])
          leaves = [flat[(k, n)] for n in range(plan.treedefs[k - 1].num_leaves)]
          out.append(jax.tree_util.tree_unflatten(plan.treedefs[k - 1], leaves))
        return tuple(out)

      fn = jax.jit(unpack, out_shardings=self._sharding(P()))
      self._unpack_fns[plan] = fn
    return fn(acc)


def message_bytes(
  graph: UnitGraph, params, frame, num_devices: int, costs=None, *, stash=0
) -> dict:
  """Bytes each stage boundary carries per tick on the sharded route with ``num_devices``
  stages: ``{"up": {δ: bytes}, "down": {δ: bytes}}`` (each ppermute's padded vector; every
  stage sends one of each per tick), from the plan's layouts (a stash whose messages wait
  sends them by wait, so ``down`` can grow)."""
  L = graph.num_units
  schedule.check_stash(graph, stash)
  plan = _make_plan(
    graph,
    partition.assignment(L, min(num_devices, L), costs),
    params,
    jax.ShapeDtypeStruct(tuple(frame.shape), frame.dtype),
    schedule.static_stash(stash),
  )
  item = plan.dtype.itemsize
  return {
    "up": {δ: plan.up_size[δ] * item for δ in plan.deltas},
    "down": {δ: plan.down_size[δ] * item for δ in plan.deltas},
  }


# ---------------------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------------------


def engine_for(
  graph: UnitGraph,
  devices=None,
  route: str = "auto",
  *,
  method: str = "sideways",
  stash=0,
  **kwargs,
):
  """The engine for ``graph``: ``route="sharded"`` (:class:`ShardedGraph`), ``"devices"``
  (:class:`DevicePipeline`) or ``"auto"`` (sharded: one compiled program per clip, and the
  only route across processes; per-device steps when an explicit ``assignment`` is given).
  ``method`` and ``stash`` as in :class:`ShardedGraph`; other keywords go to the route."""
  if route not in ("auto", "sharded", "devices"):
    raise ValueError(f"route must be 'auto', 'sharded' or 'devices', got {route!r}")
  if route == "auto":
    route = "devices" if "assignment" in kwargs else "sharded"
  cls = ShardedGraph if route == "sharded" else DevicePipeline
  return cls(graph, devices, method=method, stash=stash, **kwargs)


def gradients(
  graph: UnitGraph,
  params,
  video,
  targets,
  loss_fn,
  method: str = "sideways",
  mask=None,
  stash=0,
  *,
  devices=None,
  route: str = "auto",
  **kwargs,
):
  """``sl.gradients(..., method, mask, stash)`` with the units spread over ``devices``
  (``method`` ``"sideways"`` or ``"pipelined_exact"``).

  A one-shot helper; for training build the engine once (:func:`engine_for`,
  :class:`ShardedGraph` or :class:`DevicePipeline`) and call its ``gradients``.
  """
  eng = engine_for(graph, devices, route, method=method, stash=stash, **kwargs)
  return eng.gradients(params, video, targets, loss_fn, mask)


def stream_gradients(
  graph: UnitGraph,
  params,
  chunk,
  targets,
  loss_fn,
  state,
  mask=None,
  *,
  devices=None,
  route: str = "auto",
  loss_weight="mean",
  stash=0,
  **kwargs,
):
  """One streaming chunk on several devices; ``state`` may be a :class:`sl.PipelineState`
  made with the same ``stash``.

  Returns ``(grads, info, new_state)`` with ``new_state`` gathered back to a
  :class:`sl.PipelineState` (convenient, but it moves the state each call; keep an engine and
  its distributed state for speed)."""
  eng = engine_for(graph, devices, route, stash=stash, **kwargs)
  grads, info, st = eng.stream_gradients(
    params, chunk, targets, loss_fn, state, mask, loss_weight=loss_weight
  )
  return grads, info, eng.gather_state(st)
