"""The symbolic schedule of a graph: plain Python/NumPy, no JAX.

For every unit k and tick t it answers, from the definitions of docs/design.md §3–§5:

* which frame the activation ``out_k^t`` derives from along the main path (its *origin*,
  ``t - k + 1`` in the pipelined forward) and which frames it integrates (through skips);
* which loss ticks the cotangent ``c_k^t`` that unit k uses at tick t started from;
* the resulting *mismatch* in frames between activation and gradient (``2(L-k)`` on a chain);
* latency counts for BP, Sideways and Skip-Sideways.

The engine, the diagrams, the latency model and the tests all use this module, and the tests
check it against instrumented runs of the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

PIPELINED = "pipelined"
SYNCHRONOUS = "synchronous"


def _edges_of(graph) -> dict[int, tuple[tuple[int, int], ...]]:
  return graph.edges if hasattr(graph, "edges") else dict(graph)


def _check_mode(mode: str) -> None:
  if mode not in (PIPELINED, SYNCHRONOUS):
    raise ValueError(f"mode must be 'pipelined' or 'synchronous', got {mode!r}")


def source_tick(j: int, d: int, t: int, mode: str = PIPELINED) -> int:
  """The tick a source is read from: the frame index for j = 0, else the buffer's tick.

  Pipelined: ``x_{t-d}`` and ``out_j^{t-1-d}``; synchronous: ``x_{t-d}`` and ``out_j^{t-d}``.
  """
  if j == 0:
    return t - d
  return t - 1 - d if mode == PIPELINED else t - d


def first_valid_ticks(graph, mode: str = PIPELINED) -> list[int]:
  """``v[k]``: the first tick at which unit k's output is valid (``v[0] = 0``: the frame).

  ``valid(k, t)`` holds iff ``t >= v[k]`` (validity is monotone in t), where
  ``v[k] = max over edges (j, d) of v[j] + d (+1 if pipelined and j >= 1)``.
  """
  _check_mode(mode)
  edges = _edges_of(graph)
  v = [0]
  for k in range(1, len(edges) + 1):
    v.append(max(v[j] + d + (1 if (j >= 1 and mode == PIPELINED) else 0) for j, d in edges[k]))
  return v


def loss_ticks(graph, num_ticks: int, mask=None, mode: str = PIPELINED) -> np.ndarray:
  """The set V of docs/design.md §4 as a (T,) bool array: ``valid(L, t) and mask[t]``."""
  v_L = first_valid_ticks(graph, mode)[-1]
  valid = np.arange(num_ticks) >= v_L
  if mask is not None:
    valid = valid & np.asarray(mask, bool)
  return valid


def activation_origin(graph, num_ticks: int, mode: str = PIPELINED) -> np.ndarray:
  """Origin frame of every activation along the main path: int array (L+1, T).

  Row 0 is the frame (origin t). Pipelined: ``origin[k, t] = t - k + 1``; synchronous: ``t``.
  Entries of invalid activations are still filled in (they may be negative).
  """
  _check_mode(mode)
  L = len(_edges_of(graph))
  t = np.arange(num_ticks)
  k = np.arange(L + 1)[:, None]
  return np.broadcast_to(
    t - (k - 1 if mode == PIPELINED else 0) * (k >= 1), (L + 1, num_ticks)
  ).copy()


def frames_integrated(graph, num_ticks: int, mode: str = PIPELINED) -> list[list[frozenset]]:
  """``frames[k][t]``: the set of frame indices that ``out_k^t`` depends on.

  Only frames of the clip are listed: reads from before the clip started (zeros) add
  nothing, so an invalid activation may list fewer frames (or none). On a chain a valid
  activation depends on one frame; skips and delays make a unit integrate several.
  """
  _check_mode(mode)
  edges = _edges_of(graph)
  L = len(edges)
  frames = [[frozenset([t]) for t in range(num_ticks)]]
  for k in range(1, L + 1):
    row = []
    for t in range(num_ticks):
      s = set()
      for j, d in edges[k]:
        tt = source_tick(j, d, t, mode)
        if j == 0:
          if tt >= 0:
            s.add(tt)
        elif tt >= 0:
          s |= frames[j][tt]
      row.append(frozenset(s))
    frames.append(row)
  return frames


def gradient_sources(graph, num_ticks: int) -> list[list[frozenset]]:
  """``src[k][t]``: the loss ticks whose gradient is in the cotangent ``c_k^t`` of Sideways.

  ``src[L][t] = {t}``; for k < L, ``src[k][t]`` is the union of ``src[m][t-1]`` over every
  unit m with an edge from k (messages arrive one tick after they are sent, whatever the
  edge's delay). ``num_ticks`` should include drain ticks when you want them (T + L - 1).
  Loss ticks outside V contribute zero; intersect with V to get the non-zero sources.
  """
  edges = _edges_of(graph)
  L = len(edges)
  src: list[list[frozenset]] = [[frozenset() for _ in range(num_ticks)] for _ in range(L + 1)]
  src[L] = [frozenset([t]) for t in range(num_ticks)]
  for k in range(L - 1, 0, -1):
    readers = [m for m in range(k + 1, L + 1) for j, _ in edges[m] if j == k]
    for t in range(1, num_ticks):
      s = set()
      for m in readers:
        s |= src[m][t - 1]
      src[k][t] = frozenset(s)
  return src


def mismatch(graph, num_ticks: int) -> list[list[frozenset]]:
  """Frames between the activation unit k uses at tick t and the origin of its gradients.

  For every loss tick s in ``gradient_sources[k][t]`` the mismatch is
  ``origin[k, t] - origin[L, s] = (t - k + 1) - (s - L + 1)``; on a chain it is ``2(L-k)``.
  """
  L = len(_edges_of(graph))
  src = gradient_sources(graph, num_ticks)
  return [
    [frozenset((t - k + 1) - (s - L + 1) for s in src[k][t]) for t in range(num_ticks)]
    for k in range(L + 1)
  ]


def _hops(graph) -> tuple[list[int], list[int], list[int]]:
  """Paths from unit k to the top unit L, in ticks.

  Returns ``(forward, backward, longest)``: ``forward[k]`` is the fewest ticks for out_k to
  reach out_L in the pipelined forward (each edge (k, d) costs 1 + d ticks); ``backward[k]``
  and ``longest[k]`` are the fewest and the most ticks a gradient message from unit L takes
  to reach unit k (each hop costs 1 tick, whatever the delay of the edge).
  """
  edges = _edges_of(graph)
  L = len(edges)
  inf = 10**9
  fwd = [inf] * (L + 1)
  bwd = [inf] * (L + 1)
  longest = [-inf] * (L + 1)
  fwd[L] = bwd[L] = longest[L] = 0
  for k in range(L - 1, -1, -1):
    for m in range(k + 1, L + 1):
      for j, d in edges[m]:
        if j == k:
          fwd[k] = min(fwd[k], 1 + d + fwd[m])
          bwd[k] = min(bwd[k], 1 + bwd[m])
          longest[k] = max(longest[k], 1 + longest[m])
  return fwd, bwd, longest


def message_hops(graph) -> tuple[list[int], list[int]]:
  """``(fewest, most)``: per unit k (index k, 1..L), the fewest and the most ticks a gradient
  message from the top unit takes to reach unit k; the gradient of loss tick s is used by
  unit k at ticks ``s + fewest[k] .. s + most[k]`` (and only there)."""
  _, bwd, longest = _hops(graph)
  return bwd, longest


@dataclasses.dataclass(frozen=True)
class Latency:
  """Latency counts of one scheme, in ticks.

  A tick is one step of every unit: a forward step and, when training, a backward step.

  Attributes:
    scheme: "backprop" or the pipelined scheme's name ("sideways", "skip_sideways", ...).
    num_units: L.
    first_output_tick: the tick (0-based) at which the first valid output appears.
    output_latency: ticks from a frame's arrival (tick f) to the first output that depends
      on it (tick f + output_latency).
    gradient_delay: ``gradient_delay[k-1]``: ticks from the output of a loss tick until the
      first piece of its gradient is used by unit k (0 for the top unit).
    frames_per_tick: throughput in frames per tick once running.
    utilisation: the fraction of unit-ticks doing work, with one unit per device.
  """

  scheme: str
  num_units: int
  first_output_tick: int
  output_latency: int
  gradient_delay: tuple[int, ...]
  frames_per_tick: float
  utilisation: float


def latency(graph, scheme: str | None = None) -> Latency:
  """Latency counts of a scheme on ``graph``.

  ``scheme="backprop"`` is blocking BP with one unit per device: a frame goes up the L
  units (one tick each; the top unit also starts the backward in its tick) and its gradient
  comes back down (one tick per unit), so ``output_latency = L - 1``, the gradient reaches
  unit k ``L - k`` ticks after the output, and unit 1 can take the next frame only after
  ``2L - 1`` ticks: ``frames_per_tick = utilisation = 1 / (2L - 1)``.

  Any other scheme is pipelined (Sideways on a chain, Skip-Sideways with skips): every unit
  works on every tick; the first valid output is at tick ``v_L``; a frame reaches the output
  along the *shortest* forward path (skips lower the latency); the gradient of loss tick s
  reaches unit k at tick ``s + (fewest hops from L to k)``; one frame per tick.
  """
  edges = _edges_of(graph)
  L = len(edges)
  if scheme is None:
    scheme = getattr(graph, "name", None) or "pipelined"
  if scheme == "backprop":
    v = first_valid_ticks(graph, SYNCHRONOUS)
    return Latency(
      scheme,
      L,
      first_output_tick=v[L] + L - 1,
      output_latency=L - 1,
      gradient_delay=tuple(L - k for k in range(1, L + 1)),
      frames_per_tick=1.0 / (2 * L - 1),
      utilisation=1.0 / (2 * L - 1),
    )
  v = first_valid_ticks(graph, PIPELINED)
  fwd, bwd, _ = _hops(graph)
  out_lat = min(d + fwd[k] for k, es in edges.items() for j, d in es if j == 0)
  return Latency(
    scheme,
    L,
    first_output_tick=v[L],
    output_latency=out_lat,
    gradient_delay=tuple(bwd[k] for k in range(1, L + 1)),
    frames_per_tick=1.0,
    utilisation=1.0,
  )


# ---------------------------------------------------------------------------------------------
# The stash: the exact gradient forward in time (docs/design.md §5)
# ---------------------------------------------------------------------------------------------

FULL = "full"
CARRY = "carry"
#: How a stash stores its inputs: as they are, in bfloat16, or in int8 with one scale per
#: stored tensor (``max |x| / 127``).
STASH_DTYPES = ("float32", "bfloat16", "int8")


@dataclasses.dataclass(frozen=True)
class Stash:
  """A stash with its options, accepted wherever a ``stash`` is (docs/design.md §5).

  Attributes:
    depths: what a plain ``stash`` argument gives: an int >= 0, ``"full"``, ``"carry"`` or a
      per-unit tuple of depths and ``"carry"``.
    dtype: one of :data:`STASH_DTYPES`: the stashed inputs (the history rows a stash adds) are
      stored in this dtype, so the VJP sees them after the round trip (``float32``: exact).
  """

  depths: object = 0
  dtype: str = "float32"


def _plain(stash):
  """The depths of a :class:`Stash`, or ``stash`` itself."""
  return stash.depths if isinstance(stash, Stash) else stash


def stash_dtype(stash) -> str:
  """The storage dtype of ``stash`` (:data:`STASH_DTYPES`; "float32" unless a :class:`Stash`
  says)."""
  return stash.dtype if isinstance(stash, Stash) else STASH_DTYPES[0]


def _readers_of(edges, j: int) -> list[tuple[int, int]]:
  """``(k, d)`` for every edge (j, d) of a unit k that reads source j."""
  return [(k, d) for k, es in edges.items() for jj, d in es if jj == j]


def why_not_carry(graph, k: int) -> str | None:
  """Why unit k cannot carry its input down (docs/design.md §5), or None when it can.

  Unit k carries when it is reversible (``graph.reversible_units``), reads one input (its
  main edge ``(k-1, 0)``: several inputs cannot be recovered from one output) and has one
  reader, at delay 0 (the carried input arrives with that reader's message)."""
  edges = _edges_of(graph)
  L = len(edges)
  if k == L:
    return f"unit {k} is the top unit, which takes its VJP at its current input"
  if k not in getattr(graph, "reversible_units", ()):
    return f"unit {k} is not reversible (its function has no `inverse`)"
  if tuple(edges[k]) != ((k - 1, 0),):
    return (
      f"unit {k} reads {list(edges[k])}: a unit with several (or delayed) inputs cannot "
      f"be recovered from its one output"
    )
  readers = _readers_of(edges, k)
  if len(readers) != 1 or readers[0][1] != 0:
    return (
      f"unit {k} is read by {readers} (unit, delay): its input is carried down by one "
      f"reader at delay 0"
    )
  return None


def carry_units(graph, stash=0) -> tuple[int, ...]:
  """The units that carry their input down instead of stashing it: for ``stash="carry"``
  every unit that can (:func:`why_not_carry`), for a per-unit stash the units given as
  ``"carry"``; none otherwise."""
  L, stash = len(_edges_of(graph)), _plain(stash)
  if stash == CARRY:
    return tuple(k for k in range(1, L) if why_not_carry(graph, k) is None)
  if isinstance(stash, (tuple, list)):
    return tuple(k for k, sk in enumerate(stash, 1) if isinstance(sk, str) and sk == CARRY)
  return ()


def check_stash(graph, stash) -> None:
  """Raises a ValueError naming ``stash`` unless it is an int >= 0, ``"full"``, ``"carry"``
  or a per-unit sequence ``(s_1, ..., s_{L-1})`` with ``0 <= s_k <= r_k`` (:func:`exact_lags`)
  or ``s_k = "carry"`` where unit k can carry (:func:`why_not_carry`), or a :class:`Stash` of
  such depths with a known storage dtype."""
  if isinstance(stash, Stash):
    if stash.dtype not in STASH_DTYPES:
      raise ValueError(f"Stash.dtype must be one of {STASH_DTYPES}, got {stash.dtype!r}")
    if isinstance(stash.depths, Stash):
      raise ValueError("Stash.depths must be plain depths, not another Stash")
    stash = stash.depths
  if stash == FULL:
    return
  if stash == CARRY:
    if not carry_units(graph, CARRY):
      raise ValueError(
        "stash='carry' needs a unit that can carry its input down (reversible, one input "
        "edge (k-1, 0), one reader at delay 0); this graph has none: "
        + "; ".join(why_not_carry(graph, k) for k in range(1, len(_edges_of(graph))))
      )
    return
  if isinstance(stash, (tuple, list)):
    _check_per_unit(graph, stash)
    return
  if not _is_count(stash):
    raise ValueError(
      f"stash must be an int >= 0, 'full', 'carry' or a tuple of L-1 per-unit depths, got {stash!r}"
    )


def _check_per_unit(graph, stash) -> None:
  r = exact_lags(graph)
  L = len(r) - 1
  if len(stash) != L - 1:
    raise ValueError(
      f"stash must give one depth per unit 1..L-1 ({L - 1} for L={L}; unit L's depth is "
      f"always 0), got {len(stash)}: {tuple(stash)!r}"
    )
  for k, sk in enumerate(stash, 1):
    if isinstance(sk, str) and sk == CARRY:
      why = why_not_carry(graph, k)
      if why is not None:
        raise ValueError(f"stash[{k - 1}] (unit {k}) is 'carry' but {why}; give it a depth")
    elif not _is_count(sk) or sk > r[k]:
      raise ValueError(
        f"stash[{k - 1}] (unit {k}) must be an int in 0..r_{k} = {r[k]} (its exact lag) "
        f"or 'carry', got {sk!r}"
      )


def _is_count(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 0


def static_stash(stash):
  """``stash`` in a hashable form (a per-unit list becomes a tuple of ints and "carry")."""
  if isinstance(stash, Stash):
    return dataclasses.replace(stash, depths=static_stash(stash.depths))
  if isinstance(stash, (tuple, list)):
    return tuple(x if isinstance(x, str) else int(x) for x in stash)
  return stash


def exact_lags(graph) -> list[int]:
  """``r[k]``, k = 0..L: the stash depth that makes unit k's VJP exact.

  ``r_L = 0`` and ``r_j = max over the edges (j, d) of units k that read j of (r_k + d + 2)``
  for 1 <= j < L: the gradient about ``out_j^t`` is complete at tick ``t + r_j``. On a chain
  ``r_k = 2(L - k)``, the mismatch of Sideways. ``r[0] = 0`` (the frame is not stashed).
  """
  edges = _edges_of(graph)
  L = len(edges)
  r = [0] * (L + 1)
  for j in range(L - 1, 0, -1):
    r[j] = max(r[k] + d + 2 for k in range(j + 1, L + 1) for jj, d in edges[k] if jj == j)
  return r


def _depths(graph, stash=0) -> list[int]:
  """``[0, s_1, ..., s_L]``: :func:`stash_depths` indexed by unit (index 0 is the frame)."""
  check_stash(graph, stash)
  r, stash = exact_lags(graph), _plain(stash)
  if stash in (FULL, CARRY):
    return list(r)
  if not isinstance(stash, (tuple, list)):
    return [min(int(stash), rk) for rk in r]
  edges = _edges_of(graph)
  s = [0, *stash, 0]
  for k in range(len(r) - 2, 0, -1):  # a carrying unit's lag follows its reader's
    if isinstance(s[k], str):
      ((reader, d),) = _readers_of(edges, k)
      s[k] = s[reader] + d + 2
  return [int(x) for x in s]


def stash_depths(graph, stash=0) -> tuple[int, ...]:
  """``(s_1, ..., s_L)``: how many ticks back each unit takes its VJP.

  ``s_k = min(m, r_k)`` for ``stash = m`` (``"full"`` is ∞, so ``s = r`` of
  :func:`exact_lags`); a per-unit ``stash = (s_1, ..., s_{L-1})`` is used as given; always
  ``s_L = 0``. At tick τ unit k takes its VJP at its inputs of tick ``τ - s_k``. A unit that
  carries its input down (:func:`carry_units`) recovers that input instead of stashing it:
  its lag is its reader's plus 2, ``s_k = s_{k'} + d + 2`` (so ``"carry"`` has ``s = r``).
  """
  return tuple(_depths(graph, stash)[1:])


def stash_frames(graph, stash=0) -> int:
  """``Σ_k s_k``: the number of stashed input frames (each unit keeps its last ``s_k``
  inputs). The memory of a stash in bytes is :func:`sideways_lab.engine.stash_bytes`."""
  return sum(stash_depths(graph, stash))


def stash_rows(graph, stash=0) -> tuple[int, ...]:
  """``R[j]``, j = 0..L-1: the values of source j (the frame for j = 0, else ``out_j``) that a
  stash keeps beyond Sideways: ``R_j = (H_j(stash) - H_j(0)) + W_j + C_j``, the deeper
  history buffer (:func:`buffer_depths`), the message delay line (:func:`message_lines`) and
  the carried input (:func:`carried_rows`). The bytes of the stash are ``Σ_j R_j · bytes(out_j)``
  (:func:`sideways_lab.engine.stash_bytes`).
  """
  H, H0, W = buffer_depths(graph, stash), buffer_depths(graph, 0), message_lines(graph, stash)
  C = carried_rows(graph, stash)
  return tuple(H[j] - H0[j] + W[j] + C[j] for j in range(len(H)))


def carried_rows(graph, stash=0) -> tuple[int, ...]:
  """``C[j]``, j = 0..L-1: 1 where unit j carries its input down (:func:`carry_units`): the
  output ``out_j`` that its reader sends down with its message, held for one tick."""
  carry = carry_units(graph, stash)
  return tuple(int(j in carry) for j in range(len(_edges_of(graph))))


def message_waits(graph, stash=0) -> dict[tuple[int, int], int]:
  """Extra ticks a message waits: ``{(k, e): w}`` for every edge e = (j, d) of unit k, j >= 1.

  ``w = max(0, s_j - s_k - d - 2)``: the message unit k sends at tick τ is about
  ``out_j^{τ - s_k - 1 - d}``, which unit j differentiates at tick ``τ - s_k - 1 - d + s_j``;
  a message normally arrives at ``τ + 1``. With ``stash=0`` every wait is 0 (Sideways).
  """
  edges = _edges_of(graph)
  s = _depths(graph, stash)
  return {
    (k, e): max(0, s[j] - s[k] - d - 2)
    for k, es in edges.items()
    for e, (j, d) in enumerate(es)
    if j >= 1
  }


def gradient_arrivals(graph, stash=0) -> tuple[list[int], list[int]]:
  """``(fewest, most)``: per unit k (index k), the fewest and the most ticks after a loss tick
  s at which unit k uses a piece of its gradient: a hop along edge (j, d) of unit k costs
  ``1 + w`` (:func:`message_waits`). The cotangent of unit k at tick τ is zero unless
  ``τ - s ∈ [fewest[k], most[k]]`` for some loss tick s. ``stash=0`` gives
  :func:`message_hops`."""
  edges = _edges_of(graph)
  L = len(edges)
  waits = message_waits(graph, stash)
  inf = 10**9
  fewest, most = [inf] * (L + 1), [-inf] * (L + 1)
  fewest[L] = most[L] = 0
  for k in range(L, 0, -1):
    for e, (j, _) in enumerate(edges[k]):
      if j >= 1:
        fewest[j] = min(fewest[j], fewest[k] + 1 + waits[(k, e)])
        most[j] = max(most[j], most[k] + 1 + waits[(k, e)])
  fewest[0], most[0] = 0, 0
  return fewest, most


def drain_ticks(graph, stash=0) -> int:
  """Ticks after a clip until every loss tick's gradient has reached every unit.

  ``max(L - 1, max_k s_k, max_k most[k])`` (docs/design.md §5): the last loss tick's gradient
  reaches unit k ``most[k]`` ticks later along its longest message path (:func:`gradient_arrivals`,
  waits included), and a unit with stash ``s_k`` takes its last VJP ``s_k`` ticks after the
  frame it is about. With ``stash`` 0 or full this is ``max(L - 1, max_k s_k)``; an intermediate
  stash can make a waiting message's path longer (the temporal graph with L=4, stash=3: 4 ticks).
  """
  L = len(_edges_of(graph))
  _, most = gradient_arrivals(graph, stash)
  return max(L - 1, max(_depths(graph, stash)), max(most))


def buffer_depths(graph, stash=0) -> list[int]:
  """``H[j]``, j = 0..L-1: how many past values of source j the pipeline keeps.

  Unit k reads ``src(j, d, τ - s_k)`` for its stashed VJP, the value at index ``d + s_k`` of
  a newest-first buffer, so ``H_j = max over readers (k, d) of (1 + d + s_k)``; with
  ``stash=0`` this is ``1 + max d``. A reader that carries its input down (:func:`carry_units`)
  keeps no past input: it counts ``1 + d``.
  """
  edges = _edges_of(graph)
  L = len(edges)
  s = _depths(graph, stash)
  carry = carry_units(graph, stash)
  H = [1] * L
  for k, es in edges.items():
    for j, d in es:
      H[j] = max(H[j], 1 + d + (0 if k in carry else s[k]))
  return H


def message_lines(graph, stash=0) -> list[int]:
  """``W[j]``, j = 1..L-1 (index j; ``W[0] = W[L] = 0``): the longest wait of a message to
  unit j, i.e. how many ticks beyond the next the pipeline holds messages for unit j."""
  L = len(_edges_of(graph))
  W = [0] * (L + 1)
  edges = _edges_of(graph)
  for (k, e), w in message_waits(graph, stash).items():
    j = edges[k][e][0]
    W[j] = max(W[j], w)
  return W


# ---------------------------------------------------------------------------------------------
# The schedule diagram's content
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleData:
  """Everything the schedule diagram shows, precomputed (index it by tick).

  Attributes:
    scheme: "backprop", "sideways", "skip_sideways", ... (a pipelined name for any graph).
    num_units: L.
    num_ticks: T, the number of columns.
    edges: the graph's edges ``k -> ((j, d), ...)``.
    act_frames: ``act_frames[k][t]``: sorted tuple of frame indices the activation of unit k
      at tick t derives from (row 0: the incoming frame); ``()`` when the unit has no valid
      activation (empty pipeline, or a blocked BP unit).
    grad_frames: ``grad_frames[k][t]``: sorted tuple of the origin frames of the losses whose
      gradient unit k uses at tick t (``()``: no gradient).
    messages: list of ``(m, t, j, frames)``: a gradient message from unit m at tick t to unit
      j (arriving at tick t+1 for pipelined schemes; at tick t+1 in BP as well) carrying the
      gradients of the losses on ``frames``.
    blocked: (L+1, T) bool: units idle at that tick (BP only).
    dropped: (T,) bool: frames that arrive while BP is busy and are never used (BP only).
    loss_ticks: (T,) bool: ticks at which the top unit emits a loss.
  """

  scheme: str
  num_units: int
  num_ticks: int
  edges: dict
  act_frames: tuple
  grad_frames: tuple
  messages: tuple
  blocked: np.ndarray
  dropped: np.ndarray
  loss_ticks: np.ndarray

  def mismatch(self, k: int, t: int) -> tuple[int, ...]:
    """Frames between the activation's main-path frame and each gradient origin at (k, t).

    On a chain this is ``2(L-k)`` for Sideways (docs/design.md §5) and 0 for BP.
    """
    if not self.act_frames[k][t] or not self.grad_frames[k][t]:
      return ()
    a = min(self.act_frames[k][t])  # the main path's frame (skips only bring newer ones)
    return tuple(sorted({a - g for g in self.grad_frames[k][t]}))


def _diagram_edges(graph_or_edges) -> dict:
  """``k -> ((j, d), ...)`` as tuples, from a graph or a dict of edges."""
  if hasattr(graph_or_edges, "edges"):
    return {k: tuple(tuple(e) for e in v) for k, v in graph_or_edges.edges.items()}
  if isinstance(graph_or_edges, Mapping):
    return {int(k): tuple(tuple(e) for e in v) for k, v in graph_or_edges.items()}
  raise TypeError(
    f"graph must be a UnitGraph or a dict of edges, got {type(graph_or_edges).__name__}"
  )


def schedule_data(graph, num_ticks: int, scheme: str | None = None) -> ScheduleData:
  """What the schedule diagram of ``graph`` shows over ``num_ticks`` ticks (``sl.plotting.
  draw_schedule`` draws it; the tick-slider widget indexes it).

  For a pipelined scheme (Sideways on a chain, Skip-Sideways with skips) it uses
  :func:`frames_integrated` (the activation of unit k at tick t derives
  from frame ``t-k+1`` along the main path, plus newer frames through skips) and
  :func:`gradient_sources` (the cotangent of unit k at tick t started at
  the losses of ticks s; we colour it by the origin frame ``s-L+1`` of each). For
  ``scheme="backprop"`` it draws blocking BP with one unit per device: a frame goes up the L
  units and its gradient comes back down (``2L-1`` ticks, :func:`latency`),
  every other unit is blocked, and the frames that arrive meanwhile are dropped.

  Args:
    graph: a :class:`~sideways_lab.UnitGraph` or a dict of edges ``k -> [(j, d), ...]``.
    num_ticks: number of ticks (columns) to draw, >= 1.
    scheme: "backprop" or a pipelined scheme name; defaults to the graph's name, else
      "sideways" for a chain and "skip_sideways" otherwise.
  """
  if not isinstance(num_ticks, (int, np.integer)) or num_ticks < 1:
    raise ValueError(f"num_ticks must be a positive int, got {num_ticks!r}")
  num_ticks = int(num_ticks)
  edges = _diagram_edges(graph)
  if scheme is None:
    scheme = getattr(graph, "name", None)
    if scheme is None:
      is_chain = all(es == ((k - 1, 0),) for k, es in edges.items())
      scheme = "sideways" if is_chain else "skip_sideways"
  make = _backprop_diagram if scheme == "backprop" else _pipelined_diagram
  return make(scheme, edges, num_ticks)


def _backprop_diagram(scheme: str, edges: dict, T: int) -> ScheduleData:
  """Blocking BP, one unit per device: frame ``f = n(2L-1)`` goes up at ticks ``f .. f+L-1``
  and its gradient down at ``f+L-1 .. f+2L-2``; the frames in between are dropped."""
  L = len(edges)
  P = 2 * L - 1
  act = [[() for _ in range(T)] for _ in range(L + 1)]
  grad = [[() for _ in range(T)] for _ in range(L + 1)]
  messages = []
  blocked = np.zeros((L + 1, T), bool)
  dropped = np.zeros(T, bool)
  loss = np.zeros(T, bool)
  for t in range(T):
    n, p = divmod(t, P)
    f = n * P
    act[0][t] = (t,)
    dropped[t] = p != 0
    for k in range(1, L + 1):
      fwd, bwd = p == k - 1, p == 2 * L - 1 - k
      if fwd or bwd:
        act[k][t] = (f,)
      if bwd:
        grad[k][t] = (f,)
        if k > 1 and t + 1 < T:
          messages.append((k, t, k - 1, (f,)))
      blocked[k, t] = not (fwd or bwd)
    loss[t] = p == L - 1
  act, grad = tuple(map(tuple, act)), tuple(map(tuple, grad))
  return ScheduleData(scheme, L, T, edges, act, grad, tuple(messages), blocked, dropped, loss)


def _pipelined_diagram(scheme: str, edges: dict, T: int) -> ScheduleData:
  """A pipelined scheme: :func:`frames_integrated` from the first valid tick on, gradients
  coloured by the origin frames ``s-L+1`` of their loss ticks s, a message per gradient."""
  L = len(edges)
  v = first_valid_ticks(edges, PIPELINED)
  frames = frames_integrated(edges, T, PIPELINED)
  V = loss_ticks(edges, T)
  src = gradient_sources(edges, T)
  act = tuple(
    tuple(tuple(sorted(f for f in frames[k][t] if f >= 0)) if t >= v[k] else () for t in range(T))
    for k in range(L + 1)
  )
  grad = (tuple(() for _ in range(T)),) + tuple(
    tuple(tuple(sorted(s - L + 1 for s in src[k][t] if V[s])) for t in range(T))
    for k in range(1, L + 1)
  )
  messages = tuple(
    (m, t, j, grad[m][t])
    for m in range(2, L + 1)
    for j, _ in edges[m]
    if j >= 1
    for t in range(T - 1)
    if grad[m][t]
  )
  blocked = np.zeros((L + 1, T), bool)
  dropped = np.zeros(T, bool)
  return ScheduleData(scheme, L, T, edges, act, grad, messages, blocked, dropped, V.copy())
