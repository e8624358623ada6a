"""The claims report: verdicts follow the numbers, and only converged runs give a verdict."""

import json

import numpy as np
import pandas as pd

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
          dict(task="digits", scheme=s, knob="speed", value=v, seed=seed, accuracy=acc + jitter)
        )
  return pd.DataFrame(rows)


def test_claims_follow_the_numbers():
  c1, c2 = cl.claim_c1(_digits(0.02, 0.3)), cl.claim_c2(_digits(0.02, 0.3), None)
  assert c1.verdict == cl.REPRODUCED and c2.verdict == cl.REPRODUCED
  c1, c2 = cl.claim_c1(_digits(0.4, 0.4)), cl.claim_c2(_digits(0.4, 0.4), None)
  assert c1.verdict == cl.NOT_REPRODUCED and "estimate" in c1.why
  assert c2.verdict == cl.NOT_REPRODUCED
  report = cl.claims_report(cl.claims({"digits-speed": _digits(0.02, 0.3)}))
  assert "| **C1**" in report and report.count("**not measured**") == 3  # C3, C4, C5 not run
  assert json.dumps([c.verdict for c in cl.claims({})]) == json.dumps([cl.NOT_MEASURED] * 5)


def test_a_claim_from_unconverged_runs_is_budget_limited():
  df = _digits(0.02, 0.3).assign(converged=True, plateau_change=0.0)
  assert cl.claim_c1(df).verdict == cl.REPRODUCED
  late = (df.scheme == "backprop") & (df.seed == 1) & np.isclose(df.value, 0.25)
  df.loc[late, ["converged", "plateau_change"]] = [False, 0.12]
  c1 = cl.claim_c1(df)
  assert c1.verdict == cl.BUDGET_LIMITED and "backprop at 0.25 seed 1" in c1.why
  assert "'reproduced'" in c1.why  # what the numbers would say, kept visible
  # the roughest setting is not part of C1, but it is part of C2
  rough = (df.scheme == "sideways") & np.isclose(df.value, 4.0)
  df.loc[late, "converged"] = True
  df.loc[rough, "converged"] = False
  assert cl.claim_c1(df).verdict == cl.REPRODUCED
  assert cl.claim_c2(df, None).verdict == cl.BUDGET_LIMITED


def test_report_has_a_digest_and_the_other_readout():
  df = _digits(0.02, 0.3)
  flipped = _digits(0.4, 0.4)
  report = cl.claims_report(cl.claims({"digits-speed": df, "digits-speed-max": flipped}))
  digest = report.split("## Digest")[1].split("## Evidence")[0]
  lines = [x for x in digest.splitlines() if x.startswith("- **C")]
  assert len(lines) == 5 and lines[0].startswith("- **C1** — reproduced: ")
  assert "max pooling: not reproduced (flips from reproduced): " in report
  # budget-limited on both readouts: what the numbers say is compared, not the label
  late = flipped.assign(converged=False, plateau_change=0.2)
  slow = df.assign(converged=False, plateau_change=0.2)
  c1 = cl.claims({"digits-speed": slow, "digits-speed-max": late})[0]
  assert c1.verdict == cl.BUDGET_LIMITED and c1.numbers_say == cl.REPRODUCED
  assert "budget-limited, the numbers say not reproduced (flips from reproduced)" in c1.robustness


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
  assert c5.verdict == cl.REPRODUCED and "0-0-2" in c5.numbers and "20% of full" in c5.numbers
  only_full = _stash({"0": (0, -0.2), "1": (10, -0.1), "full": (40, 0)})
  assert cl.claim_c5({"digits": only_full}).verdict == cl.NOT_REPRODUCED
  # a partial allocation that keeps as many bytes as the full stash saves nothing
  as_costly = _stash({"0": (0, -0.2), "6-4-0": (40, 0.001), "full": (40, 0)})
  c5 = cl.claim_c5({"digits": as_costly})
  assert c5.verdict == cl.NOT_REPRODUCED and "full (40 KiB, 100% of full" in c5.numbers


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
