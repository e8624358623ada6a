"""The claims report: verdicts follow the numbers, and only converged runs give a verdict."""

import json

import numpy as np
import pandas as pd
import pytest

from sideways_lab import claims as cl
from sideways_lab.models import SCHEMES


def _digits(gap_smooth, gap_rough, seeds=3):
  rows = []
  for seed in range(seeds):
    jitter = 0.005 * seed
    for v, gap in ((0.25, gap_smooth), (4.0, gap_rough)):
      for s, acc in (
        ("backprop", 0.95),
        ("sideways_exact", 0.94),
        ("sideways", 0.95 - gap),
        ("skip_sideways", 0.93),
        ("skip_exact", 0.94),
      ):
        rows.append(
          dict(
            task="digits",
            scheme=s,
            knob="speed",
            value=v,
            seed=seed,
            steps=1000,
            accuracy=acc + jitter,
          )
        )
  return pd.DataFrame(rows)


def test_claims_follow_the_numbers():
  c1, c2 = cl.claim_c1(_digits(0.01, 0.3)), cl.claim_c2(_digits(0.01, 0.3), None)
  assert c1.verdict == cl.REPRODUCED and c2.verdict == cl.REPRODUCED
  c1, c2 = cl.claim_c1(_digits(0.4, 0.4)), cl.claim_c2(_digits(0.4, 0.4), None)
  assert c1.verdict == cl.NOT_REPRODUCED and "estimate" in c1.why
  assert c2.verdict == cl.NOT_REPRODUCED
  report = cl.claims_report(cl.claims({"digits-speed": _digits(0.01, 0.3)}))
  assert "| **C1**" in report and report.count("**not measured**") == 3  # C3, C4, C5 not run
  assert json.dumps([c.verdict for c in cl.claims({})]) == json.dumps([cl.NOT_MEASURED] * 5)


def test_convergence_is_a_column_and_a_sentence_not_a_veto():
  df = _digits(0.01, 0.3).assign(converged=True, plateau_change=0.0)
  assert cl.claim_c1(df).converged == "9 of 9 compared runs converged"
  late = (df.scheme == "backprop") & (df.seed == 1) & np.isclose(df.value, 0.25)
  df.loc[late, ["converged", "plateau_change"]] = [False, 0.12]
  c1 = cl.claim_c1(df)
  assert c1.verdict == cl.REPRODUCED  # the ladder decides, not the plateau
  assert c1.converged.startswith("8 of 9 compared runs converged; the others'")
  assert "+12 %" in c1.converged
  assert cl.unconverged(df, ["backprop"], [0.25]) == ["backprop at 0.25 seed 1 (+12%)"]
  # the roughest setting is not part of C1, but it is part of C2
  rough = (df.scheme == "sideways") & np.isclose(df.value, 4.0)
  df.loc[rough, "converged"] = False
  assert cl.claim_c1(df).converged.startswith("8 of 9")
  assert cl.claim_c2(df, None).converged.startswith("14 of 18")
  report = cl.claims_report([cl.claim_c1(df)])
  assert "| 8 of 9 compared runs converged" in report


def test_report_has_a_digest_and_the_other_readout():
  df = _digits(0.01, 0.3)
  flipped = _digits(0.4, 0.4)
  report = cl.claims_report(cl.claims({"digits-speed": df, "digits-speed-max": flipped}))
  digest = report.split("## Digest")[1].split("## Evidence")[0]
  lines = [x for x in digest.splitlines() if x.startswith("- **C")]
  assert len(lines) == 5 and lines[0].startswith("- **C1** — reproduced: ")
  assert "max pooling: not reproduced (flips from reproduced): " in report
  # budget-limited (a longer run disagrees): what the numbers say is compared, not the label
  longer = df[df.seed == 0].assign(steps=2500)
  longer.loc[longer.scheme == "sideways", "accuracy"] -= 0.3
  c1 = cl.claims(
    {"digits-speed": df, "digits-speed-max": flipped}, longer={"digits-speed": longer}
  )[0]
  assert c1.verdict == cl.BUDGET_LIMITED and c1.numbers_say == cl.REPRODUCED
  assert "not reproduced (flips from reproduced)" in c1.robustness


def _stash(gaps: dict, seeds=3):
  rows = []
  for seed in range(seeds):
    for value, (kib, gap) in gaps.items():
      scheme = "sideways_exact" if value == "full" else "sideways"
      rows.append(
        dict(
          task="digits",
          scheme=scheme,
          knob="stash",
          value=value,
          seed=seed,
          steps=1000,
          accuracy=0.9 + gap + 0.001 * seed,
          stash_bytes=kib * 1024,
          stash_frames=kib,
          converged=True,
          plateau_change=0.0,
        )
      )
  return pd.DataFrame(rows)


def test_stash_frontier_and_c5():
  df = _stash({"0": (0, -0.2), "1": (10, -0.1), "0-0-2": (8, -0.01), "full": (40, 0)})
  front = cl.stash_frontier(df)
  assert list(front.value) == ["0", "0-0-2", "1", "full"]
  assert list(front.frontier) == [True, True, False, True]
  c5 = cl.claim_c5({"digits": df})
  assert c5.verdict == cl.REPRODUCED and "0-0-2 (8 KiB, 20% of the full stash)" in c5.summary
  assert "at 1000 steps (the only budget measured)" in c5.summary  # no curves: one rung
  only_full = _stash({"0": (0, -0.2), "1": (10, -0.1), "full": (40, 0)})
  assert cl.claim_c5({"digits": only_full}).verdict == cl.NOT_REPRODUCED
  # a partial allocation that keeps as many bytes as the full stash saves nothing
  as_costly = _stash({"0": (0, -0.2), "6-4-0": (40, 0.001), "full": (40, 0)})
  c5 = cl.claim_c5({"digits": as_costly})
  assert c5.verdict == cl.NOT_REPRODUCED and "6-4-0" not in c5.numbers.split("gap to it")[1]
  with pytest.raises(ValueError, match="cheaper"):
    cl.claim_c5({"digits": _stash({"6-4-0": (40, 0.0), "full": (40, 0)})})


def test_c5_reads_each_network_against_its_own_twin():
  chain = _stash(
    {"0": (0, -0.2), "0-0-2": (256, -0.08), "full@int8": (216, -0.05), "full": (864, 0)}
  )
  rev = _stash({"0": (0, -0.2), "carry": (352, 0.002), "full@int8": (216, -0.06), "full": (864, 0)})
  c5 = cl.claim_c5({"digits": chain, "digits-rev": rev})
  assert c5.verdict == cl.PARTLY
  assert "the reversible digits chain the accuracy gap of carry (352 KiB, 41% of" in c5.summary
  assert "not on the digits chain (not reproduced)" in c5.why
  assert "the digits chain: exact twin" in c5.numbers and "0-0-2 (256 KiB)" in c5.numbers
  both = cl.claim_c5({"digits-rev": rev, "digits": rev})
  assert both.verdict == cl.REPRODUCED


def _next_frame(skill: dict, seeds=5, settings=((1.0, 1), (1.0, 2)), anchor="newest"):
  """Next-frame rows whose skill against the copy baseline is ``skill[scheme]`` (+ jitter)."""
  rows = []
  for v, h in settings:
    for seed in range(seeds):
      jitter = 0.01 * ((seed * 7) % 5 - 2)
      for s, k in skill.items():
        graph, method = SCHEMES[s]
        mse = 0.01 * (1 - (k + jitter))
        rows.append(dict(scheme=s, graph=graph, method=method, mse=mse))
      for graph, mode in (("chain", "synchronous"), ("chain", "pipelined"), ("skip", "pipelined")):
        rows.append(dict(scheme="copy_newest", graph=graph, method=mode, mse=0.01))
      for r in rows[-len(skill) - 3 :]:
        r.update(task="next-frame", knob="speed", value=v, seed=seed, anchor=anchor, horizon=h)
        r.update(steps=600)
  return pd.DataFrame(rows)


def test_c4_reads_skill_beside_the_exact_twins():
  base = dict(backprop=0.2, sideways=0.1, sideways_exact=0.2, skip_exact=0.5)
  wins = _next_frame({**base, "skip_sideways": 0.45})
  c4 = cl.claim_c4({"newest": wins})
  assert c4.verdict == cl.REPRODUCED, c4.why
  assert "skip exact twin − per-frame BP" in c4.numbers and "horizon 2" in c4.numbers
  # above Sideways but not above the per-frame model: better, but no motion
  blur = cl.claim_c4({"newest": _next_frame({**base, "skip_sideways": 0.18})})
  assert blur.verdict == cl.PARTLY and "above per-frame BP's (motion) at 0 of 2" in blur.why
  # below Sideways where its exact twin learns motion: not reproduced
  worse = cl.claim_c4({"newest": _next_frame({**base, "skip_sideways": -0.5})})
  assert worse.verdict == cl.NOT_REPRODUCED
  assert "Skip-Sideways − its exact twin (the estimate) -1.00" in worse.numbers
  # the anchor "input" is reported beside, but "newest" decides
  both = cl.claim_c4(
    {"newest": wins, "input": _next_frame({**base, "skip_sideways": -0.5}, anchor="input")}
  )
  assert both.verdict == cl.REPRODUCED and "anchor input" in both.numbers


# ---------------------------------------------------------------------------------------------
# Intervals and the ladder of budgets (docs/design.md §9)
# ---------------------------------------------------------------------------------------------


def test_t_quantile_is_the_students_t_table():
  # two-sided 95 % (t_{0.975}) and 90 % quantiles of the printed tables
  table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423}
  for df, t in table.items():
    assert abs(cl.t_quantile(df) - t) < 5e-5, df
  assert abs(cl.t_quantile(2, 0.90) - 2.9200) < 5e-5
  assert abs(cl.t_quantile(2000) - 1.9612) < 5e-4  # → the normal 1.960
  # df = 2 has the closed form t = sqrt(2 c² / (1 − c²)) for P(|T| ≤ t) = c
  for c in (0.5, 0.8, 0.99):
    assert abs(cl.t_quantile(2, c) - np.sqrt(2 * c**2 / (1 - c**2))) < 1e-9
  for bad in (0, 1.5, -2):
    with pytest.raises(ValueError, match="df"):
      cl.t_quantile(bad)


def test_t_interval_and_its_coverage():
  iv = cl.t_interval([0.1, 0.2, 0.3])
  assert np.isclose(iv.mean, 0.2) and iv.seeds == 3 and np.isclose(iv.std, 0.1)
  assert np.isclose(iv.high - iv.mean, 4.302653 * 0.1 / np.sqrt(3), rtol=1e-6)
  assert not iv.excludes_zero and iv.text() == "+0.200 [-0.048, +0.448]"
  one = cl.t_interval([0.3, np.nan])
  assert one.seeds == 1 and np.isnan(one.low) and one.text() == "+0.300 (1 seed)"
  with pytest.raises(ValueError, match="values"):
    cl.t_interval([np.nan])
  # the interval covers the true mean of normal draws 95 % of the time (3 seeds)
  rng = np.random.default_rng(0)
  hits = [cl.t_interval(rng.normal(1.0, 2.0, 3)) for _ in range(4000)]
  cover = np.mean([h.low <= 1.0 <= h.high for h in hits])
  assert abs(cover - 0.95) < 0.012
  # "twice the standard error" covers 2/sqrt(6) = 82 % with 3 seeds
  assert abs(cl._coverage(3) - 2 / np.sqrt(6)) < 1e-6
  # t_{0.975,17}/sqrt(18) = 0.497 < 0.5 <= t_{0.975,16}/sqrt(17) = 0.514
  assert cl.seeds_needed(0.02, 0.01) == 18 and cl.seeds_needed(0.02, 0.0) is None


def _ladder(means: dict, spread=0.01, seeds=3) -> pd.DataFrame:
  """A synthetic ladder: the effect per seed at each step is its mean plus a fixed pattern
  (sd ``spread`` over seeds)."""
  offsets = np.linspace(-1, 1, seeds) * spread
  rows = [dict(step=s, seed=i, diff=m + o) for s, m in means.items() for i, o in enumerate(offsets)]
  return pd.DataFrame(rows)


STEPS = (500, 625, 750, 875, 1000)


def test_tests_read_intervals():
  within, above = cl.Test("within", 0.02), cl.Test("above", 0.0)
  iv = lambda lo, hi: cl.Interval((lo + hi) / 2, lo, hi, 0.0, 3)
  assert within.state(iv(-0.01, 0.015)) == cl.HOLDS
  assert within.state(iv(-0.05, -0.03)) == cl.FAILS and within.state(iv(0.03, 0.05)) == cl.FAILS
  assert within.state(iv(-0.03, 0.01)) == cl.OPEN  # no significant gap is not closeness
  assert above.state(iv(0.01, 0.2)) == cl.HOLDS and above.state(iv(-0.2, -0.1)) == cl.FAILS
  assert above.state(iv(-0.01, 0.2)) == cl.OPEN
  # with a fail bound, an interval confidently below a meaningful effect fails
  meaningful = cl.Test("above", 0.0, 0.02)
  assert meaningful.state(iv(-0.01, 0.01)) == cl.FAILS and above.state(iv(-0.01, 0.01)) == cl.OPEN
  assert meaningful.state(iv(0.01, 0.03)) == cl.HOLDS
  assert cl.Test("below", 0.0).state(iv(-0.2, -0.1)) == cl.HOLDS
  assert above.state(cl.Interval(0.1, np.nan, np.nan, 0.0, 1)) == cl.OPEN  # one seed: no interval
  with pytest.raises(ValueError, match="kind"):
    cl.Test("near")


def test_ladder_verdicts_on_synthetic_ladders():
  above = cl.Test("above", 0.0, 0.02)
  every = cl.read_ladder(_ladder(dict.fromkeys(STEPS, 0.2)), above)
  assert every.verdict == cl.REPRODUCED
  assert every.budgets == "at every budget from 500 to 1000 steps"
  emerging = cl.read_ladder(_ladder(dict(zip(STEPS, [0.0, 0.0, 0.1, 0.2, 0.2]))), above)
  assert emerging.verdict == cl.REPRODUCED and emerging.budgets.startswith("emerges at step 750")
  against = cl.read_ladder(_ladder(dict.fromkeys(STEPS, -0.2)), above)
  assert against.verdict == cl.NOT_REPRODUCED and "every budget" in against.budgets
  lost = cl.read_ladder(_ladder(dict(zip(STEPS, [0.2, 0.2, 0.2, 0.0, 0.0]))), above)
  assert lost.verdict == cl.INCONCLUSIVE
  assert lost.budgets == "open at 1000 steps; held at 500, 625, 750 steps"
  # C1-like: a gap of -0.05 that closes by 0.04 per doubling, too noisy to be inside ±0.02
  means = {s: -0.05 + 0.04 * np.log2(s / 500) for s in STEPS}
  closing = cl.read_ladder(_ladder(means, spread=0.03), cl.Test("within", 0.02))
  assert closing.verdict == cl.INCONCLUSIVE and closing.states == (cl.OPEN,) * 5
  assert np.isclose(closing.trend.mean, 0.04) and closing.trend.seeds == 3
  assert closing.trend_text().startswith("the gap closes by 0.040 per doubling of the budget")
  assert "seeds would decide it" in closing.seeds_text()
  with pytest.raises(ValueError, match="steps and states"):
    cl.ladder_verdict([500], [])


def test_budget_limited_only_where_a_longer_run_disagrees():
  above = cl.Test("above", 0.0)
  ladder = _ladder(dict.fromkeys(STEPS, 0.2))
  agree = cl.read_ladder(ladder, above, pd.DataFrame(dict(step=[2500], seed=[0], diff=[0.1])))
  assert (
    agree.verdict == cl.REPRODUCED
    and agree.longer_text() == "seed 0 at 2500 steps: +0.100 (1 seed)"
  )
  disagree = cl.read_ladder(ladder, above, pd.DataFrame(dict(step=[2500], seed=[0], diff=[-0.1])))
  assert disagree.verdict == cl.BUDGET_LIMITED and disagree.ladder_verdict == cl.REPRODUCED
  # an open ladder cannot be contradicted
  longer = pd.DataFrame(dict(step=[2500], seed=[0], diff=[-0.1]))
  open_ = cl.read_ladder(_ladder(dict.fromkeys(STEPS, 0.01)), above, longer)
  assert open_.verdict == cl.INCONCLUSIVE and open_.longer[0][2] == cl.FAILS


def _curves(digits: pd.DataFrame, steps=STEPS, slope=0.0) -> pd.DataFrame:
  """Learning curves whose held-out accuracy at step s is the final one + slope·log2(s/N)."""
  rows = []
  for r in digits.itertuples():
    for s in steps:
      y = r.accuracy + slope * np.log2(s / steps[-1])
      for split, metric, value in (("test", "accuracy", y), ("train", "loss", 1.0)):
        ids = dict(scheme=r.scheme, value=str(r.value), seed=r.seed, step=s)
        rows.append(dict(ids, split=split, metric=metric, y=value))
  return pd.DataFrame(rows)


def test_claims_read_their_ladders_and_longer_runs():
  df = _digits(0.005, 0.3).assign(steps=1000)
  curves = {"digits-speed": _curves(df)}
  c1, c2 = cl.claims({"digits-speed": df}, curves)[:2]
  assert c1.verdict == cl.REPRODUCED and c1.seeds == 3
  assert "at every budget from 500 to 1000 steps" in c1.summary and "±0.02" in c1.summary
  assert c2.verdict == cl.REPRODUCED and "[+" in c2.summary
  # a gap of 0.05 at every budget is outside the margin: C1 not reproduced
  c1 = cl.claim_c1(_digits(0.05, 0.3).assign(steps=1000), _curves(_digits(0.05, 0.3)))
  assert c1.verdict == cl.NOT_REPRODUCED and "behind BP" in c1.why
  # a longer run of one seed that puts Sideways 0.1 behind BP contradicts the ladder
  longer = df[(df.seed == 0) & np.isclose(df.value, 0.25)].assign(steps=2500)
  longer.loc[longer.scheme == "sideways", "accuracy"] -= 0.1
  c1 = cl.claims({"digits-speed": df}, curves, {"digits-speed": longer})[0]
  assert c1.verdict == cl.BUDGET_LIMITED and c1.numbers_say == cl.REPRODUCED
  assert "seed 0 at 2500 steps" in c1.summary
  report = cl.claims_report(cl.claims({"digits-speed": df}, curves))
  assert "3 seeds" in report and "t_{0.975, 2} = 4.30" in report
  assert "| budgets and trend | converged |" in report
  effects = cl.effects({"digits-speed": df}, curves)
  table = cl.ladder_intervals(effects["C1"][0].ladder)
  assert list(table.step) == list(STEPS) and np.allclose(table["mean"], -0.005)
