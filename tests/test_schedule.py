"""The symbolic schedule against instrumented runs of the engine and against hand-worked values."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_helpers import mse, setup

import sideways_lab as sl
from sideways_lab import schedule


def tracer_unit(inputs):
  """out = elementwise max over inputs (+ 0·θ): a one-hot frame code becomes the set of frames."""
  w = hk.get_parameter("w", (), init=jnp.zeros)
  return jnp.max(jnp.stack(inputs), axis=0) + w


def one_hot_video(T, B=1):
  """Frame t is the one-hot code of t: shape (B, T, 1, 1, T)."""
  return jnp.broadcast_to(jnp.eye(T)[None, :, None, None, :], (B, T, 1, 1, T)).astype(jnp.float32)


def frames_seen(code):
  return frozenset(np.flatnonzero(np.asarray(code).ravel() > 0.5).tolist())


@pytest.mark.parametrize(
  "edges",
  [
    sl.chain_edges(4),
    sl.skip_edges(5, 2),
    sl.skip_edges(5, 3),
    sl.dense_edges(4),
    {1: [(0, 0), (0, 2)], 2: [(1, 0), (1, 1)], 3: [(2, 0), (0, 0)]},
  ],
)
@pytest.mark.parametrize("mode", ["pipelined", "synchronous"])
def test_frames_integrated_match_what_the_buffers_really_hold(edges, mode):
  L, T = len(edges), 9
  graph = sl.UnitGraph([tracer_unit] * L, edges)
  video = one_hot_video(T)
  params = graph.init(jax.random.PRNGKey(0), video[:, 0])
  outs, valid = sl.forward(graph, params, video, mode=mode, all_units=True)
  sched = sl.schedule.frames_integrated(graph, T, mode)
  origin = sl.schedule.activation_origin(graph, T, mode)
  first = sl.schedule.first_valid_ticks(graph, mode)
  for k in range(1, L + 1):
    for t in range(T):
      seen = frames_seen(outs[k - 1][0, t])
      assert seen == sched[k][t], (k, t)
      if t >= first[k]:
        assert origin[k, t] in seen  # the main path's frame is among them
  # the main-path origin is t - k + 1 (pipelined) or t (synchronous)
  expect = np.arange(T)[None] - (np.arange(L + 1)[:, None] - 1).clip(0) * (mode == "pipelined")
  np.testing.assert_array_equal(origin, expect)


def test_chain_frames_are_single_and_skips_integrate_several():
  chain = sl.schedule.frames_integrated(sl.chain_edges(4), 8)
  assert all(len(chain[k][t]) == 1 for k in range(1, 5) for t in range(k - 1, 8))
  assert chain[3][1] == frozenset()  # invalid: reads the empty pipeline
  skip = sl.schedule.frames_integrated(sl.skip_edges(4, 2), 8)
  # unit 4 at tick 7 reads unit 3 (tick 6) and unit 2 (tick 6): frames 4, 5, 6, 7 - by hand:
  # unit 2 reads unit 1 (frame t-1) and the frame t; unit 3 reads unit 2 (t-1) and unit 1 (t-1).
  assert skip[2][7] == {6, 7}
  assert skip[3][7] == {5, 6}
  assert skip[4][7] == {4, 5, 6}


def test_first_valid_ticks_by_hand():
  assert sl.schedule.first_valid_ticks(sl.chain_edges(4)) == [0, 0, 1, 2, 3]
  assert sl.schedule.first_valid_ticks(sl.chain_edges(4), "synchronous") == [0, 0, 0, 0, 0]
  assert sl.schedule.first_valid_ticks(sl.skip_edges(4, 2)) == [0, 0, 1, 2, 3]
  assert sl.schedule.first_valid_ticks(sl.temporal_edges(3, (2,)), "synchronous") == [0, 2, 4, 6]
  assert sl.schedule.first_valid_ticks(sl.temporal_edges(3, (2,))) == [0, 2, 5, 8]


@pytest.mark.parametrize("L", [2, 3, 5])
def test_chain_mismatch_is_2_L_minus_k_by_hand(L):
  T = 12
  src = sl.schedule.gradient_sources(sl.chain_edges(L), T + L - 1)
  mm = sl.schedule.mismatch(sl.chain_edges(L), T + L - 1)
  for k in range(1, L + 1):
    for t in range(L - k, T + L - 1):
      assert src[k][t] == {t - (L - k)}
      assert mm[k][t] == {2 * (L - k)}


@pytest.mark.parametrize("kind", ["chain", "skip", "dense", "mixed"])
def test_gradient_sources_match_an_instrumented_run(kind):
  """Put the loss on one tick s and see at which ticks each unit's Sideways gradient is non-zero."""
  graph, params, video, targets = setup(kind, T=8)
  L, T = graph.num_units, 8
  src = sl.schedule.gradient_sources(graph, T + L - 1)
  V = sl.schedule.loss_ticks(graph, T)
  for s in np.flatnonzero(V)[:3]:
    mask = np.arange(T) == s
    _, info = sl.gradients(
      graph, params, video, targets, mse, method="sideways", mask=mask, per_tick=True
    )
    per = info["per_tick_grads"]
    for k in range(1, L + 1):
      norms = sum(
        jnp.sum(a.reshape(a.shape[0], -1) ** 2, axis=1)
        for a in jax.tree_util.tree_leaves(per[k - 1])
      )
      ticks = set(np.flatnonzero(np.asarray(norms) > 0).tolist())
      expect = {t for t in range(T + L - 1) if s in src[k][t]}
      assert ticks == expect, (kind, s, k)
      fewest, most = sl.schedule.message_hops(graph)
      assert (min(ticks), max(ticks)) == (s + fewest[k], s + most[k])
      if kind == "chain":
        assert ticks == {s + L - k}  # activation of frame s+L-2k+1: 2(L-k) frames newer


def test_latency_counts_agree_with_the_engine():
  for kind in ["chain", "skip", "dense"]:
    graph, params, video, targets = setup(kind, T=8)
    L, T = graph.num_units, 8
    lat = sl.schedule.latency(graph, "sideways")
    _, valid = sl.forward(graph, params, video)
    assert lat.first_output_tick == int(np.argmax(valid))
    # the first output that depends on frame f appears at f + output_latency
    seen = sl.schedule.frames_integrated(graph, T)
    f = 2
    assert min(t for t in range(T) if f in seen[L][t]) == f + lat.output_latency
    # gradient delay: first tick at which unit k's per-tick grad is non-zero for loss tick s
    s = lat.first_output_tick
    _, info = sl.gradients(
      graph, params, video, targets, mse, method="sideways", mask=np.arange(T) == s, per_tick=True
    )
    for k in range(1, L + 1):
      norms = sum(
        jnp.sum(jnp.abs(a).reshape(a.shape[0], -1), 1)
        for a in jax.tree_util.tree_leaves(info["per_tick_grads"][k - 1])
      )
      assert int(np.argmax(np.asarray(norms) > 0)) == s + lat.gradient_delay[k - 1]
  assert sl.schedule.latency(sl.chain_edges(4), "sideways").output_latency == 3
  assert sl.schedule.latency(sl.skip_edges(4, 2), "skip_sideways").output_latency == 1
  bp = sl.schedule.latency(sl.chain_edges(4), "backprop")
  assert bp.gradient_delay == (3, 2, 1, 0) and bp.frames_per_tick == pytest.approx(1 / 7)


def test_schedule_rejects_bad_mode():
  with pytest.raises(ValueError, match="mode"):
    sl.schedule.first_valid_ticks(sl.chain_edges(2), "sideways")


# -- the stash (docs/design.md §5) ------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 3, 5])
def test_exact_lags_on_a_chain_are_the_sideways_mismatch(L):
  edges = sl.chain_edges(L)
  assert schedule.exact_lags(edges)[1:] == [2 * (L - k) for k in range(1, L + 1)]
  assert schedule.stash_depths(edges, 1) == tuple(min(1, 2 * (L - k)) for k in range(1, L + 1))
  assert schedule.drain_ticks(edges, "full") == max(L - 1, 2 * (L - 1))


def test_exact_lags_and_waits_by_hand_on_dense_and_temporal():
  dense = sl.dense_edges(4)
  assert schedule.exact_lags(dense) == [0, 6, 4, 2, 0]
  # unit 4 reads unit 1 directly: its message waits s_1 - s_4 - 0 - 2 = 4 ticks
  assert schedule.message_waits(dense, "full")[(4, 2)] == 4
  assert schedule.message_lines(dense, "full") == [0, 4, 2, 0, 0]
  temporal = sl.temporal_edges(4, (1,))
  assert schedule.exact_lags(temporal) == [0, 9, 6, 3, 0]  # r_j = r_{j+1} + 1 + 2
  # an intermediate stash whose waiting message makes the drain longer than max(L-1, max s_j):
  # unit 4's message to unit 3 on the undelayed edge waits s_3 - s_4 - 0 - 2 = 1 tick, so the
  # longest message path from the top to unit 1 takes 4 ticks
  assert schedule.stash_depths(temporal, 3) == (3, 3, 3, 0)
  assert schedule.drain_ticks(temporal, 3) == 4
  assert schedule.gradient_arrivals(temporal, 3)[1][1] == 4


@pytest.mark.parametrize(
  "edges", [sl.chain_edges(4), sl.skip_edges(5, 2), sl.dense_edges(4), sl.temporal_edges(3, (1, 2))]
)
def test_stash_zero_is_sideways_in_the_schedule(edges):
  graph = sl.UnitGraph([lambda ins: ins[0]] * len(edges), edges)
  L = graph.num_units
  assert set(schedule.message_waits(graph, 0).values()) <= {0}
  assert schedule.gradient_arrivals(graph, 0) == tuple(
    [0] + h[1:] for h in schedule.message_hops(graph)
  )
  assert schedule.buffer_depths(graph, 0) == [max(graph.history(j), 1) for j in range(L)]
  assert schedule.drain_ticks(graph, 0) == L - 1
  with pytest.raises(ValueError, match="stash"):
    schedule.stash_depths(graph, -1)


def test_per_unit_stash_in_the_schedule():
  dense = sl.dense_edges(4)  # r = (6, 4, 2)
  assert schedule.stash_depths(dense, (6, 4, 2)) == schedule.stash_depths(dense, "full")
  assert schedule.message_waits(dense, (6, 4, 2)) == schedule.message_waits(dense, "full")
  assert schedule.stash_depths(dense, [1, 0, 2]) == (1, 0, 2, 0)
  assert schedule.stash_frames(dense, (1, 0, 2)) == 3
  # unit 1 keeps 1 frame, unit 3 two inputs of units 1 and 2 (and of the frame)
  assert schedule.buffer_depths(dense, (1, 0, 2)) == [3, 3, 3, 1]
  assert schedule.stash_rows(dense, 0) == (0, 0, 0, 0)
  for bad in [(1, 0), (7, 0, 0), (0, 0, -1), (0, 0.5, 0)]:
    with pytest.raises(ValueError, match="stash"):
      schedule.stash_depths(dense, bad)


def test_a_stash_with_options_in_the_schedule():
  """``Stash(depths, dtype)``: the depths give the schedule (the storage dtype changes no
  tick); a bad option is named."""
  edges = sl.chain_edges(4)  # r = (6, 4, 2, 0)
  S = schedule.Stash
  assert schedule.stash_depths(edges, S((6, 0, 0))) == (6, 0, 0, 0)
  assert schedule.message_waits(edges, (6, 0, 0))[(2, 0)] == 4
  int8 = S((6, 0, 0), dtype="int8")
  assert schedule.message_waits(edges, int8) == schedule.message_waits(edges, (6, 0, 0))
  assert schedule.stash_rows(edges, int8) == schedule.stash_rows(edges, (6, 0, 0)) == (6, 4, 0, 0)
  assert schedule.drain_ticks(edges, int8) == schedule.drain_ticks(edges, (6, 0, 0)) == 7
  assert schedule.static_stash(S([6, 0, 0])) == S((6, 0, 0))
  hash(schedule.static_stash(S([6, 0, 0], dtype="int8")))  # a static argument of jax.jit
  with pytest.raises(ValueError, match="dtype"):
    schedule.check_stash(edges, S(0, dtype="float16"))
  with pytest.raises(ValueError, match=r"stash\[0\]"):
    schedule.check_stash(edges, S((7, 0, 0)))


def test_carry_in_the_schedule_by_hand():
  """A carrying unit's depth is its reader's plus 2; it keeps no history, one carried output
  instead, and no message to it waits."""
  units = [lambda x: x[0]] * 4

  def rev(inputs):
    return inputs[0]

  rev.inverse = lambda y: y
  graph = sl.UnitGraph([units[0], rev, rev, units[0]])  # units 2 and 3 reversible
  assert graph.reversible_units == (2, 3)
  assert schedule.carry_units(graph, "carry") == (2, 3)
  assert schedule.stash_depths(graph, "carry") == (6, 4, 2, 0)
  assert schedule.buffer_depths(graph, "carry") == [7, 1, 1, 1]
  assert schedule.carried_rows(graph, "carry") == (0, 0, 1, 1)
  assert schedule.stash_rows(graph, "carry") == (6, 0, 1, 1)
  assert schedule.stash_rows(graph, "full") == (6, 4, 2, 0)
  # under a partial stash a carrying unit follows its reader: (0, "carry", 0) has s_2 = 2
  assert schedule.stash_depths(graph, (0, "carry", 0)) == (0, 2, 0, 0)
  assert set(schedule.message_waits(graph, (6, "carry", "carry")).values()) == {0}
  assert (
    schedule.why_not_carry(graph, 1) == "unit 1 is not reversible (its function has no `inverse`)"
  )
  assert "top unit" in schedule.why_not_carry(graph, 4)
  with pytest.raises(ValueError, match=r"stash\[0\] \(unit 1\) is 'carry'"):
    schedule.check_stash(graph, ("carry", 0, 0))
  with pytest.raises(ValueError, match="stash must be an int"):
    schedule.check_stash(graph, "carry-down")
