"""Streaming: a clip run in chunks with carried state equals the clip run whole, tick by tick."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_helpers import assert_trees_close, mse, setup

import sideways_lab as sl


def split(x, sizes):
  return np.split(np.asarray(x), np.cumsum(sizes)[:-1], axis=1)


@pytest.mark.parametrize("kind", ["chain", "mixed"])
def test_stream_forward_in_chunks_equals_whole_clip(kind):
  graph, params, video, _ = setup(kind, T=12)
  whole, valid = sl.forward(graph, params, video)
  for sizes in [(3, 4, 5), (1, 1, 10)]:
    state = sl.init_state(graph, params, video[:, 0])
    outs, vals = [], []
    for chunk in split(video, sizes):
      o, v, state = sl.stream_forward(graph, params, chunk, state)
      outs.append(o)
      vals.append(np.asarray(v))
    np.testing.assert_allclose(np.concatenate(outs, 1), whole, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(vals), valid)
    assert int(state.tick) == 12


@pytest.mark.parametrize("kind", ["chain", "skip", "mixed"])
def test_stream_gradients_in_chunks_equal_whole_clip_tick_by_tick(kind):
  graph, params, video, targets = setup(kind, T=12)
  L, T = graph.num_units, 12
  _, info = sl.gradients(graph, params, video, targets, mse, method="sideways", per_tick=True)
  w = 1.0 / int(info["num_loss_ticks"])
  whole_ticks = info["per_tick_grads"]
  for sizes in [(5, 7), (3, 4, 2, 3)]:
    state = sl.init_state(graph, params, video)
    total, per, losses = None, [], []
    for chunk, tgt in zip(split(video, sizes), split(targets, sizes)):
      g, inf, state = sl.stream_gradients(
        graph, params, chunk, tgt, mse, state, loss_weight=w, per_tick=True
      )
      total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
      per.append(inf["per_tick_grads"])
      losses.append(inf["tick_loss"])
    per = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *per)
    # tick by tick: the first T ticks of the whole run (the drain comes after)
    assert_trees_close(
      per, jax.tree_util.tree_map(lambda a: a[:T], whole_ticks), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(np.concatenate(losses), info["tick_loss"], rtol=1e-6)
    # draining the stream (L-1 ticks of the last frame, no loss) completes the whole-clip Ĝ
    drain = jnp.repeat(video[:, -1:], L - 1, axis=1)
    g, _, state = sl.stream_gradients(
      graph,
      params,
      drain,
      targets[:, : L - 1],
      mse,
      state,
      mask=np.zeros(L - 1, bool),
      loss_weight=w,
    )
    total = jax.tree_util.tree_map(jnp.add, total, g)
    whole, _ = sl.gradients(graph, params, video, targets, mse, method="sideways")
    assert_trees_close(total, whole, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind,stash", [("dense", "full"), ("temporal", 3)])
def test_stream_with_a_stash_in_chunks_equals_whole_clip(kind, stash):
  """The state carries the stash (deeper buffers) and the message delay lines across chunks."""
  graph, params, video, targets = setup(kind, T=12)
  T = 12
  _, info = sl.gradients(
    graph, params, video, targets, mse, method="sideways", stash=stash, per_tick=True
  )
  w = 1.0 / int(info["num_loss_ticks"])
  state = sl.init_state(graph, params, video, stash=stash)
  assert state.delayed  # both cases have messages that wait in delay lines
  total, per = None, []
  for chunk, tgt in zip(split(video, (5, 7)), split(targets, (5, 7))):
    g, inf, state = sl.stream_gradients(
      graph, params, chunk, tgt, mse, state, loss_weight=w, stash=stash, per_tick=True
    )
    total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
    per.append(inf["per_tick_grads"])
  per = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *per)
  assert_trees_close(
    per, jax.tree_util.tree_map(lambda a: a[:T], info["per_tick_grads"]), rtol=1e-5, atol=1e-7
  )
  drain = sl.schedule.drain_ticks(graph, stash)
  g, _, state = sl.stream_gradients(
    graph,
    params,
    jnp.repeat(video[:, -1:], drain, axis=1),
    targets[:, :drain],
    mse,
    state,
    mask=np.zeros(drain, bool),
    loss_weight=w,
    stash=stash,
  )
  total = jax.tree_util.tree_map(jnp.add, total, g)
  whole, _ = sl.gradients(graph, params, video, targets, mse, method="sideways", stash=stash)
  assert_trees_close(total, whole, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="stash"):
    sl.stream_gradients(graph, params, video, targets, mse, state, stash=0)


def test_online_updates_with_a_carried_state():
  """An update every K ticks: the stream keeps its buffers and messages across updates."""
  graph, params, video, targets = setup("skip", T=12)
  state = sl.init_state(graph, params, video)
  losses = []
  for chunk, tgt in zip(split(video, (4, 4, 4)), split(targets, (4, 4, 4))):
    g, info, state = sl.stream_gradients(graph, params, chunk, tgt, mse, state)
    params = jax.tree_util.tree_map(lambda p, d: p - 0.1 * d, params, g)
    losses.append(float(info["loss"]))
  assert int(state.tick) == 12
  np.testing.assert_array_equal(np.asarray(info["loss_ticks"]), [True] * 4)
  # the first chunk's loss ticks start once the pipeline has filled (tick 3)
  assert all(np.isfinite(losses))


def test_stream_rejects_a_foreign_state():
  graph, params, video, targets = setup("chain")
  other, oparams, _, _ = setup("chain", L=3)
  state = sl.init_state(other, oparams, video)
  with pytest.raises(ValueError, match="state"):
    sl.stream_gradients(graph, params, video, targets, mse, state)
  with pytest.raises(TypeError, match="state"):
    sl.stream_forward(graph, params, video, {"buffers": ()})


def test_stream_jits_with_state_as_a_pytree():
  graph, params, video, targets = setup("mixed", T=8)
  step = jax.jit(lambda p, c, y, s: sl.stream_gradients(graph, p, c, y, mse, s))
  state = sl.init_state(graph, params, video)
  s_eager = state
  for chunk, tgt in zip(split(video, (4, 4)), split(targets, (4, 4))):
    g, _, state = step(params, chunk, tgt, state)
    ge, _, s_eager = sl.stream_gradients(graph, params, chunk, tgt, mse, s_eager)
    assert_trees_close(g, ge, rtol=1e-5, atol=1e-7)
  assert_trees_close(state, s_eager, rtol=1e-5, atol=1e-7)
