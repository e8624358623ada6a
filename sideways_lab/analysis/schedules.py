"""Pipeline schedules on one (device, time) grid: Sideways among GPipe, 1F1B and the others.

A clip's T frames are T micro-batches, so Sideways is a pipeline schedule and can be placed on
the grid that pipeline-parallel tools draw: one row per device, one column per *slot* (the time
of one stage's forward, ``T_F = T_B (= T_W) = 1``), each cell ``(stage, micro-batch, F/B/W)``
or idle. :func:`simulate_schedule` builds the grid of

* ``"backprop"`` — blocking BP, one micro-batch at a time (naive model parallelism);
* ``"gpipe"`` — all forwards, then all backwards (Huang et al. 2019);
* ``"1f1b"`` — ``p - s - 1`` warm-up forwards at stage s, then one forward and one backward
  (PipeDream-Flush, Megatron-LM);
* ``"interleaved_1f1b"`` — ``v`` chunks per device, stage ``c p + d`` on device d, micro-batches
  in groups of p, ``(v - 1) p + 2 (p - d - 1)`` warm-up forwards (Narayanan et al. 2021);
* ``"zb_h1"``, ``"zb_h2"`` — the backward split into B (input gradient) and W (weight
  gradient), W deferred to fill the bubble (Qi et al. 2024): ``p - s`` warm-up forwards and
  W lagging ``s`` micro-batches (H1), ``2(p - s) - 1`` and ``2s`` (H2);
* ``"pipedream"`` — 1F1B without a flush, each backward updating its stage's weights, the
  forward's weights stashed for its backward (Narayanan et al. 2019);

each from its rule (a static order of cells per device) and its dependencies: a cell runs at
the first slot at which its device has run everything before it in the order and its inputs
are ready (the forward of the stage below, the backward of the stage above, its own forward).
``"sideways"``, ``"sideways_exact"`` (its exact twin, the full stash) and ``"skip_sideways"``
(skips of span 2) are read from the package's symbolic schedule (:mod:`sideways_lab.schedule`):
unit k on device k, a tick of two slots (the forward, then the backward); a clip of
``T = m + v_L`` frames gives m loss ticks (the micro-batches), and the clip's ticks are
``T + schedule.drain_ticks``. A backward is a cell when its cotangent carries a loss
(``gradient_sources ∩ V``); a forward is a cell when its output reaches a loss or a backward
evaluates at it (Sideways' backward at its current input, the twin's at the input of
``schedule.stash_depths`` ticks before).

Measured from the grid (:class:`ScheduleGrid`): the bubble ``idle / (p × slots)``; the bubble
per iteration when iterations repeat; the peak in-flight activations per device (inputs held
from their forward to the last backward that uses them; a chunk of an interleaved device counts
``1/v`` of a stage); the weight versions a device keeps; the staleness per stage of the weights
(updates) and of the input (micro-batches, i.e. frames or ticks for Sideways) that a backward
meets; and whether the gradient is exact. docs/design.md §10 places Sideways among them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from sideways_lab import schedule
from sideways_lab.graph import chain_edges, skip_edges

__all__ = [
  "SCHEDULES",
  "SCHEDULE_LABELS",
  "SIDEWAYS_SCHEDULES",
  "FLUSH",
  "Cell",
  "ScheduleGrid",
  "simulate_schedule",
  "schedule_table",
  "schedule_grids",
  "check_dependencies",
  "sideways_edges",
]

#: The schedules :func:`simulate_schedule` builds, in the order of the table and figure.
SCHEDULES = (
  "backprop",
  "gpipe",
  "1f1b",
  "interleaved_1f1b",
  "zb_h1",
  "zb_h2",
  "pipedream",
  "sideways",
  "sideways_exact",
  "skip_sideways",
)
#: Display names.
SCHEDULE_LABELS = {
  "backprop": "BP (blocking)",
  "gpipe": "GPipe",
  "1f1b": "1F1B",
  "interleaved_1f1b": "interleaved 1F1B",
  "zb_h1": "ZB-H1",
  "zb_h2": "ZB-H2",
  "pipedream": "PipeDream",
  "sideways": "Sideways",
  "sideways_exact": "Sideways, exact twin",
  "skip_sideways": "Skip-Sideways",
}
#: The schedules read from :mod:`sideways_lab.schedule` (one unit per device, ticks of 2 slots).
SIDEWAYS_SCHEDULES = ("sideways", "sideways_exact", "skip_sideways")
#: How consecutive iterations meet: ``"flush"`` (every device waits for the whole iteration:
#: the optimizer step), ``"device"`` (a device starts the next iteration when it is done with
#: this one: ZB-H2's post-validation) or ``"stream"`` (no iteration boundary: PipeDream).
FLUSH = {name: "flush" for name in SCHEDULES} | {"zb_h2": "device", "pipedream": "stream"}


@dataclasses.dataclass(frozen=True)
class Cell:
  """One slot of one device.

  Attributes:
    kind: ``"F"`` (forward), ``"B"`` (backward; the input gradient only when W is split off)
      or ``"W"`` (weight gradient).
    stage: the pipeline stage, 0-based (interleaved: ``chunk * p + device``; Sideways: unit
      k is stage k - 1).
    microbatches: the micro-batch of a forward; the micro-batch(es) whose gradient a backward
      carries (several only on Skip-Sideways, where paths of different lengths meet).
    input: the micro-batch whose activation the cell evaluates at (a forward: its own; a
      backward: its own, or a newer one on Sideways).
    version: the weights it runs with (the number of updates its device had applied when the
      forward ran; only PipeDream updates within an iteration).
    stale: weight updates its device applied between that version and this cell.
  """

  kind: str
  stage: int
  microbatches: tuple[int, ...]
  input: int
  version: int = 0
  stale: int = 0


@dataclasses.dataclass(frozen=True)
class ScheduleGrid:
  """A schedule's (device, slot) grid and what is measured from it.

  Attributes:
    name: one of :data:`SCHEDULES`.
    stages: p, the devices.
    microbatches: m, the micro-batches (Sideways: the loss ticks of a clip).
    chunks: v, the model chunks per device (interleaved 1F1B; else 1).
    cells: ``cells[d][t]``: the :class:`Cell` device d runs at slot t, or None (idle).
    slot_time: the duration of a slot in forward passes of a whole stage (``1/v``).
    successors: ``successors[S]``: the stages that read stage S (its gradient comes from them).
    flush: how iterations meet (:data:`FLUSH`).
    bubble: ``idle / (p × slots)`` on this grid (fill and drain included).
    steady_bubble: the idle fraction per iteration when iterations repeat,
      ``1 - work / (p × Δ)``, Δ the slots a second iteration adds (measured by simulating it).
    peak_activations: per device, the most inputs held at once (from a forward to the last
      cell that uses it), in stage inputs (an interleaved chunk counts 1/v).
    weight_versions: per device, the most weight versions held at once (the current one and
      those that in-flight micro-batches ran their forward with).
    weight_staleness: per stage, the most weight updates between a micro-batch's forward and
      its backward (updates).
    input_staleness: per stage, the most micro-batches by which the input a backward meets is
      newer than the micro-batch whose gradient it carries (frames, i.e. ticks, for Sideways).
    exact: True when every backward meets its own input with its forward's weights (the
      gradient of the iteration's loss at one set of weights).
  """

  name: str
  stages: int
  microbatches: int
  chunks: int
  cells: tuple
  slot_time: float
  successors: tuple
  flush: str
  bubble: float
  steady_bubble: float
  peak_activations: tuple[float, ...]
  weight_versions: tuple[int, ...]
  weight_staleness: tuple[int, ...]
  input_staleness: tuple[int, ...]
  exact: bool

  @property
  def num_slots(self) -> int:
    """The grid's columns (its makespan in slots)."""
    return len(self.cells[0]) if self.cells else 0

  def to_row(self) -> dict:
    """One row for a table: the schedule, p, m, v and the measured numbers (per-device and
    per-stage numbers as their maximum and as a string of all of them)."""
    fmt = lambda xs: " ".join(f"{x:g}" for x in xs)
    return dict(
      schedule=self.name,
      p=self.stages,
      m=self.microbatches,
      v=self.chunks,
      slots=self.num_slots,
      time=self.num_slots * self.slot_time,
      bubble=self.bubble,
      steady_bubble=self.steady_bubble,
      peak_activations=max(self.peak_activations),
      peak_activations_per_device=fmt(self.peak_activations),
      weight_versions=max(self.weight_versions),
      weight_staleness_updates=fmt(self.weight_staleness),
      input_staleness_microbatches=fmt(self.input_staleness),
      exact=self.exact,
    )


# ---------------------------------------------------------------------------------------------
# The rules: a static order of cells per device
# ---------------------------------------------------------------------------------------------

_Op = tuple  # (kind, stage, micro-batch[, iteration])


def _one_f_one_b(d: int, m: int, warmup: int, fwd: Callable, bwd: Callable) -> list[_Op]:
  """``warmup`` forwards, then a forward and a backward in turn, then the last backwards;
  ``fwd(k)``/``bwd(k)`` give the (stage, micro-batch) of the device's k-th forward/backward."""
  order = [("F", *fwd(k)) for k in range(warmup)]
  f = b = 0
  for f in range(warmup, m):
    order += [("F", *fwd(f)), ("B", *bwd(b))]
    b += 1
  return order + [("B", *bwd(k)) for k in range(b, m)]


def _orders(name: str, p: int, m: int, v: int) -> list[list[_Op]]:
  """Each device's cells in the order its rule runs them (see the module docstring)."""
  if name == "backprop":
    return [[(k, d, i) for i in range(m) for k in "FB"] for d in range(p)]
  if name == "gpipe":
    return [[("F", d, i) for i in range(m)] + [("B", d, i) for i in range(m)] for d in range(p)]
  if name in ("1f1b", "pipedream") or (name == "interleaved_1f1b" and v == 1):
    return [
      _one_f_one_b(d, m, min(m, p - d - 1), lambda k, d=d: (d, k), lambda k, d=d: (d, k))
      for d in range(p)
    ]
  if name == "interleaved_1f1b":
    g = min(m, p)  # micro-batches per group (Megatron-LM: p; a smaller m is one group)

    def seq(d, k, backward):
      group, r = divmod(k, g * v)
      c = r // g
      return ((v - 1 - c) if backward else c) * p + d, group * g + r % g

    return [
      _one_f_one_b(
        d,
        m * v,
        min(m * v, (v - 1) * g + 2 * (p - d - 1)),
        lambda k, d=d: seq(d, k, False),
        lambda k, d=d: seq(d, k, True),
      )
      for d in range(p)
    ]
  warm, lag = {
    "zb_h1": (lambda d: p - d, lambda d: d),
    "zb_h2": (lambda d: 2 * (p - d) - 1, lambda d: 2 * d),
  }[name]
  return [_zero_bubble(d, m, warm(d), lag(d)) for d in range(p)]


def _zero_bubble(d: int, m: int, warmup: int, lag: int) -> list[_Op]:
  """ZB-H1/H2 on device d: ``warmup`` forwards, then for each micro-batch j its B, the W of
  micro-batch ``j - lag`` and the next forward; the deferred Ws last."""
  w = min(m, warmup)
  order = [("F", d, i) for i in range(w)]
  for j in range(m):
    order.append(("B", d, j))
    if j >= lag:
      order.append(("W", d, j - lag))
    if w < m:
      order.append(("F", d, w))
      w += 1
  return order + [("W", d, i) for i in range(max(0, m - lag), m)]


def _deps(op: _Op, num_stages: int) -> list[_Op]:
  """What a cell waits for: F(s, i) for F(s-1, i); B(s, i) for B(s+1, i) (at the last stage
  the loss) and its own F(s, i); W(s, i) for B(s, i)."""
  kind, s, i = op[:3]
  tail = op[3:]  # the iteration, when two are simulated
  if kind == "F":
    return [("F", s - 1, i, *tail)] if s > 0 else []
  if kind == "B":
    return ([("B", s + 1, i, *tail)] if s < num_stages - 1 else []) + [("F", s, i, *tail)]
  return [("B", s, i, *tail)]


def _list_schedule(orders: list[list[_Op]], num_stages: int, updates: bool = False):
  """Runs each device's order: a cell starts at the first slot at which everything before it on
  its device and everything it waits for (:func:`_deps`) has finished.

  Returns ``(cells, finish)``: ``cells[d][t]`` as :class:`Cell` (or None) and each op's
  finishing slot. ``updates``: every B updates its device's weights (PipeDream), and a
  backward runs with its forward's weights (weight stashing).
  """
  p = len(orders)
  pos, finish, grid = [0] * p, {}, [[] for _ in range(p)]
  version, fwd_version = [0] * p, {}
  t = 0
  while any(pos[d] < len(orders[d]) for d in range(p)):
    started = []
    for d in range(p):
      op = orders[d][pos[d]] if pos[d] < len(orders[d]) else None
      if op is None or any(finish.get(x, t + 1) > t for x in _deps(op, num_stages)):
        grid[d].append(None)
        continue
      kind, s, i = op[:3]
      key = (s, i, *op[3:])
      if kind == "F":
        fwd_version[key] = version[d]
      v0 = fwd_version[key]
      grid[d].append(Cell(kind, s, (i,), i, v0, version[d] - v0))
      started.append((d, op))
      pos[d] += 1
    for d, op in started:
      finish[op] = t + 1
      if updates and op[0] == "B":
        version[d] += 1
    t += 1
    if t > 4 * sum(map(len, orders)) + 8:
      raise RuntimeError(
        f"the orders deadlock at slot {t}: {[o[p_:] for o, p_ in zip(orders, pos)]}"
      )
  return grid, finish


# ---------------------------------------------------------------------------------------------
# Sideways and its relatives, from the symbolic schedule
# ---------------------------------------------------------------------------------------------


def sideways_edges(name: str, num_units: int) -> dict:
  """The graph of a Sideways schedule: a chain (``"sideways"``, ``"sideways_exact"``) or skips
  of span 2 (``"skip_sideways"``)."""
  return skip_edges(num_units, 2) if name == "skip_sideways" else chain_edges(num_units)


def _sideways_cells(name: str, L: int, m: int) -> list[list]:
  """The grid of Sideways (stash 0) or its exact twin (the full stash) on L units, one per
  device, for a clip with m loss ticks (see the module docstring).

  Tick τ is slots ``2τ`` (the forward) and ``2τ + 1`` (the backward). Unit k's backward at τ
  carries the losses ``gradient_sources[k][τ] ∩ V`` and evaluates at its input of tick
  ``τ - s_k``; micro-batch i is the frame whose loss is at tick ``i + v_L``.
  """
  edges = sideways_edges(name, L)
  stash = schedule.FULL if name == "sideways_exact" else 0
  if any(schedule.message_waits(edges, stash).values()):  # a wait would delay the sources
    raise ValueError(f"{name!r} on {L} units has messages that wait; not a Sideways grid")
  v = schedule.first_valid_ticks(edges)
  T = m + v[L]
  N = T + schedule.drain_ticks(edges, stash)
  V = schedule.loss_ticks(edges, N, mask=np.arange(N) < T)
  src = schedule.gradient_sources(edges, N)
  s = (0, *schedule.stash_depths(edges, stash))
  back = {
    (k, t): tuple(sorted(int(x) - v[L] for x in src[k][t] if V[x]))
    for k in range(1, L + 1)
    for t in range(N)
  }
  back = {key: g for key, g in back.items() if g}
  readers = {j: [(k, d) for k, es in edges.items() for jj, d in es if jj == j] for j in edges}
  needed = set()  # (k, t): the forward's output reaches a loss, or a backward evaluates at it
  for k in range(L, 0, -1):
    for t in range(v[k], N):
      if (
        (k == L and V[t])
        or (k, t + s[k]) in back
        or any((r, t + 1 + d) in needed for r, d in readers[k])
      ):
        needed.add((k, t))
  cells = [[None] * (2 * N) for _ in range(L)]
  for k, t in needed:
    f = t - k + 1  # the main path's frame
    cells[k - 1][2 * t] = Cell("F", k - 1, (f,), f)
  for (k, t), g in back.items():
    cells[k - 1][2 * t + 1] = Cell("B", k - 1, g, t - s[k] - k + 1)
  return cells


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def _peaks(cells, chunks: int, updates: bool) -> tuple[tuple[float, ...], tuple[int, ...]]:
  """Per device: the most inputs held at once, and the most weight versions held at once.

  An input ``(stage, input)`` is held from its forward's slot to the last slot of a cell that
  evaluates at it; a weight version is held while an in-flight micro-batch ran its forward
  with it, and the current one always.
  """
  acts, versions = [], []
  for row in cells:
    last = {}
    for t, c in enumerate(row):
      if c is not None:
        last[(c.stage, c.input)] = t
    held, peak_a, peak_v, current = {}, 0, 1, 0
    for t, c in enumerate(row):
      if c is not None and c.kind == "F":
        held[(c.stage, c.input)] = c.version
      peak_a = max(peak_a, len(held))
      peak_v = max(peak_v, len(set(held.values()) | {current}))
      if c is not None:  # the device's weights after this cell (a PipeDream B updates them)
        current = max(current, c.version + c.stale + (updates and c.kind == "B"))
      held = {key: ver for key, ver in held.items() if last[key] > t}
    acts.append(peak_a / chunks if chunks > 1 else peak_a)
    versions.append(peak_v)
  return tuple(acts), tuple(versions)


def _staleness(cells, num_stages: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Per stage, the most weight updates (``Cell.stale``) and the most micro-batches
  (``input - microbatch``) between a backward (or W) and what it should evaluate at."""
  weight, inp = [0] * num_stages, [0] * num_stages
  for row in cells:
    for c in row:
      if c is not None and c.kind != "F":
        weight[c.stage] = max(weight[c.stage], c.stale)
        inp[c.stage] = max(inp[c.stage], max(c.input - g for g in c.microbatches))
  return tuple(weight), tuple(inp)


def _work(cells) -> int:
  return sum(c is not None for row in cells for c in row)


def _steady_bubble(name: str, p: int, m: int, v: int, cells, num_stages: int) -> float:
  """``1 - work / (p Δ)``: Δ is the slots a second iteration adds when iterations follow
  each other the schedule's way (:data:`FLUSH`)."""
  once = len(cells[0])
  if FLUSH[name] == "flush":
    delta = once  # the second iteration starts after the first, on every device
  elif FLUSH[name] == "stream":
    twice, _ = _list_schedule(_orders(name, p, 2 * m, v), num_stages, updates=True)
    delta = len(twice[0]) - once
  else:  # "device": each device runs on into the next iteration
    orders = [[(*op, it) for it in (0, 1) for op in o] for o in _orders(name, p, m, v)]
    twice, _ = _list_schedule(orders, num_stages)
    delta = len(twice[0]) - once
  return 1.0 - _work(cells) / (p * delta)


# ---------------------------------------------------------------------------------------------
# The public functions
# ---------------------------------------------------------------------------------------------


def _check(name: str, stages, microbatches, chunks) -> None:
  if name not in SCHEDULES:
    raise ValueError(f"name must be one of {SCHEDULES}, got {name!r}")
  for arg, value in (("stages", stages), ("microbatches", microbatches), ("chunks", chunks)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{arg} must be an int >= 1, got {value!r}")
  if chunks != 1 and name != "interleaved_1f1b":
    raise ValueError(f"chunks must be 1 for {name!r} (only 'interleaved_1f1b' has chunks)")
  if name == "interleaved_1f1b" and microbatches > stages and microbatches % stages:
    raise ValueError(
      f"interleaved 1F1B runs micro-batches in groups of p = {stages}: microbatches must be a "
      f"multiple of stages or at most stages, got {microbatches}"
    )


def simulate_schedule(name: str, stages: int, microbatches: int, chunks: int = 1) -> ScheduleGrid:
  """The (device, slot) grid of a pipeline schedule and its bubble, memory and staleness.

  ``p = stages`` devices (one unit each for the Sideways schedules), ``m = microbatches``
  (the loss ticks of a clip for Sideways), ``v = chunks`` model chunks per device (interleaved
  1F1B only). Every cell costs one slot (``T_F = T_B = T_W``); see the module docstring for
  each schedule's rule and :class:`ScheduleGrid` for the measurements. The closed forms the
  tests check, for instance: GPipe and 1F1B ``bubble = (p-1)/(m+p-1)``, interleaved
  ``(p-1)/(vm+p-1)`` (m a multiple of p), ZB-H1 ``(p-1)/(3m+p-1)`` (m >= p), Sideways
  ``3(p-1)/(2(m+2(p-1)))`` (m >= 2) and input staleness ``2(p-1-s)`` at stage s.

  Args:
    name: one of :data:`SCHEDULES`.
    stages: p >= 1.
    microbatches: m >= 1.
    chunks: v >= 1 (1 unless interleaved; with more than p micro-batches, m a multiple of p).

  Returns:
    A :class:`ScheduleGrid`.
  """
  _check(name, stages, microbatches, chunks)
  p, m, v = int(stages), int(microbatches), int(chunks)
  if name in SIDEWAYS_SCHEDULES:
    cells = _sideways_cells(name, p, m)
    edges = sideways_edges(name, p)
    succ = tuple(
      tuple(sorted(k - 1 for k, es in edges.items() for j, _ in es if j == s + 1)) for s in range(p)
    )
    num_stages, updates = p, False
  else:
    num_stages, updates = p * v, name == "pipedream"
    cells, _ = _list_schedule(_orders(name, p, m, v), num_stages, updates)
    succ = tuple((s + 1,) if s + 1 < num_stages else () for s in range(num_stages))
  cells = tuple(tuple(row) for row in cells)
  work = _work(cells)
  acts, versions = _peaks(cells, v, updates)
  weight, inp = _staleness(cells, num_stages)
  steady = (
    1.0 - work / (p * len(cells[0]))
    if name in SIDEWAYS_SCHEDULES
    else _steady_bubble(name, p, m, v, cells, num_stages)
  )
  return ScheduleGrid(
    name=name,
    stages=p,
    microbatches=m,
    chunks=v,
    cells=cells,
    slot_time=1.0 / v,
    successors=succ,
    flush=FLUSH[name],
    bubble=1.0 - work / (p * len(cells[0])),
    steady_bubble=steady,
    peak_activations=acts,
    weight_versions=versions,
    weight_staleness=weight,
    input_staleness=inp,
    exact=not any(weight) and not any(inp),
  )


def schedule_table(
  names: Sequence[str] = SCHEDULES, stages: int = 4, microbatches: int = 8, chunks: int = 2
) -> pd.DataFrame:
  """One row per schedule (:meth:`ScheduleGrid.to_row`) at p = ``stages``, m =
  ``microbatches``; ``chunks`` applies to interleaved 1F1B, every other schedule has v = 1."""
  return pd.DataFrame.from_records(
    [
      simulate_schedule(n, stages, microbatches, chunks if n == "interleaved_1f1b" else 1).to_row()
      for n in names
    ]
  )


def schedule_grids(
  names: Sequence[str] = SCHEDULES,
  stages: Sequence[int] = (2, 4, 8),
  microbatches: Sequence[int] = (1, 4, 8, 16),
  chunks: Sequence[int] = (1, 2),
) -> dict:
  """Every grid an explorer can show: ``{(name, p, m, v): ScheduleGrid}``; a schedule without
  chunks is simulated once, under v = 1, and interleaved 1F1B under every v that its m and p
  allow (:func:`simulate_schedule`)."""
  out = {}
  for n in names:
    for p in stages:
      for m in microbatches:
        for v in chunks if n == "interleaved_1f1b" else (1,):
          if n != "interleaved_1f1b" or m <= p or m % p == 0:
            out[(n, p, m, v)] = simulate_schedule(n, p, m, v)
  return out


def check_dependencies(grid: ScheduleGrid) -> list[str]:
  """Every way the grid breaks a dependency (an empty list when it respects all of them).

  A forward of stage S > 0 needs the forward of stage S-1 on the same micro-batch in an
  earlier slot; a backward, for each micro-batch it carries, a backward of a successor stage
  (at the last stage: that micro-batch's forward) earlier, and the forward of its input at
  its stage earlier; a W needs its B earlier; and every stage has a forward and a backward
  (and a W when B is split) for every micro-batch. A device runs one cell per slot by
  construction of the grid.
  """
  first = {}  # (kind, stage, micro-batch) -> earliest slot
  for row in grid.cells:
    for t, c in enumerate(row):
      if c is not None:
        for i in c.microbatches:
          key = (c.kind, c.stage, i)
          first[key] = min(first.get(key, t), t)
  before = lambda key, t: key in first and first[key] < t
  bad = []
  for d, row in enumerate(grid.cells):
    for t, c in enumerate(row):
      if c is None:
        continue
      where = f"device {d}, slot {t}: {c.kind}{c.stage} of {c.microbatches}"
      for i in c.microbatches:
        if c.kind == "F" and c.stage > 0 and not before(("F", c.stage - 1, i), t):
          bad.append(f"{where} runs before F{c.stage - 1} of {i}")
        if c.kind == "B":
          up = grid.successors[c.stage]
          if up and not any(before(("B", u, i), t) for u in up):
            bad.append(f"{where} runs before the backward of {i} above it")
          if not up and not before(("F", c.stage, i), t):
            bad.append(f"{where} runs before the loss of {i}")
        if c.kind == "W" and not before(("B", c.stage, i), t):
          bad.append(f"{where} runs before its B")
      if c.kind != "F" and not before(("F", c.stage, c.input), t):
        bad.append(f"{where} meets input {c.input} before its forward")
  split = any(k == "W" for k, _, _ in first)
  for s in range(len(grid.successors)):
    for i in range(grid.microbatches):
      for kind in "FBW" if split else "FB":
        if (kind, s, i) not in first:
          bad.append(f"stage {s} never runs {kind} of micro-batch {i}")
  return bad
