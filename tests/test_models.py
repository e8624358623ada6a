"""Model builders: same units for every scheme, variable inputs, no Haiku state."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import sideways_lab as sl
from sideways_lab import models


def _frame(h=8, c=1):
  return jnp.asarray(np.random.default_rng(0).random((2, h, h, c)), jnp.float32)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [8, 7])
def test_conv2d_equals_lax_conv(stride, hw):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, hw, hw, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)
  ref = lax.conv_general_dilated(
    x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(models.conv2d(x, w, stride), ref, atol=1e-4)


def test_depth_to_space():
  x = jnp.arange(2 * 2 * 3 * 8, dtype=jnp.float32).reshape(2, 2, 3, 8)
  y = models.depth_to_space(x, 2)
  assert y.shape == (2, 4, 6, 2)
  np.testing.assert_array_equal(y[0, 1, 0], x[0, 0, 0, 4:6])  # row offset 1, col offset 0


def test_resize_to():
  x = jnp.ones((1, 8, 8, 2))
  assert models.resize_to(x, (4, 4)).shape == (1, 4, 4, 2)
  assert models.resize_to(x, (16, 16)).shape == (1, 16, 16, 2)
  assert models.resize_to(x, (5, 5)).shape == (1, 5, 5, 2)


@pytest.mark.parametrize("task", ["motion-classes", "next-frame"])
def test_schemes_share_units(task):
  cfg = models.ModelConfig(task=task, num_units=3, width=8, num_classes=8)
  graphs = {s: models.build_graph(cfg, s) for s in models.SCHEMES}
  assert graphs["backprop"].is_chain and graphs["sideways"].is_chain
  assert graphs["sideways_exact"].is_chain  # the exact twin of Sideways: the same chain
  assert graphs["skip_sideways"].has_skips and graphs["skip_exact"].has_skips
  assert graphs["skip_exact"].edges == graphs["skip_sideways"].edges
  # the skip graph's unit 2 reads the frame
  assert (0, 0) in graphs["skip_sideways"].edges[2]
  p_chain = graphs["sideways"].init(jax.random.PRNGKey(0), _frame())
  p_skip = graphs["skip_sideways"].init(jax.random.PRNGKey(0), _frame())
  for k in range(3):
    # the skip graph has the chain's parameters (same shapes) plus projections
    for mod, leaves in p_chain[k].items():
      assert mod in p_skip[k]
      for name, v in leaves.items():
        assert p_skip[k][mod][name].shape == v.shape
  extra = [m for k in range(3) for m in p_skip[k] if m not in p_chain[k]]
  assert extra and all("proj" in m for m in extra)


def test_output_shapes():
  cls = models.build_graph(
    models.ModelConfig("motion-classes", 3, 8, num_classes=5), "skip_sideways"
  )
  p = cls.init(jax.random.PRNGKey(0), _frame())
  video = jnp.asarray(np.random.default_rng(0).random((2, 6, 8, 8, 1)), jnp.float32)
  out, valid = sl.forward(cls, p, video)
  assert out.shape == (2, 6, 5) and valid.shape == (6,)
  pred = models.build_graph(models.ModelConfig("next-frame", 3, 8, channels=1), "sideways")
  p = pred.init(jax.random.PRNGKey(0), _frame())
  out, _ = sl.forward(pred, p, video)
  assert out.shape == video.shape
  assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_bad_config():
  with pytest.raises(ValueError, match="task"):
    models.ModelConfig(task="imagenet")
  with pytest.raises(ValueError, match="span"):
    models.ModelConfig(num_units=3, span=4)
  with pytest.raises(ValueError, match="groups"):
    models.ModelConfig(width=6, groups=4)
  with pytest.raises(ValueError, match="num_units"):
    models.ModelConfig(num_units=1)
  with pytest.raises(ValueError, match="scheme"):
    models.build_graph(models.ModelConfig(), "bogus")
  with pytest.raises(ValueError, match="skip_kernel"):
    models.ModelConfig(skip_kernel=2)
  with pytest.raises(ValueError, match="skip_kernel"):
    models.ModelConfig(skip_kernel=0)
  with pytest.raises(ValueError, match="skips"):
    models.ModelConfig(skips="sparse")


# skips, L, downsample, a chain scheme, a skip scheme, the skip graph's edges, and the skip
# projections of every unit (one per extra input)
SKIP_GRAPHS = {
  "dense": (
    4,
    (2,),
    "sideways",
    "skip_sideways",
    {
      1: [(0, 0)],
      2: [(1, 0), (0, 0)],
      3: [(2, 0), (1, 0), (0, 0)],
      4: [(3, 0), (2, 0), (1, 0), (0, 0)],
    },
    [0, 1, 2, 3],
    6,
  ),
  # span skips, plus an edge from every unit 1..L-2 into the last unit
  "span_head": (
    5,
    (3,),
    "backprop",
    "skip_exact",
    {
      1: [(0, 0)],
      2: [(1, 0), (0, 0)],
      3: [(2, 0), (1, 0)],
      4: [(3, 0), (2, 0)],
      5: [(4, 0), (3, 0), (2, 0), (1, 0)],
    },
    [0, 1, 1, 1, 3],
    8,
  ),
}


@pytest.mark.parametrize("skips", sorted(SKIP_GRAPHS))
@pytest.mark.parametrize("task", ["motion-classes", "next-frame"])
def test_skip_kinds(task, skips):
  L, downsample, chain_scheme, skip_scheme, edges, projections, T = SKIP_GRAPHS[skips]
  cfg = models.ModelConfig(
    task=task, num_units=L, width=8, num_classes=8, skips=skips, downsample=downsample
  )
  assert models.edges_of(cfg, chain_scheme) == sl.graph.chain_edges(L)
  g = models.build_graph(cfg, skip_scheme)
  assert {k: list(e) for k, e in g.edges.items()} == edges
  p = g.init(jax.random.PRNGKey(0), _frame())
  video = jnp.asarray(np.random.default_rng(0).random((2, T, 8, 8, 1)), jnp.float32)
  out, valid = sl.forward(g, p, video)
  assert bool(jnp.all(jnp.isfinite(out))) and valid[-1]
  assert [sum("proj" in m for m in pk) for pk in p] == projections


def test_merge_extras_kernel():
  """A k×k skip projection is ``Conv`` of the resized extra input; 1×1 is a per-pixel linear."""
  rng = np.random.default_rng(2)
  h = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
  for kernel in (1, 3):
    f = hk.without_apply_rng(hk.transform(lambda h, x: models.merge_extras(h, [x], kernel=kernel)))
    p = f.init(jax.random.PRNGKey(0), h, x)
    ((mod, leaves),) = p.items()
    xr = models.resize_to(x, (4, 4))
    if kernel == 1:
      assert leaves["w"].shape == (2, 3)
      ref = h + xr @ leaves["w"] + leaves["b"]
    else:
      assert leaves["w"].shape == (3, 3, 2, 3)
      ref = (
        h
        + lax.conv_general_dilated(
          xr, leaves["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + leaves["b"]
      )
    np.testing.assert_allclose(f.apply(p, h, x), ref, atol=1e-5)


@pytest.mark.parametrize("task", ["motion-classes", "next-frame"])
def test_skip_kernel_only_changes_projections(task):
  cfg1 = models.ModelConfig(task=task, num_units=3, width=8, num_classes=8)
  cfg3 = models.ModelConfig(task=task, num_units=3, width=8, num_classes=8, skip_kernel=3)
  p1 = models.build_graph(cfg1, "skip_sideways").init(jax.random.PRNGKey(0), _frame())
  p3 = models.build_graph(cfg3, "skip_sideways").init(jax.random.PRNGKey(0), _frame())
  widened = 0
  for a, b in zip(p1, p3):
    assert set(a) == set(b)
    for mod in a:
      for name in a[mod]:
        old, new = a[mod][name].shape, b[mod][name].shape
        if "proj" in mod and name == "w" and len(new) == 4:
          assert new == (3, 3) + old  # the 1x1 (C_in, C_out) became 3x3
          widened += 1
        else:  # units' own layers and the head's pooled skips
          assert new == old
  assert widened >= 1
  # the chain graph has no projections, so skip_kernel does not change it
  c1 = models.build_graph(cfg1, "sideways").init(jax.random.PRNGKey(0), _frame())
  c3 = models.build_graph(cfg3, "sideways").init(jax.random.PRNGKey(0), _frame())
  jax.tree_util.tree_map(np.testing.assert_array_equal, c1, c3)


def test_schemes_are_graph_method_pairs_with_exact_twins():
  assert models.SCHEMES["sideways_exact"] == ("chain", "pipelined_exact")
  assert models.SCHEMES["skip_exact"] == ("skip", "pipelined_exact")
  for approx, exact in models.EXACT_TWIN.items():
    assert models.graph_of(approx) == models.graph_of(exact)
    assert models.method_of(approx) == "sideways" and models.method_of(exact) == "pipelined_exact"


def test_a_method_name_is_not_a_scheme_name():
  # "pipelined_exact" names a gradient method (sl.METHODS); the schemes that use it are the
  # exact twins, so the method's name is refused as a scheme
  with pytest.raises(ValueError, match="sideways_exact"):
    models.check_scheme("pipelined_exact")
  with pytest.raises(ValueError, match="scheme must be one of"):
    models.check_scheme("exact")


# -- reversible units ---------------------------------------------------------------------------


def test_coupling_inverse_of_forward_is_the_identity_float64():
  """``f^{-1}(f(x)) = x`` and ``f(f^{-1}(y)) = y`` to float64 round-off, shapes kept."""
  with jax.enable_x64(True):
    unit = models.reversible_unit(groups=2)
    f, inv = hk.transform(unit), hk.transform(unit.inverse)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 6, 6, 8)), jnp.float64)
    p = f.init(jax.random.PRNGKey(0), [x])
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p)
    y = f.apply(p, None, [x])
    assert y.shape == x.shape and y.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(y - x))) > 1e-2  # not the identity itself
    assert float(jnp.max(jnp.abs(inv.apply(p, None, y) - x))) < 1e-10
    assert float(jnp.max(jnp.abs(f.apply(p, None, [inv.apply(p, None, x)]) - x))) < 1e-10
    # F and G are used: the coupling has both residual convolutions' parameters
    assert {m.split("/")[-1] for m in p} == {"f_conv", "f_norm", "g_conv", "g_norm"}


def test_coupling_refuses_odd_channels_and_several_inputs():
  unit = models.reversible_unit(groups=2)
  x = jnp.zeros((1, 4, 4, 6))  # half = 3 channels, not divisible by 2 groups
  with pytest.raises(ValueError, match="channels"):
    hk.transform(unit).init(jax.random.PRNGKey(0), [x])
  with pytest.raises(ValueError, match="one input"):
    hk.transform(unit).init(jax.random.PRNGKey(0), [jnp.zeros((1, 4, 4, 4))] * 2)


def test_reversible_chain_has_ordinary_ends_and_reversible_middle():
  cfg = models.ModelConfig("digits", num_units=4, width=8, num_classes=10, groups=2)
  g = models.reversible_chain(cfg)
  plain = models.build_graph(cfg, "sideways")
  assert g.is_chain and g.reversible_units == (2, 3) and plain.reversible_units == ()
  p, q = g.init(jax.random.PRNGKey(0), _frame(16)), plain.init(jax.random.PRNGKey(0), _frame(16))
  for k in (0, 3):  # the shape-changing first unit and the head are the chain's own
    jax.tree_util.tree_map(np.testing.assert_array_equal, p[k], q[k])
  frame = _frame(16)
  h1 = g.apply_unit(1, p[0], [frame])
  assert h1.shape == (2, 8, 8, 8)
  h2 = g.apply_unit(2, p[1], [h1])
  assert h2.shape == h1.shape
  np.testing.assert_allclose(g.invert_unit(2, p[1], h2), h1, atol=1e-5)
  with pytest.raises(ValueError, match="unit 1 has no inverse"):
    g.invert_unit(1, p[0], h1)
  with pytest.raises(ValueError, match="downsample"):
    models.reversible_classifier_units(4, 8, downsample=(2,))
  with pytest.raises(ValueError, match="classification"):
    models.reversible_chain(models.ModelConfig("next-frame"))
