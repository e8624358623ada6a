"""The latency model: ticks and time for BP, Sideways and Skip-Sideways on L units and D devices.

Built on the symbolic schedule (``sl.schedule.latency``, ``first_valid_ticks``,
``gradient_sources``), which gives the counts in *ticks*; this module adds costs:
a forward cost ``F_k`` and a backward cost ``B_k`` per unit and a communication cost ``C``
per message between devices, with the L units split into D contiguous groups (one per device).

Pipelined schemes (Sideways on a chain, Skip-Sideways with skips): every tick, every device runs
its units' forward and backward steps, then messages cross device boundaries::

    tick_time   = max_d Σ_{k on d} (F_k + B_k)  +  C · 1{D > 1}
    throughput  = 1 / tick_time  frames per unit time (one frame per tick)
    utilisation_d = Σ_{k on d} (F_k + B_k) / tick_time

BP is blocking: one frame goes up through every unit and its gradient back down before the next::

    frame_time  = Σ_k (F_k + B_k) + 2 (D - 1) C
    throughput  = 1 / frame_time,   utilisation_d = Σ_{k on d} (F_k + B_k) / frame_time

Counts in ticks (first output, output latency in frames, gradient delay to each unit) are those
of ``sl.schedule.latency``; their times follow from the tick (pipelined) or from the sums of
the costs along the path (BP). :func:`timeline` lists what each device does at each tick
(a Gantt chart: ``sl.plotting.plot_timeline`` draws it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sideways_lab import schedule
from sideways_lab.graph import chain_edges, skip_edges
from sideways_lab.partition import groups

#: The schemes the latency model times: blocking BP and the two pipelined schemes (an exact
#: twin runs the pipeline of its approximate scheme, so it has the same latency).
LATENCY_SCHEMES = ("backprop", "sideways", "skip_sideways")


def resolve_graph(graph_or_L, scheme: str, span: int = 2) -> dict:
  """Edges for the model: a graph (or edges dict) as is, or L units as a chain / skip graph.

  For an int L, ``"backprop"`` and ``"sideways"`` use a chain and ``"skip_sideways"`` skips
  of ``span``.
  """
  if scheme not in LATENCY_SCHEMES:
    raise ValueError(f"scheme must be one of {LATENCY_SCHEMES}, got {scheme!r}")
  if isinstance(graph_or_L, (int, np.integer)) and not isinstance(graph_or_L, bool):
    L = int(graph_or_L)
    if L < 1:
      raise ValueError(f"graph_or_L must be a graph or a positive number of units, got {L}")
    return skip_edges(L, span) if scheme == "skip_sideways" and L >= span else chain_edges(L)
  if hasattr(graph_or_L, "edges"):
    return dict(graph_or_L.edges)
  if isinstance(graph_or_L, dict):
    return dict(graph_or_L)
  raise TypeError(
    f"graph_or_L must be a sl.UnitGraph, an edges dict or an int L, got {type(graph_or_L).__name__}"
  )


def _per_unit(x, L: int, name: str) -> np.ndarray:
  a = np.asarray(x, float)
  if a.ndim == 0:
    a = np.full(L, float(a))
  if a.shape != (L,):
    raise ValueError(
      f"{name} must be a scalar or have one entry per unit ({L}), got shape {a.shape}"
    )
  if not np.all(np.isfinite(a)) or np.any(a < 0):
    raise ValueError(f"{name} must be finite and >= 0, got {a}")
  return a


def _check_partition(part, L: int):
  part = tuple(tuple(int(k) for k in g) for g in part)
  flat = [k for g in part for k in g]
  if flat != list(range(1, L + 1)) or any(len(g) == 0 for g in part):
    raise ValueError(
      f"partition must split units 1..{L} into contiguous non-empty groups in order, got {part}"
    )
  return part


@dataclasses.dataclass(frozen=True)
class LatencyModel:
  """Latency, throughput and utilisation of one scheme on D devices.

  Tick counts (from ``sl.schedule.latency``): ``first_output_tick`` (0-based tick of the first
  valid output), ``output_latency`` (ticks, i.e. frames, from a frame's arrival to the first
  output depending on it), ``gradient_delay[k-1]`` (ticks from the output of a loss tick to
  the first use of its gradient by unit k).

  Times (in the unit of the costs): ``tick_time`` (pipelined: one tick; BP: one frame),
  ``time_to_first_output`` (from the start, until the first valid output is computed),
  ``output_latency_time`` (a frame's arrival to its first output), ``gradient_delay_time``,
  ``throughput`` (frames per unit time), ``device_utilisation`` (busy fraction per device)
  and its mean ``utilisation``.
  """

  scheme: str
  num_units: int
  num_devices: int
  partition: tuple
  forward_cost: tuple
  backward_cost: tuple
  comm_cost: float
  first_output_tick: int
  output_latency: int
  gradient_delay: tuple
  tick_time: float
  time_to_first_output: float
  output_latency_time: float
  gradient_delay_time: tuple
  throughput: float
  device_utilisation: tuple
  utilisation: float

  def to_rows(self) -> list[dict]:
    """One row of scalars (per-unit quantities as ``gradient_delay_k`` columns)."""
    row = {
      f.name: getattr(self, f.name)
      for f in dataclasses.fields(self)
      if not isinstance(getattr(self, f.name), tuple)
    }
    for k, (d, t) in enumerate(zip(self.gradient_delay, self.gradient_delay_time), 1):
      row[f"gradient_delay_{k}"] = d
      row[f"gradient_delay_time_{k}"] = t
    for i, u in enumerate(self.device_utilisation):
      row[f"utilisation_device_{i}"] = u
    return [row]


def latency_model(
  graph_or_L,
  scheme: str,
  devices: int | None = None,
  *,
  forward_cost=1.0,
  backward_cost=2.0,
  comm_cost: float = 0.0,
  partition_=None,
  span: int = 2,
) -> LatencyModel:
  """The latency model of ``scheme`` on ``devices`` devices (see the module docstring).

  Args:
    graph_or_L: a ``sl.UnitGraph``, an edges dict, or the number of units L (a chain for
      "backprop"/"sideways", skips of ``span`` for "skip_sideways").
    scheme: "backprop", "sideways" or "skip_sideways" (any pipelined graph works with
      "sideways" or "skip_sideways": the graph's edges decide).
    devices: D (default L: one unit per device).
    forward_cost, backward_cost: ``F_k`` and ``B_k``, scalars or per-unit sequences.
    comm_cost: ``C``, the cost of sending activations/gradients between devices.
    partition_: an explicit contiguous partition (tuples of 1-based units); default
      :func:`sideways_lab.partition.groups` balanced on ``F_k + B_k``.
  """
  edges = resolve_graph(graph_or_L, scheme, span)
  L = len(edges)
  D = L if devices is None else devices
  F = _per_unit(forward_cost, L, "forward_cost")
  Bc = _per_unit(backward_cost, L, "backward_cost")
  C = float(comm_cost)
  if not np.isfinite(C) or C < 0:
    raise ValueError(f"comm_cost must be finite and >= 0, got {comm_cost!r}")
  part = groups(F + Bc, D) if partition_ is None else _check_partition(partition_, L)
  D = len(part)
  dev_of = {k: d for d, g in enumerate(part) for k in g}
  loads = np.array([sum(F[k - 1] + Bc[k - 1] for k in g) for g in part])
  lat = schedule.latency(edges, scheme)
  if scheme == "backprop":
    up = float(F.sum()) + (D - 1) * C
    frame_time = float((F + Bc).sum()) + 2 * (D - 1) * C
    v_sync = schedule.first_valid_ticks(edges, schedule.SYNCHRONOUS)[L]
    delay_t = tuple(float(Bc[k:].sum()) + (dev_of[L] - dev_of[k]) * C for k in range(1, L + 1))
    tick_time = frame_time
    first_time = v_sync * frame_time + up
    out_time = up
  else:
    tick_time = float(loads.max()) + (C if D > 1 else 0.0)
    first_time = (lat.first_output_tick + 1) * tick_time
    out_time = (lat.output_latency + 1) * tick_time
    delay_t = tuple(d * tick_time for d in lat.gradient_delay)
  util = tuple(float(x) / tick_time if tick_time > 0 else 1.0 for x in loads)
  return LatencyModel(
    scheme=scheme,
    num_units=L,
    num_devices=D,
    partition=part,
    forward_cost=tuple(F.tolist()),
    backward_cost=tuple(Bc.tolist()),
    comm_cost=C,
    first_output_tick=lat.first_output_tick,
    output_latency=lat.output_latency,
    gradient_delay=tuple(lat.gradient_delay),
    tick_time=tick_time,
    time_to_first_output=first_time,
    output_latency_time=out_time,
    gradient_delay_time=delay_t,
    throughput=1.0 / tick_time if tick_time > 0 else np.inf,
    device_utilisation=util,
    utilisation=float(np.mean(util)),
  )


def latency_table(
  graph_or_L, devices: Sequence[int] | None = None, schemes=LATENCY_SCHEMES, **costs
) -> pd.DataFrame:
  """A DataFrame of the model for several schemes and D: one row per (D, scheme).

  The columns are those of :meth:`LatencyModel.to_rows`, plus ``speedup_vs_backprop``
  (throughput over that of BP on the same D devices) and ``speedup_vs_one_device`` (over BP
  on one device); ``attrs`` holds the costs. ``costs`` go to :func:`latency_model`.
  """
  L = len(resolve_graph(graph_or_L, "sideways"))
  devices = list(range(1, L + 1)) if devices is None else list(devices)
  bp1 = latency_model(graph_or_L, "backprop", 1, **costs).throughput
  rows = []
  for D in devices:
    bp = latency_model(graph_or_L, "backprop", D, **costs).throughput
    for s in schemes:
      m = latency_model(graph_or_L, s, D, **costs)
      r = m.to_rows()[0]
      r["speedup_vs_backprop"] = m.throughput / bp
      r["speedup_vs_one_device"] = m.throughput / bp1
      rows.append(r)
  df = pd.DataFrame.from_records(rows)
  df.attrs = dict(
    model="latency_model", **{k: v if np.isscalar(v) else list(v) for k, v in costs.items()}
  )
  return df


# ---------------------------------------------------------------------------------------------
# Timeline
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timeline:
  """What each device does at each tick.

  Attributes:
    scheme, num_units, num_devices, num_ticks, partition.
    items: list of dicts ``{device, tick, unit, kind ("forward"|"backward"), frame,
      loss_ticks, valid, start, duration}``. ``frame`` is the frame the activation derives from
      (main path); ``loss_ticks`` (backward) the loss ticks whose gradient the unit uses;
      ``valid`` False for work on the empty pipeline (zeros, or a zero cotangent) — the device
      still computes it in a pipelined scheme; ``start``/``duration`` place the item in time
      from the costs (pipelined: tick t starts at ``t · tick_time``; on a device, units run in
      order, each forward then backward).
    busy: (D, num_ticks) bool, whether the device does valid work at that tick.
    tick_time: the time of a tick (pipelined) or of a unit step (BP: None, times are exact).
  """

  scheme: str
  num_units: int
  num_devices: int
  num_ticks: int
  partition: tuple
  items: list
  busy: np.ndarray
  tick_time: float | None

  def to_rows(self) -> list[dict]:
    """One row per timeline item (device, tick, kind, frame, ...), for a DataFrame."""
    return [dict(i, loss_ticks=list(i["loss_ticks"])) for i in self.items]

  def at(self, device: int, tick: int) -> list[dict]:
    """The items of one device at one tick."""
    return [i for i in self.items if i["device"] == device and i["tick"] == tick]


def timeline(
  graph_or_L,
  scheme: str,
  num_ticks: int,
  devices: int | None = None,
  *,
  num_frames: int | None = None,
  forward_cost=1.0,
  backward_cost=2.0,
  comm_cost: float = 0.0,
  partition_=None,
  span: int = 2,
) -> Timeline:
  """The per-device, per-tick schedule of ``scheme`` (a Gantt chart's content).

  Pipelined schemes: at tick t unit k runs forward on frame ``t - k + 1`` (valid from tick
  ``first_valid_ticks[k]``) and backward with the gradient of the loss ticks
  ``gradient_sources[k][t] ∩ V`` (``V = {s : first_valid_ticks[L] <= s < num_frames}``).

  BP (one unit step per tick, as in ``sl.schedule.latency``): frame f starts at tick
  ``f (2L - 1)``; unit k runs forward at tick ``f(2L-1) + k - 1``, the top unit runs forward
  and backward in its tick, and unit k < L runs backward at tick ``f(2L-1) + 2L - 1 - k``.

  Args:
    num_ticks: ticks to list. num_frames: frames in the clip (default ``num_ticks``; more
      ticks than frames are drain ticks).
  """
  if not isinstance(num_ticks, (int, np.integer)) or num_ticks < 1:
    raise ValueError(f"num_ticks must be a positive int, got {num_ticks!r}")
  edges = resolve_graph(graph_or_L, scheme, span)
  m = latency_model(
    edges,
    scheme,
    devices,
    forward_cost=forward_cost,
    backward_cost=backward_cost,
    comm_cost=comm_cost,
    partition_=partition_,
  )
  num_frames = num_ticks if num_frames is None else int(num_frames)
  steps = _backprop_steps if scheme == "backprop" else _pipelined_steps
  dev = _device_of(m)
  items = [_item(m, dev, *step) for step in steps(edges, m, dev, num_ticks, num_frames)]
  busy = np.zeros((m.num_devices, num_ticks), bool)
  for i in items:  # every step BP lists is work; a pipeline also steps on zeros, not busy
    busy[i["device"], i["tick"]] |= i["valid"] or scheme == "backprop"
  tick_time = None if scheme == "backprop" else m.tick_time
  return Timeline(
    scheme, m.num_units, m.num_devices, num_ticks, m.partition, items, busy, tick_time
  )


def _device_of(m: LatencyModel) -> dict[int, int]:
  """``unit k -> device index`` of the model's partition."""
  return {k: d for d, g in enumerate(m.partition) for k in g}


def _item(m: LatencyModel, dev: dict, tick, unit, kind, frame, loss_ticks, valid, start) -> dict:
  """One work item of a :class:`Timeline` (its device and duration follow from the model)."""
  cost = m.forward_cost if kind == "forward" else m.backward_cost
  return dict(
    device=dev[unit],
    tick=int(tick),
    unit=unit,
    kind=kind,
    frame=int(frame),
    loss_ticks=tuple(loss_ticks),
    valid=bool(valid),
    start=float(start),
    duration=float(cost[unit - 1]),
  )


def _backprop_steps(edges, m: LatencyModel, dev: dict, num_ticks: int, num_frames: int):
  """``(tick, unit, kind, frame, loss_ticks, valid, start)`` of blocking BP.

  Frame f occupies ticks ``f P .. f P + P - 1`` (``P = 2L - 1``): up through units 1..L, then
  back down L-1..1; a message to another device adds C to the clock.
  """
  L, C = m.num_units, m.comm_cost
  P = 2 * L - 1
  first_loss_frame = schedule.first_valid_ticks(edges, schedule.SYNCHRONOUS)[L]
  for f in range(min(-(-num_ticks // P), num_frames)):
    clock = f * m.tick_time
    for k in range(1, L + 1):  # up
      clock += C if k > 1 and dev[k] != dev[k - 1] else 0.0
      if f * P + k - 1 < num_ticks:
        yield f * P + k - 1, k, "forward", f, (), True, clock
      clock += m.forward_cost[k - 1]
    for k in range(L, 0, -1):  # down
      clock += C if k < L and dev[k] != dev[k + 1] else 0.0
      if f * P + 2 * L - 1 - k < num_ticks:
        valid = f >= first_loss_frame
        yield f * P + 2 * L - 1 - k, k, "backward", f, (f,) if valid else (), valid, clock
      clock += m.backward_cost[k - 1]


def _pipelined_steps(edges, m: LatencyModel, dev: dict, num_ticks: int, num_frames: int):
  """``(tick, unit, kind, frame, loss_ticks, valid, start)`` of a pipelined scheme.

  At tick t every unit k runs forward on frame ``t - k + 1`` and then backward with the loss
  ticks ``gradient_sources[k][t] ∩ V``; the units of a device run in order within the tick.
  """
  L = m.num_units
  v = schedule.first_valid_ticks(edges, schedule.PIPELINED)
  src = schedule.gradient_sources(edges, num_ticks)
  for t in range(num_ticks):
    offset = dict.fromkeys(range(m.num_devices), 0.0)
    for k in range(1, L + 1):
      start = t * m.tick_time + offset[dev[k]]
      yield t, k, "forward", t - k + 1, (), t >= v[k], start
      losses = tuple(sorted(s for s in src[k][t] if v[L] <= s < num_frames))
      yield t, k, "backward", t - k + 1, losses, bool(losses), start + m.forward_cost[k - 1]
      offset[dev[k]] += m.forward_cost[k - 1] + m.backward_cost[k - 1]
