"""The papers' claims, tested on the sweeps' results (docs/design.md §9).

Each claim is a function of tidy sweep DataFrames (:func:`sideways_lab.experiments.sweep`)
that returns a :class:`Claim`: the measurement, its numbers (means ± std over seeds,
differences paired by seed), a verdict and the reason for it. A verdict is given only where
every compared run reached its plateau (the ``converged`` column, docs/design.md §9);
otherwise the claim is ``budget-limited`` and names the runs that were still moving. Where the
sweeps were also run with the other readout (max pooling), each claim says whether its verdict
holds under both.

    results = {name: experiments.read_results(dir) for name, dir in ...}
    text = claims_report(claims(results))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sideways_lab.experiments import ANCHORS, add_skill, paired_difference, summarize
from sideways_lab.models import SCHEMES

#: Sideways is "close to BP" when its paired accuracy gap is at most this.
CLOSE = 0.05
#: Skip-Sideways "learns what Sideways cannot" on motion classes: at least this much higher.
MOTION_MARGIN = 0.5
#: A stash allocation "recovers the exact twin" when its paired accuracy gap is at most this.
STASH_CLOSE = 0.02

#: The claims (docs/design.md §9): C1–C4 are the papers'; C5 is the stash knob's.
CLAIMS = {
  "C1": "Sideways trains close to BP on smooth video (digit identity)",
  "C2": "Sideways degrades as the video gets less smooth (speed, frame stride)",
  "C3": "Skip-Sideways integrates time: it learns motion classes that Sideways cannot",
  "C4": "Skip-Sideways predicts future frames better than Sideways",
  "C5": "A partial stash recovers the exact gradient's accuracy for less memory",
}
#: The numbers support the claim.
REPRODUCED = "reproduced"
#: The numbers support part of the claim (the reason says which part).
PARTLY = "partly reproduced"
#: The numbers contradict the claim.
NOT_REPRODUCED = "not reproduced"
#: A compared run had not reached its plateau: no verdict (the reason gives the runs).
BUDGET_LIMITED = "budget-limited"
#: The sweep behind the claim was not run.
NOT_MEASURED = "not measured"
#: The sweeps with the head's max-pooling readout that test the robustness of C1–C3, by the
#: name of the mean-pooling sweep they repeat.
MAX_READOUT = {"digits-speed": "digits-speed-max", "motion-classes": "motion-classes-max"}


@dataclasses.dataclass
class Claim:
  """One row of the claims report.

  Attributes:
    id: "C1" … "C5".
    claim: the claim, in words.
    measurement: what was measured, on which sweep, with how many seeds.
    numbers: the measured numbers (means ± std over seeds, paired differences).
    verdict: one of reproduced, partly reproduced, not reproduced, budget-limited,
      not measured.
    why: the reason for a verdict other than "reproduced".
    summary: one sentence with the number that decides the verdict (the digest).
    robustness: whether the verdict holds with the other readout ("" when not measured).
    at_budget: for a budget-limited claim, the verdict its numbers give at this budget.
  """

  id: str
  claim: str
  measurement: str
  numbers: str
  verdict: str
  why: str = ""
  summary: str = ""
  robustness: str = ""
  at_budget: str = ""

  @property
  def numbers_say(self) -> str:
    """The verdict the numbers give, converged or not (:attr:`at_budget` when budget-limited)."""
    return self.at_budget or self.verdict


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def _pm(stats, digits: int = 3) -> str:
  """``+mean ± std`` of a summary row."""
  std = 0.0 if pd.isna(stats["std"]) else stats["std"]
  return f"{stats['mean']:+.{digits}f} ± {std:.{digits}f}"


def _close(values, value) -> np.ndarray:
  return np.isclose(pd.to_numeric(values, errors="coerce").astype(float), float(value))


def _acc(df, scheme, value) -> str:
  s = summarize(df[df.scheme == scheme], "accuracy", by=["value"])
  r = s[_close(s.value, value)].iloc[0]
  std = 0.0 if pd.isna(r["std"]) else r["std"]
  return f"{r['mean']:.3f} ± {std:.3f}"


def _diff_at(df, a, b, metric, value):
  d = paired_difference(df, a, b, metric)
  return d[_close(d.value, value)].iloc[0]


def _significant(row) -> bool:
  """A paired difference larger than twice its standard error over seeds (a 95 % interval
  that excludes 0, roughly)."""
  std = 0.0 if pd.isna(row["std"]) else row["std"]
  n = max(int(row.get("count", 1)), 1)
  return abs(row["mean"]) > 2 * std / np.sqrt(n)


def _at(df, scheme, value, metric="accuracy") -> pd.Series:
  """``metric`` of ``scheme`` at knob ``value``, indexed by seed."""
  return df[(df.scheme == scheme) & _close(df.value, value)].set_index("seed")[metric]


def _stats(x: pd.Series) -> dict:
  x = x.dropna()
  return {"mean": float(x.mean()), "std": float(x.std()) if len(x) > 1 else 0.0, "count": len(x)}


def _seeds(df) -> int:
  return int(df.seed.nunique())


# ---------------------------------------------------------------------------------------------
# Convergence: a verdict only from runs at their plateau
# ---------------------------------------------------------------------------------------------


def unconverged(df: pd.DataFrame, schemes, values=None) -> list[str]:
  """The runs of ``schemes`` (at knob ``values``, if given) that did not reach their plateau
  (``converged`` False), each as "scheme value seed (loss change over the last fifth)"."""
  if "converged" not in df.columns:
    return []
  rows = df[df.scheme.isin(schemes)]
  if values is not None:
    keep = np.zeros(len(rows), bool)
    for v in values:
      keep |= _close(rows.value, v) if not isinstance(v, str) else (rows.value.astype(str) == v)
    rows = rows[keep]
  bad = rows[~rows.converged.astype(str).str.lower().isin(["true", "1"])]
  return [
    f"{r.scheme} at {r.value} seed {r.seed} ({float(r.plateau_change):+.0%})"
    for r in bad.itertuples()
  ]


def _budget_check(claim: Claim, bad: list[str]) -> Claim:
  """``claim`` as "budget-limited" when any compared run in ``bad`` had not converged."""
  if not bad:
    return claim
  shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
  return dataclasses.replace(
    claim,
    verdict=BUDGET_LIMITED,
    at_budget=claim.verdict,
    why=(
      f"{len(bad)} compared run(s) had not reached their plateau (training loss still changing "
      f"by ≥ 5 % over the last fifth: {shown}); at this budget the numbers say "
      f"'{claim.verdict}'; learning curves in learning_curves.png"
    ),
  )


# ---------------------------------------------------------------------------------------------
# C1–C5
# ---------------------------------------------------------------------------------------------


def claim_c1(digits: pd.DataFrame) -> Claim:
  """C1: Sideways trains close to BP on smooth video (digit identity, the smoothest speed).

  Reproduced when the paired gap Sideways − BP is within :data:`CLOSE` or not significant;
  the gap is split into the pipeline's delay (exact twin − BP) and the estimate (Sideways −
  exact twin)."""
  v = float(pd.to_numeric(digits.value).min())
  gap = _diff_at(digits, "sideways", "backprop", "accuracy", v)
  delay = _diff_at(digits, "sideways_exact", "backprop", "accuracy", v)
  estimate = _diff_at(digits, "sideways", "sideways_exact", "accuracy", v)
  numbers = (
    f"speed {v:g}: BP {_acc(digits, 'backprop', v)}, Sideways "
    f"{_acc(digits, 'sideways', v)}, exact twin {_acc(digits, 'sideways_exact', v)}; "
    f"paired Sideways − BP {_pm(gap)} (delay: exact twin − BP {_pm(delay)}; "
    f"estimate: Sideways − exact twin {_pm(estimate)})"
  )
  why = ""
  if gap["mean"] >= -CLOSE or not _significant(gap):
    verdict = REPRODUCED
  elif gap["mean"] >= -3 * CLOSE:
    verdict = PARTLY
  else:
    verdict = NOT_REPRODUCED
  if verdict != REPRODUCED:
    part = "the gradient estimate" if estimate["mean"] < delay["mean"] else "the pipeline's delay"
    why = (
      f"the gap exceeds {CLOSE:.2f}; most of it is {part} (paired differences above, "
      f"same clips and initial parameters per seed)"
    )
  claim = Claim(
    "C1",
    CLAIMS["C1"],
    f"test clip accuracy after training, smoothest speed of the digits sweep, "
    f"{_seeds(digits)} seeds",
    numbers,
    verdict,
    why,
    f"at {v:g} px/frame Sideways − BP is {_pm(gap)} in accuracy ({_seeds(digits)} seeds).",
  )
  return _budget_check(claim, unconverged(digits, ("backprop", "sideways", "sideways_exact"), [v]))


def _degrades(df) -> tuple[bool, str, dict]:
  """Whether the estimate's cost (Sideways − its exact twin, paired by seed) grows from the
  smoothest to the roughest setting by a significant amount; with the text and the widening."""
  values = pd.to_numeric(df.value)
  lo, hi = float(values.min()), float(values.max())
  gap_lo = _at(df, "sideways", lo) - _at(df, "sideways_exact", lo)
  gap_hi = _at(df, "sideways", hi) - _at(df, "sideways_exact", hi)
  widening = _stats(gap_lo - gap_hi)
  drops = {
    s: _stats(_at(df, s, lo) - _at(df, s, hi)) for s in ("sideways", "sideways_exact", "backprop")
  }
  knob = df.knob.iloc[0]
  text = (
    f"{knob} {lo:g} → {hi:g}: Sideways − exact twin {_pm(_stats(gap_lo))} → "
    f"{_pm(_stats(gap_hi))} (widens by {_pm(widening)}); accuracy drop Sideways "
    f"{_pm(drops['sideways'])}, exact twin {_pm(drops['sideways_exact'])}, BP "
    f"{_pm(drops['backprop'])}"
  )
  return widening["mean"] > 0 and _significant(widening), text, widening


def claim_c2(speed: pd.DataFrame, stride: pd.DataFrame | None) -> Claim:
  """C2: Sideways degrades as the video gets less smooth (speed, frame stride).

  The control is Sideways' exact twin (same graph, same delay, same clips and initial
  parameters per seed): the claim holds where the estimate's cost, Sideways − exact twin,
  grows from the smoothest to the roughest video significantly (paired over seeds).
  """
  sweeps = [speed] + ([stride] if stride is not None else [])
  results = [_degrades(df) for df in sweeps]
  numbers = "; ".join(t for _, t, _ in results)
  hits = sum(ok for ok, _, _ in results)
  verdict = REPRODUCED if hits == len(results) else PARTLY if hits else NOT_REPRODUCED
  why = (
    ""
    if verdict == REPRODUCED
    else (
      "the gap between Sideways and its exact twin does not widen significantly in "
      + ("any sweep" if not hits else "every sweep")
    )
  )
  v = pd.to_numeric(speed.value)
  claim = Claim(
    "C2",
    CLAIMS["C2"],
    "digits: paired accuracy gap Sideways − exact twin at the "
    "smoothest and the roughest setting (the exact twin controls for the data and the "
    "pipeline's delay), and each scheme's own drop",
    numbers,
    verdict,
    why,
    f"from {v.min():g} to {v.max():g} px/frame the gap Sideways − exact twin widens by "
    f"{_pm(results[0][2])} ({_seeds(speed)} seeds).",
  )
  bad = []
  for df in sweeps:
    ends = [pd.to_numeric(df.value).min(), pd.to_numeric(df.value).max()]
    bad += unconverged(df, ("backprop", "sideways", "sideways_exact"), ends)
  return _budget_check(claim, list(dict.fromkeys(bad)))


def claim_c3(motion: pd.DataFrame) -> Claim:
  """C3: Skip-Sideways integrates time: it learns motion classes that Sideways cannot."""
  v = float(pd.to_numeric(motion.value).iloc[0])
  gain = _diff_at(motion, "skip_sideways", "sideways", "accuracy", v)
  twin = _diff_at(motion, "skip_sideways", "skip_exact", "accuracy", v)
  chance = float(motion.chance.dropna().iloc[0])
  names = {
    "backprop": "BP",
    "sideways": "Sideways",
    "sideways_exact": "Sideways' exact twin",
    "skip_sideways": "Skip-Sideways",
    "skip_exact": "its exact twin",
  }
  accs = ", ".join(
    f"{label} {_acc(motion, s, v)}" for s, label in names.items() if s in set(motion.scheme)
  )
  numbers = (
    f"chance {chance:.3f}; {accs}; paired Skip − Sideways {_pm(gain)}, Skip − exact twin "
    f"{_pm(twin)}"
  )
  if gain["mean"] >= MOTION_MARGIN:
    verdict, why = REPRODUCED, ""
  elif gain["mean"] > 0 and _significant(gain):
    verdict = PARTLY
    why = f"Skip-Sideways beats Sideways by less than {MOTION_MARGIN}"
  else:
    verdict, why = NOT_REPRODUCED, "Skip-Sideways does not beat Sideways significantly"
  cols = [c for c in motion.columns if c.startswith("class_")]
  if cols and (verdict != REPRODUCED or twin["mean"] < -CLOSE):
    per = motion[motion.scheme.isin(["skip_sideways", "skip_exact"])].groupby("scheme")[cols]
    gaps = (per.mean().loc["skip_exact"] - per.mean().loc["skip_sideways"]).sort_values()
    worst = ", ".join(f"{c[6:]} {g:+.2f}" for c, g in gaps[::-1].head(3).items())
    why = (why + "; " if why else "") + f"largest per-class gaps to the exact twin: {worst}"
  claim = Claim(
    "C3",
    CLAIMS["C3"],
    f"motion classes, test clip accuracy at speed {v:g}, {_seeds(motion)} seeds",
    numbers,
    verdict,
    why,
    f"on motion classes (chance {chance:.3f}) Skip-Sideways reaches "
    f"{_acc(motion, 'skip_sideways', v)} against Sideways' {_acc(motion, 'sideways', v)} "
    f"(paired {_pm(gain)}).",
  )
  return _budget_check(claim, unconverged(motion, ("sideways", "skip_sideways", "skip_exact")))


#: The differences of next-frame skill (paired by seed) that claim C4 reads: (a, b, what a − b
#: measures).
C4_PAIRS = (
  ("skip_sideways", "sideways", "Skip-Sideways − Sideways (the claim)"),
  ("skip_sideways", "backprop", "Skip-Sideways − per-frame BP (motion)"),
  ("skip_exact", "backprop", "skip exact twin − per-frame BP (the skip graph learns motion)"),
  ("skip_sideways", "skip_exact", "Skip-Sideways − its exact twin (the estimate)"),
  ("sideways", "sideways_exact", "Sideways − its exact twin (the estimate)"),
)


def _skill_settings(df: pd.DataFrame) -> list[tuple[float, int]]:
  """The (speed, horizon) settings of a next-frame sweep, in order."""
  h = df["horizon"] if "horizon" in df else pd.Series(1, index=df.index)
  pairs = zip(pd.to_numeric(df.value).astype(float), pd.to_numeric(h).astype(int))
  return sorted(set(pairs))


def _setting(df: pd.DataFrame, v: float, h: int) -> pd.DataFrame:
  keep = _close(df.value, v)
  if "horizon" in df:
    keep &= pd.to_numeric(df.horizon).astype(int).to_numpy() == h
  return df[keep]


def _c4_setting(df: pd.DataFrame, v: float, h: int, metric: str = "skill") -> dict:
  """Skill per scheme and the paired differences of ``metric`` (:data:`C4_PAIRS`) at one
  setting."""
  part = _setting(df, v, h)
  present = set(part.scheme)
  skill = {s: _stats(_at(part, s, v, "skill")) for s in tuple(SCHEMES) if s in present}
  diffs = {}
  for a, b, _ in C4_PAIRS:
    if {a, b} <= present:
      diffs[(a, b)] = _diff_at(part, a, b, metric, v)
  return dict(skill=skill, diffs=diffs)


def claim_c4(next_frame: dict) -> Claim:
  """C4: Skip-Sideways predicts future frames better than Sideways, capturing motion cues.

  Measured by skill against persistence, ``1 − MSE / MSE(copy-newest)`` on the same pipeline
  and loss ticks (:func:`~sideways_lab.experiments.add_skill`), at every (speed, horizon)
  setting of the next-frame sweeps, paired by seed (:data:`C4_PAIRS`). The verdict reads the
  anchor ``"newest"`` (every scheme forecasts the same horizon from what it has seen, so only
  the graph and the gradient differ); ``"input"`` (the pipeline's latency counts) is reported
  beside it, with paired differences of test MSE: there each pipeline's copy baseline is
  another frame, so skill compares a scheme with its own pipeline's copy, while every scheme
  has the same targets. Skill above 0 is not yet motion: a per-frame model earns skill by
  predicting the blur over directions, so *capturing motion* is skill above per-frame BP's.

  Reproduced when at every setting Skip-Sideways' skill is significantly above Sideways' and
  above BP's; partly when above Sideways' only (or at some settings); not reproduced when it is
  nowhere above Sideways'. The exact twins split each gap: the skip twin against BP says whether
  the skip graph can learn motion at all, Skip-Sideways against its twin what the estimate
  costs."""
  next_frame = {a: add_skill(df) for a, df in next_frame.items()}
  decide = next_frame.get("newest", next(iter(next_frame.values())))
  decide_anchor = "newest" if "newest" in next_frame else next(iter(next_frame))
  parts, sentence, bad = [], [], []
  above_sideways, motion, settings = [], [], _skill_settings(decide)
  for anchor, df in next_frame.items():
    for v, h in _skill_settings(df):
      metric, digits = ("skill", 2) if anchor == "newest" else ("mse", 4)
      m = _c4_setting(df, v, h, metric)
      sk = "; ".join(f"{s} {r['mean']:+.2f} ± {r['std']:.2f}" for s, r in m["skill"].items())
      dd = "; ".join(
        f"{label} {_pm(m['diffs'][(a, b)], digits)}"
        for a, b, label in C4_PAIRS
        if (a, b) in m["diffs"]
      )
      parts.append(
        f"anchor {anchor}, {v:g} px/frame, horizon {h}: skill {sk}; paired {metric} {dd}"
      )
      if anchor != decide_anchor:
        continue
      d_side = m["diffs"].get(("skip_sideways", "sideways"))
      d_bp = m["diffs"].get(("skip_sideways", "backprop"))
      if d_side is not None and d_side["mean"] > 0 and _significant(d_side):
        above_sideways.append((v, h))
      if d_bp is not None and d_bp["mean"] > 0 and _significant(d_bp):
        motion.append((v, h))
      skip = m["skill"].get("skip_sideways", {"mean": float("nan")})
      twin = m["diffs"].get(("skip_exact", "backprop"))
      twin_txt = f", skip twin − BP {_pm(twin, 2)}" if twin is not None else ""
      sentence.append(
        f"{v:g} px/frame, horizon {h}: Skip-Sideways skill {skip['mean']:+.2f}, "
        f"Skip − Sideways {_pm(d_side, 2) if d_side is not None else 'n/a'}, "
        f"Skip − BP {_pm(d_bp, 2) if d_bp is not None else 'n/a'}{twin_txt}"
      )
      bad += unconverged(
        _setting(df, v, h), tuple(s for s in tuple(SCHEMES) if s in set(df.scheme)), [v]
      )
  n = len(settings)
  if len(above_sideways) == n and len(motion) == n:
    verdict, why = REPRODUCED, ""
  elif above_sideways or motion:
    verdict = PARTLY
    why = (
      f"Skip-Sideways' skill is above Sideways' at {len(above_sideways)} of {n} settings and "
      f"above per-frame BP's (motion) at {len(motion)} of {n}"
    )
  else:
    verdict = NOT_REPRODUCED
    why = (
      "Skip-Sideways' skill is not significantly above Sideways' at any setting "
      f"(anchor {decide_anchor})"
    )
  seeds = _seeds(decide)
  claim = Claim(
    "C4",
    CLAIMS["C4"],
    f"next-frame prediction, skill against copying the newest frame (1 − MSE / MSE of "
    f"copy-newest on the same pipeline and loss ticks) at {n} speed–horizon settings, every "
    f"scheme beside its exact twin, differences paired by seed, {seeds} seeds; the verdict "
    f"reads anchor {decide_anchor!r}",
    "; ".join(parts),
    verdict,
    why,
    "skill against copying, anchor " + repr(decide_anchor) + ": " + "; ".join(sentence) + ".",
  )
  return _budget_check(claim, bad)


def stash_frontier(df: pd.DataFrame) -> pd.DataFrame:
  """Per stash allocation of a stash sweep: its memory (``stash_bytes``, ``stash_frames``),
  its accuracy (mean, std) and the paired gap to the exact twin (value "full"), and whether
  it is the cheapest allocation at least as accurate as every cheaper one (``frontier``).
  Rows are ordered by memory, the cheapest first (the most accurate first at equal memory)."""
  df = df.assign(value=df.value.astype(str))
  full = df[df.value == "full"].set_index("seed")["accuracy"]
  rows = []
  for (scheme, value), g in df.groupby(["scheme", "value"], sort=False):
    gap = _stats(g.set_index("seed")["accuracy"] - full)
    acc = _stats(g["accuracy"])
    rows.append(
      dict(
        scheme=scheme,
        value=value,
        stash_bytes=float(g.stash_bytes.mean()),
        stash_frames=float(g.stash_frames.mean()),
        accuracy=acc["mean"],
        accuracy_std=acc["std"],
        gap=gap["mean"],
        gap_std=gap["std"],
        seeds=acc["count"],
      )
    )
  out = pd.DataFrame(rows).sort_values(["stash_bytes", "accuracy"], ascending=[True, False])
  out["frontier"] = out.accuracy >= out.accuracy.cummax()
  return out.reset_index(drop=True)


def claim_c5(stash: dict) -> Claim:
  """C5: a stash smaller than the exact twin's recovers its accuracy (within
  :data:`STASH_CLOSE`, paired by seed) — the cheapest such allocation, per task."""
  parts, sentence, hits, bad = [], [], 0, []
  for name, df in stash.items():
    front = stash_frontier(df)
    full = front[front.value == "full"].iloc[0]
    close = front[front.gap >= -STASH_CLOSE]
    cheaper = close[close.stash_bytes < full.stash_bytes]  # a partial stash at full cost is no gain
    ok = cheaper.iloc[0] if len(cheaper) else full
    share = ok.stash_bytes / full.stash_bytes if full.stash_bytes else float("nan")
    none = front[front.value == "0"].iloc[0]
    parts.append(
      f"{name}: stash 0 {_pm({'mean': none.gap, 'std': none.gap_std})} to the exact twin "
      f"({full.accuracy:.3f}); cheapest within {STASH_CLOSE}: "
      f"{ok.value} ({ok.stash_bytes / 2**10:.0f} KiB, {share:.0%} of full, gap "
      f"{ok.gap:+.3f} ± {ok.gap_std:.3f})"
    )
    sentence.append(f"{name} {ok.value} ({share:.0%} of the exact twin's stash)")
    hits += len(cheaper) > 0
    bad += unconverged(df, tuple(df.scheme.unique()))
  verdict = REPRODUCED if hits == len(stash) else PARTLY if hits else NOT_REPRODUCED
  why = (
    ""
    if verdict == REPRODUCED
    else "only the full stash comes within the tolerance on "
    + ("every task" if not hits else "some tasks")
  )
  seeds = max(_seeds(df) for df in stash.values())
  values = dict.fromkeys(v for df in stash.values() for v in df.value.astype(str))
  claim = Claim(
    "C5",
    CLAIMS["C5"],
    f"test clip accuracy against the memory (stash_bytes) of each stash allocation "
    f"({', '.join(values)}; per unit: s_1-s_2-…), paired with the exact twin, {seeds} seeds",
    "; ".join(parts),
    verdict,
    why,
    "the cheapest allocation within "
    + f"{STASH_CLOSE} of the exact twin is "
    + "; ".join(sentence)
    + ".",
  )
  return _budget_check(claim, bad)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _unmeasured(cid: str, what: str) -> Claim:
  return Claim(cid, CLAIMS[cid], "", "", NOT_MEASURED, f"no {what} sweep", "not measured.")


def _robustness(claim: Claim, other: Claim | None) -> Claim:
  """``claim`` with a note on whether ``other`` (the max-pooling readout) agrees: the verdicts
  the numbers give are compared (also for budget-limited claims), and ``other``'s sentence
  shows its numbers."""
  if other is None:
    return claim
  mine, theirs = claim.numbers_say, other.numbers_say
  same = "holds" if mine == theirs else f"flips from {mine}"
  say = f", the numbers say {theirs}" if other.verdict == BUDGET_LIMITED else ""
  note = f"max pooling: {other.verdict}{say} ({same}): {other.summary}"
  return dataclasses.replace(claim, robustness=note)


def claims(results: dict) -> list[Claim]:
  """The claims C1–C5 from the figures' sweeps.

  ``results`` maps ``"digits-speed"``, ``"digits-stride"``, ``"motion-classes"``,
  ``"next-frame-newest"``, ``"next-frame-input"``, ``"stash-digits"``, ``"stash-motion"`` and
  the max-readout sweeps (:data:`MAX_READOUT`) to DataFrames of
  :func:`~sideways_lab.experiments.sweep`; a claim whose sweep is missing is "not measured".
  """
  digits, motion = results.get("digits-speed"), results.get("motion-classes")
  digits_max = results.get(MAX_READOUT["digits-speed"])
  motion_max = results.get(MAX_READOUT["motion-classes"])
  next_frame = {}  # anchor -> the rows of every next-frame sweep with that anchor
  for name, df in results.items():
    if name.startswith("next-frame") and df is not None and len(df):
      for anchor, part in df.groupby("anchor", sort=False):
        next_frame[anchor] = pd.concat([next_frame.get(anchor), part], ignore_index=True)
  next_frame = {a: next_frame[a] for a in ANCHORS if a in next_frame}
  stash = {
    name[len("stash-") :]: df
    for name, df in results.items()
    if name.startswith("stash-") and df is not None
  }
  if digits is None:
    c1, c2 = _unmeasured("C1", "digits-speed"), _unmeasured("C2", "digits-speed")
  else:
    c1 = _robustness(claim_c1(digits), claim_c1(digits_max) if digits_max is not None else None)
    c2 = _robustness(
      claim_c2(digits, results.get("digits-stride")),
      claim_c2(digits_max, None) if digits_max is not None else None,
    )
  c3 = (
    _robustness(claim_c3(motion), claim_c3(motion_max) if motion_max is not None else None)
    if motion is not None
    else _unmeasured("C3", "motion-classes")
  )
  c4 = claim_c4(next_frame) if next_frame else _unmeasured("C4", "next-frame")
  c5 = claim_c5(stash) if stash else _unmeasured("C5", "stash")
  return [c1, c2, c3, c4, c5]


def digest(claim_list: Sequence[Claim]) -> str:
  """The claims in one line each: ``- **C1** — verdict: one sentence.`` (the landing page
  and the README show these)."""
  return "\n".join(f"- **{c.id}** — {c.verdict}: {c.summary}" for c in claim_list)


def claims_report(claim_list: Sequence[Claim], header: str = "") -> str:
  """The claims as Markdown (``figures/claims.md``): a digest, then the table."""
  lines = ["# Claims of the papers, tested", ""]
  if header:
    lines += [header, ""]
  lines += ["## Digest", "", digest(claim_list), "", "## Evidence", ""]
  lines += [
    "| claim | measurement | numbers (mean ± std over seeds) | verdict | why | other readout |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for c in claim_list:
    lines.append(
      f"| **{c.id}** {c.claim} | {c.measurement} | {c.numbers} | **{c.verdict}** | "
      f"{c.why or '—'} | {c.robustness or '—'} |"
    )
  return "\n".join(lines) + "\n"
