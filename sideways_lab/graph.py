"""The unit graph: L Haiku units and the edges along which they read their inputs.

A network is a list of units ``f_1 .. f_L``. Unit ``k`` reads a list of *sources*
given by its edges ``(j, d)``: ``j = 0`` is the incoming frame, ``j >= 1`` is the
output buffer of unit ``j`` (always ``j < k``), and ``d >= 0`` is an extra delay
in ticks. Every unit has the *main edge* ``(k-1, 0)``. See docs/design.md §2–§3.

Presets:

* :func:`chain_edges` – Sideways: ``edges[k] = [(k-1, 0)]``.
* :func:`skip_edges` – Skip-Sideways: the main edge plus ``(k-span, 0)``.
* :func:`dense_edges` – every unit reads every source below it.
* :func:`temporal_edges` – the main edge plus delayed copies ``(k-1, d)``,
  which make the synchronous network recurrent in time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp

Edge = tuple[int, int]
UnitFn = Callable[[list], Any]


def _as_edge(k: int, e: Any) -> Edge:
  if (
    not isinstance(e, (tuple, list))
    or len(e) != 2
    or not all(isinstance(v, int) and not isinstance(v, bool) for v in e)
  ):
    raise TypeError(f"edges[{k}]: every edge must be a pair of ints (source j, delay d), got {e!r}")
  j, d = int(e[0]), int(e[1])
  if d < 0:
    raise ValueError(f"edges[{k}]: edge {e!r} has a negative delay d={d}; delays must be >= 0")
  if j < 0:
    raise ValueError(
      f"edges[{k}]: edge {e!r} reads source j={j}; sources are 0 (the frame) or a unit 1..{k - 1}"
    )
  if j >= k:
    raise ValueError(
      f"edges[{k}]: edge {e!r} reads unit {j}, which is not below unit {k}; "
      f"a unit may only read the frame (j=0) or units j < k"
    )
  return (j, d)


def chain_edges(num_units: int) -> dict[int, list[Edge]]:
  """Sideways: ``edges[k] = [(k-1, 0)]`` for k = 1..L."""
  _check_num_units(num_units)
  return {k: [(k - 1, 0)] for k in range(1, num_units + 1)}


def skip_edges(num_units: int, span: int = 2) -> dict[int, list[Edge]]:
  """Skip-Sideways: the main edge plus a skip from ``k - span`` (when it exists).

  Unit k reads ``[(k-1, 0), (k-span, 0)]`` for ``k >= span`` (source 0 is the frame)
  and only the main edge below that. In the pipelined forward the skip brings the
  output of a unit ``span - 1`` ticks newer than the main path.
  """
  _check_num_units(num_units)
  if not isinstance(span, int) or span < 2:
    raise ValueError(f"span must be an int >= 2 (span 1 is the main edge), got {span!r}")
  edges = {}
  for k in range(1, num_units + 1):
    edges[k] = [(k - 1, 0)] + ([(k - span, 0)] if k - span >= 0 else [])
  return edges


def dense_edges(num_units: int) -> dict[int, list[Edge]]:
  """Dense skips: unit k reads ``(k-1, 0)`` then every other source ``j < k-1``."""
  _check_num_units(num_units)
  return {k: [(k - 1, 0)] + [(j, 0) for j in range(k - 2, -1, -1)] for k in range(1, num_units + 1)}


def temporal_edges(num_units: int, delays: Sequence[int] = (1,)) -> dict[int, list[Edge]]:
  """Temporal edges: unit k reads ``(k-1, 0)`` and ``(k-1, d)`` for every d in ``delays``."""
  _check_num_units(num_units)
  delays = tuple(delays)
  if not delays or any((not isinstance(d, int)) or d < 1 for d in delays):
    raise ValueError(f"delays must be a non-empty sequence of ints >= 1, got {delays!r}")
  return {k: [(k - 1, 0)] + [(k - 1, d) for d in delays] for k in range(1, num_units + 1)}


def _check_num_units(num_units: Any) -> None:
  if not isinstance(num_units, int) or isinstance(num_units, bool) or num_units < 1:
    raise ValueError(f"num_units must be a positive int, got {num_units!r}")


class UnitGraph:
  """L Haiku units and their edges.

  Args:
    units: ``[f_1, ..., f_L]``; ``f_k(inputs: list[Array]) -> Array`` is a plain function
      that builds Haiku modules. ``inputs`` follows the order of ``edges[k]``. The graph
      transforms each one with ``hk.transform``; units must not create Haiku state. A unit
      function with an ``inverse`` attribute (``inverse(out) -> input``, the same Haiku
      modules) is *reversible* (:attr:`reversible_units`, :meth:`invert_unit`).
    edges: maps ``k = 1..L`` to a list of ``(j, d)``. A missing key means the chain
      edge ``[(k-1, 0)]``; ``None`` means a chain. Every list must contain a main edge
      ``(k-1, d)`` (usually d = 0; the delayed twin of :func:`delayed_twin` has d = 1).
    name: an optional label used in reprs and figures.

  The graph is immutable and hashable (by identity), so it can be a static argument of
  ``jax.jit``.
  """

  def __init__(
    self,
    units: Sequence[UnitFn],
    edges: Mapping[int, Sequence[Edge]] | None = None,
    name: str | None = None,
  ):
    if callable(units) or not isinstance(units, Sequence) or len(units) == 0:
      raise TypeError(f"units must be a non-empty list of functions, got {type(units).__name__}")
    for i, f in enumerate(units):
      if not callable(f):
        raise TypeError(f"units[{i}] must be callable (inputs: list) -> array, got {f!r}")
    L = len(units)
    if edges is None:
      edges = {}
    if not isinstance(edges, Mapping):
      raise TypeError(f"edges must be a dict k -> [(j, d), ...], got {type(edges).__name__}")
    for k in edges:
      if not isinstance(k, int) or not 1 <= k <= L:
        raise ValueError(
          f"edges has key {k!r}, but units are numbered 1..{L} "
          f"(an edge to a unit that does not exist)"
        )
    norm: dict[int, tuple[Edge, ...]] = {}
    for k in range(1, L + 1):
      es = edges.get(k, [(k - 1, 0)])
      if isinstance(es, tuple) and len(es) == 2 and all(isinstance(v, int) for v in es):
        raise TypeError(f"edges[{k}] must be a list of (j, d) pairs, got the single pair {es!r}")
      es = tuple(_as_edge(k, e) for e in es)
      if not any(j == k - 1 for j, _ in es):
        raise ValueError(
          f"edges[{k}] = {list(es)} lacks the main edge ({k - 1}, d); every unit "
          f"reads the unit below it (or the frame, for unit 1)"
        )
      if len(set(es)) != len(es):
        raise ValueError(f"edges[{k}] = {list(es)} repeats an edge")
      norm[k] = es
    self._units = tuple(units)
    self._edges = norm
    self.name = name
    self._transformed = tuple(hk.transform(f) for f in units)
    self._with_state = tuple(hk.transform_with_state(f) for f in units)
    self._inverses = tuple(
      hk.transform(f.inverse) if callable(getattr(f, "inverse", None)) else None for f in units
    )

  # -- structure -------------------------------------------------------------------------------
  @property
  def num_units(self) -> int:
    """L, the number of units."""
    return len(self._units)

  @property
  def edges(self) -> dict[int, tuple[Edge, ...]]:
    """A copy of the normalised edges ``k -> ((j, d), ...)``."""
    return dict(self._edges)

  @property
  def units(self) -> tuple[UnitFn, ...]:
    """The L unit functions ``f_1 .. f_L``, in order (unit k is ``units[k - 1]``)."""
    return self._units

  @property
  def max_delay(self) -> int:
    """The largest extra delay d over all edges (0 when no edge is delayed)."""
    return max(d for es in self._edges.values() for _, d in es)

  @property
  def has_skips(self) -> bool:
    """True when some unit reads a source other than the one right below it."""
    return any(j != k - 1 for k, es in self._edges.items() for j, _ in es)

  @property
  def is_recurrent(self) -> bool:
    """True when some edge has a delay (the synchronous network is recurrent in time)."""
    return self.max_delay > 0

  @property
  def is_chain(self) -> bool:
    """True when every unit k reads only unit k - 1, undelayed (edges ``{k: [(k-1, 0)]}``)."""
    return all(es == ((k - 1, 0),) for k, es in self._edges.items())

  @property
  def reversible_units(self) -> tuple[int, ...]:
    """The units k (1-based) whose function has an ``inverse``: ``f_k.inverse(out) -> input``,
    built from the same Haiku modules, with ``f_k^{-1}(θ_k; f_k(θ_k; [x])) = x``
    (:meth:`invert_unit`; the carry-down gradient of docs/design.md §5 uses it)."""
    return tuple(k for k, inv in enumerate(self._inverses, 1) if inv is not None)

  def readers(self, j: int) -> list[tuple[int, int, int]]:
    """The edges that read source ``j``: a list of ``(k, edge_index, d)``."""
    return [(k, i, d) for k, es in self._edges.items() for i, (jj, d) in enumerate(es) if jj == j]

  def history(self, j: int) -> int:
    """How many past outputs of source ``j`` must be kept: ``1 + max d`` over its readers."""
    ds = [d for _, _, d in self.readers(j)]
    return 1 + max(ds) if ds else 0

  def __repr__(self) -> str:
    name = f"{self.name!r}, " if self.name else ""
    return (
      f"UnitGraph({name}L={self.num_units}, edges={ {k: list(v) for k, v in self._edges.items()} })"
    )

  # -- Haiku -----------------------------------------------------------------------------------
  def apply_unit(self, k: int, params: Any, inputs: list) -> jax.Array:
    """``out = f_k(θ_k; inputs)`` for unit ``k`` (1-based)."""
    return self._transformed[k - 1].apply(params, None, inputs)

  def invert_unit(self, k: int, params: Any, out: jax.Array) -> jax.Array:
    """``x = f_k^{-1}(θ_k; out)``: the input of a reversible unit ``k`` (1-based) from its output.

    Raises a ValueError naming the unit when its function has no ``inverse``."""
    if self._inverses[k - 1] is None:
      raise ValueError(
        f"unit {k} has no inverse: its function ({getattr(self._units[k - 1], '__name__', '?')}) "
        f"has no `inverse` attribute (reversible units: {self.reversible_units})"
      )
    return self._inverses[k - 1].apply(params, None, out)

  def init(self, rng: jax.Array, frame: jax.Array) -> tuple:
    """Initialises every unit on one frame.

    Args:
      rng: a PRNG key.
      frame: one frame, shape (B, H, W, C) (any leading batch shape works for the units).

    Returns:
      A tuple of L Haiku parameter dicts; ``params[k-1]`` belongs to unit k.
    """
    frame = jnp.asarray(frame)
    if not jnp.issubdtype(frame.dtype, jnp.floating):
      raise TypeError(f"frame must be a floating array, got dtype {frame.dtype}")
    keys = jax.random.split(rng, self.num_units)
    outs = {0: frame}
    params = []
    for k in range(1, self.num_units + 1):
      inputs = [outs[j] for j, _ in self._edges[k]]
      p, state = self._with_state[k - 1].init(keys[k - 1], inputs)
      if jax.tree_util.tree_leaves(state):
        raise ValueError(
          f"units[{k - 1}] (unit {k}) creates Haiku state {list(state)}; units must be "
          f"stateless (use GroupNorm/LayerNorm, not BatchNorm)"
        )
      outs[k] = self.apply_unit(k, p, inputs)
      params.append(p)
    return tuple(params)


def chain(units: Sequence[UnitFn], name: str | None = "sideways") -> UnitGraph:
  """A chain graph of ``units`` (Sideways)."""
  return UnitGraph(units, chain_edges(len(units)), name=name)


def skips(units: Sequence[UnitFn], span: int = 2, name: str | None = "skip_sideways") -> UnitGraph:
  """A Skip-Sideways graph with skips of ``span``."""
  return UnitGraph(units, skip_edges(len(units), span), name=name)


def dense(units: Sequence[UnitFn], name: str | None = "dense") -> UnitGraph:
  """A graph with dense skips."""
  return UnitGraph(units, dense_edges(len(units)), name=name)


def temporal(
  units: Sequence[UnitFn], delays: Sequence[int] = (1,), name: str | None = "temporal"
) -> UnitGraph:
  """A graph with delayed (temporal) edges."""
  return UnitGraph(units, temporal_edges(len(units), delays), name=name)


def delayed_twin(graph: UnitGraph, name: str | None = None) -> UnitGraph:
  """The delayed twin G⁺ of ``graph``: the same units, every edge ``(j, d)`` with ``j >= 1``
  becoming ``(j, d + 1)`` (edges from the frame unchanged).

  The synchronous forward of G⁺ is the pipelined forward of G (``out_j^{t-1-d}`` either way),
  so ``backprop`` on G⁺ — blocking BP of a temporal network — computes the exact pipelined
  gradient of G (``pipelined_exact``; docs/design.md §5).
  """
  edges = {k: [(j, d + 1 if j >= 1 else d) for j, d in es] for k, es in graph.edges.items()}
  return UnitGraph(graph.units, edges, name=name or f"{graph.name or 'graph'}+")
