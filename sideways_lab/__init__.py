"""sideways_lab: Sideways and Skip-Sideways, depth-parallel training of video networks.

The public API (docs/design.md §6)::

  import sideways_lab as sl
  graph = sl.UnitGraph(units=[f1, ..., fL], edges={1: [(0, 0)], 2: [(1, 0), (0, 0)], ...})
  params = graph.init(rng, frame)
  outputs, valid = sl.forward(graph, params, video, mode="pipelined")
  grads, info = sl.gradients(graph, params, video, targets, loss_fn, method="sideways")
"""

from sideways_lab import schedule
from sideways_lab.engine import (
  METHODS,
  MODES,
  PipelineState,
  forward,
  gradients,
  init_state,
  stream_forward,
  stream_gradients,
)
from sideways_lab.graph import (
  UnitGraph,
  chain,
  chain_edges,
  delayed_twin,
  dense,
  dense_edges,
  skip_edges,
  skips,
  temporal,
  temporal_edges,
)

__version__ = "0.1.0"


def __getattr__(name):  # lazy submodules keep `import sideways_lab` fast
  import importlib

  if name in (
    "data",
    "models",
    "tasks",
    "training",
    "analysis",
    "plotting",
    "widgets",
    "figures",
    "cli",
    "checkpoint",
    "parallel",
    "demo",
  ):
    return importlib.import_module(f"sideways_lab.{name}")
  raise AttributeError(f"module 'sideways_lab' has no attribute {name!r}")


__all__ = [
  "UnitGraph",
  "chain",
  "skips",
  "dense",
  "temporal",
  "delayed_twin",
  "chain_edges",
  "skip_edges",
  "dense_edges",
  "temporal_edges",
  "forward",
  "gradients",
  "init_state",
  "stream_forward",
  "stream_gradients",
  "PipelineState",
  "schedule",
  "METHODS",
  "MODES",
  "__version__",
]
