"""Model parallelism: every unit on its own device, all devices computing at once.

Sideways (DESIGN.md §1, §5) is depth-parallel: at tick t unit k needs only what its sources
produced at tick t-1 and the messages its readers sent at tick t-1. So units can live on
different devices, every device steps its units at every tick, and between ticks each
device sends the outputs of its units up (to the devices of their readers) and the gradient
messages down (to the devices of their sources). This module gives two engines for that, both
computing *exactly* the single-device ``sl.gradients(..., method="sideways")`` estimate

    Ĝ_k = Σ_t g_k^t,   (g_k^t, messages_k^t) = VJP of f_k at (θ_k, inputs_k^t) applied to c_k^t

with ``c_L^t = w_t ∂loss_t/∂out_L^t`` (same tick), ``c_k^t`` = the sum of the messages sent to
unit k at tick t-1, ``w_t = 1{t∈V}/|V|`` and L-1 drain ticks (see ``engine._sideways_scan``).

:class:`DevicePipeline` — the general route (any graph: heterogeneous units, skips, delays).
  Units are assigned to devices (:func:`partition` gives a balanced contiguous partition; any
  assignment works). Each device has one jitted *step* that advances all its units by one
  tick; parameters and pipeline state are committed to that device. A Python loop over ticks
  dispatches, per tick, one step per device and the ``jax.device_put`` of the outputs and
  messages that cross devices. Dispatch is asynchronous: the loop runs ahead of the devices,
  which compute concurrently; the host cost is ~D dispatches + transfers per tick.

:class:`ShardedChain` — the SPMD route for a chain of *identical* units (same function, same
  parameter shapes, output shape = frame shape), L divisible by D. The L parameter sets are
  stacked and sharded over a ``stage`` mesh axis (L/D contiguous units per device); one jitted
  ``lax.scan`` over ticks runs ``jax.shard_map``: per tick each device applies its units
  (``vmap``: within a tick the units of a pipelined chain are independent) and exchanges one
  activation up and one message down with ``jax.lax.ppermute``. No host loop; the same
  program spans several hosts under ``jax.distributed`` (see docs/parallel.md).

Both accept and produce the single-device :class:`sl.PipelineState` for streaming (via
``gather_state``/``scatter_state``), so a stream can move between engines.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sideways_lab import engine as _engine
from sideways_lab import schedule
from sideways_lab.engine import PipelineState
from sideways_lab.graph import UnitGraph

__all__ = ["partition", "DevicePipeline", "ShardedChain", "ParallelState", "ShardedState",
           "gradients", "stream_gradients", "tick_time_model", "identical_units"]


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------

def partition(num_units: int, num_devices: int, costs: Sequence[float] | None = None
              ) -> tuple[int, ...]:
  """A contiguous partition of units 1..L over devices that minimises the slowest device.

  With per-tick unit costs ``c_k`` (forward + backward time of unit k; all 1 by default) it
  returns ``assignment`` with ``assignment[k-1]`` the device index of unit k, non-decreasing,
  minimising ``max_p Σ_{k on p} c_k`` (the compute part of the tick time). With
  ``num_devices >= L`` it is one unit per device (devices ``0..L-1``).
  """
  if not isinstance(num_units, int) or num_units < 1:
    raise ValueError(f"num_units must be a positive int, got {num_units!r}")
  if not isinstance(num_devices, int) or num_devices < 1:
    raise ValueError(f"num_devices must be a positive int, got {num_devices!r}")
  L = num_units
  c = np.ones(L) if costs is None else np.asarray(costs, float)
  if c.shape != (L,) or not np.all(np.isfinite(c)) or np.any(c < 0):
    raise ValueError(f"costs must be {L} finite non-negative numbers, got {costs!r}")
  from sideways_lab.analysis.latency import partition as groups_of   # the same min-max DP
  return tuple(p for p, group in enumerate(groups_of(c, min(num_devices, L))) for _ in group)


def tick_time_model(costs: Sequence[float], assignment: Sequence[int],
                    comm: float | Sequence[float] = 0.0) -> float:
  """The simple latency model of one Sideways tick on several devices.

  ``tick_time = max_p ( Σ_{k on p} (F_k + B_k) + comm_p )``: devices work at once, a tick ends
  when the slowest device has done its units and its transfers. ``costs[k-1] = F_k + B_k``;
  ``comm`` is one number for every device or one per device. On one device it is Σ_k c_k.
  """
  costs = np.asarray(costs, float)
  assignment = np.asarray(assignment, int)
  if costs.shape != assignment.shape:
    raise ValueError(f"costs and assignment must have the same length, got {costs.shape} and "
                     f"{assignment.shape}")
  D = int(assignment.max()) + 1
  comm = np.broadcast_to(np.asarray(comm, float), (D,))
  return float(max(costs[assignment == p].sum() + comm[p] for p in range(D)))


def _shape_key(params, video) -> tuple:
  shape = tuple(video.shape)
  frame = (shape[0],) + shape[2:] if len(shape) == 5 else shape
  return (frame, str(video.dtype), jax.tree_util.tree_structure(params),
          tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(params)))


def _resolve_devices(devices) -> list:
  if devices is None:
    return list(jax.devices())
  if isinstance(devices, int):
    if devices < 1 or devices > len(jax.devices()):
      raise ValueError(f"devices={devices}: this process has {len(jax.devices())} device(s) "
                       f"(set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX "
                       f"starts to simulate N CPU devices)")
    return list(jax.devices()[:devices])
  devices = list(devices)
  if not devices or not all(isinstance(d, jax.Device) for d in devices):
    raise TypeError("devices must be None, an int or a non-empty list of jax.Device")
  return devices


def _resolve_assignment(graph: UnitGraph, devices: list, assignment, costs) -> tuple[int, ...]:
  L = graph.num_units
  if assignment is None or assignment == "contiguous":
    return partition(L, len(devices), costs)
  if assignment == "one_per_device":
    if len(devices) < L:
      raise ValueError(f"assignment='one_per_device' needs at least L={L} devices, got "
                       f"{len(devices)}")
    return tuple(range(L))
  if isinstance(assignment, str):
    raise ValueError(f"assignment must be 'contiguous', 'one_per_device' or a sequence of L "
                     f"device indices, got {assignment!r}")
  a = tuple(int(x) for x in assignment)
  if len(a) != L or any(not 0 <= x < len(devices) for x in a):
    raise ValueError(f"assignment must give a device index in 0..{len(devices) - 1} for each "
                     f"of the {L} units, got {assignment!r}")
  return a


# ---------------------------------------------------------------------------------------------
# Shared validation (the engine's own checks, so errors read the same)
# ---------------------------------------------------------------------------------------------

def _check_inputs(graph, params, video, targets, loss_fn, mask, name="video"):
  _engine._check_graph_params(graph, params)
  _engine._check_loss_fn(loss_fn)
  video = _engine._check_video(video, name)
  B, T = video.shape[:2]
  _engine._check_targets(targets, B, T)
  mask = _engine._check_mask(mask, T)
  return video, mask


def _stream_weights(graph, T, tick, mask, loss_weight, dtype):
  v_L = schedule.first_valid_ticks(graph)[-1]
  V = tick + np.arange(T) >= v_L
  if mask is not None:
    V = V & np.asarray(mask, bool)
  if isinstance(loss_weight, str):
    if loss_weight != "mean":
      raise ValueError(f"loss_weight must be 'mean' or a float, got {loss_weight!r}")
    w = V / max(V.sum(), 1)
  else:
    w = V * float(loss_weight)
  return w.astype(dtype), V


# ---------------------------------------------------------------------------------------------
# The general route: per-device jitted steps
# ---------------------------------------------------------------------------------------------

# Small jitted helpers: eager ops would compile one program per shape *and device*.
@functools.lru_cache(maxsize=None)
def _zeros_on(device):
  """A jitted ``zeros_like`` whose result is committed to ``device`` (a plain jitted
  ``zeros_like`` drops its unused input and lands, uncommitted, on the default device)."""
  return jax.jit(lambda tree: jax.tree_util.tree_map(jnp.zeros_like, tree),
                 out_shardings=jax.sharding.SingleDeviceSharding(device))

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
  tick_loss = tick_loss[:weights.shape[0]]
  return jnp.sum(jnp.where(weights > 0, weights * tick_loss, 0.0)), tick_loss


@dataclasses.dataclass(frozen=True)
class _DeviceSpec:
  """What one device does each tick (static: a hashable argument of the jitted step).

  units: the units k on this device, ascending. sources: every source j this device reads
    (0 is the frame). remote: the sources j >= 1 owned by another device (mirrored here; the
    newest output arrives as a pending value and is pushed at the start of the next tick).
  local_cots: local units j < L that receive messages. send_outs: local units whose outputs
    other devices read. send_msgs: remote units j that local units send messages to.
  recv_msgs: ``(j, from_device)`` pairs of messages arriving for local units.
  """
  units: tuple
  sources: tuple
  remote: tuple
  local_cots: tuple
  send_outs: tuple
  send_msgs: tuple
  recv_msgs: tuple
  top: bool


def _device_specs(graph: UnitGraph, assignment: tuple) -> tuple:
  L = graph.num_units
  owner = {k: assignment[k - 1] for k in range(1, L + 1)}
  D = max(assignment) + 1
  specs = []
  for p in range(D):
    units = tuple(k for k in range(1, L + 1) if owner[k] == p)
    sources = tuple(sorted({j for k in units for j, _ in graph.edges[k]}))
    remote = tuple(j for j in sources if j >= 1 and owner[j] != p)
    local_cots = tuple(j for j in units if j < L)
    send_outs = tuple(j for j in units if j < L and
                      any(owner[k] != p for k, _, _ in graph.readers(j)))
    send_msgs = tuple(sorted({j for k in units for j, _ in graph.edges[k]
                              if j >= 1 and owner[j] != p}))
    recv_msgs = tuple(sorted({(j, owner[k]) for j in local_cots for k, _, _ in graph.readers(j)
                              if owner[k] != p}))
    specs.append(_DeviceSpec(units, sources, remote, local_cots, send_outs, send_msgs,
                             recv_msgs, L in units))
  return tuple(specs)


class ParallelState(NamedTuple):
  """The pipeline state of a :class:`DevicePipeline`, spread over its devices.

  ``per_device[p] = (buffers, cotangents, pending_outs, pending_msgs)`` lives on device p:
  ``buffers`` (dict j -> (H_j, B, ...)) for every source p reads — mirrors of remote sources
  lack their newest output, which is in ``pending_outs`` (dict j -> (B, ...)) and is pushed at
  the start of the next tick; ``cotangents`` (dict j -> out_j shape) are the messages local
  units sent to local unit j; ``pending_msgs`` (tuple in ``spec.recv_msgs`` order) are the
  messages other devices sent. ``tick`` is the global tick of the next frame (a Python int).
  """
  per_device: tuple
  tick: int


@functools.partial(jax.jit, static_argnames=("graph", "spec", "loss_fn"))
def _device_step(graph, spec, loss_fn, params, carry, pending_outs, pending_msgs, x_t, y_t, w):
  """One tick of the units of one device (the body of ``engine._sideways_scan``, restricted).

  ``carry = (buffers, cotangents, acc)``; ``x_t`` is the frame of this tick (B, H, W, C) when
  the device reads the frame, ``y_t`` and ``w`` the target and loss weight when it holds unit
  L (else ``None``), so the compiled step does not depend on the clip length. Returns
  ``(carry, sent_outs, sent_msgs, loss_t)`` with ``sent_outs`` in ``spec.send_outs`` order and
  ``sent_msgs`` in ``spec.send_msgs`` order.
  """
  L = graph.num_units
  bufs, cots, acc = carry
  bufs = dict(bufs)
  for j in spec.remote:                                   # absorb what arrived from below
    bufs[j] = _engine._push(bufs[j], pending_outs[j])
  cot_in = dict(cots)
  for (j, _), m in zip(spec.recv_msgs, pending_msgs):     # ... and from above
    cot_in[j] = cot_in[j] + m
  if 0 in spec.sources:
    bufs[0] = _engine._push(bufs[0], x_t)
  outs, grads, loss_t = {}, [], jnp.zeros((), jnp.float32)
  new_cots = {j: jnp.zeros_like(c) for j, c in cots.items()}
  sent_msgs = {}
  for n, k in enumerate(spec.units):
    edges = graph.edges[k]
    inputs = [bufs[j][d] for j, d in edges]               # x_{t-d} or out_j^{t-1-d}
    unit_idx = [e for e, (j, _) in enumerate(edges) if j >= 1]

    def f(p, unit_inputs, k=k, inputs=inputs, unit_idx=unit_idx):
      full = list(inputs)
      for e, a in zip(unit_idx, unit_inputs):
        full[e] = a
      return graph.apply_unit(k, p, full)

    out, vjp = jax.vjp(f, params[n], [inputs[e] for e in unit_idx])
    outs[k] = out
    if k == L:
      loss_t, dl = jax.value_and_grad(functools.partial(_engine._tick_loss, loss_fn))(out, y_t)
      cot = jnp.where(w > 0, w * dl, 0.0).astype(out.dtype)
    else:
      cot = cot_in[k]
    g, ms = vjp(cot)
    grads.append(g)
    for e, m in zip(unit_idx, ms):
      j = edges[e][0]
      if j in new_cots:
        new_cots[j] = new_cots[j] + m
      else:
        sent_msgs[j] = sent_msgs[j] + m if j in sent_msgs else m
  acc = jax.tree_util.tree_map(jnp.add, acc, tuple(grads))
  for j in spec.sources:                                  # local outputs join local buffers
    if j >= 1 and j not in spec.remote:
      bufs[j] = _engine._push(bufs[j], outs[j])
  carry = (bufs, new_cots, acc)
  return (carry, tuple(outs[j] for j in spec.send_outs),
          tuple(sent_msgs[j] for j in spec.send_msgs), loss_t)


class DevicePipeline:
  """Sideways with the units of ``graph`` spread over several devices (the general route).

  Args:
    graph: any unit graph (skips, delays, heterogeneous units).
    devices: ``None`` (all of ``jax.devices()``), an int (the first n) or a list of devices.
    assignment: ``"contiguous"`` (default: :func:`partition` with ``costs``),
      ``"one_per_device"`` or a sequence giving the device index of each unit.
    costs: per-unit costs for the contiguous partition (default: all equal).

  Each tick, device p runs one jitted step for its units, then the outputs that other devices
  read and the messages to units on other devices are ``jax.device_put`` to those devices;
  they are consumed at the next tick, as in the single-device engine. All of it is dispatched
  asynchronously, so the devices compute their ticks concurrently.
  """

  def __init__(self, graph: UnitGraph, devices=None, assignment="contiguous", costs=None):
    if not isinstance(graph, UnitGraph):
      raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
    self.graph = graph
    devices = _resolve_devices(devices)
    self.assignment = _resolve_assignment(graph, devices, assignment, costs)
    used = sorted(set(self.assignment))
    remap = {p: n for n, p in enumerate(used)}          # drop devices without units
    self.assignment = tuple(remap[p] for p in self.assignment)
    self.devices = tuple(devices[p] for p in used)
    self.specs = _device_specs(graph, self.assignment)
    L = graph.num_units
    self._owner = {k: self.assignment[k - 1] for k in range(1, L + 1)}
    # routes: for each device q, where each pending output / message comes from
    self._out_routes = [[(self._owner[j], self.specs[self._owner[j]].send_outs.index(j), j)
                         for j in spec.remote] for spec in self.specs]
    self._msg_routes = [[(src, self.specs[src].send_msgs.index(j)) for j, src in spec.recv_msgs]
                        for spec in self.specs]
    self._empty = {}

  def __repr__(self):
    return (f"DevicePipeline(L={self.graph.num_units}, devices={len(self.devices)}, "
            f"assignment={self.assignment})")

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def units_on(self, p: int) -> tuple:
    """The units (1-based) on device index ``p``."""
    return self.specs[p].units

  # -- placement of params and state ---------------------------------------------------------
  def place_params(self, params) -> tuple:
    """``params`` with unit k's dict committed to the device of unit k (do it once)."""
    _engine._check_graph_params(self.graph, params)
    return tuple(jax.device_put(params[k - 1], self.devices[self._owner[k]])
                 for k in range(1, self.graph.num_units + 1))

  def _device_params(self, params):
    params = self.place_params(params)
    return [tuple(params[k - 1] for k in spec.units) for spec in self.specs]

  def scatter_state(self, state: PipelineState) -> ParallelState:
    """Spreads a single-device :class:`sl.PipelineState` over the devices."""
    _engine._check_state(self.graph, state)
    buffers = [np.asarray(b) for b in state.buffers]      # a one-off move, through the host
    messages = [np.asarray(m) for m in state.messages]
    per = []
    for p, spec in enumerate(self.specs):
      dev = self.devices[p]
      put = functools.partial(jax.device_put, device=dev)
      bufs, pend = {}, {}
      for j in spec.sources:
        b = buffers[j]
        if j in spec.remote:      # mirror without its newest output, which is pending
          bufs[j] = put(np.concatenate([b[1:], b[-1:]], axis=0))
          pend[j] = put(b[0])
        else:
          bufs[j] = put(b)
      cots = {j: put(messages[j - 1]) for j in spec.local_cots}
      msgs = tuple(put(np.zeros_like(messages[j - 1])) for j, _ in spec.recv_msgs)
      per.append((bufs, cots, pend, msgs))
    return ParallelState(tuple(per), int(state.tick))

  def gather_state(self, state: ParallelState, device=None) -> PipelineState:
    """The single-device :class:`sl.PipelineState` of a :class:`ParallelState`, on ``device``
    (default: the first device)."""
    if not isinstance(state, ParallelState):
      raise TypeError(f"state must be a sl.parallel.ParallelState, got {type(state).__name__}")
    dev = self.devices[0] if device is None else device
    L = self.graph.num_units
    buffers = [None] * L                                  # a one-off move, through the host
    for p, spec in enumerate(self.specs):
      bufs, _, pend, _ = state.per_device[p]
      for j in spec.sources:
        if j < L and buffers[j] is None:
          b = np.asarray(bufs[j])
          if j in spec.remote:
            b = np.concatenate([np.asarray(pend[j])[None], b[:-1]], axis=0)
          buffers[j] = b
    messages = [None] * (L - 1)
    for p, spec in enumerate(self.specs):
      _, cots, _, msgs = state.per_device[p]
      for j in spec.local_cots:
        messages[j - 1] = np.asarray(cots[j])
      for (j, _), m in zip(spec.recv_msgs, msgs):
        messages[j - 1] = messages[j - 1] + np.asarray(m)
    put = functools.partial(jax.device_put, device=dev)
    return PipelineState(tuple(put(b) for b in buffers), tuple(put(m) for m in messages),
                         put(np.int32(state.tick)))

  def init_state(self, params, video) -> ParallelState:
    """An empty pipeline spread over the devices (see :func:`sl.init_state`).

    Cached per clip and parameter shapes (the arrays are immutable zeros), so a training loop
    does not pay for tracing the shapes and moving zeros at every clip."""
    key = _shape_key(params, video)
    if key not in self._empty:
      self._empty[key] = self.scatter_state(_engine.init_state(self.graph, params, video))
    return self._empty[key]

  # -- running -------------------------------------------------------------------------------
  def _run(self, params, video, targets, weights, loss_fn, state: ParallelState, num_ticks):
    """The tick loop. Returns ``(grads, per-tick losses (num_ticks,), new ParallelState)``."""
    dparams = self._device_params(params)
    L = self.graph.num_units
    top = self._owner[L]
    T = video.shape[1]
    frames, carries, pend_outs, pend_msgs = [], [], [], []
    for p, spec in enumerate(self.specs):
      dev = self.devices[p]
      bufs, cots, pend, msgs = state.per_device[p]
      # the clip goes once to every device that reads it, split there into its T frames
      frames.append(_split_time(jax.device_put(video, dev)) if 0 in spec.sources else None)
      carries.append((bufs, cots, _zeros_on(dev)(dparams[p])))
      pend_outs.append(pend)
      pend_msgs.append(msgs)
    tdev = self.devices[top]
    ys = _split_time(jax.device_put(targets, tdev))
    ws = _split_vector(jax.device_put(np.asarray(weights), tdev))
    losses = []
    for i in range(num_ticks):
      sent = []
      t = min(i, T - 1)                                   # drain ticks feed the last frame
      for p, spec in enumerate(self.specs):               # every device steps its units
        is_top = p == top
        carry, outs, msgs, loss_t = _device_step(
            self.graph, spec, loss_fn if is_top else None, dparams[p], carries[p],
            pend_outs[p], pend_msgs[p], frames[p][t] if frames[p] is not None else None,
            ys[t] if is_top else None,
            ws[i] if is_top else None)
        carries[p] = carry
        sent.append((outs, msgs))
        if is_top:
          losses.append(loss_t)
      for q in range(len(self.specs)):                    # activations up, messages down
        dev = self.devices[q]
        pend_outs[q] = {j: jax.device_put(sent[p][0][n], dev) for p, n, j in self._out_routes[q]}
        pend_msgs[q] = tuple(jax.device_put(sent[p][1][n], dev) for p, n in self._msg_routes[q])
    grads = [None] * L
    per = []
    for p, spec in enumerate(self.specs):
      bufs, cots, acc = carries[p]
      for k, g in zip(spec.units, acc):
        grads[k - 1] = g
      per.append((bufs, cots, pend_outs[p], pend_msgs[p]))
    tick_loss = _stack_list(losses) if losses else jnp.zeros((0,), jnp.float32)
    return tuple(grads), tick_loss, ParallelState(tuple(per), state.tick + num_ticks)

  def gradients(self, params, video, targets, loss_fn, mask=None):
    """``sl.gradients(graph, params, video, targets, loss_fn, method="sideways", mask)`` on
    several devices: T ticks then L-1 drain ticks from an empty pipeline.

    Returns ``(grads, info)`` as the single-device call: ``grads[k-1]`` lives on the device
    of unit k; ``info`` has ``"loss"``, ``"loss_ticks"``, ``"tick_loss"``, ``"num_loss_ticks"``.
    """
    video, mask = _check_inputs(self.graph, params, video, targets, loss_fn, mask)
    T = video.shape[1]
    L = self.graph.num_units
    weights, V = _engine._loss_weights(self.graph, T, mask, "pipelined", video.dtype)
    w = np.concatenate([np.asarray(weights), np.zeros(L - 1, np.asarray(weights).dtype)])
    state = self.init_state(params, video)
    grads, tick_loss, _ = self._run(params, video, targets, w, loss_fn, state, T + L - 1)
    loss, tick_loss = _clip_loss(jnp.asarray(weights), tick_loss)
    return grads, {"loss": loss, "loss_ticks": V, "tick_loss": tick_loss,
                   "num_loss_ticks": V.sum()}

  def stream_gradients(self, params, chunk, targets, loss_fn, state, mask=None, *,
                       loss_weight="mean"):
    """``sl.stream_gradients`` on several devices: one chunk, no drain, state carried over.

    ``state`` is a :class:`ParallelState` (from :meth:`init_state` or a previous call) or a
    single-device :class:`sl.PipelineState` (scattered first). Returns
    ``(grads, info, new ParallelState)``; :meth:`gather_state` turns it back.
    """
    chunk, mask = _check_inputs(self.graph, params, chunk, targets, loss_fn, mask, "chunk")
    if isinstance(state, PipelineState):
      state = self.scatter_state(state)
    if not isinstance(state, ParallelState):
      raise TypeError(f"state must be a ParallelState or sl.PipelineState, got "
                      f"{type(state).__name__}")
    T = chunk.shape[1]
    w, V = _stream_weights(self.graph, T, state.tick, mask, loss_weight,
                           np.dtype(chunk.dtype))
    grads, tick_loss, state = self._run(params, chunk, targets, w, loss_fn, state, T)
    loss, tick_loss = _clip_loss(w, tick_loss)
    return grads, {"loss": loss, "loss_ticks": V, "tick_loss": tick_loss}, state


# ---------------------------------------------------------------------------------------------
# The SPMD route: shard_map + ppermute over a `stage` mesh axis
# ---------------------------------------------------------------------------------------------

def identical_units(graph: UnitGraph, params, frame, atol: float = 1e-6) -> str | None:
  """Why ``graph`` is *not* a stack of identical units, or ``None`` when it is.

  Identical means: a chain; every unit's parameters have unit 1's tree structure, shapes and
  dtypes; unit 1's function applied with unit k's parameters gives unit k's output on a probe
  input (so one program can run every unit); and a unit's output has the frame's shape.
  """
  if not graph.is_chain:
    return "the graph is not a chain"
  s0 = jax.tree_util.tree_structure(params[0])
  shapes0 = [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(params[0])]
  for k in range(2, graph.num_units + 1):
    if (jax.tree_util.tree_structure(params[k - 1]) != s0 or
        [(a.shape, a.dtype) for a in jax.tree_util.tree_leaves(params[k - 1])] != shapes0):
      return f"unit {k}'s parameters differ in structure or shape from unit 1's"
  frame = jax.ShapeDtypeStruct(tuple(frame.shape), frame.dtype)
  out1 = jax.eval_shape(lambda p, x: graph.apply_unit(1, p, [x]), params[0], frame)
  if out1.shape != frame.shape or out1.dtype != frame.dtype:
    return (f"a unit maps the frame shape {frame.shape} to {out1.shape} ({out1.dtype}); the "
            f"SPMD route needs units that keep the frame's shape and dtype")
  probe = np.random.default_rng(0).normal(size=frame.shape).astype(frame.dtype)

  @jax.jit
  def gaps(params, x):   # |f_k(θ_k; x) - f_1(θ_k; x)| for every k, in one program
    return jnp.stack([jnp.max(jnp.abs(graph.apply_unit(k, params[k - 1], [x]) -
                                      graph.apply_unit(1, params[k - 1], [x])))
                      for k in range(1, graph.num_units + 1)])

  bad = np.flatnonzero(np.asarray(gaps(tuple(params), probe)) > atol)
  if bad.size:
    return f"unit {bad[0] + 1} computes a different function than unit 1"
  return None


class ShardedState(NamedTuple):
  """The pipeline state of a :class:`ShardedChain`: global arrays sharded over ``stage``.

  ``acts[k-1] = out_k^{t-1}`` and ``sent[k-1]`` = the message unit k sent to unit k-1 at tick
  t-1 (``sent[0]``, the message to the frame, is unused), both (L, B, ...); ``frame`` is the
  last frame pushed (for :meth:`ShardedChain.gather_state`); ``tick`` a Python int.
  """
  acts: jax.Array
  sent: jax.Array
  frame: jax.Array
  tick: int


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _unstack(tree, n):
  return tuple(jax.tree_util.tree_map(lambda a: a[i], tree) for i in range(n))


@functools.partial(jax.jit, static_argnames=("graph", "mesh", "loss_fn", "num_ticks"))
def _sharded_scan(graph, mesh, loss_fn, num_ticks, stacked, acts, sent, video, targets, weights):
  """One jitted scan over ticks; each tick is SPMD over the ``stage`` axis of ``mesh``."""
  D = mesh.shape["stage"]
  apply = lambda p, x: graph.apply_unit(1, p, [x])
  up = [(s, s + 1) for s in range(D - 1)]
  down = [(s + 1, s) for s in range(D - 1)]

  def per_device(stacked, acts, sent, video, targets, weights):
    s = lax.axis_index("stage")
    zero = jax.tree_util.tree_map(jnp.zeros_like, stacked)

    def body(carry, i):
      acts, sent, acc = carry
      below = lax.ppermute(acts[-1], "stage", up)        # out of the unit below, tick t-1
      above = lax.ppermute(sent[0], "stage", down)       # message from the unit above, t-1
      x_t = _engine._frame(video, i)
      first = jnp.where(s == 0, x_t, below)
      inputs = jnp.concatenate([first[None], acts[:-1]], axis=0)
      outs, vjp = jax.vjp(jax.vmap(apply), stacked, inputs)
      w = weights[i]
      loss_t, dl = jax.value_and_grad(functools.partial(_engine._tick_loss, loss_fn))(
          outs[-1], _engine._target(targets, i))
      top = jnp.where((s == D - 1) & (w > 0), w * dl, jnp.where(s == D - 1, 0.0, above))
      cots = jnp.concatenate([sent[1:], top.astype(outs.dtype)[None]], axis=0)
      g, msgs = vjp(cots)
      acc = jax.tree_util.tree_map(jnp.add, acc, g)
      loss_t = lax.psum(jnp.where(s == D - 1, loss_t, 0.0), "stage")
      return (outs, msgs, acc), loss_t

    (acts, sent, acc), losses = lax.scan(body, (acts, sent, zero), jnp.arange(num_ticks))
    return acc, acts, sent, losses, _engine._frame(video, num_ticks - 1)

  stage = P("stage")
  f = jax.shard_map(per_device, mesh=mesh,
                    in_specs=(stage, stage, stage, P(), P(), P()),
                    out_specs=(stage, stage, stage, P(), P()))
  return f(stacked, acts, sent, video, targets, weights)


class ShardedChain:
  """Sideways on a chain of identical units with ``jax.shard_map`` (the SPMD route).

  Args:
    graph: a chain whose units are identical (see :func:`identical_units`; checked on the
      first call) and whose length L is a multiple of the number of devices D.
    devices: ``None`` (all), an int or a list of devices; or pass ``mesh``.
    mesh: a :class:`jax.sharding.Mesh` with a ``"stage"`` axis (e.g. spanning hosts).

  Units ``s·L/D + 1 .. (s+1)·L/D`` live on stage s. The whole clip is one jitted ``lax.scan``;
  every tick each stage applies its L/D units (vmapped) and ``lax.ppermute`` moves one
  activation to stage s+1 and one message to stage s-1.
  """

  def __init__(self, graph: UnitGraph, devices=None, mesh: Mesh | None = None):
    if not isinstance(graph, UnitGraph):
      raise TypeError(f"graph must be a sl.UnitGraph, got {type(graph).__name__}")
    if not graph.is_chain:
      raise ValueError("ShardedChain needs a chain graph; use DevicePipeline for skips/delays")
    if mesh is None:
      mesh = Mesh(np.array(_resolve_devices(devices)), ("stage",))
    if "stage" not in mesh.axis_names or len(mesh.axis_names) != 1:
      raise ValueError(f"mesh must have the single axis 'stage', got {mesh.axis_names}")
    D = mesh.shape["stage"]
    if graph.num_units % D:
      raise ValueError(f"ShardedChain needs L={graph.num_units} to be a multiple of the number "
                       f"of devices {D}; use DevicePipeline for an uneven split")
    self.graph, self.mesh = graph, mesh
    self._checked = set()
    self._empty = {}
    self._stack_fn = jax.jit(lambda ps: _stack(ps), out_shardings=self._sharding())
    self._unstack_fn = jax.jit(lambda t: _unstack(t, graph.num_units))

  def __repr__(self):
    return f"ShardedChain(L={self.graph.num_units}, stages={self.num_devices})"

  @property
  def num_devices(self) -> int:
    return self.mesh.shape["stage"]

  def _sharding(self, spec=P("stage")):
    return NamedSharding(self.mesh, spec)

  def _check(self, params, frame):
    key = (tuple(frame.shape), str(frame.dtype))
    if key in self._checked:
      return
    why = identical_units(self.graph, params, frame)
    if why is not None:
      raise ValueError(f"ShardedChain needs identical units: {why}; use DevicePipeline")
    self._checked.add(key)

  def place_params(self, params):
    """The L parameter dicts stacked on a leading axis, sharded over ``stage``."""
    _engine._check_graph_params(self.graph, params)
    return self._stack_fn(tuple(params))

  def scatter_state(self, state: PipelineState) -> ShardedState:
    _engine._check_state(self.graph, state)
    bufs = [np.asarray(b) for b in state.buffers]        # a one-off move, through the host
    zero = np.zeros_like(bufs[0][0])
    acts = np.stack([b[0] for b in bufs[1:]] + [zero])
    sent = np.stack([zero] + [np.asarray(m) for m in state.messages])
    put = lambda a: jax.device_put(a, self._sharding())
    return ShardedState(put(acts), put(sent), bufs[0][0], int(state.tick))

  def gather_state(self, state: ShardedState, device=None) -> PipelineState:
    dev = jax.devices()[0] if device is None else device
    acts, sent = np.asarray(state.acts), np.asarray(state.sent)
    L = self.graph.num_units
    put = functools.partial(jax.device_put, device=dev)
    buffers = (put(np.asarray(state.frame)[None]),) + tuple(put(acts[k][None])
                                                          for k in range(L - 1))
    return PipelineState(buffers, tuple(put(sent[j]) for j in range(1, L)),
                         put(np.int32(state.tick)))

  def init_state(self, params, video) -> ShardedState:
    """An empty pipeline sharded over ``stage`` (see :func:`sl.init_state`)."""
    key = _shape_key(params, video)
    if key not in self._empty:
      state = _engine.init_state(self.graph, params, video)
      self._check(params, state.buffers[0][0])
      self._empty[key] = self.scatter_state(state)
    return self._empty[key]

  def _run(self, params, video, targets, weights, loss_fn, state, num_ticks):
    self._check(params, jax.ShapeDtypeStruct((video.shape[0],) + tuple(video.shape[2:]),
                                             video.dtype))
    stacked = self.place_params(params)
    rep = self._sharding(P())
    video_r = jax.device_put(video, rep)
    acc, acts, sent, losses, frame = _sharded_scan(
        self.graph, self.mesh, loss_fn, num_ticks, stacked, state.acts, state.sent, video_r,
        jax.device_put(targets, rep), jax.device_put(jnp.asarray(weights), rep))
    return (self._unstack_fn(acc), losses,
            ShardedState(acts, sent, frame, state.tick + num_ticks))

  gradients = DevicePipeline.gradients

  def stream_gradients(self, params, chunk, targets, loss_fn, state, mask=None, *,
                       loss_weight="mean"):
    """As :meth:`DevicePipeline.stream_gradients`, with a :class:`ShardedState`."""
    chunk, mask = _check_inputs(self.graph, params, chunk, targets, loss_fn, mask, "chunk")
    if isinstance(state, PipelineState):
      state = self.scatter_state(state)
    if not isinstance(state, ShardedState):
      raise TypeError(f"state must be a ShardedState or sl.PipelineState, got "
                      f"{type(state).__name__}")
    T = chunk.shape[1]
    w, V = _stream_weights(self.graph, T, state.tick, mask, loss_weight, np.dtype(chunk.dtype))
    grads, tick_loss, state = self._run(params, chunk, targets, w, loss_fn, state, T)
    loss, tick_loss = _clip_loss(w, tick_loss)
    return grads, {"loss": loss, "loss_ticks": V, "tick_loss": tick_loss}, state


# ---------------------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------------------

def engine_for(graph: UnitGraph, params, frame, devices=None, route: str = "auto", **kwargs):
  """The engine for ``graph``: ``route="sharded"`` (:class:`ShardedChain`), ``"devices"``
  (:class:`DevicePipeline`) or ``"auto"`` (sharded when the graph is a chain of identical
  units whose length is a multiple of the number of devices, else per-device steps)."""
  if route not in ("auto", "sharded", "devices"):
    raise ValueError(f"route must be 'auto', 'sharded' or 'devices', got {route!r}")
  devs = _resolve_devices(devices)
  if route == "auto":
    ok = (graph.num_units % len(devs) == 0 and identical_units(graph, params, frame) is None)
    route = "sharded" if ok else "devices"
  if route == "sharded":
    return ShardedChain(graph, devs, **kwargs)
  return DevicePipeline(graph, devs, **kwargs)


def gradients(graph: UnitGraph, params, video, targets, loss_fn, mask=None, *, devices=None,
              route: str = "auto", **kwargs):
  """``sl.gradients(..., method="sideways")`` with the units spread over ``devices``.

  A one-shot helper; for training build the engine once (``engine_for``,
  :class:`DevicePipeline` or :class:`ShardedChain`) and call its ``gradients``.
  """
  video = _engine._check_video(video)
  eng = engine_for(graph, params, video[:, 0], devices, route, **kwargs)
  return eng.gradients(params, video, targets, loss_fn, mask)


def stream_gradients(graph: UnitGraph, params, chunk, targets, loss_fn, state, mask=None, *,
                     devices=None, route: str = "devices", loss_weight="mean", **kwargs):
  """One streaming chunk on several devices; ``state`` may be a :class:`sl.PipelineState`.

  Returns ``(grads, info, new_state)`` with ``new_state`` gathered back to a
  :class:`sl.PipelineState` (convenient, but it moves the state each call; keep an engine and
  its distributed state for speed)."""
  chunk = _engine._check_video(chunk, "chunk")
  eng = engine_for(graph, params, chunk[:, 0], devices, route, **kwargs)
  grads, info, st = eng.stream_gradients(params, chunk, targets, loss_fn, state, mask,
                                         loss_weight=loss_weight)
  return grads, info, eng.gather_state(st)
