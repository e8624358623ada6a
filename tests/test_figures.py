"""The figures command in quick mode, and the committed figures/manifest."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from sideways_lab import claims, cli, experiments, figures, models, provenance, training

ROOT = Path(__file__).resolve().parents[1]


def test_generate_quick_writes_every_figure_and_manifest(tmp_path):
  m = figures.generate(tmp_path, quick=True, log=None, work_dir=tmp_path / "work")
  assert m["mode"] == "quick"
  for key in ("package_version", "git_commit", "seeds", "versions", "device", "total_time_s"):
    assert key in m
  assert m["versions"]["jax"] and m["versions"]["haiku"]
  assert set(m["figures"]) == set(figures.FIGURES)
  for name, f in m["figures"].items():
    assert f["files"] == [f"{name}.png", f"{name}.pdf"] and f["sentence"], (name, f)
    for ext in ("png", "pdf"):
      p = tmp_path / f"{name}.{ext}"
      assert p.exists() and p.stat().st_size > 1000
  assert json.loads((tmp_path / "manifest.json").read_text()) == m
  for name, f in m["figures"].items():
    assert f["config"] == json.loads(json.dumps(figures.figure_config(name, quick=True)))
  # the sweeps' tidy results and the claims report come with the figures
  for sweep in figures.SWEEPS:
    assert (tmp_path / "results" / f"{sweep}.csv").exists(), sweep
  claims = (tmp_path / "claims.md").read_text()
  assert all(f"**C{i}**" in claims for i in range(1, 5)) and "quick mode" in claims
  # the runs behind the figures were computed by one code, this process's, and both say so
  code = provenance.code_identity()
  assert m["code"] == code and [r["code"] for r in m["runs_code"]] == [code["source"]]
  assert m["runs_code"][0]["runs"] > 0 and f"runs trained by code {code['source']}" in claims
  results = experiments.read_results(tmp_path / "results" / "digits-speed.csv")
  assert set(results.code) == {code["source"]} and not results.other_code.any()


def test_runs_code_text_names_one_code_or_counts_each():
  one = pd.DataFrame({"code": ["a1", "a1"], "commit": ["c", "c"], "run": ["r1", "r2"]})
  assert figures.runs_code_text([one]) == "code a1 (commit c)"
  old = pd.DataFrame({"scheme": ["backprop"], "run": ["r3"]})  # a table without the columns
  two = figures.runs_code_text([one, one, old])
  assert two == "2 versions of the code: code a1 (commit c): 2 runs; code not recorded: 1 runs"


def test_unknown_figure_and_cli(tmp_path):
  with pytest.raises(ValueError, match="unknown figure"):
    figures.generate(tmp_path, quick=True, only=["nope"], log=None)
  assert (
    cli.main(["figures", "--quick", "--out", str(tmp_path), "--only", "schedule", "latency"]) == 0
  )
  assert (tmp_path / "schedule.png").exists() and (tmp_path / "latency.pdf").exists()
  # regenerating one figure keeps the other entries of the manifest
  assert cli.main(["figures", "--quick", "--out", str(tmp_path), "--only", "latency"]) == 0
  m = json.loads((tmp_path / "manifest.json").read_text())
  assert set(m["figures"]) == {"schedule", "latency"}
  assert m["command"].endswith("--only latency")
  # a corrupt manifest is replaced, not fatal
  (tmp_path / "manifest.json").write_text("{not json")
  assert cli.main(["figures", "--quick", "--out", str(tmp_path), "--only", "latency"]) == 0
  assert set(json.loads((tmp_path / "manifest.json").read_text())["figures"]) == {"latency"}


def test_committed_figures_match_the_manifest():
  man = ROOT / "figures" / "manifest.json"
  m = json.loads(man.read_text())
  assert m["mode"] == "full" and set(m["figures"]) == set(figures.FIGURES)
  for name, f in m["figures"].items():  # the committed figures were made with today's code
    assert f["config"] == json.loads(json.dumps(figures.figure_config(name))), (
      f"figures/{name} was generated with another configuration than the code's defaults: "
      f"regenerate it with `sideways-lab figures --only {name}`"
    )
  for sweep in figures.SWEEPS:
    assert (ROOT / "figures" / "results" / f"{sweep}.csv").exists(), sweep
  assert (ROOT / "figures" / "claims.md").exists()
  for f in m["figures"].values():
    for fn in f.get("files", []):
      assert (ROOT / "figures" / fn).exists(), fn
  readme = ROOT / "README.md"
  text = readme.read_text() if readme.exists() else ""
  if "## Figures" in text:
    for name, f in m["figures"].items():
      if "files" in f:
        assert f"figures/{name}.png" in text, name


def test_the_stash_sweep_covers_every_full_or_nothing_allocation():
  spec = figures.SWEEPS["stash-digits"]
  config = training.default_config(spec["task"], spec["schemes"][0])
  graph = models.build_graph(config.model, spec["schemes"][0])
  subsets = experiments.stash_subsets(graph)
  assert figures.STASH_VALUES == ("0", "1", *subsets, "full")


def test_the_max_readout_sweeps_repeat_their_mean_readout_twins():
  for mean_name, max_name in claims.MAX_READOUT.items():
    mean, other = figures.SWEEPS[mean_name], figures.SWEEPS[max_name]
    assert other["overrides"]["model"]["readout"] == "max"
    assert set(other["values"]) <= set(mean["values"]) and other["schemes"] == mean["schemes"]
    assert {max_name, mean_name} <= set(figures.FIGURES["readout"].sweeps)


def _alignment_rows(task, scheme, steps, units=(1, 2, 3)):
  return [
    dict(task=task, scheme=scheme, value=1.0, seed=seed, step=step, kind=kind, unit=u, cosine=c)
    for seed in (0, 1)
    for step in steps
    for kind in ("expected", "clip")
    for u in units
    for c in [0.9 - 0.1 * u - 1e-4 * step + 0.05 * seed]
  ]


def test_the_alignment_figure_draws_only_the_panels_that_have_runs(tmp_path):
  import pandas as pd

  # digits trains only Sideways; next-frame trains both approximate schemes
  al = pd.DataFrame(
    _alignment_rows("digits", "sideways", (0, 250, 500))
    + _alignment_rows("next-frame", "skip_sideways", (0, 300))
    + _alignment_rows("next-frame", "sideways", (0, 300))
  )
  ctx = figures.Context(quick=True, work_dir=tmp_path, log=lambda _: None, _alignment=al)
  fig = figures.fig_alignment_training(ctx)
  titles = [ax.get_title() for ax in fig.axes]
  assert titles == ["digits: Sideways", "next-frame: Sideways", "next-frame: Skip-Sideways"]
  for ax, last in zip(fig.axes, (500, 300, 300)):
    assert len(ax.get_lines()) == 2 * 3 + 1  # expected and clip per unit, and the zero line
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unit 1", "unit 2", "unit 3"]
    lo, hi = ax.get_xlim()
    assert lo <= 0 and last <= hi < 1.2 * last  # the panel's own steps, not a 0-to-1 axis
  # the mean over seeds of the expected cosine of unit 1 at step 0 is 0.8 + 0.025
  x, y = fig.axes[0].get_lines()[0].get_data()
  assert list(x) == [0, 250, 500] and y[0] == pytest.approx(0.825)


def test_figures_and_claims_from_committed_results(tmp_path):
  """Drawn from results without training: the figures asked for and claims.md are written,
  the results are not, and the manifest keeps the training run's record and other entries."""
  source = ROOT / "figures" / "results"
  old = json.loads((ROOT / "figures" / "manifest.json").read_text())
  (tmp_path / "manifest.json").write_text(json.dumps(old))
  m = figures.generate(tmp_path, only=["next_frame"], from_results=source, log=None)
  assert set(m["figures"]) == set(old["figures"]) | {"next_frame"}
  assert m["device"] == old["device"] and m["git_commit"] == old["git_commit"]
  entry = m["figures"]["next_frame"]
  assert entry["from_results"] == str(source) and entry["command"].endswith("--only next_frame")
  assert entry["config"] == json.loads(json.dumps(figures.figure_config("next_frame")))
  assert (tmp_path / "next_frame.png").exists() and not (tmp_path / "results").exists()
  report = (tmp_path / "claims.md").read_text()
  assert "without training" in report and "after 1000 steps (95 % t-interval, 3 seeds)" in report
  # figures that need the runs' checkpoints: refused when asked for, skipped otherwise
  with pytest.raises(ValueError, match="checkpoints"):
    figures.generate(tmp_path, only=["future_frames"], from_results=source, log=None)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="curves-digits-speed.csv|digits-speed.csv"):
    figures.draw("claim_budgets", from_results=tmp_path / "empty")
  assert figures._names(None, source, lambda m: None) == [
    n for n in figures.FIGURES if n != "future_frames"
  ]
  # every figure redrawn from results: a new record, and the skipped figure keeps its entry
  new = dict(m, figures={n: {"files": [n]} for n in figures.FIGURES if n != "future_frames"})
  merged = figures._merge_manifest(new, old, list(new["figures"]), source, partial=False)
  assert merged["figures"]["future_frames"] == old["figures"]["future_frames"]
  assert merged["figures"]["next_frame"] == {"files": ["next_frame"]}
  assert merged["command"] == new["command"] and set(merged["figures"]) == set(figures.FIGURES)
  args = ["figures", "--from-results", str(source), "--sweeps", "digits-speed"]
  assert cli.main(args) == cli.EXIT_USAGE
  fig = figures.draw("claim_budgets", from_results=source)
  titles = [ax.get_title() for ax in fig.axes]
  assert all(any(t.startswith(f"C{i}:") for t in titles) for i in range(1, 6))
