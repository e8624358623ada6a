"""The experiment layer: tasks and anchors, baselines, cached sweeps, alignment, claims."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import sideways_lab as sl
from sideways_lab import experiments as ex
from sideways_lab import graph, provenance, schedule, tasks

# ---------------------------------------------------------------------------------------------
# Data and tasks
# ---------------------------------------------------------------------------------------------


def test_moving_digits_labels_leave_the_video_unchanged():
  plain = sl.data.moving_digits(64, 3, size=(12, 12), seed=5)
  video, labels = sl.data.moving_digits(64, 3, size=(12, 12), seed=5, return_labels=True)
  np.testing.assert_array_equal(plain, video)
  assert labels.shape == (64, 1) and labels.dtype == np.int32
  assert set(np.unique(labels)) <= set(range(10)) and len(np.unique(labels)) >= 8


def test_digit_task_labels_every_tick_with_the_digit():
  t = tasks.make_task(tasks.TaskConfig("digits", num_frames=4, size=(12, 12)))
  video, targets, extras = t.batch(8, seed=1)
  _, labels = sl.data.moving_digits(8, 4, size=(12, 12), seed=1, return_labels=True)
  np.testing.assert_array_equal(extras["labels"], labels[:, 0])
  assert (targets == labels[:, :1]).all() and t.num_classes == 10


def test_frame_stride_on_moving_digits_is_a_faster_speed():
  """Keeping every s-th frame at speed v shows the clips of speed s·v (straight-line motion)."""

  def clips(**kw):
    return tasks.make_task(tasks.TaskConfig("digits", num_frames=5, size=(12, 12), **kw)).batch(
      4, seed=2
    )[0]

  np.testing.assert_allclose(clips(speed=0.5, stride=3), clips(speed=1.5), atol=1e-5)
  assert not np.allclose(clips(speed=0.5, stride=3), clips(speed=0.5))


@pytest.mark.parametrize(
  "edges, mode, newest",
  [
    (graph.chain_edges(4), "pipelined", [-1, -1, -1, 0, 1, 2]),
    (graph.chain_edges(4), "synchronous", [0, 1, 2, 3, 4, 5]),
    (graph.skip_edges(4, 2), "pipelined", [-1, 0, 1, 2, 3, 4]),
  ],
)
def test_newest_frame_at_the_output(edges, mode, newest):
  np.testing.assert_array_equal(tasks.newest_frames(edges, 6, mode), newest)


def test_next_frame_anchors():
  cfg = dict(task="next-frame", num_frames=7, size=(8, 8), horizon=2)
  chain = graph.chain_edges(3)
  t_in = tasks.make_task(tasks.TaskConfig(**cfg), chain, "pipelined")
  video, targets, _ = t_in.batch(2, seed=0)
  np.testing.assert_array_equal(targets[:, :5], video[:, 2:])  # x_{t+h}
  np.testing.assert_array_equal(t_in.mask, [1, 1, 1, 1, 1, 0, 0])
  t_new = tasks.make_task(tasks.TaskConfig(**cfg, anchor="newest"), chain, "pipelined")
  _, targets, _ = t_new.batch(2, seed=0)
  # the chain's output at tick t sees frame t-2: its target is x_{t-2+h} = x_t
  np.testing.assert_array_equal(t_new.mask, [0, 0, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(targets[:, 2:], video[:, 2:])
  with pytest.raises(ValueError, match="edges"):
    tasks.make_task(tasks.TaskConfig(**cfg, anchor="newest"))
  with pytest.raises(ValueError, match="anchor"):
    tasks.TaskConfig(**cfg, anchor="output")


def test_copy_baseline_is_exact_on_a_static_video():
  cfg = ex.run_config("next-frame", "sideways", "speed", 0.0, 0, quick=True, anchor="input")
  rows = {r["scheme"]: r for r in ex.baseline_rows(cfg, "speed")}
  assert rows["copy_newest"]["mse"] == 0.0  # every frame equal: copying is perfect
  assert rows["mean_frame"]["mse"] > 0.0
  moving = ex.run_config("next-frame", "sideways", "speed", 2.0, 0, quick=True, anchor="input")
  assert {r["scheme"]: r for r in ex.baseline_rows(moving, "speed")}["copy_newest"]["mse"] > 0


# ---------------------------------------------------------------------------------------------
# Sweeps: rows, cache, resume, errors (training replaced by a fake where only the bookkeeping
# is under test)
# ---------------------------------------------------------------------------------------------


def _fake_train_run(calls, fail_at=None):
  def fake(config, run_dir, knob, progress=False):
    if fail_at is not None and len(calls) == fail_at:
      raise KeyboardInterrupt
    calls.append((config.scheme, ex._row_ids(config, knob)["value"], config.seed))
    row = ex._row_ids(config, knob)
    row.update(accuracy=0.5 + 0.01 * config.seed, run=run_dir.name)
    return row

  return fake


def test_sweep_rows_cache_and_one_more_value(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls))
  df = ex.sweep(
    "digits", "speed", [0.5, 2], schemes=["backprop", "sideways"], seeds=2, quick=True, out=tmp_path
  )
  assert len(df) == 8 and len(calls) == 8
  assert list(df.columns[: len(ex.ID_COLUMNS)]) == list(ex.ID_COLUMNS)
  assert set(df.scheme) == {"backprop", "sideways"} and set(df.seed) == {0, 1}
  pd.testing.assert_frame_equal(ex.read_results(tmp_path), df, check_dtype=False)
  df2 = ex.sweep(
    "digits",
    "speed",
    [0.5, 2, 4],
    schemes=["backprop", "sideways"],
    seeds=2,
    quick=True,
    out=tmp_path,
  )
  assert len(df2) == 12 and len(calls) == 12  # only the new value trained
  assert sorted(c[1] for c in calls[8:]) == [4.0] * 4


def test_sweep_more_seeds_trains_only_the_new_ones(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls))
  args = dict(schemes=["backprop", "sideways"], quick=True, runs=tmp_path / "runs")
  ex.sweep("digits", "speed", [0.5], seeds=2, out=tmp_path / "a", **args)
  df = ex.sweep("digits", "speed", [0.5], seeds=(2, 3), out=tmp_path / "b", **args)
  assert len(calls) == 4 + 4 and set(df.seed) == {2, 3}
  five = ex.sweep("digits", "speed", [0.5], seeds=4, out=tmp_path / "c", **args)
  assert len(calls) == 8 and sorted(set(five.seed)) == [0, 1, 2, 3]  # the same runs


def test_interrupted_sweep_loses_no_finished_run(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls, fail_at=3))
  with pytest.raises(KeyboardInterrupt):
    ex.sweep("digits", "stride", "1,2", schemes=["sideways"], seeds=2, quick=True, out=tmp_path)
  assert len(ex.read_results(tmp_path)) == 3
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls))
  df = ex.sweep("digits", "stride", "1,2", schemes=["sideways"], seeds=2, quick=True, out=tmp_path)
  assert len(df) == 4 and len(calls) == 4  # 3 before, 1 after the restart


def _package_copy(tmp_path, monkeypatch):
  """A copy of the package whose sources the code identity hashes (sweeps see its edits)."""
  package = tmp_path / "package" / "sideways_lab"
  shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
  monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
  provenance.code_identity(refresh=True)
  return package


def _edit(path, old, new):
  text = path.read_text()
  assert text.count(old) == 1, old
  path.write_text(text.replace(old, new))
  return provenance.code_identity(refresh=True)["source"]


def test_a_sweep_retrains_the_runs_of_other_code_and_reuses_them_when_asked(tmp_path, monkeypatch):
  package = _package_copy(tmp_path, monkeypatch)
  calls, lines = [], []
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls))
  args = dict(schemes=["backprop", "sideways"], seeds=1, quick=True, out=tmp_path / "out")
  df = ex.sweep("digits", "speed", [1.0], **args)
  code0 = provenance.code_identity()["source"]
  assert len(calls) == 2 and list(df.code) == [code0] * 2 and not df.other_code.any()
  # docs, notebooks and docstrings of the training code do not change what a run computes
  (tmp_path / "package" / "README.md").write_text("rewritten\n")
  assert _edit(package / "training.py", "A config dict without", "A dict without") == code0
  ex.sweep("digits", "speed", [1.0], **args, log=lines.append)
  assert len(calls) == 2 and not lines
  # a change of the training code: the next sweep retrains both runs, and says so
  code1 = _edit(package / "training.py", "import functools\n", "import functools\nX = 1\n")
  df = ex.sweep("digits", "speed", [1.0], **args, log=lines.append)
  assert len(calls) == 4 and code1 != code0 and list(df.code) == [code1] * 2
  assert sum(line.strip().startswith("retraining") and code0 in line for line in lines) == 2
  # asked to reuse runs of other code: nothing trains, the rows say which code made them
  code2 = _edit(package / "engine.py", "import jax\n", "import jax\nY = 2\n")
  lines.clear()
  df = ex.sweep("digits", "speed", [1.0], **args, log=lines.append, reuse_other_code=True)
  assert len(calls) == 4 and list(df.code) == [code1] * 2 and df.other_code.all()
  assert code2 not in set(df.code) and "2 run(s) of other code than" in lines[-1]
  assert all(r in lines[-1] for r in df.run.str.split("/").str[-1])
  back = ex.read_results(tmp_path / "out")
  assert list(back.code) == [code1] * 2 and back.other_code.all()
  # without the flag they are retrained by this code
  df = ex.sweep("digits", "speed", [1.0], **args)
  assert len(calls) == 6 and list(df.code) == [code2] * 2 and not df.other_code.any()


def test_an_interrupted_run_of_other_code_restarts(tmp_path, monkeypatch):
  package = _package_copy(tmp_path, monkeypatch)
  seen, lines = [], []

  def fake(config, run_dir, knob, progress=False):
    seen.append(sorted(p.name for p in run_dir.glob("*")) if run_dir.exists() else [])
    return {**ex._row_ids(config, knob), "accuracy": 0.5, "run": run_dir.name}

  monkeypatch.setattr(ex, "train_run", fake)
  args = dict(schemes=["sideways"], seeds=1, quick=True, out=tmp_path, log=lines.append)
  df = ex.sweep("digits", "speed", [1.0], **args)
  run_dir = tmp_path / df.run[0]
  # the run was interrupted by the old code: checkpoints and config.json, no row
  (run_dir / "row.json").unlink()
  (run_dir / "config.json").write_text(json.dumps({"code": provenance.code_identity()}))
  (run_dir / "ckpt_00000002.npz").write_bytes(b"")
  _edit(package / "models.py", "import haiku as hk\n", "import haiku as hk\nV = 4\n")
  ex.sweep("digits", "speed", [1.0], **args, reuse_other_code=True)
  assert seen[-1] == [] and any(line.strip().startswith("restarting") for line in lines)


def test_the_code_column_is_stable_across_processes(tmp_path):
  script = (
    "import sys\n"
    "from sideways_lab import experiments as ex\n"
    "ex.train_run = lambda c, d, k, progress=False: {**ex._row_ids(c, k), 'run': d.name}\n"
    "df = ex.sweep('digits', 'speed', [1.0], schemes=['backprop'], seeds=1, quick=True,"
    " out=sys.argv[1])\n"
    "print(df.code[0])\n"
  )
  codes = [
    subprocess.run(
      [sys.executable, "-c", script, str(tmp_path / name)],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.split()[-1]
    for name in ("a", "b")
  ]
  assert codes == [provenance.source_hash()] * 2
  assert list(ex.read_results(tmp_path / "a").code) == codes[:1]


def test_results_written_before_the_code_column_read_back(tmp_path):
  old = tmp_path / "results.csv"
  old.write_text("task,scheme,value,seed,accuracy,run\ndigits,backprop,1.0,0,0.5,runs/x\n")
  df = ex.read_results(old)
  assert list(df.code) == [""] and list(df.commit) == [""] and not df.other_code.any()
  versions = ex.code_versions([df, df.assign(code="abc", run="runs/y")])
  assert versions.to_dict("records") == [
    {"code": "", "commit": "", "runs": 1},
    {"code": "abc", "commit": "", "runs": 1},
  ]


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(task="cifar"), "task must be one of"),
    (dict(knob="size"), "knob must be one of"),
    (dict(values=[]), "values must list at least one"),
    (dict(values="1,fast"), "values must be numbers"),
    (dict(values=[1, 1]), "must not repeat"),
    (dict(knob="stride", values=[1.5]), "ints >= 1"),
    (dict(values=[-1]), ">= 0"),
    (dict(schemes=["sidewise"]), "scheme must be one of"),
    (dict(schemes=["copy_newest"]), "exists only for next-frame"),
    (dict(seeds=0), "seeds must be an int >= 1"),
    (dict(seeds=[]), "non-empty sequence"),
    (dict(seeds=[1, 1]), "seeds must be distinct"),
    (dict(seeds=[-1]), "seeds must be an int >= 0"),
    (dict(steps=0), "steps must be an int >= 1"),
    (dict(anchor="later"), "anchor must be one of"),
  ],
)
def test_sweep_bad_input(kw, match, tmp_path):
  args = dict(task="digits", knob="speed", values=[1.0], quick=True, out=tmp_path)
  args.update(kw)
  with pytest.raises(ValueError, match=match):
    ex.sweep(**args)


def test_paired_difference():
  df = pd.DataFrame(
    {
      "scheme": ["a", "a", "b", "b"],
      "value": [1.0] * 4,
      "seed": [0, 1, 0, 1],
      "accuracy": [0.9, 0.7, 0.8, 0.5],
    }
  )
  d = ex.paired_difference(df, "a", "b", "accuracy").iloc[0]
  assert d["mean"] == pytest.approx(0.15) and d["std"] == pytest.approx(np.std([0.1, 0.2], ddof=1))
  with pytest.raises(ValueError, match="no paired runs"):
    ex.paired_difference(df, "a", "c", "accuracy")


# ---------------------------------------------------------------------------------------------
# Real (quick) training: a sweep, and alignment of its checkpoints
# ---------------------------------------------------------------------------------------------


def test_alignment_of_trained_runs_is_exact_on_static_video(tmp_path):
  """On a static video Sideways' estimate is the exact gradient (docs/design.md §5), at
  initialisation and at every checkpoint of training; moving digits break the equality."""
  df = ex.sweep(
    "digits", "speed", [0.0, 4.0], schemes=["skip_sideways"], seeds=1, quick=True, out=tmp_path
  )
  assert df.accuracy.between(0, 1).all() and (df.train_time_s > 0).all()
  al = ex.alignment_along_training(
    tmp_path, single_clips=1, num_clips=1
  )  # one clip shape: one compile
  assert set(al.kind) == {"clip", "expected"} and set(al.scheme) == {"skip_sideways"}
  assert sorted(al.step.unique())[0] == 0 and al.step.nunique() > 2  # init + checkpoints
  static, moving = al[al.value == 0.0], al[al.value == 4.0]
  np.testing.assert_allclose(static.cosine, 1.0, atol=1e-4)
  assert (moving.cosine < 0.9999).any()


def test_cli_sweep_writes_results(tmp_path, capsys):
  assert (
    sl.cli.main(
      [
        "sweep",
        "--task",
        "next-frame",
        "--knob",
        "speed",
        "--values",
        "1",
        "--schemes",
        "sideways,copy_newest",
        "--seeds",
        "1",
        "--quick",
        "--no-progress",
        "--out",
        str(tmp_path),
      ]
    )
    == 0
  )
  df = ex.read_results(tmp_path)
  assert set(df.scheme) == {"sideways", "copy_newest"}
  assert {"mse", "psnr", "ssim"} <= set(df.columns) and (df.anchor == "newest").all()
  assert "mse (mean over 1 seeds)" in capsys.readouterr().out
  assert (
    sl.cli.main(
      ["sweep", "--task", "digits", "--knob", "speed", "--values", "x", "--out", str(tmp_path)]
    )
    == 2
  )
  assert "values must be numbers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Shared runs: the stride of moving digits is a speed; the full stash is the exact twin
# ---------------------------------------------------------------------------------------------


def test_stride_and_full_stash_share_the_runs_they_equal(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(ex, "train_run", _fake_train_run(calls))
  runs = tmp_path / "runs"
  speed = ex.sweep(
    "digits",
    "speed",
    [0.5, 1.0],
    schemes=["sideways", "sideways_exact"],
    seeds=1,
    quick=True,
    out=tmp_path / "speed",
    runs=runs,
  )
  stride = ex.sweep(
    "digits",
    "stride",
    [1, 2],
    schemes=["sideways", "sideways_exact"],
    seeds=1,
    quick=True,
    out=tmp_path / "stride",
    runs=runs,
    overrides=dict(data=dict(speed=0.5)),
  )
  assert len(calls) == 4  # stride s at 0.5 px/frame is speed 0.5·s: nothing new trained
  assert list(stride.value) == [1, 1, 2, 2] and list(stride.run) == list(speed.run)
  stash = ex.sweep(
    "digits",
    "stash",
    "0,full",
    schemes=["sideways"],
    seeds=1,
    quick=True,
    out=tmp_path / "stash",
    runs=runs,
    overrides=dict(data=dict(speed=0.5)),
  )
  assert len(calls) == 4  # stash 0 is Sideways, stash "full" its exact twin (§5)
  assert list(stash.scheme) == ["sideways", "sideways_exact"] and list(stash.value) == ["0", "full"]


def test_stash_values_and_subsets():
  assert ex.check_values("stash", "0, 2,full,6-0-2") == ("0", "2", "full", "6-0-2")
  assert ex.parse_stash("6-0-2") == (6, 0, 2) and ex.parse_stash("3") == 3
  with pytest.raises(ValueError, match="values of stash"):
    ex.check_values("stash", "x")
  subsets = ex.stash_subsets(graph.chain_edges(4))  # exact lags 6, 4, 2
  assert subsets == ("6-0-0", "0-4-0", "0-0-2", "6-4-0", "6-0-2", "0-4-2")
  cfg = ex.run_config("digits", "sideways", "stash", "6-0-2", 0)
  assert cfg.stash == (6, 0, 2) and cfg.scheme == "sideways"
  with pytest.raises(ValueError, match="one depth per unit"):  # the quick network has L = 3
    ex.run_config("digits", "sideways", "stash", "6-0-2", 0, quick=True)


@pytest.mark.parametrize(
  "label, stash",
  [
    ("carry", "carry"),
    ("6-carry-0", (6, "carry", 0)),
    ("6-0-0@int8", schedule.Stash((6, 0, 0), "int8")),
    ("full@int8", schedule.Stash("full", dtype="int8")),
    ("carry@bfloat16", schedule.Stash("carry", "bfloat16")),
  ],
)
def test_stash_labels_with_options_read_back(label, stash):
  assert ex.parse_stash(label) == stash and ex.stash_label(stash) == label
  assert ex.stash_label(ex.parse_stash("6-0-0@float32")) == "6-0-0"  # the default dtype


def test_stash_options_are_runs_of_their_own():
  rev = dict(data=dict(speed=4.0), model=dict(reversible=True))
  int8 = ex.run_config("digits", "sideways", "stash", "full@int8", 0, quick=True)
  assert int8.scheme == "sideways" and int8.stash == schedule.Stash("full", dtype="int8")
  carry = ex.run_config("digits", "sideways", "stash", "carry", 0, quick=True, overrides=rev)
  full = ex.run_config("digits", "sideways", "stash", "full", 0, quick=True, overrides=rev)
  assert (carry.scheme, full.scheme) == ("sideways", "sideways_exact")
  assert carry.model.reversible and full.model.reversible
  assert len({ex.run_key(c) for c in (int8, carry, full)}) == 3
  with pytest.raises(ValueError, match="whole stash"):
    ex.parse_stash("6-full")
  with pytest.raises(ValueError, match="not reversible"):
    ex.run_config("digits", "sideways", "stash", "carry", 0, quick=True)


# ---------------------------------------------------------------------------------------------
# Convergence and learning curves
# ---------------------------------------------------------------------------------------------


def test_convergence_rule_on_curves_it_must_tell_apart():
  rng = np.random.default_rng(0)
  steps = np.arange(10, 1001, 10)
  falling = 2.3 * np.exp(-steps / 400) + 0.05
  noisy_flat = 0.3 + 0.03 * rng.standard_normal(steps.size)
  rising = 0.3 + 0.0004 * steps
  for curve, converged in ((falling, False), (noisy_flat, True), (rising, False)):
    change, t = ex.plateau_trend(steps, curve)
    assert ex.has_converged(change, t) == converged, (change, t)
  change, _ = ex.plateau_trend(steps, falling)
  assert change > 0.05  # still falling: positive change
  late = np.arange(10, 6001, 60)
  assert ex.has_converged(*ex.plateau_trend(late, 2.3 * np.exp(-late / 400) + 0.05))
  assert not ex.has_converged(*ex.plateau_trend([1, 2], [1.0, 0.5]))  # too short to judge


def test_a_short_run_is_flagged_and_its_curve_recorded(tmp_path, monkeypatch):
  package = _package_copy(tmp_path / "code", monkeypatch)
  args = dict(
    schemes=["backprop"],
    seeds=1,
    steps=40,
    quick=True,
    out=tmp_path / "out",
    overrides=dict(learning_rate=3e-3, batch_size=4),
  )
  # a deliberately short run: its loss still falls steeply over the last fifth
  df = ex.sweep("next-frame", "speed", [0.5], **args)
  row = df.iloc[0]
  assert not row.converged and row.plateau_change > ex.PLATEAU_TOLERANCE, row
  curves = ex.read_curves(tmp_path / "out")
  assert list(curves.columns) == list(ex.ID_COLUMNS) + list(ex.CURVE_COLUMNS)
  train = curves[curves.split == "train"]
  assert len(train) == 40 and train.step.is_monotonic_increasing
  test = curves[(curves.split == "test") & (curves.metric == "mse")]
  assert list(test.step) == [5 * i for i in range(1, 9)]  # every eighth of the run and the end
  # the run's config.json records the code that trained it; after a change of the training
  # code the next sweep trains it again from step 0 (not from its last checkpoint)
  run_dir = tmp_path / "out" / row.run
  config = json.loads((run_dir / "config.json").read_text())
  assert config["code"] == provenance.code_identity() and config["code"]["source"] == row.code
  assert sl.training.TrainConfig.from_dict(config).steps == 40
  last = max(run_dir.glob("ckpt_*.npz")).stat().st_mtime_ns
  code = _edit(package / "tasks.py", "import jax\n", "import jax\nU = 5\n")
  df = ex.sweep("next-frame", "speed", [0.5], **args)
  assert df.code[0] == code != row.code and df.train_time_s[0] > 0
  assert json.loads((run_dir / "config.json").read_text())["code"]["source"] == code
  assert max(run_dir.glob("ckpt_*.npz")).stat().st_mtime_ns > last
  train = ex.read_curves(tmp_path / "out").query("split == 'train'")
  assert len(train) == 40 and train.step.is_monotonic_increasing


def test_compare_is_a_one_seed_sweep(tmp_path, capsys):
  df = ex.compare("digits", tmp_path, quick=True)
  assert set(df.scheme) == set(sl.models.SCHEMES) and set(df.seed) == {0}
  assert (tmp_path / "results.csv").exists() and (tmp_path / "curves.csv").exists()
  assert sl.cli.main(["compare", "--task", "digits", "--quick", "--out", str(tmp_path)]) == 0
  assert "accuracy (mean over 1 seeds)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Next-frame skill and predictions aligned by target frame
# ---------------------------------------------------------------------------------------------


def _next_frame_rows(mse: dict, copy: dict, seeds=(0, 1), horizon=1) -> pd.DataFrame:
  """Rows like a next-frame sweep's: ``mse[scheme]`` and ``copy[(graph, mode)]``."""
  rows = []
  for seed in seeds:
    for s, m in mse.items():
      graph, method = sl.models.SCHEMES[s]
      rows.append(dict(scheme=s, graph=graph, method=method, mse=m + 0.001 * seed))
    for (graph, mode), m in copy.items():
      rows.append(dict(scheme="copy_newest", graph=graph, method=mode, mse=m + 0.001 * seed))
      rows.append(dict(scheme="mean_frame", graph=graph, method=mode, mse=0.05))
    for r in rows[-len(mse) - 2 * len(copy) :]:
      r.update(task="next-frame", knob="speed", value=1.0, seed=seed, anchor="newest")
      r.update(horizon=horizon)
  return pd.DataFrame(rows)


def test_skill_is_against_copying_on_the_same_pipeline(tmp_path):
  copy = {
    ("chain", "synchronous"): 0.010,
    ("chain", "pipelined"): 0.020,
    ("skip", "pipelined"): 0.004,
  }
  df = _next_frame_rows(dict(backprop=0.008, sideways=0.010, skip_sideways=0.006), copy, seeds=(0,))
  skill = ex.add_skill(df).set_index(["scheme", "graph", "method"]).skill
  assert skill["backprop", "chain", "backprop"] == pytest.approx(1 - 0.008 / 0.010)
  assert skill["sideways", "chain", "sideways"] == pytest.approx(1 - 0.010 / 0.020)
  assert skill["skip_sideways", "skip", "sideways"] == pytest.approx(1 - 0.006 / 0.004)  # < 0
  assert (ex.add_skill(df).query("scheme == 'copy_newest'").skill == 0).all()
  # another seed or horizon is another copy baseline; no baseline at all gives NaN
  other = _next_frame_rows(dict(backprop=0.008), copy, seeds=(1,), horizon=2)
  both = ex.add_skill(pd.concat([df, other]))
  assert both.query("seed == 1 and scheme == 'backprop'").skill.iloc[0] == pytest.approx(
    1 - 0.009 / 0.011
  )
  alone = ex.add_skill(df[df.scheme != "copy_newest"])
  assert alone.skill.isna().all()
  assert "skill" not in ex.add_skill(df.drop(columns="mse")).columns
  # results written before the column existed get it back
  df.to_csv(tmp_path / "results.csv", index=False)
  np.testing.assert_allclose(ex.read_results(tmp_path).skill, ex.add_skill(df).skill)


def test_next_frame_table_keeps_one_copy_baseline_per_pipeline():
  copy = {
    ("chain", "synchronous"): 0.010,
    ("chain", "pipelined"): 0.020,
    ("skip", "pipelined"): 0.004,
  }
  df = _next_frame_rows(dict(backprop=0.008, sideways=0.010), copy)
  table = ex.next_frame_table(df)
  assert {"copy_newest (BP)", "copy_newest (chain)", "copy_newest (skip)"} <= set(table.index)
  assert table.loc["copy_newest (skip)", "mse, 1 px/frame, h=1"] == pytest.approx(0.0045)
  assert table.loc["sideways", "skill, 1 px/frame, h=1"] == pytest.approx(
    np.mean([1 - 0.010 / 0.020, 1 - 0.011 / 0.021])
  )


def test_frames_by_target_lines_up_the_frame_each_scheme_predicts(tmp_path):
  df = ex.sweep(
    "next-frame",
    "speed",
    [1.0],
    schemes=["backprop", "sideways", "skip_sideways"],
    seeds=1,
    quick=True,
    anchor="newest",
    out=tmp_path,
    overrides=dict(data=dict(horizon=2)),
  )
  assert (df.horizon == 2).all() and "skill" in df.columns
  runs = {s: tmp_path / r for s, r in ex.runs_at(df, 1.0).items()}
  al = ex.frames_by_target(runs, num_clips=2)
  video, _, preds, ticks, index = ex.predictions(runs, num_clips=2)
  J = al["targets"]
  assert al["horizon"] == 2 and al["anchor"] == "newest" and len(J) >= 1
  np.testing.assert_array_equal(al["truth"], video[:, J])
  np.testing.assert_array_equal(al["copy_newest"], video[:, J - 2])  # the newest frame seen
  for s, p in al["predictions"].items():
    for i, j in enumerate(J):
      t = np.flatnonzero(ticks[s] & (index[s] == j))
      assert len(t) and index[s][t[-1]] == j
      np.testing.assert_array_equal(p[:, i], preds[s][:, t[-1]])
  # the pipelines target different frames at the same tick: that is why this exists
  assert any((index["backprop"] != index[s])[ticks["backprop"] & ticks[s]].any() for s in runs)
  assert len(ex.frames_by_target(runs, count=1)["targets"]) == 1
  with pytest.raises(ValueError, match="runs is empty"):
    ex.frames_by_target({})
