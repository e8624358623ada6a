"""The engines against references, finite differences and the theorems of docs/design.md §5."""

import functools

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

import sideways_lab as sl
from core_helpers import (assert_trees_close, max_abs, max_abs_diff, mse, ref_exact_grads,
                          ref_outputs, ref_sideways, ref_valid, setup)

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
    np.testing.assert_allclose(pipe[k - 1][:, k - 1:], sync[k - 1][:, :7 - (k - 1)], atol=1e-6)


# -- exact methods against jax.grad of the unrolled references --------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_exact_methods_match_unrolled_reference(kind):
  graph, params, video, targets = setup(kind)
  T = video.shape[1]
  mask = np.arange(T) != T - 3
  for method, mode in [("backprop", "synchronous"), ("pipelined_exact", "pipelined")]:
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
    assert_trees_close(jax.tree_util.tree_map(lambda a: a[t], per), tuple(ref_ticks[t]),
                       rtol=1e-4, atol=1e-6)
  # Sideways is an approximation: on a moving (random) video it differs from the exact one.
  exact, _ = sl.gradients(graph, params, video, targets, mse, method="pipelined_exact")
  assert max_abs_diff(grads, exact) > 1e-3


@pytest.mark.parametrize("kind", ["chain", "mixed"])
def test_exact_methods_against_finite_differences_float64(kind):
  with jax.enable_x64(True):
    graph, params, video, targets = setup(kind, L=3, T=5, B=1, dtype=jnp.float64)
    for method, mode in [("backprop", "synchronous"), ("pipelined_exact", "pipelined")]:
      grads, info = sl.gradients(graph, params, video, targets, mse, method=method)
      assert info["loss"].dtype == jnp.float64
      flat, unravel = ravel_pytree(params)
      g_flat, _ = ravel_pytree(grads)
      J = lambda f: float(sl.gradients(graph, unravel(f), video, targets, mse,
                                       method=method)[1]["loss"])
      rng = np.random.default_rng(0)
      for i in rng.choice(flat.size, size=6, replace=False):
        e = np.zeros(flat.size)
        e[i] = 1e-6
        fd = (J(flat + e) - J(flat - e)) / 2e-6
        np.testing.assert_allclose(g_flat[i], fd, rtol=1e-5, atol=1e-8)


# -- the theorems of docs/design.md §5 ----------------------------------------------------------

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
  exact, info = sl.gradients(graph, params, video, targets, mse, method="pipelined_exact",
                             mask=mask)
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

  g_jit, i_jit = step(graph, params, video, targets, mask)   # mask traced here
  with jax.disable_jit():
    g_eager, i_eager = sl.gradients(graph, params, video, targets, mse, method=method,
                                    mask=np.asarray(mask))
  assert_trees_close(g_jit, g_eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(i_jit["loss"], i_eager["loss"], rtol=1e-6)
  np.testing.assert_array_equal(i_jit["loss_ticks"], i_eager["loss_ticks"])


def test_value_checks_do_not_break_jit():
  graph, params, video, targets = setup("chain")
  f = jax.jit(lambda v, y: sl.gradients(graph, params, v, y, mse)[1]["loss"])
  assert np.isfinite(f(video, targets))
