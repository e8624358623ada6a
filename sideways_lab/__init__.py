"""sideways_lab: Sideways and Skip-Sideways, depth-parallel training of video networks.

The public API (docs/design.md §6)::

  import sideways_lab as sl
  graph = sl.UnitGraph(units=[f1, ..., fL], edges={1: [(0, 0)], 2: [(1, 0), (0, 0)], ...})
  params = graph.init(rng, frame)
  outputs, valid = sl.forward(graph, params, video, mode="pipelined")
  grads, info = sl.gradients(graph, params, video, targets, loss_fn, method="sideways")

Every public module and name is listed once, in ``PUBLIC``, and loaded on first attribute
access (``import sideways_lab`` itself imports neither JAX nor any submodule).
"""

import importlib

__version__ = "0.1.0"

#: ``(module, names it exports at the top level)``, in the layer order of docs/architecture.md.
#: ``sl.<module>`` is the submodule; ``sl.<name>`` is ``sl.<module>.<name>``.
PUBLIC: tuple[tuple[str, tuple[str, ...]], ...] = (
  (
    "graph",
    (
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
    ),
  ),
  ("data", ()),
  ("checkpoint", ()),
  ("provenance", ()),
  ("partition", ()),
  ("schedule", ()),
  (
    "engine",
    (
      "METHODS",
      "MODES",
      "PipelineState",
      "forward",
      "gradients",
      "init_state",
      "stream_forward",
      "stream_gradients",
    ),
  ),
  ("pipeline", ()),
  ("parallel", ()),
  ("models", ()),
  ("tasks", ()),
  ("training", ()),
  ("experiments", ()),
  ("claims", ()),
  ("analysis", ()),
  ("plotting", ()),
  ("widgets", ()),
  ("figures", ()),
  ("cli", ()),
  ("launch", ()),
)

_HOME = {name: module for module, names in PUBLIC for name in names}

__all__ = [m for m, _ in PUBLIC] + list(_HOME) + ["__version__"]


def __getattr__(name: str):
  """``sl.<module>`` imports the submodule; ``sl.<name>`` imports its module first."""
  if name in _HOME:
    value = getattr(importlib.import_module(f"sideways_lab.{_HOME[name]}"), name)
  elif any(name == m for m, _ in PUBLIC):
    value = importlib.import_module(f"sideways_lab.{name}")
  else:
    raise AttributeError(f"module 'sideways_lab' has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))
