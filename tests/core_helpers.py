"""Tiny graphs and direct, unrolled reference implementations for the core tests.

The references follow docs/design.md §3–§5 literally, with Python loops over ticks and a dict of
activations ``out[(k, t)]``; they share no code with the engine.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

import sideways_lab as sl


def mlp_unit(width: int = 3):
  """A unit that flattens and projects every input, sums them and applies tanh."""

  def f(inputs):
    h = 0.0
    for i, a in enumerate(inputs):
      h = h + hk.Linear(width, name=f"in{i}")(a.reshape(a.shape[0], -1))
    return jnp.tanh(h)

  return f


def top_unit(width: int = 2):
  def f(inputs):
    h = 0.0
    for i, a in enumerate(inputs):
      h = h + hk.Linear(width, name=f"in{i}")(a.reshape(a.shape[0], -1))
    return h

  return f


def make_graph(kind: str, L: int = 4, width: int = 3, out: int = 2) -> sl.UnitGraph:
  units = [mlp_unit(width) for _ in range(L - 1)] + [top_unit(out)]
  edges = {
    "chain": sl.chain_edges(L),
    "skip": sl.skip_edges(L, 2),
    "dense": sl.dense_edges(L),
    "temporal": sl.temporal_edges(L, (1,)),
    # skips and delays together, including a delayed read of the frame
    "mixed": {**sl.skip_edges(L, 2), 1: [(0, 0), (0, 1)], L: [(L - 1, 0), (1, 1)]},
  }[kind]
  return sl.UnitGraph(units, edges, name=kind)


def mse(o, y):
  return jnp.mean((o - y) ** 2)


def conv_first(channels: int = 4):
  """An ordinary first unit: a 3x3 convolution of the frame to ``channels``, then tanh."""

  def f(inputs):
    return jnp.tanh(sl.models.Conv(channels, 3, name="conv")(inputs[0]))

  return f


def pooled_head(out: int = 2):
  """A head: the sum of a linear map of every input, pooled over space."""

  def f(inputs):
    return sum(
      hk.Linear(out, name=f"head_{e}")(jnp.mean(x, axis=(1, 2))) for e, x in enumerate(inputs)
    )

  return f


def reversible_setup(L=5, T=10, B=2, H=4, seed=0, dtype=jnp.float32, plain=(), edges=None):
  """A graph (a chain unless ``edges`` are given) of an ordinary conv unit, L - 2 reversible
  coupling units (4 channels; the units in ``plain`` ordinary shape-keeping convs instead) and
  a pooled linear head; a random (B, T, H, H, 1) video and (B, T, 2) targets."""
  mids = [
    conv_first(4) if k in plain else sl.models.reversible_unit(groups=1, name=f"rev_{k}")
    for k in range(2, L)
  ]
  graph = sl.UnitGraph([conv_first(4), *mids, pooled_head(2)], edges or sl.chain_edges(L))
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  video = jax.random.normal(k1, (B, T, H, H, 1), dtype)
  targets = jax.random.normal(k2, (B, T, 2), dtype)
  params = jax.tree_util.tree_map(lambda a: a.astype(dtype), graph.init(k3, video[:, 0]))
  return graph, params, video, targets


def setup(kind="chain", L=4, T=None, B=2, H=2, seed=0, dtype=jnp.float32):
  """A graph, its params, a random (B, T, H, H, 1) video and (B, T, 2) targets."""
  if T is None:
    T = 11 if kind == "temporal" else 7  # temporal: first valid pipelined output at tick 7
  graph = make_graph(kind, L)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  video = jax.random.normal(k1, (B, T, H, H, 1), dtype)
  targets = jax.random.normal(k2, (B, T, 2), dtype)
  params = graph.init(k3, video[:, 0])
  params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
  return graph, params, video, targets


# -- direct references ------------------------------------------------------------------------


def ref_outputs(graph, params, video, mode):
  """``out[(k, t)]`` for every unit and tick, straight from docs/design.md §3."""
  B, T = video.shape[:2]
  out = {}
  zeros = {}

  def src(j, d, t):
    if j == 0:
      return video[:, t - d] if t - d >= 0 else jnp.zeros_like(video[:, 0])
    tt = t - 1 - d if mode == "pipelined" else t - d
    return out[(j, tt)] if tt >= 0 else zeros[j]

  for t in range(T):
    for k in range(1, graph.num_units + 1):
      o = graph.apply_unit(k, params[k - 1], [src(j, d, t) for j, d in graph.edges[k]])
      zeros.setdefault(k, jnp.zeros_like(o))
      out[(k, t)] = o
  return out


def ref_valid(graph, T, mode):
  """valid(k, t) by the recursive definition, without the schedule module."""
  valid = {}
  for t in range(T):
    for k in range(1, graph.num_units + 1):
      ok = True
      for j, d in graph.edges[k]:
        if j == 0:
          ok &= t - d >= 0
        else:
          tt = t - 1 - d if mode == "pipelined" else t - d
          ok &= tt >= 0 and valid[(j, tt)]
      valid[(k, t)] = ok
  return np.array([valid[(graph.num_units, t)] for t in range(T)])


def ref_loss(graph, params, video, targets, loss_fn, mode, mask=None):
  T = video.shape[1]
  V = ref_valid(graph, T, mode)
  if mask is not None:
    V = V & np.asarray(mask)
  out = ref_outputs(graph, params, video, mode)
  L = graph.num_units
  return sum(loss_fn(out[(L, t)], targets[:, t]) for t in range(T) if V[t]) / V.sum()


def ref_exact_grads(graph, params, video, targets, loss_fn, mode, mask=None):
  return jax.grad(lambda p: ref_loss(graph, p, video, targets, loss_fn, mode, mask))(params)


def ref_stash_depths(graph, stash=0) -> dict:
  """``s_k = min(m, r_k)`` with ``r_L = 0``, ``r_j = max over readers (k, d) of r_k + d + 2``
  (docs/design.md §5), computed here without the schedule module."""
  L = graph.num_units
  r = {L: 0}
  for j in range(L - 1, 0, -1):
    r[j] = max(r[k] + d + 2 for k in range(j + 1, L + 1) for jj, d in graph.edges[k] if jj == j)
  if isinstance(stash, tuple):  # per unit: (s_1, ..., s_{L-1}), s_L = 0
    return {k: stash[k - 1] if k < L else 0 for k in r}
  return {k: r[k] if stash == "full" else min(stash, r[k]) for k in r}


def ref_sideways(graph, params, video, targets, loss_fn, mask=None, stash=0):
  """Sideways with a stash by the letter of docs/design.md §5: a Python loop over the ticks.

  Every unit runs its forward at every tick (no idle units); at tick τ unit k takes its VJP
  at its inputs of tick τ - s_k (zeros before the clip) with the cotangent that arrives at τ;
  the message on edge (j, d) arrives ``1 + max(0, s_j - s_k - d - 2)`` ticks after it is sent;
  at least ``max(L - 1, max_j s_j)`` drain ticks feed the last frame, more while a non-zero
  message is still on its way (a message that waits can need more). ``stash=0`` is Sideways.
  """
  B, T = video.shape[:2]
  L = graph.num_units
  s = ref_stash_depths(graph, stash)
  V = ref_valid(graph, T, "pipelined")
  if mask is not None:
    V = V & np.asarray(mask)
  n = V.sum()
  out, zeros, inputs_at = {}, {}, {}
  cot = {}  # cot[(k, t)]: cotangent unit k uses at tick t
  grads = list(jax.tree_util.tree_map(jnp.zeros_like, params))
  per_tick = []
  t = -1
  while True:
    t += 1
    pending = [c for (_, tt), c in cot.items() if tt >= t and bool(jnp.any(c != 0))]
    if t >= T + max(L - 1, max(s.values())) and not pending:
      break
    x = lambda tt: video[:, min(tt, T - 1)] if tt >= 0 else jnp.zeros_like(video[:, 0])
    g_t = []
    for k in range(1, L + 1):
      inputs = []
      for j, d in graph.edges[k]:
        if j == 0:
          inputs.append(x(t - d))
        else:
          tt = t - 1 - d
          inputs.append(out[(j, tt)] if tt >= 0 else zeros[j])
      inputs_at[(k, t)] = inputs
      f = lambda p, ins, k=k: graph.apply_unit(k, p, ins)
      o = f(params[k - 1], inputs)
      zeros.setdefault(k, jnp.zeros_like(o))
      out[(k, t)] = o
      stashed = inputs_at.get((k, t - s[k]), [jnp.zeros_like(a) for a in inputs])
      _, vjp = jax.vjp(f, params[k - 1], stashed)
      if k == L:
        if t < T and V[t]:
          c = jax.grad(lambda oo: loss_fn(oo, targets[:, t]) / n)(o)
        else:
          c = jnp.zeros_like(o)
      else:
        c = cot.get((k, t), jnp.zeros_like(o))
      g, d_inputs = vjp(c)
      grads[k - 1] = jax.tree_util.tree_map(jnp.add, grads[k - 1], g)
      g_t.append(g)
      for (j, d), m in zip(graph.edges[k], d_inputs):
        if j >= 1:
          wait = max(0, s[j] - s[k] - d - 2)
          arrive = t + 1 + wait
          cot[(j, arrive)] = cot.get((j, arrive), 0.0) + m
    per_tick.append(g_t)
  return tuple(grads), per_tick


def max_abs_diff(a, b) -> float:
  return max(
    float(jnp.max(jnp.abs(x - y)))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def max_abs(a) -> float:
  return max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(a))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
