"""Alignment metrics, per-tick alignment, sweeps (with the "must show" trends) and the cache."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sideways_lab as sl
from sideways_lab import analysis as an
from sideways_lab import training
from sideways_lab.analysis import sweeps
from sideways_lab.models import ModelConfig, build_graph
from sideways_lab.tasks import TaskConfig, make_task, mse, shift_targets

# A small deterministic configuration shared by the sweep tests (one compiled function).
CFG = dict(num_units=4, size=(16, 16), batch_size=2, num_frames=8, seeds=4, width=32, cache=False)


def _digits(batch_size, num_frames, size, speed, seed):
  """(B, T, H, W, 1) moving digits of the next-frame task (``sl.tasks``)."""
  task = make_task(TaskConfig(task="next-frame", num_frames=num_frames, size=size, speed=speed))
  return task.batch(batch_size, seed)[0]


def _next_frame(video):
  """Targets ``y^t = x_{t+1}`` and the mask of the next-frame task (the last tick masked)."""
  T = video.shape[1]
  task = make_task(TaskConfig(task="next-frame", num_frames=T, size=video.shape[2:4]))
  return shift_targets(video, 1), task.mask


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

  other = _tree([-2.0, -4.0, 6.0], [0.0, 3.0])  # unit 1: -2x; unit 2: orthogonal, 3x norm
  al = an.alignment(other, g)
  np.testing.assert_allclose(al.per_unit.cosine, [-1, 0], atol=1e-6)
  np.testing.assert_allclose(al.per_unit.angle_deg, [180, 90], atol=1e-3)
  np.testing.assert_allclose(al.per_unit.norm_ratio, [2, 3], rtol=1e-6)
  np.testing.assert_allclose(al.per_unit.rel_error, [3, math.sqrt(10)], rtol=1e-6)
  np.testing.assert_allclose(al.per_unit.sign_agreement, [0, 0])
  # overall: all parameters concatenated
  a = np.array([-2, -4, 6, 0, 3.0])
  b = np.array([1, 2, -3, 1, 0.0])
  np.testing.assert_allclose(
    al.overall.cosine, a @ b / np.linalg.norm(a) / np.linalg.norm(b), rtol=1e-6
  )
  rows = al.to_rows(speed=1)
  assert [r["unit"] for r in rows] == [1, 2, "all"] and rows[0]["speed"] == 1


def test_metrics_zero_and_errors():
  z = _tree([0.0, 0.0], [0.0])
  al = an.alignment(z, z)  # a zero gradient has no direction: cosine and angle are NaN
  assert np.isnan(np.asarray(al.per_unit.cosine)).all()
  assert np.isnan(np.asarray(al.per_unit.angle_deg)).all()
  np.testing.assert_allclose(al.per_unit.norm_ratio, [1, 1])
  al = an.alignment(_tree([1.0, 0.0], [1.0]), z)
  assert np.isinf(np.asarray(al.per_unit.norm_ratio)).all()
  assert np.isnan(np.asarray(al.per_unit.cosine)).all()
  al = an.alignment(z, _tree([1.0, 0.0], [1.0]))
  assert np.isnan(np.asarray(al.per_unit.cosine)).all()
  np.testing.assert_allclose(al.per_unit.rel_error, [1, 1])
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
  graph = build_graph(ModelConfig(task="next-frame", num_units=L, width=8), "sideways")
  video = _digits(2, T, (8, 8), speed=1.0, seed=3)
  params = graph.init(jax.random.PRNGKey(1), video[:, 0])
  return graph, params, video


def test_per_tick_static_video_is_exact(chain_setup):
  graph, params, video = chain_setup
  L, T = graph.num_units, video.shape[1]
  static = np.repeat(video[:, :1], T, axis=1)
  targets, mask = _next_frame(static)
  pt = an.per_tick_alignment(graph, params, static, targets, mse, mask)
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
  targets, mask = _next_frame(video)
  pt = an.per_tick_alignment(graph, params, video, targets, mse, mask)
  h = pt.has_gradient
  # The top unit's gradient is exact at every tick (same tick, same activation).
  np.testing.assert_allclose(pt.metrics.cosine[h[:, -1], -1], 1.0, atol=1e-5)
  # Lower units see stale gradients: not exact.
  assert np.nanmean(pt.metrics.cosine[:, 0]) < 0.999
  # The references add up to the exact gradient (Σ_t r_k^t = ∇_θk J), and the per-tick
  # Sideways gradients add up to Ĝ: so the reference is the right one.
  G, _ = sl.gradients(graph, params, video, targets, mse, "sideways", mask)
  E, _ = sl.gradients(graph, params, video, targets, mse, "pipelined_exact", mask)
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


# Speeds up to 1 pixel per frame: unit 1 of L = 4 sees a gradient 6 frames stale, so a digit
# has moved at most 6 px on 16 px frames. Faster, the alignment of unit 1 saturates and its
# order across speeds is noise (8 seeds: cosine 0.929 at speed 1, 0.934 at speed 2).
SPEEDS = (0.0, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def speed_table():
  return an.sweep_speed(SPEEDS, schemes=("sideways",), **CFG)


def _where(table, **conditions):
  """The rows of ``table`` whose columns equal the given values."""
  keep = np.ones(len(table), bool)
  for k, v in conditions.items():
    keep &= (table[k] == v).to_numpy()
  return table[keep]


def _mean(table, unit, **where):
  m = _where(table, unit=unit, **where)["cosine"].to_numpy()
  assert len(m) == CFG["seeds"]
  return float(m.mean())


def test_zero_speed_equality(speed_table):
  zero = _where(speed_table, speed=0)
  assert len(zero) == CFG["seeds"] * (CFG["num_units"] + 1)
  np.testing.assert_allclose(zero["cosine"], 1.0, atol=1e-5)
  np.testing.assert_allclose(zero["norm_ratio"], 1.0, atol=1e-4)
  np.testing.assert_allclose(zero["rel_error"], 0.0, atol=1e-3)


def test_alignment_falls_with_speed_and_distance_from_top(speed_table):
  t = speed_table
  bottom = [_mean(t, 1, speed=s) for s in SPEEDS]
  assert bottom[0] > bottom[1] > bottom[2] > bottom[3], bottom
  L = CFG["num_units"]
  for s in SPEEDS[1:]:
    by_unit = [_mean(t, k, speed=s) for k in range(1, L + 1)]
    assert by_unit[L - 2] > by_unit[0], (s, by_unit)  # unit L-1 better than unit 1
    assert by_unit[L - 1] == pytest.approx(1.0, abs=1e-5)  # the top is exact
  # Overall too.
  overall = [_mean(t, "all", speed=s) for s in SPEEDS]
  assert overall[0] > overall[1] > overall[2] > overall[3]


def test_sweep_dataframe_columns_and_rows(speed_table):
  t = speed_table
  L, seeds = CFG["num_units"], CFG["seeds"]
  assert list(t.columns) == [
    "scheme",
    "reference",
    "speed",
    "seed",
    "unit",
    "num_units",
    "distance_from_top",
    *an.METRICS,
  ]
  assert len(t) == 4 * seeds * (L + 1)
  # one row per (speed, seed, unit), units 1..L and "all"
  assert not t.duplicated(["scheme", "speed", "seed", "unit"]).any()
  assert (
    t.groupby(["speed", "seed"])["unit"]
    .apply(list)
    .map(lambda u: u == [*range(1, L + 1), "all"])
    .all()
  )
  units = t[t.unit != "all"]
  np.testing.assert_array_equal(units.distance_from_top, L - units.unit.astype(int))
  assert t[t.unit == "all"].distance_from_top.isna().all()
  assert set(t.scheme) == {"sideways"} and set(t.reference) == {"pipelined_exact"}
  assert sorted(set(t.speed)) == list(SPEEDS) and set(t.seed) == set(range(seeds))
  assert t.attrs["sweep"] == "sweep_speed" and t.attrs["model"]["task"] == "next-frame"
  assert t.attrs["from_cache"] is False


def test_per_unit_mean_is_the_pivot_of_a_sweep(speed_table):
  cos = an.per_unit_mean(speed_table, "speed")
  assert list(cos) == ["sideways"] and cos["sideways"].shape == (4, CFG["num_units"])
  for i, s in enumerate(SPEEDS):
    for k in range(1, CFG["num_units"] + 1):
      assert cos["sideways"][i, k - 1] == pytest.approx(_mean(speed_table, k, speed=s))
  # by hand: rows in ascending knob order, columns units 1..L, the "all" rows left out
  t = pd.DataFrame(
    {
      "scheme": ["a"] * 6 + ["b"] * 2,
      "stride": [2, 2, 1, 1, 1, 2, 1, 1],
      "unit": [1, 1, 1, 2, "all", "all", 1, 2],
      "cosine": [0.2, 0.4, 0.9, 0.8, 0.0, 0.0, 0.5, 0.6],
    }
  )
  cos = an.per_unit_mean(t, "stride")
  np.testing.assert_allclose(cos["a"], [[0.9, 0.8], [0.3, np.nan]])
  np.testing.assert_allclose(cos["b"], [[0.5, 0.6]])
  with pytest.raises(KeyError, match="speed"):
    an.per_unit_mean(t, "speed")


def test_alignment_falls_with_stride(speed_table):
  # Four strides x four seeds: the same shapes as the speed sweep, so no new compilation.
  # stride s at speed 0.25 shows the clips of speed 0.25 s: the speeds of SPEEDS up to s = 4
  t = an.sweep_stride((1, 2, 4, 8), speed=0.25, schemes=("sideways",), **CFG)
  bottom = [_mean(t, 1, stride=s) for s in (1, 2, 4)]
  assert bottom[0] > bottom[1] > bottom[2], bottom
  assert set(t.columns) >= {"scheme", "stride", "seed", "unit", "cosine", "angle_deg"}


def test_stride_sweep_on_video_files(tmp_path):
  import imageio.v3 as iio

  clips = _digits(2, 64, (16, 16), speed=0.5, seed=5)
  folders = []
  for b, clip in enumerate(clips):
    folder = tmp_path / f"clip{b}"
    folder.mkdir()
    for i, f in enumerate(clip):
      iio.imwrite(folder / f"{i:03d}.png", np.round(f[..., 0] * 255).astype(np.uint8))
    folders.append(folder)
  t = an.sweep_stride((1, 2, 4, 8), video=folders, schemes=("sideways",), **CFG)
  assert len(t) == 4 * CFG["seeds"] * (CFG["num_units"] + 1)
  assert set(t["stride"]) == {1, 2, 4, 8}
  assert np.isfinite(t["cosine"]).all()
  bottom = [_mean(t, 1, stride=s) for s in (1, 2, 4)]
  assert bottom[0] > bottom[2], bottom
  assert t.attrs["source"] == "video"


def test_skip_sideways_zero_speed_equality():
  frame = _digits(1, 2, (8, 8), speed=0.0, seed=2)[:, :1]
  frame = np.concatenate([frame, frame[:, :, ::-1], 1 - frame], axis=-1)  # colour: C = 3
  video = np.repeat(frame, 6, axis=1)
  rows = an.measure(
    "skip_sideways", video[None], num_units=3, width=8, seeds=[0], conditions=[{"speed": 0}]
  )
  assert len(rows) == 4 and rows["unit"].iloc[-1] == "all"
  assert rows["cosine"].notna().all()
  np.testing.assert_allclose(rows["cosine"], 1.0, atol=1e-4)
  np.testing.assert_allclose(rows["norm_ratio"], 1.0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


def _table(n):
  df = pd.DataFrame.from_records(
    [
      {"x": 1, "unit": 1, "c": 0.5, "d": 3},
      {"x": 1, "unit": 2, "c": math.inf, "d": 2},
      {"x": 2, "unit": "all", "c": math.nan, "d": None},
      {"x": 2, "unit": 1, "c": n, "d": 0},
    ]
  )
  df.attrs = {"what": "test", "size": (16, 16)}
  return df


def test_cache_hits_keys_and_round_trip(tmp_path, monkeypatch):
  calls = []

  def compute():
    calls.append(1)
    return _table(float(len(calls)))

  t1 = an.cached("demo", {"x": 1, "arr": np.arange(3)}, compute, cache=tmp_path)
  t2 = an.cached("demo", {"x": 1, "arr": np.arange(3)}, compute, cache=tmp_path)
  assert len(calls) == 1 and t2.attrs["from_cache"] and not t1.attrs["from_cache"]
  # values, types ("all" beside ints, NaN, inf, None), column order and attrs survive
  pd.testing.assert_frame_equal(t1, t2)
  assert list(t2.unit) == [1, 2, "all", 1] and math.isinf(t2.c[1]) and math.isnan(t2.c[2])
  assert t2.attrs["what"] == "test" and t2.attrs["size"] == [16, 16]
  an.cached("demo", {"x": 1, "arr": np.arange(4)}, compute, cache=tmp_path)
  assert len(calls) == 2
  files = sorted(tmp_path.glob("demo-*.json"))
  assert len(files) == 2 and all(json.loads(f.read_text())["rows"] for f in files)
  assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pickle"))
  monkeypatch.setenv("SIDEWAYS_LAB_CACHE", str(tmp_path / "env"))
  assert an.cache_dir(True) == tmp_path / "env"
  an.cached("demo", {"x": 2}, compute, cache=True)
  assert len(list((tmp_path / "env").glob("demo-*.json"))) == 1
  an.cached("demo", {"x": 2}, compute, cache=False)
  assert len(calls) == 4


@pytest.mark.parametrize("garbage", ["{not json", "", '{"rows": []}', "[1, 2]"])
def test_corrupt_cache_file_is_recomputed(tmp_path, garbage):
  calls = []

  def compute():
    calls.append(1)
    return _table(7.0)

  t1 = an.cached("demo", {"x": 1}, compute, cache=tmp_path)
  (path,) = tmp_path.glob("demo-*.json")
  path.write_text(garbage)
  with pytest.warns(RuntimeWarning, match="unreadable cache file"):
    t2 = an.cached("demo", {"x": 1}, compute, cache=tmp_path)
  assert len(calls) == 2 and not t2.attrs["from_cache"]
  pd.testing.assert_frame_equal(t1, t2)
  t3 = an.cached("demo", {"x": 1}, compute, cache=tmp_path)  # the file was rewritten
  assert len(calls) == 2 and t3.attrs["from_cache"]


def test_sweep_uses_cache(tmp_path, speed_table):
  kw = dict(CFG, cache=tmp_path)  # the shapes of the speed sweep: no new compilation
  t1 = an.sweep_speed(SPEEDS, schemes=("sideways",), **kw)
  t2 = an.sweep_speed(SPEEDS, schemes=("sideways",), **kw)
  assert not t1.attrs["from_cache"] and t2.attrs["from_cache"]
  pd.testing.assert_frame_equal(t1, t2)
  pd.testing.assert_frame_equal(t1, speed_table)  # cached or not, the same numbers
  (path,) = tmp_path.glob("sweep_speed-*.json")
  path.write_text(path.read_text()[:100])  # truncated: recomputed, not fatal
  with pytest.warns(RuntimeWarning, match="unreadable"):
    t3 = an.sweep_speed(SPEEDS, schemes=("sideways",), **kw)
  assert not t3.attrs["from_cache"]
  pd.testing.assert_frame_equal(t1, t3)


def test_quick_mode_is_the_experiments_quick_mode(monkeypatch):
  """The sweeps' default sizes follow sl.experiments.is_quick (one home for quick mode)."""
  monkeypatch.setenv("SIDEWAYS_LAB_QUICK", "1")
  assert sweeps._defaults(None) == sweeps._QUICK and sweeps._defaults(False) == sweeps._FULL
  monkeypatch.setenv("SIDEWAYS_LAB_QUICK", "0")
  assert sweeps._defaults(None) == sweeps._FULL
  assert not hasattr(an, "is_quick") and not hasattr(sweeps, "QUICK_ENV")


def test_clips_come_from_the_analysis_stream():
  """Seed s measures on the clips of training.data_seed(s, ANALYSIS_STREAM, 0); the clips of
  two seeds differ."""
  cfg = dict(size=(8, 8), batch_size=1, num_frames=6)
  task = make_task(TaskConfig(task="next-frame", num_frames=6, size=(8, 8), speed=1.0))
  want = task.batch(1, training.data_seed(3, training.ANALYSIS_STREAM, 0))[0]
  np.testing.assert_array_equal(sweeps._digits(cfg, 1.0, 3), want)
  assert not np.array_equal(sweeps._digits(cfg, 1.0, 3), sweeps._digits(cfg, 1.0, 4))


def test_sweep_argument_errors():
  with pytest.raises(ValueError, match="scheme"):
    an.sweep_speed((0.0,), schemes=("nope",), cache=False)
  with pytest.raises(ValueError, match="reference"):
    an.sweep_speed((0.0,), reference="nope", cache=False)
  with pytest.raises(ValueError, match="strides"):
    an.sweep_stride((0,), cache=False)
  with pytest.raises(ValueError, match="clip_lengths"):
    an.sweep_clip_length((3,), num_units=4, cache=False)
  with pytest.raises(ValueError, match="num_units"):
    an.sweep_depth((1, 3), num_frames=8, cache=False)
  with pytest.raises(ValueError, match="speed"):
    an.sweep_stride((1, 2), video=np.zeros((20, 8, 8, 1)), speed=1.0, cache=False)
  with pytest.raises(ValueError, match="video"):
    an.sweep_stride((1, 2), video=np.zeros((8, 8, 1)), cache=False)


# ---------------------------------------------------------------------------------------------
# A stash's distance to the exact gradient
# ---------------------------------------------------------------------------------------------


def test_stash_alignment_float32_is_exact_and_compressed_is_close():
  cfg = training.default_config("digits", "sideways", quick=True, data=dict(speed=4.0))
  tr = training.Trainer(cfg)
  params, _ = tr.init()
  video, targets, _ = tr.batch(0)
  run = lambda stash: an.stash_alignment(
    tr.graph, params, video, targets, tr.task.loss_fn, stash, tr.task.mask
  )
  S = sl.schedule.Stash
  exact = run(S("full", dtype="float32"))
  np.testing.assert_array_equal(exact.per_unit.rel_error, 0.0)
  np.testing.assert_allclose(exact.per_unit.cosine, 1.0, atol=1e-6)
  for dtype in ("bfloat16", "int8"):
    al = run(S("full", dtype=dtype))
    rel, cos = np.asarray(al.per_unit.rel_error), np.asarray(al.per_unit.cosine)
    assert rel[-1] == 0.0  # the top unit stashes nothing
    assert (rel[:-1] > 0).all() and (rel < 0.05).all() and (cos > 0.998).all(), (dtype, rel)
  sideways = run(0)
  assert (np.asarray(sideways.per_unit.rel_error)[:-1] > 0.05).all()


def test_sweep_stash_rows():
  df = sweeps.sweep_stash(
    ("0", "4-0"), dtypes=("float32", "int8"), seeds=1, quick=True, cache=False
  )
  L = training.QUICK["model"]["num_units"]
  assert len(df) == 2 * 2 * (L + 1)
  assert set(df.columns) >= {"value", "dtype", "seed", "unit", "cosine", "rel_error"}
  zero = df[(df.value == "0") & (df.unit == "all")]
  assert (zero.stash_bytes == 0).all()
  # "4-0" stashes unit 1 only: in int8 its stored rows shrink (its delay line does not), and
  # the gradient moves off the float32 one
  one = df[(df.value == "4-0") & (df.unit == 1)].set_index("dtype")
  assert one.stash_bytes["float32"] > one.stash_bytes["int8"] > 0
  assert one.rel_error["float32"] != one.rel_error["int8"]
