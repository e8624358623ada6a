"""Measured per-unit costs of a real graph, fed into the latency model.

:func:`unit_costs` times each unit's forward step ``f_k(θ_k; inputs)`` and its forward +
backward step (the VJP the Sideways engine runs per tick), jitted, warmed up, synchronised
with ``block_until_ready``, as the median of repeats. ``B_k`` is the difference (VJP time minus
forward time, floored at 0). :func:`project_speedup` puts the measured costs into
:func:`sideways_lab.analysis.latency.latency_model` to project the speed-up of pipelined
training on D devices (one device per group of units, as if each device ran at the measured
speed).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from sideways_lab.analysis.latency import LATENCY_SCHEMES, latency_table


@dataclasses.dataclass(frozen=True)
class UnitCosts:
  """Per-unit median times in seconds: ``forward[k-1] = F_k``, ``backward[k-1] = B_k``;
  ``vjp`` is the measured forward+backward time; ``device`` names the JAX device."""

  forward: tuple
  backward: tuple
  vjp: tuple
  repeats: int
  device: str

  def to_rows(self) -> list[dict]:
    """One row per unit: ``unit``, ``forward_s``, ``backward_s``, ``vjp_s``, repeats, device."""
    return [
      dict(unit=k + 1, forward_s=f, backward_s=b, vjp_s=v, repeats=self.repeats, device=self.device)
      for k, (f, b, v) in enumerate(zip(self.forward, self.backward, self.vjp))
    ]


def _median_time(fn, args, repeats: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def unit_costs(graph, params, frame, *, repeats: int = 20, warmup: int = 2) -> UnitCosts:
  """Measures ``F_k`` and ``B_k`` for every unit of ``graph`` on one batch of frames.

  Args:
    graph: a ``sl.UnitGraph``; params: its parameters.
    frame: (B, H, W, C) — the inputs of every unit are computed from it once
      (synchronously), so each unit is timed on inputs of its real shapes.
    repeats, warmup: timed calls (the median is kept) and untimed calls after compiling.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  frame = jnp.asarray(frame)
  if frame.ndim != 4:
    raise ValueError(f"frame must have shape (B, H, W, C), got shape {frame.shape}")
  outs = [frame]
  for k in range(1, graph.num_units + 1):
    outs.append(graph.apply_unit(k, params[k - 1], [outs[j] for j, _ in graph.edges[k]]))
  F, Bk, V = [], [], []
  for k in range(1, graph.num_units + 1):
    inputs = [outs[j] for j, _ in graph.edges[k]]
    fwd = jax.jit(lambda p, xs, k=k: graph.apply_unit(k, p, xs))

    def step(p, xs, k=k):
      out, vjp = jax.vjp(lambda p, xs: graph.apply_unit(k, p, xs), p, xs)
      return vjp(jnp.ones_like(out))

    step = jax.jit(step)
    tf = _median_time(fwd, (params[k - 1], inputs), repeats, warmup + 1)
    tv = _median_time(step, (params[k - 1], inputs), repeats, warmup + 1)
    F.append(tf)
    V.append(tv)
    Bk.append(max(tv - tf, 0.0))
  dev = jax.devices()[0]
  return UnitCosts(tuple(F), tuple(Bk), tuple(V), repeats, f"{dev.platform}:{dev.device_kind}")


def project_speedup(
  costs: UnitCosts,
  graph_or_L=None,
  devices: Sequence[int] | None = None,
  *,
  comm_cost: float = 0.0,
  schemes=LATENCY_SCHEMES,
):
  """The latency model with measured costs, for D = each of ``devices``.

  Returns a DataFrame (see :func:`sideways_lab.analysis.latency.latency_table`) with, per
  scheme and D, the tick time, throughput (frames/s), utilisation and ``speedup_vs_backprop``.
  """
  L = len(costs.forward)
  if graph_or_L is None:
    graph_or_L = L
  return latency_table(
    graph_or_L,
    devices,
    schemes,
    forward_cost=list(costs.forward),
    backward_cost=list(costs.backward),
    comm_cost=comm_cost,
  )
