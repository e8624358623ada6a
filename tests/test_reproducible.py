"""A run trained by a sweep equals the same run trained alone by ``training.train``.

A sweep trains many runs in one process (runs that differ only in seed, speed or stride share
one compiled program), saves checkpoints along each run and resumes an interrupted run from
its newest checkpoint; a direct run does none of this. For every scheme, a short run of the
sweep (the second seed, whose program the first seed compiled) and of a resumed sweep must
give the parameters and test metrics of ``training.train(experiments.run_config(...))`` in a
fresh process, bit for bit: the same clips, the same compiled arithmetic on the same machine.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sideways_lab import checkpoint as ckpt
from sideways_lab import experiments, training
from sideways_lab.models import SCHEMES

pytestmark = pytest.mark.slow  # ten short runs in this process and five in a fresh one

TASK, KNOB, VALUE, SEEDS = "motion-classes", "speed", 2.0, 2
METRICS = ("accuracy", "tick_accuracy", "loss")

# Trains every scheme's run of seed SEEDS - 1 with training.train and writes its parameters
# (flattened by key path) and test metrics: a process that never ran a sweep.
_DIRECT = textwrap.dedent(
  """
  import json, sys
  import numpy as np
  from sideways_lab import checkpoint as ckpt, experiments, training
  out, task, knob, value, seed = sys.argv[1:6]
  metrics = {}
  for scheme in sys.argv[6:]:
    config = experiments.run_config(task, scheme, knob, float(value), int(seed), quick=True)
    result = training.train(config, progress=False)
    np.savez(f"{out}/{scheme}.npz", **ckpt.flatten(result.params, "params"))
    metrics[scheme] = {k: result.test[k] for k in ("accuracy", "tick_accuracy", "loss")}
  with open(f"{out}/metrics.json", "w") as f:
    json.dump(metrics, f)
  """
)


def _direct_runs(tmp: Path, seed: int) -> dict:
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
  args = [TASK, KNOB, str(VALUE), str(seed), *SCHEMES]
  subprocess.run([sys.executable, "-c", _DIRECT, str(tmp), *args], check=True, env=env)
  metrics = json.loads((tmp / "metrics.json").read_text())
  return {s: (metrics[s], dict(np.load(tmp / f"{s}.npz"))) for s in SCHEMES}


def _sweep_runs(out: Path, seed: int) -> dict:
  df = experiments.sweep(TASK, KNOB, [VALUE], seeds=SEEDS, quick=True, out=out, progress=False)
  runs = {}
  for row in df[df.seed == seed].itertuples():
    config = experiments.run_config(TASK, row.scheme, KNOB, VALUE, seed, quick=True)
    template, _ = training.Trainer(config).init()
    params, _, manifest = ckpt.load(ckpt.latest(out / row.run), template)
    assert manifest["step"] == config.steps
    metrics = {m: getattr(row, m) for m in METRICS}
    runs[row.scheme] = (metrics, ckpt.flatten(params, "params"))
  return runs


def _assert_same(got: dict, want: dict, what: str) -> None:
  for scheme, (metrics, params) in want.items():
    got_metrics, got_params = got[scheme]
    assert sorted(got_params) == sorted(params), scheme
    differ = [k for k in params if not np.array_equal(got_params[k], params[k])]
    assert not differ, f"{what} {scheme}: parameters differ from a direct run in {differ}"
    assert got_metrics == metrics, f"{what} {scheme}: test metrics differ from a direct run"


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
  return _direct_runs(tmp_path_factory.mktemp("direct"), SEEDS - 1)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep")
  return out, _sweep_runs(out, SEEDS - 1)


def test_a_sweep_trains_every_scheme_as_a_direct_run_does(direct, swept):
  _assert_same(swept[1], direct, "sweep")


def test_a_resumed_sweep_trains_every_scheme_as_a_direct_run_does(direct, swept, tmp_path):
  """Every run of the second seed is cut back to a checkpoint in the middle (its newer
  checkpoints and its row removed), and the sweep resumes it."""
  out = tmp_path / "sweep"
  shutil.copytree(swept[0], out)
  for run in (out / "runs").glob(f"*-seed{SEEDS - 1}-*"):
    (run / "row.json").unlink()
    checkpoints = ckpt.list_checkpoints(run)
    for _, path in checkpoints[len(checkpoints) // 2 :]:
      path.unlink()
      path.with_suffix(".json").unlink()
  _assert_same(_sweep_runs(out, SEEDS - 1), direct, "resumed sweep")
