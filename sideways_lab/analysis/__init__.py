"""Analysis: gradient alignment, sweeps, the latency model, measured costs and memory.

* :mod:`~sideways_lab.analysis.alignment` — :func:`alignment` (cosine, angle, norm ratio,
  relative error, sign agreement per unit and overall), :func:`stash_alignment` (a stash's
  gradient against the exact one) and :func:`per_tick_alignment` (each ``g_k^t`` of Sideways
  against the exact gradient of the loss tick it came from).
* :mod:`~sideways_lab.analysis.sweeps` — alignment at initialisation vs speed, frame stride,
  depth, clip length and stash allocation (:func:`sweep_stash`), as tidy pandas DataFrames
  (:func:`per_unit_mean` pivots them); alignment along training is
  :func:`sideways_lab.experiments.alignment_along_training`.
* :mod:`~sideways_lab.analysis.cache` — the on-disk JSON cache of those DataFrames.
* :mod:`~sideways_lab.analysis.latency` — the latency model with per-unit costs on D devices
  (:func:`latency_model`, :func:`latency_table`) and :func:`timeline` (what each device does at
  each tick; ``sl.plotting.plot_timeline`` draws it as a Gantt chart).
* :mod:`~sideways_lab.analysis.schedules` — pipeline schedules (GPipe, 1F1B, interleaved 1F1B,
  ZB-H1/H2, PipeDream, blocking BP) and Sideways on one (device, time) grid:
  :func:`simulate_schedule` measures bubble, memory and staleness from it (docs/design.md §10).
* :mod:`~sideways_lab.analysis.timing` — measured per-unit costs and projected speed-ups.
* :mod:`~sideways_lab.analysis.memory` — compiled memory of each method vs clip length.
"""

from sideways_lab.analysis.alignment import (
  METRICS,
  Alignment,
  Metrics,
  PerTickAlignment,
  alignment,
  per_tick_alignment,
  source_matrix,
  stash_alignment,
  vector_metrics,
)
from sideways_lab.analysis.cache import cache_dir, cache_key, cached
from sideways_lab.analysis.latency import (
  LATENCY_SCHEMES,
  LatencyModel,
  Timeline,
  latency_model,
  latency_table,
  timeline,
)
from sideways_lab.analysis.memory import compiled_memory, memory_vs_clip_length
from sideways_lab.analysis.schedules import (
  SCHEDULES,
  ScheduleGrid,
  check_dependencies,
  schedule_grids,
  schedule_table,
  simulate_schedule,
)
from sideways_lab.analysis.sweeps import (
  init_params,
  measure,
  per_unit_mean,
  sweep_clip_length,
  sweep_depth,
  sweep_speed,
  sweep_stash,
  sweep_stride,
)
from sideways_lab.analysis.timing import UnitCosts, project_speedup, unit_costs

__all__ = [
  "METRICS",
  "Alignment",
  "Metrics",
  "PerTickAlignment",
  "alignment",
  "per_tick_alignment",
  "source_matrix",
  "stash_alignment",
  "vector_metrics",
  "LATENCY_SCHEMES",
  "LatencyModel",
  "Timeline",
  "latency_model",
  "latency_table",
  "timeline",
  "SCHEDULES",
  "ScheduleGrid",
  "check_dependencies",
  "schedule_grids",
  "schedule_table",
  "simulate_schedule",
  "compiled_memory",
  "memory_vs_clip_length",
  "init_params",
  "measure",
  "per_unit_mean",
  "sweep_clip_length",
  "sweep_depth",
  "sweep_speed",
  "sweep_stash",
  "sweep_stride",
  "cache_dir",
  "cache_key",
  "cached",
  "UnitCosts",
  "project_speedup",
  "unit_costs",
]
