"""Compiled memory of each gradient method vs the clip length.

``jax.jit(f).lower(...).compile().memory_analysis()`` reports the XLA buffer sizes of the
compiled gradient computation: ``temp_size_in_bytes`` (scratch: activations kept for the
backward pass, scan buffers...), ``argument_size_in_bytes`` (params, video, targets),
``output_size_in_bytes`` (the gradients). Some backends return None; the fields are then None.
Sideways keeps O(L) buffers, so its temporary memory should not grow with T; the exact
gradients keep O(T·L) activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from sideways_lab import engine
from sideways_lab.analysis.cache import cached

FIELDS = (
  "temp_size_in_bytes",
  "argument_size_in_bytes",
  "output_size_in_bytes",
  "alias_size_in_bytes",
  "generated_code_size_in_bytes",
)


def compiled_memory(
  graph, params, video, targets, loss_fn, method: str = "sideways", mask=None
) -> dict:
  """Compiled memory of ``sl.gradients(..., method)`` for these shapes (nothing is run).

  Returns a dict with the :data:`FIELDS` (ints, or None when the backend gives no analysis)
  and ``total_bytes`` = temp + argument + output - alias (None likewise).
  """
  if method not in engine.METHODS:
    raise ValueError(f"method must be one of {engine.METHODS}, got {method!r}")
  mask = None if mask is None else np.asarray(mask, bool)

  def f(p, v, y):
    return engine.gradients(graph, p, v, y, loss_fn, method, mask, check_finite=False)[0]

  spec = lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))
  compiled = (
    jax.jit(f)
    .lower(jax.tree_util.tree_map(spec, params), spec(video), jax.tree_util.tree_map(spec, targets))
    .compile()
  )
  try:
    ma = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    ma = None
  out = {k: (None if ma is None else getattr(ma, k, None)) for k in FIELDS}
  if ma is None or out["temp_size_in_bytes"] is None:
    out["total_bytes"] = None
  else:
    out["total_bytes"] = (
      out["temp_size_in_bytes"]
      + (out["argument_size_in_bytes"] or 0)
      + (out["output_size_in_bytes"] or 0)
      - (out["alias_size_in_bytes"] or 0)
    )
  return out


def memory_vs_clip_length(
  graph,
  params,
  clip_lengths: Sequence[int],
  loss_fn,
  *,
  frame_shape=(16, 16, 1),
  batch_size: int = 2,
  target_fn=None,
  methods=engine.METHODS,
  cache=False,
):
  """A DataFrame of compiled memory, one row per (clip length T, method).

  Columns ``method``, ``clip_length``, the :data:`FIELDS` and ``total_bytes`` (see
  :func:`compiled_memory`); ``attrs`` holds the backend, the graph and the shapes.

  Args:
    graph, params, loss_fn: as for ``sl.gradients``.
    clip_lengths: the T values (each must exceed the pipeline's first valid tick).
    frame_shape: (H, W, C) of the frames; batch_size: B.
    target_fn: ``T -> targets ShapeDtypeStruct-like array`` (default: targets shaped like
      the video, as in next-frame prediction).
    cache: False, True or a directory (see :func:`sideways_lab.analysis.cache.cached`);
      the key includes the graph's repr and the shapes.
  """
  H, W, C = frame_shape

  def compute():
    rows = []
    for T in clip_lengths:
      video = jax.ShapeDtypeStruct((batch_size, int(T), H, W, C), jnp.float32)
      targets = video if target_fn is None else target_fn(int(T))
      for method in methods:
        m = compiled_memory(graph, params, video, targets, loss_fn, method)
        rows.append(dict(method=method, clip_length=int(T), **m))
    df = pd.DataFrame.from_records(rows)
    df.attrs = dict(
      analysis="compiled memory",
      backend=jax.default_backend(),
      graph=repr(graph),
      batch_size=batch_size,
      frame_shape=list(frame_shape),
    )
    return df

  args = dict(
    graph=repr(graph),
    clip_lengths=list(clip_lengths),
    frame_shape=list(frame_shape),
    batch_size=batch_size,
    methods=list(methods),
    loss_fn=loss_fn,
    backend=jax.default_backend(),
    params=[list(np.shape(x)) for x in jax.tree_util.tree_leaves(params)],
  )
  return cached("memory_vs_clip_length", args, compute, cache)
