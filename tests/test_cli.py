"""The sideways-lab command line: demo, train/evaluate, compare, bad input."""

import dataclasses
import json

import pandas as pd
import pytest

import sideways_lab as sl
from sideways_lab import checkpoint as ckpt
from sideways_lab import cli


def test_demo_prints_alignment_table(capsys):
  assert cli.main(["demo", "--units", "3", "--frames", "6", "--size", "8"]) == 0
  out = capsys.readouterr().out
  assert "Sideways (chain)" in out and "Skip-Sideways (skips)" in out
  rows = [
    line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()
  ]
  assert [r[0] for r in rows] == ["1", "2", "3"]
  top = [float(x) for x in rows[-1][1:]]
  assert all(abs(c - 1.0) < 1e-4 for c in top)  # the top unit's gradient is exact
  assert all(-1 <= float(x) <= 1 for r in rows for x in r[1:])


def test_format_alignment_table():
  t = cli.format_alignment_table({"sideways": [1.0, 0.5], "skip_sideways": [1.0, 0.25]})
  assert "+0.500" in t and "+0.625" in t and "mean" in t


def test_train_then_evaluate(tmp_path, capsys):
  out = tmp_path / "run"
  args = [
    "train",
    "--task",
    "next-frame",
    "--scheme",
    "skip_sideways",
    "--out",
    str(out),
    "--quick",
    "--steps",
    "2",
    "--num-units",
    "3",
    "--width",
    "4",
    "--no-progress",
  ]
  assert cli.main(args) == 0
  res = json.loads(capsys.readouterr().out)
  assert res["step"] == 2 and "mse" in res
  assert cli.main(["evaluate", str(out), "--clips", "2"]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["scheme"] == "skip_sideways" and ev["step"] == 2 and "ssim" in ev
  # the same command again refuses to overwrite the run
  assert cli.main(args) == 2
  assert "resume" in capsys.readouterr().err
  # --resume with more steps continues from the saved configuration
  assert cli.main(["train", "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
  assert json.loads(capsys.readouterr().out)["step"] == 3


@pytest.mark.parametrize(
  "flag,value,expected",
  [
    ("--steps", "-1", "an integer >= 0"),
    ("--steps", "2.5", "an integer >= 0"),
    ("--batch-size", "0", "a positive integer"),
    ("--learning-rate", "nan", "a finite positive number"),
    ("--learning-rate", "inf", "a finite positive number"),
    ("--learning-rate", "fast", "a finite positive number"),
  ],
)
def test_number_arguments_are_checked(tmp_path, capsys, flag, value, expected):
  with pytest.raises(SystemExit) as e:
    cli.main(
      ["train", "--task", "next-frame", "--scheme", "sideways", "--out", str(tmp_path), flag, value]
    )
  assert e.value.code == 2
  assert f"expected {expected}, got {value!r}" in capsys.readouterr().err
  assert not tmp_path.joinpath("config.json").exists()


def test_bad_input(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["compare", "--task", "imagenet", "--out", str(tmp_path)])
  assert e.value.code == 2
  with pytest.raises(SystemExit):
    cli.main(["train", "--task", "next-frame", "--scheme", "bogus", "--out", str(tmp_path)])
  with pytest.raises(SystemExit):
    cli.main(
      [
        "train",
        "--task",
        "next-frame",
        "--scheme",
        "sideways",
        "--out",
        str(tmp_path),
        "--learning-rate",
        "-1",
      ]
    )
  capsys.readouterr()
  assert (
    cli.main(
      [
        "train",
        "--task",
        "next-frame",
        "--scheme",
        "sideways",
        "--out",
        str(tmp_path / "r"),
        "--quick",
        "--num-frames",
        "2",
      ]
    )
    == 2
  )
  assert "too short" in capsys.readouterr().err
  assert not (tmp_path / "r").exists()
  bad = tmp_path / "ckpt_00000001.npz"
  bad.write_bytes(b"PK\x03\x04 truncated")
  assert cli.main(["evaluate", str(bad)]) == 2
  assert "corrupt or truncated" in capsys.readouterr().err
  assert bad.read_bytes() == b"PK\x03\x04 truncated"


def test_compare_quick_cli(tmp_path, capsys):
  args = ["compare", "--task", "motion-classes", "--out", str(tmp_path), "--quick", "--no-progress"]
  assert cli.main(args) == 0
  df = sl.experiments.read_results(tmp_path)
  assert set(df.scheme) == set(sl.models.SCHEMES) and set(df.seed) == {0}
  assert df.chance.between(0, 1, inclusive="neither").all() and df.accuracy.between(0, 1).all()
  classes = [f"class_{n}" for n in sl.data.MOTION_CLASS_NAMES]
  assert set(classes) <= set(df.columns) and "converged" in df.columns
  out = capsys.readouterr().out
  assert "accuracy (mean over 1 seeds)" in out and "skip_sideways" in out
  assert ckpt.list_checkpoints(tmp_path / df.set_index("scheme").run["skip_sideways"])
  before = (tmp_path / "results.csv").read_bytes()
  assert cli.main(args) == 0  # every run is read back from its row: nothing retrains
  assert (tmp_path / "results.csv").read_bytes() == before


def test_training_flags_come_from_the_config_dataclasses():
  parser = cli.build_parser()
  train = parser._subparsers._group_actions[0].choices["train"]
  actions = {a.dest: a for a in train._actions}
  for flag in cli.TRAIN_FLAGS:
    assert flag.field in {f.name for f in dataclasses.fields(flag.config)}, flag.field
    action = actions[flag.field]
    assert action.option_strings == [flag.option]
    assert action.help == cli.field_help(flag.config, flag.field) + flag.note
    assert action.help and action.default is None
  assert actions["keep"].help == "checkpoints kept"
  assert actions["optimizer"].choices == sl.training.OPTIMIZERS
  with pytest.raises(ValueError, match="does not describe the field 'nope'"):
    cli.field_help(sl.training.TrainConfig, "nope")


def test_given_flags_become_default_config_overrides():
  args = cli.build_parser().parse_args(
    ["train", "--out", "x", "--steps", "3", "--width", "8", "--size", "12", "--speed", "0.5"]
  )
  assert cli.config_overrides(args) == {
    "steps": 3,
    "model": {"width": 8},
    "data": {"size": (12, 12), "speed": 0.5},
  }
  cfg = sl.training.default_config("next-frame", "sideways", **cli.config_overrides(args))
  assert (cfg.steps, cfg.model.width, cfg.data.size, cfg.data.speed) == (3, 8, (12, 12), 0.5)


def test_every_subcommand_is_registered(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  out = capsys.readouterr().out
  assert all(name in out for name in ("demo", "train", "evaluate", "compare", "figures"))


@pytest.mark.parametrize("flag", [[], ["--reuse-other-code"]])
def test_reuse_other_code_reaches_the_sweeps(flag, tmp_path, monkeypatch, capsys):
  seen = []

  def fake_sweep(*args, **kw):
    seen.append(kw["reuse_other_code"])
    return sl.experiments.read_results(results)

  def fake_generate(out, **kw):
    seen.append(kw["reuse_other_code"])
    return {"figures": {}, "total_time_s": 0.0}

  results = tmp_path / "results.csv"
  results.write_text("task,scheme,value,seed,accuracy,run\ndigits,backprop,1.0,0,0.5,runs/x\n")
  monkeypatch.setattr(sl.experiments, "sweep", fake_sweep)
  monkeypatch.setattr(sl.figures, "generate", fake_generate)
  monkeypatch.setattr(
    sl.figures, "run_sweeps", lambda names, **kw: seen.append(kw["reuse_other_code"])
  )
  sweep = ["sweep", "--task", "digits", "--knob", "speed", "--values", "1", "--out", str(tmp_path)]
  assert cli.main(sweep + flag) == 0
  assert cli.main(["figures", "--quick", "--out", str(tmp_path)] + flag) == 0
  assert cli.main(["figures", "--quick", "--sweeps", "digits-speed"] + flag) == 0
  assert seen == [bool(flag)] * 3


def test_stash_options_and_reversible_units_from_the_command_line(tmp_path, monkeypatch):
  p = cli.build_parser()
  args = p.parse_args(
    ["train", "--task", "digits", "--scheme", "sideways", "--out", "x", "--quick"]
    + ["--reversible", "yes", "--stash", "carry"]
  )
  cfg = sl.training.default_config("digits", "sideways", quick=True, **cli.config_overrides(args))
  assert cfg.model.reversible and cfg.stash == "carry"
  args = p.parse_args(["train", "--task", "digits", "--scheme", "sideways", "--out", "x"])
  args.stash = sl.experiments.parse_stash("full@int8")
  cfg = sl.training.default_config("digits", "sideways", **cli.config_overrides(args))
  assert cfg.stash == sl.schedule.Stash("full", dtype="int8") and not cfg.model.reversible
  seen = []
  monkeypatch.setattr(sl.experiments, "sweep", lambda *a, **kw: seen.append(kw) or pd.DataFrame())
  monkeypatch.setattr(cli, "_print_table", lambda df, out: None)
  sweep = ["sweep", "--task", "digits", "--knob", "stash", "--values", "0,carry", "--out", "x"]
  assert cli.main(sweep + ["--reversible"]) == 0 and cli.main(sweep) == 0
  assert seen[0]["overrides"] == {"model": {"reversible": True}} and seen[1]["overrides"] is None
