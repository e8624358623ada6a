"""Alignment metrics, per-tick alignment, sweeps (with the "must show" trends) and the cache."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sideways_lab as sl
from sideways_lab import analysis as an
from sideways_lab.analysis import toy

# A small deterministic configuration shared by the sweep tests (one compiled function).
CFG = dict(num_units=4, size=(16, 16), batch_size=2, num_frames=8, seeds=4, width=32,
           model="mlp", cache=False)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def _tree(a, b):
  return ({"w": jnp.asarray(a, jnp.float32)}, {"w": jnp.asarray(b, jnp.float32)})


def test_metrics_of_known_vectors():
  g = _tree([1.0, 2.0, -3.0], [1.0, 0.0])
  al = an.alignment(g, g)
  np.testing.assert_allclose(al.per_unit.cosine, [1, 1], atol=1e-6)
  np.testing.assert_allclose(al.per_unit.angle_deg, [0, 0], atol=0.1)
  np.testing.assert_allclose(al.per_unit.norm_ratio, [1, 1])
  np.testing.assert_allclose(al.per_unit.rel_error, [0, 0])
  np.testing.assert_allclose(al.per_unit.sign_agreement, [1, 1])

  other = _tree([-2.0, -4.0, 6.0], [0.0, 3.0])     # unit 1: -2x; unit 2: orthogonal, 3x norm
  al = an.alignment(other, g)
  np.testing.assert_allclose(al.per_unit.cosine, [-1, 0], atol=1e-6)
  np.testing.assert_allclose(al.per_unit.angle_deg, [180, 90], atol=1e-3)
  np.testing.assert_allclose(al.per_unit.norm_ratio, [2, 3], rtol=1e-6)
  np.testing.assert_allclose(al.per_unit.rel_error, [3, math.sqrt(10)], rtol=1e-6)
  np.testing.assert_allclose(al.per_unit.sign_agreement, [0, 0])
  # overall: all parameters concatenated
  a = np.array([-2, -4, 6, 0, 3.0]); b = np.array([1, 2, -3, 1, 0.0])
  np.testing.assert_allclose(al.overall.cosine, a @ b / np.linalg.norm(a) / np.linalg.norm(b),
                             rtol=1e-6)
  rows = al.to_rows(speed=1)
  assert [r["unit"] for r in rows] == [1, 2, "all"] and rows[0]["speed"] == 1


def test_metrics_zero_and_errors():
  z = _tree([0.0, 0.0], [0.0])
  al = an.alignment(z, z)
  np.testing.assert_allclose(al.per_unit.cosine, [1, 1])
  np.testing.assert_allclose(al.per_unit.norm_ratio, [1, 1])
  al = an.alignment(_tree([1.0, 0.0], [1.0]), z)
  assert np.isinf(np.asarray(al.per_unit.norm_ratio)).all()
  np.testing.assert_allclose(al.per_unit.cosine, [0, 0])
  with pytest.raises(ValueError, match="same structure"):
    an.alignment(_tree([1.0], [1.0]), ({"w": jnp.ones(1)},))


def test_alignment_is_vmappable():
  g = jax.vmap(lambda s: _tree(s * jnp.ones(3), -s * jnp.ones(2)))(jnp.arange(1.0, 4.0))
  r = _tree(jnp.ones(3), jnp.ones(2))
  al = jax.vmap(an.alignment, in_axes=(0, None))(g, r)
  assert al.per_unit.cosine.shape == (3, 2)
  np.testing.assert_allclose(al.per_unit.norm_ratio[:, 0], [1, 2, 3], rtol=1e-6)
  np.testing.assert_allclose(al.per_unit.cosine[:, 1], [-1, -1, -1], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Per-tick alignment of a chain
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain_setup():
  L, T = 3, 7
  graph = toy.graph_for("sideways", L, 8, (8, 8, 1))
  video = toy.digits_video(2, T, (8, 8), speed=1.0, seed=3)
  params = graph.init(jax.random.PRNGKey(1), video[:, 0])
  return graph, params, video


def test_per_tick_static_video_is_exact(chain_setup):
  graph, params, video = chain_setup
  L, T = graph.num_units, video.shape[1]
  static = np.repeat(video[:, :1], T, axis=1)
  targets, mask = toy.next_frame_task(static)
  pt = an.per_tick_alignment(graph, params, static, targets, toy.mse, mask)
  N = T + L - 1
  V = sl.schedule.loss_ticks(graph, T, mask)
  for k in range(1, L + 1):
    for t in range(N):
      s = t - (L - k)
      expect = 0 <= s < T and V[s]
      assert pt.has_gradient[t, k - 1] == expect
      if expect:
        assert pt.source_tick[t, k - 1] == s
        assert pt.mismatch[t, k - 1] == 2 * (L - k)
  cos = pt.metrics.cosine[pt.has_gradient]
  np.testing.assert_allclose(cos, 1.0, atol=1e-5)
  np.testing.assert_allclose(pt.metrics.rel_error[pt.has_gradient], 0.0, atol=1e-4)
  assert np.isnan(pt.metrics.cosine[~pt.has_gradient]).all()


def test_per_tick_moving_video(chain_setup):
  graph, params, video = chain_setup
  L = graph.num_units
  targets, mask = toy.next_frame_task(video)
  pt = an.per_tick_alignment(graph, params, video, targets, toy.mse, mask)
  h = pt.has_gradient
  # The top unit's gradient is exact at every tick (same tick, same activation).
  np.testing.assert_allclose(pt.metrics.cosine[h[:, -1], -1], 1.0, atol=1e-5)
  # Lower units see stale gradients: not exact.
  assert np.nanmean(pt.metrics.cosine[:, 0]) < 0.999
  # The references add up to the exact gradient (Σ_t r_k^t = ∇_θk J), and the per-tick
  # Sideways gradients add up to Ĝ: so the reference is the right one.
  G, _ = sl.gradients(graph, params, video, targets, toy.mse, "sideways", mask)
  E, _ = sl.gradients(graph, params, video, targets, toy.mse, "pipelined_exact", mask)
  total = an.alignment(G, E)
  assert float(total.per_unit.cosine[-1]) == pytest.approx(1.0, abs=1e-5)
  rows = pt.to_rows()
  assert len(rows) == int(h.sum()) and {"tick", "unit", "source_tick", "cosine"} <= set(rows[0])


def test_source_matrix_skip_graph():
  graph = sl.skips([lambda x: x[0]] * 4, span=2)
  M = an.source_matrix(graph, 6)
  src = sl.schedule.gradient_sources(graph, 9)
  V = sl.schedule.loss_ticks(graph, 6)
  for k in range(1, 5):
    for t in range(9):
      assert set(np.flatnonzero(M[k - 1, t])) == {s for s in src[k][t] if s < 6 and V[s]}


# ---------------------------------------------------------------------------------------------
# Sweeps: the "must show" claims
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speed_table():
  return an.sweep_speed((0.0, 0.5, 1.0, 2.0), schemes=("sideways",), **CFG)


def _mean(table, unit, **where):
  m = table.where(unit=unit, **where).column("cosine")
  assert len(m) == CFG["seeds"]
  return float(m.mean())


def test_zero_speed_equality(speed_table):
  zero = speed_table.where(speed=0)
  assert len(zero) == CFG["seeds"] * (CFG["num_units"] + 1)
  np.testing.assert_allclose(zero.column("cosine"), 1.0, atol=1e-5)
  np.testing.assert_allclose(zero.column("norm_ratio"), 1.0, atol=1e-4)
  np.testing.assert_allclose(zero.column("rel_error"), 0.0, atol=1e-3)


def test_alignment_falls_with_speed_and_distance_from_top(speed_table):
  t = speed_table
  bottom = [_mean(t, 1, speed=s) for s in (0, 0.5, 1, 2)]
  assert bottom[0] > bottom[1] > bottom[2] > bottom[3], bottom
  L = CFG["num_units"]
  for s in (0.5, 1, 2):
    by_unit = [_mean(t, k, speed=s) for k in range(1, L + 1)]
    assert by_unit[L - 2] > by_unit[0], (s, by_unit)       # unit L-1 better than unit 1
    assert by_unit[L - 1] == pytest.approx(1.0, abs=1e-5)  # the top is exact
  # Overall too.
  overall = [_mean(t, "all", speed=s) for s in (0, 0.5, 1, 2)]
  assert overall[0] > overall[1] > overall[2] > overall[3]


def test_alignment_falls_with_stride(speed_table):
  # Four strides x four seeds: the same shapes as the speed sweep, so no new compilation.
  t = an.sweep_stride((1, 2, 4, 8), speed=0.5, schemes=("sideways",), **CFG)
  bottom = [_mean(t, 1, stride=s) for s in (1, 2, 4)]
  assert bottom[0] > bottom[1] > bottom[2], bottom
  assert set(t.columns) >= {"scheme", "stride", "seed", "unit", "cosine", "angle_deg"}


def test_stride_sweep_on_video_files(tmp_path):
  import imageio.v3 as iio
  clips = toy.digits_video(2, 64, (16, 16), speed=0.5, seed=5)
  folders = []
  for b, clip in enumerate(clips):
    folder = tmp_path / f"clip{b}"
    folder.mkdir()
    for i, f in enumerate(clip):
      iio.imwrite(folder / f"{i:03d}.png", np.round(f[..., 0] * 255).astype(np.uint8))
    folders.append(folder)
  t = an.sweep_stride((1, 2, 4, 8), video=folders, schemes=("sideways",), **CFG)
  assert len(t) == 4 * CFG["seeds"] * (CFG["num_units"] + 1)
  assert set(t.column("stride")) == {1, 2, 4, 8}
  assert np.isfinite(t.column("cosine")).all()
  bottom = [_mean(t, 1, stride=s) for s in (1, 2, 4)]
  assert bottom[0] > bottom[2], bottom


def test_skip_sideways_zero_speed_equality():
  video = np.repeat(toy.digits_video(1, 1, (8, 8), speed=0.0, seed=2), 6, axis=1)
  rows = an.measure("skip_sideways", video[None], num_units=3, width=8, seeds=[0],
                    conditions=[{"speed": 0}])
  assert len(rows) == 4 and rows[-1]["unit"] == "all"
  np.testing.assert_allclose([r["cosine"] for r in rows], 1.0, atol=1e-4)
  np.testing.assert_allclose([r["norm_ratio"] for r in rows], 1.0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Tables and the cache
# ---------------------------------------------------------------------------------------------

def test_table_roundtrip_and_aggregate(tmp_path):
  t = an.Table([{"x": 1, "unit": 1, "c": 0.5}, {"x": 1, "unit": 1, "c": 1.0},
                {"x": 2, "unit": "all", "c": float("nan")}], {"what": "test"})
  t2 = an.Table.from_json(t.to_json(tmp_path / "t.json"))
  assert t2.rows[:2] == t.rows[:2] and math.isnan(t2.rows[2]["c"]) and t2.meta == t.meta
  p = t.to_csv(tmp_path / "t.csv")
  assert p.read_text().splitlines()[0] == "x,unit,c"
  m = t.mean(["x"], ["c"])
  assert m.rows[0]["c"] == pytest.approx(0.75) and m.rows[0]["n"] == 2
  assert math.isnan(m.rows[1]["c"])
  assert len(t.where(unit="all")) == 1 and len(t.where(x=lambda v: v > 1)) == 1
  with pytest.raises(KeyError):
    t.column("nope")


def test_cache_hits_and_keys(tmp_path, monkeypatch):
  calls = []

  def compute():
    calls.append(1)
    return an.Table([{"a": len(calls)}])

  t1 = an.cached("demo", {"x": 1, "arr": np.arange(3)}, compute, cache=tmp_path)
  t2 = an.cached("demo", {"x": 1, "arr": np.arange(3)}, compute, cache=tmp_path)
  assert len(calls) == 1 and t2.rows == t1.rows and t2.meta["from_cache"]
  an.cached("demo", {"x": 1, "arr": np.arange(4)}, compute, cache=tmp_path)
  assert len(calls) == 2
  files = sorted(tmp_path.glob("demo-*.json"))
  assert len(files) == 2 and json.loads(files[0].read_text())["rows"]
  monkeypatch.setenv("SIDEWAYS_LAB_CACHE", str(tmp_path / "env"))
  assert an.cache_dir(True) == tmp_path / "env"
  an.cached("demo", {"x": 2}, compute, cache=True)
  assert len(list((tmp_path / "env").glob("demo-*.json"))) == 1
  an.cached("demo", {"x": 2}, compute, cache=False)
  assert len(calls) == 4


def test_sweep_uses_cache(tmp_path):
  kw = dict(CFG, cache=tmp_path)    # the shapes of the speed sweep: no new compilation
  t1 = an.sweep_speed((0.0, 0.5, 1.0, 2.0), schemes=("sideways",), **kw)
  t2 = an.sweep_speed((0.0, 0.5, 1.0, 2.0), schemes=("sideways",), **kw)
  assert t2.meta["from_cache"] and t2.rows == t1.rows


def test_quick_env(monkeypatch):
  monkeypatch.setenv("SIDEWAYS_LAB_QUICK", "1")
  assert an.is_quick() and not an.is_quick(False)
  monkeypatch.setenv("SIDEWAYS_LAB_QUICK", "0")
  assert not an.is_quick()


def test_sweep_argument_errors():
  with pytest.raises(ValueError, match="scheme"):
    an.sweep_speed((0.0,), schemes=("nope",), cache=False)
  with pytest.raises(ValueError, match="reference"):
    an.sweep_speed((0.0,), reference="nope", cache=False)
  with pytest.raises(ValueError, match="strides"):
    an.sweep_stride((0,), cache=False)
  with pytest.raises(ValueError, match="clip_lengths"):
    an.sweep_clip_length((3,), num_units=4, cache=False)
