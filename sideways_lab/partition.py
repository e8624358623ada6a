"""The min-max contiguous partition of units over devices (shared by the core and the analysis).

Given per-unit loads ``c_1 .. c_L`` (e.g. ``F_k + B_k``, a unit's forward plus backward time)
and D devices, :func:`groups` splits units 1..L into D contiguous, non-empty groups
``G_1 .. G_D`` that minimise the largest load

    min over splits of  max_p Σ_{k ∈ G_p} c_k

(the compute part of a Sideways tick on D devices). :func:`assignment` gives the same split as
a per-unit device index. Plain NumPy; used by ``sl.parallel`` (placement) and by
``sl.analysis.latency`` (the latency model), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["assignment", "groups"]

# Two splits whose largest loads differ by less than this are equal (the first one found wins).
_TIE = 1e-12


def groups(loads: Sequence[float], devices: int) -> tuple[tuple[int, ...], ...]:
  """A contiguous split of units 1..L onto ``devices`` groups minimising the largest load.

  Dynamic programming: ``best[d][i] = min_j max(best[d-1][j], Σ_{k=j+1..i} c_k)``, the
  minimal largest load of the first i units on d devices; O(D·L²).

  Args:
    loads: per-unit loads ``c_k >= 0`` (e.g. ``F_k + B_k``), length L.
    devices: D, 1 <= D <= L.
  Returns:
    D tuples of 1-based unit indices, in order (every group non-empty).
  """
  loads = np.asarray(loads, float)
  L = len(loads)
  if not isinstance(devices, (int, np.integer)) or not 1 <= devices <= L:
    raise ValueError(f"devices must be an int in 1..{L} (the number of units), got {devices!r}")
  D = int(devices)
  pre = np.concatenate([[0.0], np.cumsum(loads)])
  best = np.full((D + 1, L + 1), np.inf)
  cut = np.zeros((D + 1, L + 1), int)
  best[0][0] = 0.0
  for d in range(1, D + 1):
    for i in range(d, L + 1):
      for j in range(d - 1, i):
        v = max(best[d - 1][j], pre[i] - pre[j])
        if v < best[d][i] - _TIE:
          best[d][i], cut[d][i] = v, j
  out, i = [], L
  for d in range(D, 0, -1):
    j = cut[d][i]
    out.append(tuple(range(j + 1, i + 1)))
    i = j
  return tuple(reversed(out))


def assignment(
  num_units: int, num_devices: int, costs: Sequence[float] | None = None
) -> tuple[int, ...]:
  """:func:`groups` as a device index per unit: ``assignment[k-1]`` is the device of unit k.

  With per-unit costs ``c_k`` (all 1 by default) the result is non-decreasing and minimises
  ``max_p Σ_{k on p} c_k``. With ``num_devices >= L`` it is one unit per device (``0..L-1``).
  """
  if not isinstance(num_units, int) or num_units < 1:
    raise ValueError(f"num_units must be a positive int, got {num_units!r}")
  if not isinstance(num_devices, int) or num_devices < 1:
    raise ValueError(f"num_devices must be a positive int, got {num_devices!r}")
  L = num_units
  c = np.ones(L) if costs is None else np.asarray(costs, float)
  if c.shape != (L,) or not np.all(np.isfinite(c)) or np.any(c < 0):
    raise ValueError(f"costs must be {L} finite non-negative numbers, got {costs!r}")
  return tuple(p for p, group in enumerate(groups(c, min(num_devices, L))) for _ in group)
