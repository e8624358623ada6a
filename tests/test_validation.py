"""Bad input gets a clear ValueError/TypeError naming the argument (docs/design.md §6)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_helpers import mlp_unit, mse, setup

import sideways_lab as sl


@pytest.mark.parametrize(
  "edges, exc, match",
  [
    ({1: [(0, 0)], 2: [(1, 0)], 5: [(1, 0)]}, ValueError, "unit that does not exist"),
    ({1: [(0, 0)], 2: [(1, 0), (2, 0)]}, ValueError, "not below unit 2"),
    ({1: [(0, 0)], 2: [(1, 0), (3, 0)]}, ValueError, "not below unit 2"),
    ({1: [(0, 0)], 2: [(1, 0), (0, -1)]}, ValueError, "negative delay"),
    ({1: [(0, 0)], 2: [(0, 0)]}, ValueError, "main edge"),
    ({1: [(0, 0)], 2: [(1, 0), (1, 0)]}, ValueError, "repeats"),
    ({1: [(0, 0)], 2: [(1, 0.5)]}, TypeError, "pair of ints"),
    ({1: [(0, 0)], 2: (1, 0)}, TypeError, "edges\\[2\\]"),
    ([(0, 0)], TypeError, "edges must be a dict"),
  ],
)
def test_bad_edges(edges, exc, match):
  with pytest.raises(exc, match=match):
    sl.UnitGraph([mlp_unit(), mlp_unit()], edges)


def test_bad_units_and_presets():
  with pytest.raises(TypeError, match="units"):
    sl.UnitGraph([], None)
  with pytest.raises(TypeError, match="units\\[1\\]"):
    sl.UnitGraph([mlp_unit(), 3])
  with pytest.raises(ValueError, match="span"):
    sl.skip_edges(4, 1)
  with pytest.raises(ValueError, match="num_units"):
    sl.chain_edges(0)
  with pytest.raises(ValueError, match="delays"):
    sl.temporal_edges(3, (0,))


def test_unit_with_haiku_state_is_rejected():
  def stateful(inputs):
    c = hk.get_state("count", (), init=jnp.zeros)
    hk.set_state("count", c + 1)
    return hk.Linear(2)(inputs[0].reshape(inputs[0].shape[0], -1))

  graph = sl.UnitGraph([mlp_unit(), stateful])
  with pytest.raises(ValueError, match="unit 2.*state"):
    graph.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 1)))


def test_bad_video_targets_mask_and_method():
  graph, params, video, targets = setup("chain")
  with pytest.raises(ValueError, match="video must have shape \\(B, T, H, W, C\\)"):
    sl.gradients(graph, params, video[0], targets, mse)
  with pytest.raises(TypeError, match="video must be a floating array.*uint8"):
    sl.gradients(graph, params, (np.asarray(video) * 0).astype(np.uint8), targets, mse)
  with pytest.raises(ValueError, match="targets must have shape.*length 5 differs"):
    sl.gradients(graph, params, video, targets[:, :5], mse)
  with pytest.raises(ValueError, match="mask must have shape"):
    sl.gradients(graph, params, video, targets, mse, mask=np.ones(3, bool))
  with pytest.raises(TypeError, match="mask must be a bool"):
    sl.gradients(graph, params, video, targets, mse, mask=np.ones(7))
  with pytest.raises(ValueError, match="method must be one of"):
    sl.gradients(graph, params, video, targets, mse, method="sidewise")
  with pytest.raises(TypeError, match="loss_fn"):
    sl.gradients(graph, params, video, targets, "mse")
  with pytest.raises(ValueError, match="params must be a tuple of 4"):
    sl.gradients(graph, params[:3], video, targets, mse)
  with pytest.raises(ValueError, match="mode must be"):
    sl.forward(graph, params, video, mode="sideways")
  with pytest.raises(ValueError, match="loss_fn must return a scalar"):
    sl.gradients(graph, params, video, targets, lambda o, y: (o - y) ** 2)
  with pytest.raises(ValueError, match="per_tick"):
    sl.gradients(graph, params, video, targets, mse, method="bptt", per_tick=True)


@pytest.mark.parametrize("stash", [-1, 1.5, "all", True, None])
def test_bad_stash(stash):
  graph, params, video, targets = setup("chain")
  with pytest.raises(ValueError, match="stash"):
    sl.gradients(graph, params, video, targets, mse, method="sideways", stash=stash)


@pytest.mark.parametrize("method", ["backprop", "bptt", "pipelined_exact"])
def test_stash_only_with_sideways(method):
  graph, params, video, targets = setup("chain")
  with pytest.raises(ValueError, match="stash.*only meaningful for method='sideways'"):
    sl.gradients(graph, params, video, targets, mse, method=method, stash=2)
  with pytest.raises(ValueError, match="stash"):
    sl.init_state(graph, params, video, stash=-2)


def test_non_finite_values_are_rejected_when_concrete():
  graph, params, video, targets = setup("chain")
  bad = np.asarray(video).copy()
  bad[0, 2, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="video contains non-finite"):
    sl.gradients(graph, params, bad, targets, mse)
  with pytest.raises(ValueError, match="video contains non-finite"):
    sl.forward(graph, params, bad)
  bad_t = np.asarray(targets).copy()
  bad_t[1, 1, 0] = np.inf
  with pytest.raises(ValueError, match="targets contain non-finite"):
    sl.gradients(graph, params, video, bad_t, mse)


def test_clip_too_short_for_the_pipeline():
  graph, params, video, targets = setup("chain")
  with pytest.raises(ValueError, match="too short for the pipeline"):
    sl.gradients(graph, params, video[:, :3], targets[:, :3], mse, method="sideways")
  # BP on a chain has no pipeline: 3 frames are enough
  sl.gradients(graph, params, video[:, :3], targets[:, :3], mse, method="backprop")
  with pytest.raises(ValueError, match="mask excludes every valid tick"):
    sl.gradients(graph, params, video, targets, mse, mask=np.arange(7) < 3)


def test_init_rejects_integer_frames():
  graph, _, _, _ = setup("chain")
  with pytest.raises(TypeError, match="frame must be a floating"):
    graph.init(jax.random.PRNGKey(0), np.zeros((1, 2, 2, 1), np.uint8))
