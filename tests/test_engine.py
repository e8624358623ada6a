"""The engines against references, finite differences and the theorems of docs/design.md §5."""

import functools
import re

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_helpers import (
  assert_trees_close,
  max_abs,
  max_abs_diff,
  mse,
  ref_exact_grads,
  ref_outputs,
  ref_sideways,
  ref_valid,
  reversible_setup,
  setup,
)
from jax.flatten_util import ravel_pytree

import sideways_lab as sl

KINDS = ["chain", "skip", "dense", "temporal", "mixed"]


# -- forward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["pipelined", "synchronous"])
def test_forward_matches_reference(kind, mode):
  graph, params, video, _ = setup(kind)
  outputs, valid = sl.forward(graph, params, video, mode=mode)
  ref = ref_outputs(graph, params, video, mode)
  T = video.shape[1]
  assert outputs.shape == (2, T, 2)
  assert valid.any()
  np.testing.assert_allclose(outputs, jnp.stack([ref[(4, t)] for t in range(T)], 1), atol=1e-6)
  np.testing.assert_array_equal(valid, ref_valid(graph, T, mode))
  np.testing.assert_array_equal(valid, sl.schedule.loss_ticks(graph, T, mode=mode))


def test_forward_all_units_and_pipelined_lag():
  """On a chain, unit k's pipelined output at tick t is the synchronous output of frame t-k+1."""
  graph, params, video, _ = setup("chain")
  pipe, _ = sl.forward(graph, params, video, "pipelined", all_units=True)
  sync, _ = sl.forward(graph, params, video, "synchronous", all_units=True)
  assert len(pipe) == 4
  for k in range(1, 5):
    np.testing.assert_allclose(pipe[k - 1][:, k - 1 :], sync[k - 1][:, : 7 - (k - 1)], atol=1e-6)


# -- exact methods against jax.grad of the unrolled references --------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_exact_methods_match_unrolled_reference(kind):
  graph, params, video, targets = setup(kind)
  T = video.shape[1]
  mask = np.arange(T) != T - 3
  for method, mode in [
    ("backprop", "synchronous"),
    ("bptt", "pipelined"),
    ("pipelined_exact", "pipelined"),
  ]:
    grads, info = sl.gradients(graph, params, video, targets, mse, method=method, mask=mask)
    ref = ref_exact_grads(graph, params, video, targets, mse, mode, mask)
    assert_trees_close(grads, ref, rtol=1e-4, atol=1e-6)
    V = ref_valid(graph, T, mode) & mask
    np.testing.assert_array_equal(info["loss_ticks"], V)
    assert info["num_loss_ticks"] == V.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_sideways_matches_direct_reference(kind):
  graph, params, video, targets = setup(kind)
  grads, info = sl.gradients(graph, params, video, targets, mse, method="sideways", per_tick=True)
  ref, ref_ticks = ref_sideways(graph, params, video, targets, mse)
  assert_trees_close(grads, ref, rtol=1e-4, atol=1e-6)
  per = info["per_tick_grads"]
  T = video.shape[1]
  assert jax.tree_util.tree_leaves(per)[0].shape[0] == T + 4 - 1
  for t in (0, 3, T - 1, T + 2):
    assert_trees_close(
      jax.tree_util.tree_map(lambda a: a[t], per), tuple(ref_ticks[t]), rtol=1e-4, atol=1e-6
    )
  # Sideways is an approximation: on a moving (random) video it differs from the exact one.
  exact, _ = sl.gradients(graph, params, video, targets, mse, method="pipelined_exact")
  assert max_abs_diff(grads, exact) > 1e-3


@pytest.mark.parametrize("kind", ["chain", "mixed"])
def test_exact_methods_against_finite_differences_float64(kind):
  with jax.enable_x64(True):
    graph, params, video, targets = setup(kind, L=3, T=5, B=1, dtype=jnp.float64)
    for method in ("backprop", "bptt", "pipelined_exact"):
      grads, info = sl.gradients(graph, params, video, targets, mse, method=method)
      assert info["loss"].dtype == jnp.float64
      flat, unravel = ravel_pytree(params)
      g_flat, _ = ravel_pytree(grads)
      J = lambda f: float(
        sl.gradients(graph, unravel(f), video, targets, mse, method=method)[1]["loss"]
      )
      rng = np.random.default_rng(0)
      for i in rng.choice(flat.size, size=6, replace=False):
        e = np.zeros(flat.size)
        e[i] = 1e-6
        fd = (J(flat + e) - J(flat - e)) / 2e-6
        np.testing.assert_allclose(g_flat[i], fd, rtol=1e-5, atol=1e-8)


# -- the theorems of docs/design.md §5 ----------------------------------------------------------

THEOREM_KINDS = ["chain", "skip", "dense", "temporal"]  # the four graph kinds of docs/design.md §5


@pytest.mark.parametrize("kind", THEOREM_KINDS)
def test_exact_forward_in_time_equals_bptt_and_stash_full_float64(kind):
  """pipelined_exact (forward in time, stashed inputs) = bptt (reverse mode through the unrolled
  pipeline) to float64 round-off, with a mask; sideways(stash="full") is pipelined_exact and
  sideways(stash=0) is Sideways, which differs."""
  with jax.enable_x64(True):
    graph, params, video, targets = setup(kind, B=1, dtype=jnp.float64)
    T = video.shape[1]
    mask = np.arange(T) != T - 2
    run = lambda method, stash=0, per_tick=False: sl.gradients(
      graph, params, video, targets, mse, method=method, mask=mask, stash=stash, per_tick=per_tick
    )
    exact, info = run("pipelined_exact", per_tick=True)
    bptt, info_bptt = run("bptt")
    assert max_abs(bptt) > 1e-3
    assert max_abs_diff(exact, bptt) < 1e-12
    np.testing.assert_allclose(info["loss"], info_bptt["loss"], rtol=1e-14)
    full, _ = run("sideways", "full")
    assert max_abs_diff(full, exact) < 1e-14
    drain = sl.schedule.drain_ticks(graph, "full")
    assert jax.tree_util.tree_leaves(info["per_tick_grads"])[0].shape[0] == T + drain
    sideways, _ = run("sideways", 0)
    plain, _ = sl.gradients(graph, params, video, targets, mse, method="sideways", mask=mask)
    assert max_abs_diff(sideways, plain) == 0.0
    assert max_abs_diff(sideways, exact) > 1e-3


@pytest.mark.parametrize(
  "kind,stash", [("chain", 2), ("skip", 3), ("dense", 3), ("temporal", 3), ("mixed", "full")]
)
def test_stash_matches_the_direct_reference_tick_by_tick(kind, stash):
  """An intermediate stash (some messages wait in delay lines), by the letter of
  docs/design.md §5."""
  graph, params, video, targets = setup(kind, B=1)
  mask = np.arange(video.shape[1]) != 5
  grads, info = sl.gradients(
    graph, params, video, targets, mse, method="sideways", mask=mask, stash=stash, per_tick=True
  )
  ref, ref_ticks = ref_sideways(graph, params, video, targets, mse, mask, stash=stash)
  assert_trees_close(grads, ref, rtol=1e-4, atol=1e-6)
  per = info["per_tick_grads"]
  num_ticks = jax.tree_util.tree_leaves(per)[0].shape[0]
  assert num_ticks == video.shape[1] + sl.schedule.drain_ticks(graph, stash) >= len(ref_ticks)
  for t in range(num_ticks):
    expect = (
      tuple(ref_ticks[t]) if t < len(ref_ticks) else jax.tree_util.tree_map(jnp.zeros_like, params)
    )
    assert_trees_close(jax.tree_util.tree_map(lambda a: a[t], per), expect, rtol=1e-4, atol=1e-6)


def test_pipelined_exact_memory_is_flat_in_T_and_bptt_grows():
  """Compiled temporary memory at T=64 vs T=8: flat for the forward-in-time engine."""
  graph, params, video, targets = setup("skip")

  def temp(method, T):
    v = jax.ShapeDtypeStruct((2, T) + video.shape[2:], video.dtype)
    y = jax.ShapeDtypeStruct((2, T, 2), targets.dtype)
    f = jax.jit(
      lambda v, y: sl.gradients(graph, params, v, y, mse, method=method, check_finite=False)[0]
    )
    return f.lower(v, y).compile().memory_analysis().temp_size_in_bytes

  assert temp("pipelined_exact", 64) <= 1.2 * temp("pipelined_exact", 8)
  assert temp("bptt", 64) > 2 * temp("bptt", 8)


def test_unit_step_is_the_forward_and_its_vjp():
  graph, params, video, _ = setup("skip")
  k = 3
  inputs = [jnp.tanh(video[:, 0].reshape(2, -1)[:, :3]), jnp.cos(video[:, 1].reshape(2, -1)[:, :3])]
  cot = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.0, 1.0]])
  out, g, msgs = sl.engine.unit_step(graph, k, params[k - 1], inputs, cot)
  np.testing.assert_allclose(out, graph.apply_unit(k, params[k - 1], inputs), rtol=1e-6)
  J = lambda p, ins: jnp.sum(cot * graph.apply_unit(k, p, ins))
  g_ref, m_ref = jax.grad(J, argnums=(0, 1))(params[k - 1], inputs)
  assert_trees_close(g, g_ref)
  assert len(msgs) == len(graph.edges[k])
  assert_trees_close(msgs, m_ref)


@pytest.mark.parametrize("edges", [[(0, 0)], [(0, 0), (0, 2)]])
def test_single_unit_sideways_equals_pipelined_exact(edges):
  from core_helpers import top_unit

  graph = sl.UnitGraph([top_unit()], {1: edges})
  _, params, video, targets = setup("chain")
  params = graph.init(jax.random.PRNGKey(3), video[:, 0])
  a, _ = sl.gradients(graph, params, video, targets, mse, method="sideways")
  b, _ = sl.gradients(graph, params, video, targets, mse, method="pipelined_exact")
  assert max_abs(a) > 1e-3
  assert_trees_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_static_video_sideways_equals_pipelined_exact(kind):
  graph, params, video, targets = setup(kind)
  static = jnp.repeat(video[:, :1], video.shape[1], axis=1)
  a, ia = sl.gradients(graph, params, static, targets, mse, method="sideways")
  b, ib = sl.gradients(graph, params, static, targets, mse, method="pipelined_exact")
  assert max_abs(a) > 1e-3
  assert_trees_close(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ia["loss"], ib["loss"], rtol=1e-6)


def test_chain_pipelined_exact_is_mean_of_per_frame_backprop():
  """∇J(pipelined) = mean over t ∈ V of the per-frame BP gradient of frame t-L+1, target y^t."""
  graph, params, video, targets = setup("chain", T=9)
  L, T = 4, 9
  mask = np.ones(T, bool)
  mask[6] = False
  exact, info = sl.gradients(
    graph, params, video, targets, mse, method="pipelined_exact", mask=mask
  )
  V = np.flatnonzero(info["loss_ticks"])
  assert list(V) == [3, 4, 5, 7, 8]
  per_frame = []
  for t in V:
    clip = video[:, t - L + 1][:, None]
    g, _ = sl.gradients(graph, params, clip, targets[:, t][:, None], mse, method="backprop")
    per_frame.append(g)
  mean = jax.tree_util.tree_map(lambda *gs: sum(gs) / len(gs), *per_frame)
  assert_trees_close(exact, mean, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", sl.METHODS)
@pytest.mark.parametrize("kind", ["chain", "mixed"])
def test_gradients_are_linear_in_the_losses(method, kind):
  graph, params, video, targets = setup(kind)
  a, ia = sl.gradients(graph, params, video, targets, mse, method=method)
  b, ib = sl.gradients(graph, params, video, targets, lambda o, y: -2.5 * mse(o, y), method=method)
  assert_trees_close(jax.tree_util.tree_map(lambda x: -2.5 * x, a), b, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(-2.5 * ia["loss"], ib["loss"], rtol=1e-6)


def test_backprop_on_a_chain_needs_no_pipeline_and_sideways_differs_with_depth():
  graph, params, video, targets = setup("chain")
  _, info = sl.gradients(graph, params, video, targets, mse, method="backprop")
  assert info["loss_ticks"].all()
  _, info = sl.gradients(graph, params, video, targets, mse, method="sideways")
  np.testing.assert_array_equal(info["loss_ticks"], np.arange(7) >= 3)


def test_loss_is_mean_over_loss_ticks():
  graph, params, video, targets = setup("skip")
  outputs, valid = sl.forward(graph, params, video)
  _, info = sl.gradients(graph, params, video, targets, mse, method="sideways")
  expect = np.mean([mse(outputs[:, t], targets[:, t]) for t in np.flatnonzero(valid)])
  np.testing.assert_allclose(info["loss"], expect, rtol=1e-6)


# -- jit ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sl.METHODS)
def test_jitted_and_eager_agree(method):
  graph, params, video, targets = setup("mixed")
  mask = jnp.array([1, 1, 1, 0, 1, 1, 1], bool)

  @functools.partial(jax.jit, static_argnums=(0,))
  def step(graph, params, video, targets, mask):
    return sl.gradients(graph, params, video, targets, mse, method=method, mask=mask)

  g_jit, i_jit = step(graph, params, video, targets, mask)  # mask traced here
  with jax.disable_jit():
    g_eager, i_eager = sl.gradients(
      graph, params, video, targets, mse, method=method, mask=np.asarray(mask)
    )
  assert_trees_close(g_jit, g_eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(i_jit["loss"], i_eager["loss"], rtol=1e-6)
  np.testing.assert_array_equal(i_jit["loss_ticks"], i_eager["loss_ticks"])


def test_value_checks_do_not_break_jit():
  graph, params, video, targets = setup("chain")
  f = jax.jit(lambda v, y: sl.gradients(graph, params, v, y, mse)[1]["loss"])
  assert np.isfinite(f(video, targets))


# -- any Haiku unit at full speed on the CPU ------------------------------------------------------

CONVS = {
  "conv2d_stride2": lambda x: hk.Conv2D(4, 3, stride=2)(x),
  "conv2d_groups": lambda x: hk.Conv2D(4, 3, feature_group_count=2)(x),
  "conv1d_dilated": lambda x: hk.Conv1D(3, 2, rate=2)(x.reshape(x.shape[0], x.shape[1], -1)),
  "conv2d_transpose": lambda x: hk.Conv2DTranspose(3, 3, stride=2)(x),
}


@pytest.mark.parametrize("conv", list(CONVS))
def test_unit_step_with_canonical_convs_equals_plain_autodiff(conv):
  """The XLA:CPU rewrite of the unit step's convolutions changes no number."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4))
  graph = sl.UnitGraph([lambda ins: jnp.tanh(CONVS[conv](ins[0]))], None)
  params = graph.init(jax.random.PRNGKey(1), x)
  out = graph.apply_unit(1, params[0], [x])
  cot = jax.random.normal(jax.random.PRNGKey(2), out.shape)
  _, vjp = jax.vjp(lambda p, ins: graph.apply_unit(1, p, ins), params[0], [x])
  g_ref, m_ref = vjp(cot)
  o, g, m = jax.jit(functools.partial(sl.engine.unit_step, graph, 1))(params[0], [x], cot)
  np.testing.assert_allclose(o, out, rtol=1e-5, atol=1e-6)
  assert_trees_close(g, g_ref, rtol=1e-4, atol=1e-5)
  assert_trees_close(m, m_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite is for XLA:CPU")
def test_every_convolution_in_the_scan_is_in_the_fast_form():
  """hk.Conv2D's VJP inside the engine's scan uses only b01f_01io->b01f convolutions."""

  def unit(ins):
    return jax.nn.relu(hk.Conv2D(4, 3)(ins[0]))

  def head(ins):
    return hk.Linear(2)(jnp.mean(ins[0], axis=(1, 2)))

  graph = sl.chain([unit, unit, head])
  video = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8, 8, 3))
  targets = jnp.zeros((2, 5, 2))
  params = graph.init(jax.random.PRNGKey(1), video[:, 0])
  delayed = sl.temporal([unit, unit, head], (1,))  # backprop through time on delays
  for g, method in [
    (graph, "sideways"),
    (graph, "pipelined_exact"),
    (graph, "backprop"),
    (graph, "bptt"),  # the scan and its transpose
    (delayed, "backprop"),
  ]:
    f = jax.jit(lambda v, y, g=g, m=method: sl.gradients(g, params, v, y, mse, method=m)[0])
    hlo = f.lower(video, targets).compile().as_text()
    labels = set(re.findall(r"dim_labels=(\S+?),", hlo))
    assert labels == {"b01f_01io->b01f"}, (method, labels)


@pytest.mark.parametrize("kind", ["chain", "skip", "temporal", "mixed"])
def test_pipelined_exact_is_backprop_of_the_delayed_twin(kind):
  """docs/design.md §5: the pipelined forward of G is the synchronous forward of G⁺ (every
  edge from a unit one tick later), so the exact pipelined gradient of G is blocking BP of G⁺."""
  graph, params, video, targets = setup(kind)
  twin = sl.delayed_twin(graph)
  assert all(d >= 1 for k in twin.edges for j, d in twin.edges[k] if j >= 1)
  out_g, valid_g = sl.forward(graph, params, video, mode="pipelined")
  out_t, valid_t = sl.forward(twin, params, video, mode="synchronous")
  np.testing.assert_array_equal(valid_g, valid_t)
  np.testing.assert_allclose(out_g, out_t, atol=1e-6)
  a, info_a = sl.gradients(graph, params, video, targets, mse, method="pipelined_exact")
  b, info_b = sl.gradients(twin, params, video, targets, mse, method="backprop")
  np.testing.assert_array_equal(info_a["loss_ticks"], info_b["loss_ticks"])
  assert max_abs(a) > 1e-3
  assert_trees_close(a, b, rtol=1e-5, atol=1e-7)


# -- the per-unit stash (docs/design.md §5) -----------------------------------------------------


@pytest.mark.parametrize("kind", ["chain", "skip", "dense", "temporal"])
def test_per_unit_stash_spans_sideways_to_the_exact_twin(kind):
  """``stash=(r_1, ..., r_{L-1})`` is ``pipelined_exact`` and all zeros is ``sideways``; a
  per-unit stash equal to ``min(m, r_k)`` is the int stash m."""
  graph, params, video, targets = setup(kind)
  r = tuple(sl.schedule.exact_lags(graph)[1:-1])
  run = lambda method="sideways", stash=0: sl.gradients(
    graph, params, video, targets, mse, method=method, stash=stash
  )[0]
  exact, plain = run("pipelined_exact"), run()
  assert max_abs_diff(run(stash=r), exact) == 0.0
  assert max_abs_diff(run(stash=(0,) * len(r)), plain) == 0.0
  assert max_abs_diff(run(stash=tuple(min(2, x) for x in r)), run(stash=2)) == 0.0
  mixed = run(stash=r[:1] + (0,) * (len(r) - 1))  # only unit 1 keeps its past inputs
  assert max_abs_diff(mixed, plain) > 1e-6 and max_abs_diff(mixed, exact) > 1e-6


def test_per_unit_stash_is_checked():
  graph, params, video, targets = setup("chain")  # r = (6, 4, 2, 0)
  call = lambda stash: sl.gradients(graph, params, video, targets, mse, stash=stash)
  with pytest.raises(ValueError, match="stash must give one depth per unit 1..L-1"):
    call((1, 1))
  with pytest.raises(ValueError, match=r"stash\[2\] \(unit 3\) .*r_3 = 2"):
    call((0, 0, 3))
  with pytest.raises(ValueError, match=r"unit 1"):
    call((-1, 0, 0))
  with pytest.raises(ValueError, match="stash"):
    sl.gradients(graph, params, video, targets, mse, method="bptt", stash=(1, 1, 1))
  grads, _ = call([6, 4, 2])  # a list is taken as the tuple
  assert max_abs(grads) > 0


def test_stash_depths_frames_and_bytes():
  graph, params, video, _ = setup("temporal")  # r = (9, 6, 3, 0); outputs (B=2, 3)
  sch = sl.schedule
  assert sch.stash_depths(graph, 0) == (0, 0, 0, 0)
  assert sch.stash_depths(graph, "full") == (9, 6, 3, 0)
  assert sch.stash_depths(graph, 4) == (4, 4, 3, 0)
  assert sch.stash_depths(graph, (2, 0, 1)) == (2, 0, 1, 0)
  assert sch.stash_frames(graph, "full") == 18 and sch.stash_frames(graph, (2, 0, 1)) == 3
  frame = video[:, 0]  # (2, 2, 2, 1)
  assert sl.engine.stash_bytes(graph, params, frame, 0) == 0
  # unit 1 reads the frame (now and one tick back): 2 more frames; unit 3 reads unit 2: 1 more
  # output of unit 2; no message waits for (2, 0, 1) on this graph
  assert sch.stash_rows(graph, (2, 0, 1)) == (2, 0, 1, 0)
  frame_bytes, out_bytes = 2 * 2 * 2 * 1 * 4, 2 * 3 * 4
  assert sl.engine.stash_bytes(graph, params, frame, (2, 0, 1)) == 2 * frame_bytes + out_bytes
  # the full stash adds delay lines: bytes grow with the rows of schedule.stash_rows
  rows = sch.stash_rows(graph, "full")
  assert (
    sl.engine.stash_bytes(graph, params, frame, "full")
    == rows[0] * frame_bytes + sum(rows[1:]) * out_bytes
  )
  assert sum(rows) >= sch.stash_frames(graph, "full")


# -- carry-down: reversible units recover their inputs (docs/design.md §5) -----------------------

CARRY_CHAINS = {"L3": dict(L=3), "L5": dict(L=5), "mixed": dict(L=5, plain=(3,))}


@pytest.mark.parametrize("name", sorted(CARRY_CHAINS))
def test_carry_down_equals_pipelined_exact_float64(name):
  """``stash="carry"`` is the exact gradient: on reversible chains and on a chain that mixes
  reversible units with a stashing one (unit 3), with a mask; Sideways differs."""
  with jax.enable_x64(True):
    graph, params, video, targets = reversible_setup(dtype=jnp.float64, **CARRY_CHAINS[name])
    mask = np.arange(video.shape[1]) != 7
    run = lambda method, stash=0: sl.gradients(
      graph, params, video, targets, mse, method=method, mask=mask, stash=stash
    )
    exact, info = run("pipelined_exact")
    carry, cinfo = run("sideways", "carry")
    plain = CARRY_CHAINS[name].get("plain", ())
    assert sl.schedule.carry_units(graph, "carry") == tuple(
      k for k in range(2, graph.num_units) if k not in plain
    )
    assert max_abs(exact) > 1e-3
    assert max_abs_diff(carry, exact) < 1e-10 * max_abs(exact)
    assert float(cinfo["loss"]) == float(info["loss"])
    assert max_abs_diff(run("sideways"), exact) > 1e-3 * max_abs(exact)


def test_carry_down_in_float32_is_exact_to_rounding():
  graph, params, video, targets = reversible_setup(L=5)
  run = lambda method, stash=0: sl.gradients(
    graph, params, video, targets, mse, method=method, stash=stash
  )[0]
  exact = run("pipelined_exact")
  err = max_abs_diff(run("sideways", "carry"), exact) / max_abs(exact)
  assert err < 1e-5
  assert max_abs_diff(run("sideways"), exact) / max_abs(exact) > 1e-2


def test_carry_is_a_stash_whose_depth_follows_the_reader_float64():
  """A unit given as ``"carry"`` takes its VJP where a stash of depth ``s_{k+1} + 2`` would:
  under a partial stash (unit 4 keeps nothing) carry-down equals the int stash of those
  depths, with its delay lines."""
  with jax.enable_x64(True):
    graph, params, video, targets = reversible_setup(L=5, dtype=jnp.float64)
    mixed = (8, "carry", "carry", 0)
    depths = sl.schedule.stash_depths(graph, mixed)
    assert depths == (8, 4, 2, 0, 0)
    run = lambda stash: sl.gradients(graph, params, video, targets, mse, stash=stash)[0]
    ref = run(depths[:-1])
    assert max_abs_diff(run(mixed), ref) < 1e-10 * max_abs(ref)
    assert max_abs_diff(ref, run("full")) > 1e-3 * max_abs(ref)


def test_carry_down_on_a_graph_with_skips_falls_back_to_the_stash_float64():
  """A reversible unit read by two units (unit 2, also read by the head) stashes its inputs
  under ``stash="carry"``; units 3 and 4 carry; the gradient is exact."""
  with jax.enable_x64(True):
    edges = {**sl.chain_edges(5), 5: [(4, 0), (2, 0)]}
    graph, params, video, targets = reversible_setup(L=5, dtype=jnp.float64, edges=edges)
    assert sl.schedule.carry_units(graph, "carry") == (3, 4)
    assert "is read by" in sl.schedule.why_not_carry(graph, 2)
    run = lambda method, stash=0: sl.gradients(
      graph, params, video, targets, mse, method=method, stash=stash
    )[0]
    exact = run("pipelined_exact")
    assert max_abs_diff(run("sideways", "carry"), exact) < 1e-10 * max_abs(exact)


def test_carry_down_is_checked():
  graph, params, video, targets = reversible_setup(L=4)
  call = lambda stash: sl.gradients(graph, params, video, targets, mse, stash=stash)
  with pytest.raises(ValueError, match=r"stash\[0\] \(unit 1\) is 'carry' but unit 1 is not rev"):
    call(("carry", "carry", 0))
  with pytest.raises(ValueError, match="stash='carry' needs a unit"):
    g, p, v, y = setup("chain")
    sl.gradients(g, p, v, y, mse, stash="carry")
  skip = sl.UnitGraph(graph.units, {**sl.chain_edges(4), 3: [(2, 0), (1, 0)]})
  with pytest.raises(ValueError, match="unit 3 reads .* several"):
    sl.schedule.check_stash(skip, (0, 0, "carry"))
  with pytest.raises(ValueError, match="only meaningful for method='sideways'"):
    sl.gradients(graph, params, video, targets, mse, method="pipelined_exact", stash="carry")


def test_carry_down_memory_is_flat_in_T_and_counted():
  graph, params, video, targets = reversible_setup(L=5)

  def temp(T, stash):
    v = jax.ShapeDtypeStruct((2, T) + video.shape[2:], video.dtype)
    y = jax.ShapeDtypeStruct((2, T, 2), targets.dtype)
    f = jax.jit(
      lambda v, y: sl.gradients(graph, params, v, y, mse, stash=stash, check_finite=False)[0]
    )
    return f.lower(v, y).compile().memory_analysis().temp_size_in_bytes

  assert temp(64, "carry") <= 1.2 * temp(8, "carry")
  # the stash keeps 2(L-1) = 8 frames for unit 1 and one carried output per reversible unit
  frame = video[:, 0]
  frame_bytes, out_bytes = 2 * 4 * 4 * 1 * 4, 2 * 4 * 4 * 4 * 4
  assert sl.schedule.stash_rows(graph, "carry") == (8, 0, 1, 1, 1)
  assert sl.engine.stash_bytes(graph, params, frame, "carry") == 8 * frame_bytes + 3 * out_bytes
  assert sl.engine.stash_bytes(graph, params, frame, "full") == 8 * frame_bytes + 12 * out_bytes
  state = sl.init_state(graph, params, video, stash="carry")
  assert [c.shape[0] for c in state.carried] == [0, 1, 1, 1]
  assert [b.shape[0] for b in state.buffers] == [9, 1, 1, 1, 1]


def test_carry_down_streams_in_chunks_like_a_whole_clip():
  graph, params, video, targets = reversible_setup(L=4, T=9)
  state = sl.init_state(graph, params, video, stash="carry")
  w = 1.0 / int(sl.schedule.loss_ticks(graph, 9).sum())
  total = None
  for a, b in [(0, 4), (4, 9)]:
    g, _, state = sl.stream_gradients(
      graph, params, video[:, a:b], targets[:, a:b], mse, state, stash="carry", loss_weight=w
    )
    total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
  whole, _, _ = sl.stream_gradients(
    graph,
    params,
    video,
    targets,
    mse,
    sl.init_state(graph, params, video, stash="carry"),
    stash="carry",
    loss_weight=w,
  )
  assert max_abs_diff(total, whole) < 1e-6 * max_abs(whole)


# -- a compressed stash (docs/design.md §5) ----------------------------------------------------


def test_compress_round_trips_by_the_closed_form():
  x = jnp.asarray([[0.5, -1.27, 0.0], [1.0, 0.26, -0.013]], jnp.float32)
  c = sl.pipeline.compress
  assert c(x, "float32") is x
  np.testing.assert_array_equal(c(x, "bfloat16"), x.astype(jnp.bfloat16).astype(jnp.float32))
  scale = 1.27 / 127  # max |x| / 127, one scale for the tensor
  np.testing.assert_allclose(c(x, "int8"), np.round(np.asarray(x) / scale) * scale, rtol=1e-6)
  assert float(jnp.max(jnp.abs(c(x, "int8") - x))) <= scale / 2 + 1e-7
  np.testing.assert_array_equal(c(jnp.zeros(3), "int8"), 0.0)
  with pytest.raises(ValueError, match="dtype"):
    c(x, "int4")


@pytest.mark.parametrize("kind", ["chain", "temporal"])
def test_a_compressed_stash_is_close_to_the_exact_gradient_but_not_equal(kind):
  graph, params, video, targets = setup(kind)
  S = sl.schedule.Stash
  run = lambda stash: sl.gradients(graph, params, video, targets, mse, stash=stash)[0]
  exact = run("full")
  assert max_abs_diff(run(S("full", dtype="float32")), exact) == 0.0
  for dtype, tol in [("bfloat16", 2e-2), ("int8", 5e-2)]:
    err = max_abs_diff(run(S("full", dtype=dtype)), exact) / max_abs(exact)
    assert 0 < err < tol, (dtype, err)
  # a stash of depth 0 stores nothing: its dtype changes nothing
  assert max_abs_diff(run(S(0, dtype="int8")), run(0)) == 0.0


def test_a_compressed_stash_counts_its_bytes():
  graph, params, video, _ = setup("chain")  # r = (6, 4, 2); frames (2, 2, 2, 1), outs (2, 3)
  S, frame = sl.schedule.Stash, video[:, 0]
  nbytes = lambda stash: sl.engine.stash_bytes(graph, params, frame, stash)
  full = nbytes("full")
  assert full == 6 * 8 * 4 + 6 * 6 * 4
  assert nbytes(S("full", dtype="bfloat16")) == full // 2
  assert nbytes(S("full", dtype="int8")) == 6 * (8 + 4) + 6 * (6 + 4)  # values and a scale
  # the delay line of (6, 0, 0) holds messages: in the activations' dtype
  assert nbytes(S((6, 0, 0), dtype="int8")) == 6 * (8 + 4) + 4 * 6 * 4
