"""The papers' claims, tested on the sweeps' results (docs/design.md §9).

Each claim is a function of tidy sweep DataFrames (:func:`sideways_lab.experiments.sweep`)
and, where given, of the sweeps' learning curves and of longer runs; it returns a
:class:`Claim`: the measurement, its numbers (means ± std over seeds, differences paired by
seed with their 95 % Student-t intervals), a verdict, the budgets it holds over, its trend and
whether the compared runs converged.

A verdict reads a **ladder of budgets**: with a constant learning rate after the warmup the
first n steps of a run are the n-step run, so the held-out evaluations along a run (every
eighth of it, the learning curve's "test" points) are the results of shorter runs. Every
rung of the last half of the runs gets the effect's interval, the claim's :class:`Test`
reads it as holds, fails or open, and :func:`ladder_verdict` turns the rungs into a verdict
(reproduced at every budget, emerging at a step, not reproduced, inconclusive) with the
effect's trend per doubling of the budget (:func:`read_ladder`). A claim is
``budget-limited`` only where a longer run contradicts its ladder. Where the sweeps were also
run with the other readout (max pooling), each claim says whether its verdict holds under
both.

    results = {name: experiments.read_results(dir) for name, dir in ...}
    curves = {name: experiments.read_curves(dir) for name, dir in ...}
    text = claims_report(claims(results, curves))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from sideways_lab.experiments import add_skill, paired_difference, summarize
from sideways_lab.models import SCHEMES

#: The confidence of every interval of the report (two-sided, Student t over seeds).
CONFIDENCE = 0.95
#: C1's equivalence margin: Sideways is "close to BP" at a budget when the 95 % interval of
#: the paired accuracy gap Sideways − BP lies inside ±EQUIVALENCE.
EQUIVALENCE = 0.02
#: Skip-Sideways "learns what Sideways cannot" on motion classes: reproduced in full when it is
#: higher by at least this (and its interval is above 0), partly when only above 0.
MOTION_MARGIN = 0.5
#: A stash allocation "recovers the exact twin" at a budget when the 95 % interval of its
#: paired accuracy gap to the exact twin lies above −STASH_CLOSE (non-inferiority).
STASH_CLOSE = 0.02
#: The part of a run whose held-out evaluations decide a claim: steps ≥ LADDER_FROM · N.
LADDER_FROM = 0.5

#: The claims (docs/design.md §9): C1–C4 are the papers'; C5 is the stash knob's.
CLAIMS = {
  "C1": "Sideways trains close to BP on smooth video (digit identity)",
  "C2": "Sideways degrades as the video gets less smooth (speed, frame stride)",
  "C3": "Skip-Sideways integrates time: it learns motion classes that Sideways cannot",
  "C4": "Skip-Sideways predicts future frames better than Sideways",
  "C5": "Less than the full stash (partial, compressed or carried down) recovers the exact "
  "gradient's accuracy",
}
#: The numbers support the claim.
REPRODUCED = "reproduced"
#: The numbers support part of the claim (the reason says which part).
PARTLY = "partly reproduced"
#: The numbers contradict the claim.
NOT_REPRODUCED = "not reproduced"
#: The intervals at the full budget neither support nor contradict the claim: more seeds (or
#: budget) would decide it; the trend and the seeds needed are given.
INCONCLUSIVE = "inconclusive"
#: The ladder's verdict is contradicted by a longer run (or, for a claim read without a
#: ladder, a compared run had not reached its plateau): no verdict.
BUDGET_LIMITED = "budget-limited"
#: The sweep behind the claim was not run.
NOT_MEASURED = "not measured"
#: The sweeps with the head's max-pooling readout that test the robustness of C1–C3, by the
#: name of the mean-pooling sweep they repeat.
MAX_READOUT = {"digits-speed": "digits-speed-max", "motion-classes": "motion-classes-max"}
#: The states of a claim's test at one budget (:class:`Test`).
HOLDS, FAILS, OPEN = "holds", "fails", "open"


@dataclasses.dataclass
class Claim:
  """One row of the claims report.

  Attributes:
    id: "C1" … "C5".
    claim: the claim, in words.
    measurement: what was measured, on which sweep, with how many seeds.
    numbers: the measured numbers (means ± std over seeds, paired differences with their
      95 % intervals, the ladder of budgets).
    verdict: one of reproduced, partly reproduced, not reproduced, inconclusive,
      budget-limited, not measured.
    why: the reason for a verdict other than "reproduced".
    summary: one sentence with the verdict's evidence (the digest).
    robustness: whether the verdict holds with the other readout ("" when not measured).
    at_budget: for a budget-limited claim, the verdict its numbers give at this budget.
    budgets: the budgets the verdict holds over and the effect's trend ("" without a ladder).
    converged: how many compared runs reached their plateau (docs/design.md §9), a sentence.
    seeds: the seeds of the comparison that decides the verdict (0: not recorded).
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
  budgets: str = ""
  converged: str = ""
  seeds: int = 0

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
  """Whether the 95 % Student-t interval over seeds of a paired difference (a summary row:
  mean, std, count) excludes 0: |mean| > t_{0.975, n−1}·std/√n (never with one seed)."""
  n = int(row.get("count", 1))
  if n < 2:
    return False
  std = 0.0 if pd.isna(row["std"]) else row["std"]
  return abs(row["mean"]) > t_quantile(n - 1, CONFIDENCE) * std / np.sqrt(n)


def _at(df, scheme, value, metric="accuracy") -> pd.Series:
  """``metric`` of ``scheme`` at knob ``value``, indexed by seed."""
  return df[(df.scheme == scheme) & _close(df.value, value)].set_index("seed")[metric]


def _stats(x: pd.Series) -> dict:
  x = x.dropna()
  return {"mean": float(x.mean()), "std": float(x.std()) if len(x) > 1 else 0.0, "count": len(x)}


def _seeds(df) -> int:
  return int(df.seed.nunique())


# ---------------------------------------------------------------------------------------------
# Intervals over seeds
# ---------------------------------------------------------------------------------------------


def _two_sided_t_cdf(theta: float, df: int) -> float:
  """P(|T| ≤ √df·tan θ) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3–4):
  with c = cos θ, s = sin θ, for odd df (2/π)(θ + s·c·Σ_{k<(df−1)/2} a_k c^{2k}), a_0 = 1,
  a_k = a_{k−1}·2k/(2k+1) (2θ/π for df = 1); for even df s·Σ_{k<df/2} b_k c^{2k}, b_0 = 1,
  b_k = b_{k−1}·(2k−1)/(2k)."""
  c, s = np.cos(theta), np.sin(theta)
  total, term = 1.0, 1.0
  if df % 2:
    for k in range(1, (df - 1) // 2):
      term *= 2 * k / (2 * k + 1) * c * c
      total += term
    return float(2 / np.pi * (theta + (s * c * total if df > 1 else 0.0)))
  for k in range(1, df // 2):
    term *= (2 * k - 1) / (2 * k) * c * c
    total += term
  return float(s * total)


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
  """The two-sided Student-t quantile t with ``P(|T_df| <= t) = confidence``, i.e.
  t_{(1+confidence)/2, df}: an interval mean ± t·sd/√n over n seeds has df = n − 1 (4.303 for
  3 seeds, 2.776 for 5, 1.960 in the limit). Exact for integer ``df`` ≥ 1: the closed-form
  CDF, inverted by bisection in θ = atan(t/√df) to machine precision."""
  if isinstance(df, bool) or int(df) != df or df < 1:
    raise ValueError(f"df must be an int >= 1, got {df!r}")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
  lo, hi = 0.0, np.pi / 2
  for _ in range(64):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if _two_sided_t_cdf(mid, int(df)) < confidence else (lo, mid)
  return float(np.sqrt(df) * np.tan((lo + hi) / 2))


@dataclasses.dataclass(frozen=True)
class Interval:
  """A mean over seeds with its two-sided Student-t confidence interval (:func:`t_interval`).

  Attributes:
    mean: the mean of the per-seed values.
    low, high: ``mean ∓ t_{(1+c)/2, n−1}·sd/√n`` (NaN with one seed).
    std: the standard deviation over seeds (ddof 1; 0 with one seed).
    seeds: n, the number of seeds.
  """

  mean: float
  low: float
  high: float
  std: float
  seeds: int

  def text(self, digits: int = 3) -> str:
    """``+0.012 [-0.005, +0.029]``, or ``+0.012 (1 seed)`` without an interval."""
    if self.seeds < 2:
      return f"{self.mean:+.{digits}f} ({self.seeds} seed)"
    return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

  @property
  def excludes_zero(self) -> bool:
    """Whether the interval lies on one side of 0 (a difference the seeds tell from 0)."""
    return bool(self.low > 0 or self.high < 0)

  @property
  def point(self) -> Interval:
    """The mean as a zero-width interval (how a single longer run is read)."""
    return dataclasses.replace(self, low=self.mean, high=self.mean)


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
  """The mean of ``values`` (one per seed; NaN dropped) with its Student-t interval
  ``mean ± t_{(1+confidence)/2, n−1}·sd/√n``: the paired differences of n seeds are taken as
  independent draws (with 3 seeds t = 4.30, so "twice the standard error" is an 82 %
  interval). One value: the mean, without an interval."""
  x = np.asarray(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce"), float)
  x = x[np.isfinite(x)]
  if not x.size:
    raise ValueError("values must hold at least one finite number")
  mean = float(x.mean())
  if x.size < 2:
    return Interval(mean, float("nan"), float("nan"), 0.0, 1)
  std = float(x.std(ddof=1))
  half = t_quantile(x.size - 1, confidence) * std / np.sqrt(x.size)
  return Interval(mean, mean - half, mean + half, std, int(x.size))


def seeds_needed(std: float, distance: float, confidence: float = CONFIDENCE, most: int = 100):
  """The fewest seeds n ≤ ``most`` whose interval half-width t_{n−1}·std/√n is below
  ``distance`` (how far a mean lies from the bound a verdict needs its interval to clear), if
  the mean and the spread stayed as they are; None when ``distance`` ≤ 0 or no such n."""
  if not (distance > 0 and np.isfinite(std)):
    return None
  for n in range(2, most + 1):
    if t_quantile(n - 1, confidence) * std / np.sqrt(n) < distance:
      return n
  return None


# ---------------------------------------------------------------------------------------------
# Ladders of budgets (docs/design.md §9)
# ---------------------------------------------------------------------------------------------


def _key(value) -> str:
  """A knob value as one string in results and curves alike: numbers as ``%g`` ("0.125",
  "2"), labels as they are ("6-0-2", "full")."""
  try:
    return f"{float(value):g}"
  except (TypeError, ValueError):
    return str(value)


def ladder_frame(
  df: pd.DataFrame, curves: pd.DataFrame | None = None, metric: str = "accuracy", start=LADDER_FROM
) -> pd.DataFrame:
  """The held-out ``metric`` of every run at every budget of its ladder: columns ``scheme,
  value`` (``_key`` strings), ``seed, step`` and ``metric``.

  From ``curves`` (a sweep's learning curves, :func:`sideways_lab.experiments.read_curves`):
  every held-out evaluation at a step ≥ ``start`` · N, N the run's last step (with 8
  evaluations per run and ``start`` 0.5: N/2, 5N/8, …, N; ``start`` 0: all of them). Without
  curves: the final result of each run of ``df`` at its ``steps`` (one rung)."""
  if curves is None:
    out = df[["scheme", "value", "seed", "steps", metric]].rename(columns={"steps": "step"})
  else:
    test = curves[(curves.split == "test") & (curves.metric == metric)]
    out = test[["scheme", "value", "seed", "step", "y"]].rename(columns={"y": metric})
    last = out.groupby(["scheme", "value", "seed"]).step.transform("max")
    out = out[out.step >= start * last - 1e-9]
  out = out.assign(value=out.value.map(_key), step=out.step.astype(int))
  return out.dropna(subset=[metric]).reset_index(drop=True)


def paired_ladder(frame: pd.DataFrame, a: str, b: str, value, b_value=None) -> pd.DataFrame:
  """``metric(a) − metric(b)`` per seed at every step of a :func:`ladder_frame`, for schemes
  ``a`` at knob ``value`` and ``b`` at ``b_value`` (default ``value``): columns ``step, seed,
  diff`` (the runs of a seed share their clips and initial parameters, so the difference is
  paired). Empty when the frame has no such pair."""
  metric = frame.columns[-1]

  def series(scheme, v):
    rows = frame[(frame.scheme == scheme) & (frame.value == _key(v))]
    return rows.set_index(["step", "seed"])[metric]

  diff = (series(a, value) - series(b, value if b_value is None else b_value)).dropna()
  return diff.rename("diff").reset_index().sort_values(["step", "seed"], ignore_index=True)


@dataclasses.dataclass(frozen=True)
class Test:
  """How a claim reads an effect's interval at one budget.

  ``kind`` "within": holds when the interval lies inside ±``bound`` (equivalence), fails
  when it lies wholly outside. "above": holds when it lies above ``bound``, fails when it lies
  below ``fail`` (default ``bound``; a ``fail`` above ``bound`` makes "not reproduced" mean
  "smaller than a meaningful effect", not only "of the other sign"). "below": the mirror
  image (holds below ``bound``, fails above ``fail``). Anything else is open.
  """

  kind: str
  bound: float = 0.0
  fail: float | None = None

  def __post_init__(self):
    if self.kind not in ("within", "above", "below"):
      raise ValueError(f'kind must be "within", "above" or "below", got {self.kind!r}')

  @property
  def fail_bound(self) -> float:
    """The bound beyond which the claim fails ("above"/"below")."""
    return self.bound if self.fail is None else self.fail

  def state(self, iv: Interval) -> str:
    """:data:`HOLDS`, :data:`FAILS` or :data:`OPEN` for ``iv`` (NaN bounds: open)."""
    lo, hi, b, f = iv.low, iv.high, self.bound, self.fail_bound
    if self.kind == "within":
      return HOLDS if -b <= lo and hi <= b else FAILS if hi < -b or lo > b else OPEN
    if self.kind == "above":
      return HOLDS if lo > b else FAILS if hi < f else OPEN
    return HOLDS if hi < b else FAILS if lo > f else OPEN

  def distance(self, mean: float) -> float:
    """How far ``mean`` lies from the bound its interval must clear to decide (the farther
    of the two for "above"/"below": the one an interval shrinking around ``mean`` clears)."""
    if self.kind == "within":
      return abs(self.bound - abs(mean))
    sign = 1 if self.kind == "above" else -1
    return max(sign * (mean - self.bound), sign * (self.fail_bound - mean))

  def toward(self, mean: float, slope: float) -> bool:
    """Whether an effect at ``mean`` that changes by ``slope`` moves toward holding."""
    if self.kind == "within":
      return slope * np.sign(mean) < 0
    return slope > 0 if self.kind == "above" else slope < 0

  def describe(self) -> str:
    """``inside ±0.02``, ``above 0``, ``above 0 (fails below 0.02)``."""
    if self.kind == "within":
      return f"inside ±{self.bound:g}"
    if self.fail is None:
      return f"{self.kind} {self.bound:g}"
    other = "below" if self.kind == "above" else "above"
    return f"{self.kind} {self.bound:g} (fails {other} {self.fail:g})"

  def open_text(self) -> str:
    """What an open interval does: ``is neither inside ±0.02 nor wholly outside it``."""
    if self.kind == "within":
      return f"is neither inside ±{self.bound:g} nor wholly outside it"
    if self.fail is None:
      return f"contains {self.bound:g}"
    other = "below" if self.kind == "above" else "above"
    return f"is neither {self.kind} {self.bound:g} nor {other} {self.fail:g}"


def _runs(steps, states, state) -> tuple[int, ...]:
  return tuple(s for s, x in zip(steps, states) if x == state)


def _steps_text(steps) -> str:
  return ", ".join(f"{s}" for s in steps) + " steps"


def ladder_verdict(steps: Sequence[int], states: Sequence[str]) -> tuple[str, str]:
  """The verdict of a ladder and the budgets it holds over (docs/design.md §9).

  ``states`` (:data:`HOLDS`, :data:`FAILS`, :data:`OPEN`) belong to ``steps``, the rungs of
  the last half of the runs in increasing order, the last the full budget N:

  * holds at every rung: reproduced "at every budget from N/2 to N steps";
  * holds from rung n to N and not at the rung before: reproduced, "emerges at step n";
  * fails at every rung (or from rung n on): not reproduced, with the same budgets;
  * otherwise (open at N, or a state that changes back): inconclusive, with the rungs where
    it held or failed.
  """
  steps, states = list(steps), list(states)
  if not steps or len(steps) != len(states):
    raise ValueError(f"steps and states must be non-empty and as long, got {steps}, {states}")
  last, n = states[-1], len(states)
  if last in (HOLDS, FAILS):
    j = n - 1
    while j > 0 and states[j - 1] == last:
      j -= 1
    verdict = REPRODUCED if last == HOLDS else NOT_REPRODUCED
    if n == 1:
      return verdict, f"at {steps[-1]} steps (the only budget measured)"
    if j == 0:
      return verdict, f"at every budget from {steps[0]} to {steps[-1]} steps"
    if last == HOLDS:
      return verdict, (
        f"emerges at step {steps[j]} (holds from there to {steps[-1]} steps, not at {steps[j - 1]})"
      )
    return verdict, f"from step {steps[j]} to {steps[-1]} (not at {steps[j - 1]})"
  held, failed = _runs(steps, states, HOLDS), _runs(steps, states, FAILS)
  text = f"open at {steps[-1]} steps"
  if not held and not failed:
    text = f"open at every budget from {steps[0]} to {steps[-1]} steps"
  if held:
    text += f"; held at {_steps_text(held)}"
  if failed:
    text += f"; failed at {_steps_text(failed)}"
  return INCONCLUSIVE, text


def per_doubling(ladder: pd.DataFrame) -> Interval | None:
  """The effect's trend: per seed, the least-squares slope of ``diff`` against log2 of the
  step (the change per doubling of the budget), then its mean and t-interval over seeds; None
  with fewer than two steps."""
  slopes = []
  for _, g in ladder.groupby("seed"):
    if g.step.nunique() >= 2:
      slopes.append(float(np.polyfit(np.log2(g.step.astype(float)), g["diff"], 1)[0]))
  return t_interval(slopes) if slopes else None


@dataclasses.dataclass(frozen=True)
class Reading:
  """A claim's effect read along its ladder of budgets (:func:`read_ladder`).

  Attributes:
    steps: the rungs (steps) in increasing order, the last the full budget.
    intervals: the effect's :class:`Interval` at each rung.
    states: the test's state at each rung (:data:`HOLDS`, :data:`FAILS`, :data:`OPEN`).
    verdict: :func:`ladder_verdict`'s, or budget-limited where a longer run contradicts it.
    ladder_verdict: the verdict of the ladder alone.
    budgets: the budgets it holds over (:func:`ladder_verdict`).
    trend: the change of the effect per doubling of the budget (:func:`per_doubling`).
    longer: ``(steps, Interval, state)`` of each longer run (one seed: read as a point).
    test: the claim's :class:`Test`.
  """

  steps: tuple
  intervals: tuple
  states: tuple
  verdict: str
  ladder_verdict: str
  budgets: str
  trend: Interval | None
  longer: tuple
  test: Test

  @property
  def final(self) -> Interval:
    """The effect at the full budget."""
    return self.intervals[-1]

  def trend_text(self) -> str:
    """``the gap closes by 0.054 per doubling of the budget (per-seed slopes …)`` (a test
    "within"), else ``the effect falls by 0.038 per doubling …, away from the claim``."""
    if self.trend is None:
      return ""
    t, toward = self.trend, self.test.toward(self.final.mean, self.trend.mean)
    if self.test.kind == "within":
      what = f"the gap {'closes' if toward else 'widens'}"
    else:
      what = f"the effect {'rises' if t.mean > 0 else 'falls'}"
    noise = "" if t.excludes_zero or t.seeds < 2 else ", not distinguishable from no trend"
    side = (
      "" if self.test.kind == "within" else f", {'toward' if toward else 'away from'} the claim"
    )
    return (
      f"{what} by {abs(t.mean):.3f} per doubling of the budget{side} "
      f"(per-seed slopes {t.text()}{noise})"
    )

  def seeds_text(self) -> str:
    """For an open final rung: how many seeds would decide it at this mean and spread."""
    f = self.final
    if self.states[-1] != OPEN or f.seeds < 2:
      return ""
    n = seeds_needed(f.std, self.test.distance(f.mean))
    return (
      f"at this mean and spread about {n} seeds would decide it"
      if n
      else "the mean sits at the bound: no number of seeds would decide it"
    )

  def longer_text(self) -> str:
    """``seed 0 at 2500 steps: +0.023`` for each longer run."""
    return "; ".join(
      f"{'seed 0' if iv.seeds == 1 else f'{iv.seeds} seeds'} at {s} steps: {iv.text()}"
      for s, iv, _ in self.longer
    )


def read_ladder(ladder: pd.DataFrame, test: Test, longer: pd.DataFrame | None = None) -> Reading:
  """Reads an effect along its ladder of budgets (docs/design.md §9).

  Args:
    ladder: the effect per seed at each rung, columns ``step, seed, diff``
      (:func:`paired_ladder`, or any per-seed effect).
    test: how the claim reads an interval (:class:`Test`).
    longer: the same effect from longer runs (columns ``step, seed, diff``), or None. A longer
      run of one seed is read as a point.

  Returns:
    A :class:`Reading`: the interval and state at every rung, the verdict
    (:func:`ladder_verdict`), the trend per doubling and the longer runs. The verdict is
    budget-limited where a longer run fails a claim the ladder reproduces, or holds one it
    does not.
  """
  if ladder.empty:
    raise ValueError("ladder has no paired runs")
  steps = tuple(int(s) for s in sorted(ladder.step.unique()))
  intervals = tuple(t_interval(ladder[ladder.step == s]["diff"]) for s in steps)
  states = tuple(test.state(iv) for iv in intervals)
  verdict, budgets = ladder_verdict(steps, states)
  rows = []
  if longer is not None and not longer.empty:
    for s in sorted(longer.step.unique()):
      if s > steps[-1]:
        iv = t_interval(longer[longer.step == s]["diff"])
        rows.append((int(s), iv, test.state(iv if iv.seeds > 1 else iv.point)))
  against = {REPRODUCED: FAILS, NOT_REPRODUCED: HOLDS}.get(verdict)
  final = BUDGET_LIMITED if any(state == against for _, _, state in rows) else verdict
  return Reading(
    steps, intervals, states, final, verdict, budgets, per_doubling(ladder), tuple(rows), test
  )


def ladder_table(reading: Reading) -> str:
  """``500: -0.050 [-0.105, +0.005] open; …`` — the effect at every rung and its state."""
  return "; ".join(
    f"{s}: {iv.text()} {state}"
    for s, iv, state in zip(reading.steps, reading.intervals, reading.states)
  )


# ---------------------------------------------------------------------------------------------
# Convergence: a column and a sentence
# ---------------------------------------------------------------------------------------------


def _compared(df: pd.DataFrame, schemes, values=None) -> pd.DataFrame:
  rows = df[df.scheme.isin(schemes)]
  if values is not None:
    keys = {_key(v) for v in values}
    rows = rows[rows.value.map(_key).isin(keys)]
  return rows


def _is_converged(rows: pd.DataFrame) -> pd.Series:
  return rows.converged.astype(str).str.lower().isin(["true", "1"])


def unconverged(df: pd.DataFrame, schemes, values=None) -> list[str]:
  """The runs of ``schemes`` (at knob ``values``, if given) that did not reach their plateau
  (``converged`` False), each as "scheme value seed (loss change over the last fifth)"."""
  if "converged" not in df.columns:
    return []
  rows = _compared(df, schemes, values)
  bad = rows[~_is_converged(rows)]
  return [
    f"{r.scheme} at {r.value} seed {r.seed} ({float(r.plateau_change):+.0%})"
    for r in bad.itertuples()
  ]


def convergence_text(df: pd.DataFrame, schemes, values=None) -> str:
  """How many compared runs reached their plateau (docs/design.md §9), as a sentence: "2 of
  9 compared runs converged; the others' training loss still falls 11–22 % over the last
  fifth of the run" ("" when ``df`` has no ``converged`` column)."""
  if "converged" not in df.columns:
    return ""
  rows = _compared(df, schemes, values)
  ok = _is_converged(rows)
  text = f"{int(ok.sum())} of {len(rows)} compared runs converged"
  moving = pd.to_numeric(rows[~ok].plateau_change, errors="coerce").dropna()
  if len(moving):
    lo, hi = 100 * moving.min(), 100 * moving.max()
    span = f"{lo:+.0f} %" if round(lo) == round(hi) else f"{lo:+.0f} to {hi:+.0f} %"
    text += (
      f"; the others' training-loss trend over the last fifth of the run is {span} "
      f"(positive: still falling)"
    )
  return text


def _budget_check(claim: Claim, bad: list[str]) -> Claim:
  """``claim`` as "budget-limited" when any compared run in ``bad`` had not converged (the
  rule for a claim read without a ladder of budgets)."""
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


def _longer_ladder(longer, a, b, value, b_value=None, metric="accuracy"):
  """The effect ``a − b`` in the longer runs (results of longer sweeps), or None."""
  if longer is None or not {a, b} <= set(longer.scheme):
    return None
  out = paired_ladder(ladder_frame(longer, None, metric), a, b, value, b_value)
  return out if len(out) else None


def _sentence(effect: str, r: Reading, bound: str) -> str:
  """The digest's sentence of a claim read along its ladder: the effect with its interval and
  seeds at the full budget, the budgets it holds over, its trend and the longer runs."""
  parts = [
    f"{effect} is {r.final.text()} after {r.steps[-1]} steps (95 % t-interval, "
    f"{r.final.seeds} seeds)",
    f"{bound}: {_state_word(r)}{r.budgets}",
  ]
  parts += [p for p in (r.trend_text(), r.longer_text()) if p]
  return "; ".join(parts) + "."


def _state_word(r: Reading) -> str:
  """ "holds " or "fails " before the budgets of a decided ladder ("" for an open one, whose
  budgets say it)."""
  return {REPRODUCED: "holds ", NOT_REPRODUCED: "fails "}.get(r.ladder_verdict, "")


def _budgets(r: Reading) -> str:
  """The budgets column: the budgets, the trend and the longer runs."""
  parts = [r.budgets, r.trend_text(), r.longer_text()]
  return "; ".join(p for p in parts if p)


def _open_why(r: Reading) -> str:
  """Why an inconclusive claim is open: the final interval against the bound, the seeds."""
  why = f"the 95 % interval at {r.steps[-1]} steps, {r.final.text()}, {r.test.open_text()}"
  seeds = r.seeds_text()
  return why + (f"; {seeds}" if seeds else "")


def _ladder_claim(
  cid, measurement, numbers, r: Reading, effect, bound, why, converged, open_why=None
) -> Claim:
  """A :class:`Claim` from a :class:`Reading` (its verdict is the reading's); ``why`` is the
  claim's own reason, after the open interval's (``open_why``, default :func:`_open_why`) for
  an inconclusive claim."""
  reasons = [open_why or _open_why(r)] if r.verdict == INCONCLUSIVE else []
  reasons += [why] if why else []
  if r.verdict == BUDGET_LIMITED:
    reasons.append(f"a longer run contradicts the ladder's verdict ('{r.ladder_verdict}')")
  return Claim(
    cid,
    CLAIMS[cid],
    measurement,
    numbers,
    r.verdict,
    "; ".join(reasons),
    _sentence(effect, r, bound),
    at_budget=r.ladder_verdict if r.verdict == BUDGET_LIMITED else "",
    budgets=_budgets(r),
    converged=converged,
    seeds=r.final.seeds,
  )


def claim_c1(
  digits: pd.DataFrame, curves: pd.DataFrame | None = None, longer: pd.DataFrame | None = None
) -> Claim:
  """C1: Sideways trains close to BP on smooth video (digit identity, the smoothest speed).

  The effect is the paired accuracy gap Sideways − BP; it holds at a budget when its 95 %
  interval lies inside ±:data:`EQUIVALENCE` (equivalence, not the absence of a significant
  difference) and fails when it lies wholly outside; the verdict reads the ladder of budgets
  of ``curves`` (:func:`read_ladder`; without curves, the final results) and the ``longer``
  runs. The gap is split into the pipeline's delay (exact twin − BP) and the estimate
  (Sideways − exact twin)."""
  v = float(pd.to_numeric(digits.value).min())
  frame = ladder_frame(digits, curves)
  test = Test("within", EQUIVALENCE)
  r = read_ladder(
    paired_ladder(frame, "sideways", "backprop", v),
    test,
    _longer_ladder(longer, "sideways", "backprop", v),
  )
  last = frame[frame.step == frame.step.max()]
  delay = t_interval(paired_ladder(last, "sideways_exact", "backprop", v)["diff"])
  estimate = t_interval(paired_ladder(last, "sideways", "sideways_exact", v)["diff"])
  numbers = (
    f"speed {v:g}, {r.steps[-1]} steps: BP {_acc(digits, 'backprop', v)}, Sideways "
    f"{_acc(digits, 'sideways', v)}, exact twin {_acc(digits, 'sideways_exact', v)}; "
    f"paired Sideways − BP {r.final.text()} (delay: exact twin − BP {delay.text()}; "
    f"estimate: Sideways − exact twin {estimate.text()}); along the budgets: {ladder_table(r)}"
  )
  why = ""
  if r.ladder_verdict == NOT_REPRODUCED:
    side = "ahead of" if r.final.low > EQUIVALENCE else "behind"
    part = "the gradient estimate" if estimate.mean < delay.mean else "the pipeline's delay"
    why = (
      f"Sideways is {side} BP by more than {EQUIVALENCE:g}; most of the gap is {part} "
      f"(paired differences above, same clips and initial parameters per seed)"
    )
  return _ladder_claim(
    "C1",
    f"test clip accuracy at every held-out evaluation of the last half of the runs, smoothest "
    f"speed of the digits sweep, {_seeds(digits)} seeds",
    numbers,
    r,
    f"at {v:g} px/frame the accuracy gap Sideways − BP",
    f"interval inside ±{EQUIVALENCE:g} (the equivalence margin)",
    why,
    convergence_text(digits, ("backprop", "sideways", "sideways_exact"), [v]),
  )


def _widening(frame: pd.DataFrame, lo, hi) -> pd.DataFrame:
  """Per seed and step: (Sideways − exact twin at ``lo``) − (the same at ``hi``), the growth of
  the estimate's cost from the smoothest to the roughest setting (positive: it degrades)."""
  a = paired_ladder(frame, "sideways", "sideways_exact", lo).set_index(["step", "seed"])
  b = paired_ladder(frame, "sideways", "sideways_exact", hi).set_index(["step", "seed"])
  return (a["diff"] - b["diff"]).dropna().rename("diff").reset_index()


def _degrades(df, curves, longer) -> tuple[Reading, str]:
  """The widening of Sideways' gap to its exact twin along the ladder of one sweep, and the
  numbers: each end's gap and each scheme's own drop at the full budget."""
  values = pd.to_numeric(df.value)
  lo, hi = float(values.min()), float(values.max())
  frame = ladder_frame(df, curves)
  long = None
  if longer is not None and {"sideways", "sideways_exact"} <= set(longer.scheme):
    long = _widening(ladder_frame(longer), lo, hi)
  r = read_ladder(_widening(frame, lo, hi), Test("above", 0.0, EQUIVALENCE), long)
  last = frame[frame.step == frame.step.max()]
  gaps = [
    t_interval(paired_ladder(last, "sideways", "sideways_exact", v)["diff"]) for v in (lo, hi)
  ]
  drops = {
    s: t_interval(paired_ladder(last, s, s, lo, hi)["diff"])
    for s in ("sideways", "sideways_exact", "backprop")
    if s in set(df.scheme)
  }
  names = {"sideways": "Sideways", "sideways_exact": "exact twin", "backprop": "BP"}
  text = (
    f"{df.knob.iloc[0]} {lo:g} → {hi:g}, {r.steps[-1]} steps: Sideways − exact twin "
    f"{gaps[0].text()} → {gaps[1].text()} (widens by {r.final.text()}); accuracy drop "
    + ", ".join(f"{names[s]} {d.text()}" for s, d in drops.items())
    + f"; widening along the budgets: {ladder_table(r)}"
  )
  return r, text


def _same_runs(results: dict) -> list[str]:
  """The numbers of each sweep of C2, a sweep whose ladder repeats the speed sweep's (strides
  at 0.125 px/frame are the speed sweep's runs) said in a few words."""
  first, text = results["speed"]
  out = [text]
  for k, (r, t) in results.items():
    if k != "speed":
      same = r.steps == first.steps and r.intervals == first.intervals
      out.append(f"{k}: the same runs and numbers as the speed sweep" if same else t)
  return out


def claim_c2(
  speed: pd.DataFrame,
  stride: pd.DataFrame | None,
  curves: dict | None = None,
  longer: dict | None = None,
) -> Claim:
  """C2: Sideways degrades as the video gets less smooth (speed, frame stride).

  The control is Sideways' exact twin (same graph, same delay, same clips and initial
  parameters per seed): the effect is the widening of the gap Sideways − exact twin from the
  smoothest to the roughest video, paired by seed; it holds at a budget when its 95 %
  interval lies above 0 and fails when below. ``curves`` and ``longer`` map "speed" and
  "stride" to the sweeps' learning curves and longer runs. Reproduced when every sweep's
  ladder says so, partly when one does.
  """
  curves, longer = curves or {}, longer or {}
  sweeps = {"speed": speed} | ({"stride": stride} if stride is not None else {})
  results = {k: _degrades(df, curves.get(k), longer.get(k)) for k, df in sweeps.items()}
  verdicts = [r.verdict for r, _ in results.values()]
  r = results["speed"][0]
  verdict = (
    verdicts[0] if len(set(verdicts)) == 1 else PARTLY if REPRODUCED in verdicts else r.verdict
  )
  why = ""
  if verdict == PARTLY:
    why = "the gap widens significantly in " + ", ".join(
      k for k, (x, _) in results.items() if x.verdict == REPRODUCED
    )
  elif verdict == NOT_REPRODUCED:
    why = "the gap between Sideways and its exact twin does not widen: it narrows significantly"
  v = pd.to_numeric(speed.value)
  claim = _ladder_claim(
    "C2",
    "digits: the widening of the paired accuracy gap Sideways − exact twin from the smoothest "
    "to the roughest setting (the exact twin controls for the data and the pipeline's delay) "
    f"at every held-out evaluation of the last half of the runs, and each scheme's own drop, "
    f"{_seeds(speed)} seeds",
    "; ".join(_same_runs(results)),
    r,
    f"the widening of the gap Sideways − exact twin from {v.min():g} to {v.max():g} px/frame",
    f"interval above 0 (fails wholly below {EQUIVALENCE:g})",
    why,
    convergence_text(speed, ("backprop", "sideways", "sideways_exact"), [v.min(), v.max()]),
  )
  return dataclasses.replace(claim, verdict=verdict)


def claim_c3(
  motion: pd.DataFrame, curves: pd.DataFrame | None = None, longer: pd.DataFrame | None = None
) -> Claim:
  """C3: Skip-Sideways integrates time: it learns motion classes that Sideways cannot.

  The effect is the paired accuracy gain Skip-Sideways − Sideways; it holds at a budget when
  its 95 % interval lies above 0 and fails when below (:func:`read_ladder` along ``curves``
  and the ``longer`` runs); a gain below :data:`MOTION_MARGIN` makes a reproduced claim
  partly reproduced."""
  v = float(pd.to_numeric(motion.value).iloc[0])
  frame = ladder_frame(motion, curves)
  r = read_ladder(
    paired_ladder(frame, "skip_sideways", "sideways", v),
    Test("above", 0.0, EQUIVALENCE),
    _longer_ladder(longer, "skip_sideways", "sideways", v),
  )
  last = frame[frame.step == frame.step.max()]
  twin = t_interval(paired_ladder(last, "skip_sideways", "skip_exact", v)["diff"])
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
  skip = motion[motion.scheme == "skip_sideways"].sort_values("seed").accuracy
  numbers = (
    f"chance {chance:.3f}; {r.steps[-1]} steps: {accs}; Skip-Sideways per seed "
    f"{', '.join(f'{a:.3f}' for a in skip)}; paired Skip − Sideways {r.final.text()}, "
    f"Skip − exact twin {twin.text()}; Skip − Sideways along the budgets: {ladder_table(r)}"
  )
  verdict, why = r.verdict, ""
  if r.verdict == REPRODUCED and r.final.mean < MOTION_MARGIN:
    verdict, why = PARTLY, f"Skip-Sideways beats Sideways by less than {MOTION_MARGIN}"
  elif r.ladder_verdict == NOT_REPRODUCED:
    why = "Skip-Sideways is below Sideways"
  cols = [c for c in motion.columns if c.startswith("class_")]
  if cols and (verdict != REPRODUCED or twin.mean < -EQUIVALENCE):
    per = motion[motion.scheme.isin(["skip_sideways", "skip_exact"])].groupby("scheme")[cols]
    gaps = (per.mean().loc["skip_exact"] - per.mean().loc["skip_sideways"]).sort_values()
    worst = ", ".join(f"{c[6:]} {g:+.2f}" for c, g in gaps[::-1].head(3).items())
    why = (why + "; " if why else "") + f"largest per-class gaps to the exact twin: {worst}"
  claim = _ladder_claim(
    "C3",
    f"motion classes, test clip accuracy at speed {v:g} at every held-out evaluation of the "
    f"last half of the runs, {_seeds(motion)} seeds",
    numbers,
    r,
    f"on motion classes (chance {chance:.3f}) the accuracy gain Skip-Sideways − Sideways",
    f"interval above 0 (fails wholly below {EQUIVALENCE:g})",
    why,
    convergence_text(motion, ("sideways", "skip_sideways", "skip_exact")),
  )
  return dataclasses.replace(claim, verdict=verdict)


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


def _plot_name(scheme: str) -> str:
  """A scheme's name in a label: "Sideways", "per-frame BP"."""
  return {"backprop": "per-frame BP", "sideways": "Sideways"}.get(scheme, scheme)


def _skill_ladder(
  df: pd.DataFrame, curves: pd.DataFrame | None, v: float, start: float = LADDER_FROM
) -> pd.DataFrame:
  """A :func:`ladder_frame` of skill against copying at knob value ``v``: the held-out MSE of
  every run at every rung divided by its copy-newest baseline's (same seed and pipeline; a
  baseline does not train, so one value serves every budget)."""
  frame = ladder_frame(df, curves, "mse", start)
  frame = frame[frame.scheme.isin(list(SCHEMES))]
  copy = df[df.scheme == "copy_newest"].assign(
    mode=lambda d: np.where(d.method == "synchronous", "synchronous", "pipelined")
  )
  copy = copy[_close(copy.value, v)].groupby(["seed", "graph", "mode"]).mse.mean()
  mode = {s: ("synchronous" if m == "backprop" else "pipelined") for s, (_, m) in SCHEMES.items()}
  keys = zip(frame.seed, frame.scheme.map(lambda s: SCHEMES[s][0]), frame.scheme.map(mode))
  base = np.array([copy.get(k, np.nan) for k in keys], dtype=float)
  return frame.assign(skill=1.0 - frame.mse.to_numpy(dtype=float) / base).drop(columns="mse")


def claim_c4(next_frame: dict, curves: dict | None = None) -> Claim:
  """C4: Skip-Sideways predicts future frames better than Sideways, capturing motion cues.

  ``next_frame`` maps a name (a sweep's, or an anchor) to next-frame results; ``curves`` the
  same names to their learning curves (the ladders of budgets; without, the final results).
  Measured by skill against persistence, ``1 − MSE / MSE(copy-newest)`` on the same pipeline
  and loss ticks (:func:`~sideways_lab.experiments.add_skill`), at every (speed, horizon)
  setting, paired by seed (:data:`C4_PAIRS`). The verdict reads the anchor ``"newest"`` (every
  scheme forecasts the same horizon from what it has seen, so only the graph and the gradient
  differ) along the ladder of budgets (:func:`read_ladder`): at each setting Skip-Sideways −
  Sideways (the claim) and Skip-Sideways − per-frame BP (motion: a per-frame model earns skill
  by predicting the blur over directions, so *capturing motion* is skill above BP's) hold when
  their 95 % interval lies above 0 and fail when it lies below. ``"input"`` (the pipeline's
  latency counts) is reported beside it with paired differences of test MSE: there each
  pipeline's copy baseline is another frame, while every scheme has the same targets.

  Reproduced when both hold at every setting; not reproduced when Skip-Sideways − Sideways
  fails at every setting; partly when some reading holds; inconclusive otherwise. The exact
  twins split each gap: the skip twin against BP says whether the skip graph can learn motion
  at all, Skip-Sideways against its twin what the estimate costs."""
  curves = curves or {}
  sets = {k: add_skill(df) for k, df in next_frame.items() if df is not None and len(df)}
  parts, readings, converged = [], [], []
  for key, df in sets.items():
    anchor = str(df.anchor.iloc[0])
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
      if anchor != "newest":
        continue
      frame = _skill_ladder(_setting(df, v, h), curves.get(key), v)
      test = Test("above", 0.0)
      side = read_ladder(paired_ladder(frame, "skip_sideways", "sideways", v), test)
      bp = read_ladder(paired_ladder(frame, "skip_sideways", "backprop", v), test)
      readings.append((v, h, side, bp))
      parts[-1] += f"; Skip − Sideways along the budgets: {ladder_table(side)}"
      converged.append(convergence_text(_setting(df, v, h), tuple(SCHEMES), [v]))
  if not readings:
    raise ValueError('claim C4 needs next-frame results with anchor "newest"')
  sides = [r[2].ladder_verdict for r in readings]
  bps = [r[3].ladder_verdict for r in readings]
  n = len(readings)
  if all(x == REPRODUCED for x in sides + bps):
    verdict, why = REPRODUCED, ""
  elif all(x == NOT_REPRODUCED for x in sides):
    verdict = NOT_REPRODUCED
    twin = [r for r in readings if r[3].final.mean < 0]
    why = f"Skip-Sideways' skill is below Sideways' at every budget of all {n} settings" + (
      ", and below per-frame BP's, where its exact twin is above it" if twin else ""
    )
  elif REPRODUCED in sides + bps:
    verdict = PARTLY
    why = (
      f"Skip-Sideways' skill is above Sideways' at {sides.count(REPRODUCED)} of {n} settings "
      f"and above per-frame BP's (motion) at {bps.count(REPRODUCED)} of {n}"
    )
  else:
    verdict, why = INCONCLUSIVE, "the intervals are open at the full budget"
  sentence = "; ".join(
    _sentence(
      f"at {v:g} px/frame, {h} frame{'s' if h > 1 else ''} ahead, the skill gain Skip-Sideways "
      f"− Sideways",
      side,
      "interval above 0",
    )[:-1]
    + f"; Skip-Sideways − per-frame BP {bp.final.text()}"
    for v, h, side, bp in readings
  )
  seeds = readings[0][2].final.seeds
  return Claim(
    "C4",
    CLAIMS["C4"],
    f"next-frame prediction, skill against copying the newest frame (1 − MSE / MSE of "
    f"copy-newest on the same pipeline and loss ticks) at {n} speed–horizon settings, every "
    f"scheme beside its exact twin, differences paired by seed, {seeds} seeds, at every "
    f"held-out evaluation of the last half of the runs; the verdict reads anchor 'newest'",
    "; ".join(parts),
    verdict,
    why,
    sentence + ".",
    budgets="; ".join(_budgets(r[2]) for r in readings),
    converged="; ".join(c for c in converged if c),
    seeds=seeds,
  )


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


class _StashTask(NamedTuple):
  reading: Reading
  numbers: str
  best: str
  best_label: str
  open_why: str


def _stash_task(df: pd.DataFrame, curves: pd.DataFrame | None) -> _StashTask:
  """One task of C5: every allocation cheaper than the full stash read along the ladder
  (its gap to the exact twin, non-inferiority at −:data:`STASH_CLOSE`); the claim holds at a
  budget where one of them holds and fails where all fail. Returns the reading (the states
  and verdict are the claim's, the intervals the headline allocation's: the cheapest that
  holds at the full budget, else the best), the numbers, the headline allocation (value and
  label) and, when the full budget is open, which allocations keep it open."""
  front = stash_frontier(df)
  full = front[front.value == "full"].iloc[0]
  cheaper = front[front.stash_bytes < full.stash_bytes]
  if cheaper.empty:
    raise ValueError("the stash sweep has no allocation cheaper than the full stash")
  frame = ladder_frame(df, curves)
  test = Test("above", -STASH_CLOSE)
  readings = {
    c.value: read_ladder(paired_ladder(frame, c.scheme, full.scheme, c.value, "full"), test)
    for c in cheaper.itertuples()
  }
  steps = next(iter(readings.values())).steps
  states = tuple(
    HOLDS if HOLDS in s else FAILS if set(s) == {FAILS} else OPEN
    for s in zip(*(x.states for x in readings.values()))
  )
  verdict, budgets = ladder_verdict(steps, states)
  holding = [k for k, x in readings.items() if x.states[-1] == HOLDS]
  best = holding[0] if holding else max(readings, key=lambda k: readings[k].final.mean)
  kib = dict(zip(front.value, front.stash_bytes / 2**10))
  numbers = (
    f"exact twin {full.accuracy:.3f} at {kib['full']:.0f} KiB; gap to it at {steps[-1]} steps: "
    + ", ".join(f"{k} ({kib[k]:.0f} KiB) {x.final.text()}" for k, x in readings.items())
    + f"; {best} along the budgets: {ladder_table(readings[best])}"
  )
  r = dataclasses.replace(
    readings[best], states=states, verdict=verdict, ladder_verdict=verdict, budgets=budgets
  )
  still = [k for k, x in readings.items() if x.states[-1] == OPEN]
  open_why = (
    f"at {steps[-1]} steps no cheaper allocation's interval lies above −{STASH_CLOSE:g}, but "
    f"those of {', '.join(still)} reach above it (wide spreads over seeds)"
  )
  best_label = f"{best} ({kib[best]:.0f} KiB, {kib[best] / kib['full']:.0%} of the full stash)"
  return _StashTask(r, numbers, best, best_label, open_why)


def stash_network(key: str) -> str:
  """The network of a stash sweep's key in :func:`claim_c5` ("digits" -> "the digits chain",
  "digits-rev" -> "the reversible digits chain")."""
  return (
    f"the reversible {key[: -len('-rev')]} chain" if key.endswith("-rev") else f"the {key} chain"
  )


def claim_c5(stash: dict, curves: dict | None = None) -> Claim:
  """C5: a stash smaller than the exact twin's recovers its accuracy, per network.

  ``stash`` maps a stash sweep's key ("digits", "digits-rev": :func:`stash_network`) to its
  results, each with its own exact twin (value "full"). A way of keeping less (any value with
  fewer ``stash_bytes`` than the full stash: a per-unit or uniform allocation, a compressed
  store, carry-down) recovers the exact twin at a budget when the 95 % interval of its paired
  accuracy gap lies above −:data:`STASH_CLOSE` (non-inferiority) and fails when it lies
  below; the claim holds on a network at a budget where one of them recovers, fails where
  every one fails, and is read along the ladder of ``curves`` (a dict by key like ``stash``).
  Reproduced on every network, partly on some; the headline is the first network where it is
  reproduced (else the first), and the numbers give each network's cheapest recovering way."""
  curves = curves or {}
  tasks = {name: _stash_task(df, curves.get(name)) for name, df in stash.items()}
  verdicts = [t.reading.verdict for t in tasks.values()]
  name = next((k for k, t in tasks.items() if t.reading.verdict == REPRODUCED), next(iter(tasks)))
  r, _, _, best, open_why = tasks[name]
  verdict = (
    verdicts[0] if len(set(verdicts)) == 1 else PARTLY if REPRODUCED in verdicts else r.verdict
  )
  why = ""
  if verdict == NOT_REPRODUCED:
    why = "every way cheaper than the full stash falls short of the exact twin by more "
    why += f"than {STASH_CLOSE:g}"
  elif verdict == PARTLY:
    why = "a cheaper way recovers the exact twin on " + ", ".join(
      stash_network(k) for k, t in tasks.items() if t.reading.verdict == REPRODUCED
    )
    why += "; not on " + ", ".join(
      f"{stash_network(k)} ({t.reading.verdict})"
      for k, t in tasks.items()
      if t.reading.verdict != REPRODUCED
    )
  seeds = max(_seeds(df) for df in stash.values())
  values = {k: ", ".join(dict.fromkeys(df.value.astype(str))) for k, df in stash.items()}
  converged = [(k, convergence_text(df, tuple(df.scheme.unique()))) for k, df in stash.items()]
  claim = _ladder_claim(
    "C5",
    "test clip accuracy against the bytes each way keeps beyond Sideways (stash_bytes), paired "
    "with the exact twin of its network, at every held-out evaluation of the last half of the "
    f"runs, {seeds} seeds, on "
    + "; ".join(f"{stash_network(k)} ({v})" for k, v in values.items())
    + " (per unit: s_1-s_2-…; @: the stored dtype); the way shown is "
    "the cheapest that recovers the exact twin at the full budget, else the closest cheaper one",
    "; ".join(f"{stash_network(k)}: {t.numbers}" for k, t in tasks.items()),
    r,
    f"on {stash_network(name)} the accuracy gap of {best} to the exact twin",
    f"some cheaper way's interval above −{STASH_CLOSE:g} (non-inferiority)",
    why,
    "; ".join(t if len(converged) == 1 else f"{k}: {t}" for k, t in converged if t),
    open_why,
  )
  return dataclasses.replace(claim, verdict=verdict)


# ---------------------------------------------------------------------------------------------
# Effects against the budget (the claim_budgets figure)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Effect:
  """One line of a claim's effect against the budget (:func:`effects`).

  Attributes:
    label: what the line shows ("Sideways − BP at 0.125 px/frame").
    ladder: the effect per seed at each step (``step, seed, diff``).
    longer: the same effect in longer runs, or None.
    test: the claim's :class:`Test` (its bound is drawn).
    scheme: the scheme whose colour the line takes.
    metric: the metric of the difference ("accuracy", "mse").
  """

  label: str
  ladder: pd.DataFrame
  longer: pd.DataFrame | None
  test: Test
  scheme: str
  metric: str = "accuracy"


def ladder_intervals(ladder: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
  """Per step of ``ladder`` (``step, seed, diff``): ``step, mean, low, high, seeds`` of its
  Student-t interval over seeds (:func:`t_interval`)."""
  rows = []
  for step, g in ladder.groupby("step", sort=True):
    iv = t_interval(g["diff"], confidence)
    rows.append(dict(step=int(step), mean=iv.mean, low=iv.low, high=iv.high, seeds=iv.seeds))
  return pd.DataFrame(rows, columns=["step", "mean", "low", "high", "seeds"])


def _digit_effects(digits, curves, longer, start) -> dict:
  values = pd.to_numeric(digits.value)
  lo, hi = float(values.min()), float(values.max())
  frame = ladder_frame(digits, curves, start=start)
  c1 = Effect(
    f"Sideways − BP at {lo:g} px/frame",
    paired_ladder(frame, "sideways", "backprop", lo),
    _longer_ladder(longer, "sideways", "backprop", lo),
    Test("within", EQUIVALENCE),
    "sideways",
  )
  long = None
  if longer is not None and {"sideways", "sideways_exact"} <= set(longer.scheme):
    long = _widening(ladder_frame(longer), lo, hi)
  c2 = Effect(
    f"widening of Sideways − exact twin, {lo:g} → {hi:g} px/frame",
    _widening(frame, lo, hi),
    long,
    Test("above", 0.0, EQUIVALENCE),
    "sideways",
  )
  return {"C1": [c1], "C2": [c2]}


def _stash_effects(name, df, curves, start) -> list:
  best = _stash_task(df, curves).best
  front = stash_frontier(df)
  full = front[front.value == "full"].iloc[0]
  frame = ladder_frame(df, curves, start=start)
  out = []
  for value in dict.fromkeys([best, "0"]):
    row = front[front.value == value].iloc[0]
    out.append(
      Effect(
        f"{name}: stash {value} − exact twin",
        paired_ladder(frame, row.scheme, full.scheme, value, "full"),
        None,
        Test("above", -STASH_CLOSE),
        row.scheme,
      )
    )
  return out


def effects(
  results: dict, curves: dict | None = None, longer: dict | None = None, start: float = 0.0
) -> dict[str, list[Effect]]:
  """Each claim's effect, paired by seed, at every held-out evaluation from ``start`` · N (0:
  all of them), by claim id: the effects :func:`claims` reads (C1: Sideways − BP at the
  smoothest speed; C2: the widening of Sideways − exact twin; C3: Skip-Sideways − Sideways
  on motion classes; C4: Skip-Sideways − Sideways and − per-frame BP in skill against copying,
  anchor "newest", at each setting; C5: the gap to the
  exact twin of the allocation C5 names and of no stash). Arguments as :func:`claims`'; a
  claim whose sweep is missing is left out."""
  curves, longer = curves or {}, longer or {}
  out: dict[str, list[Effect]] = {}
  if results.get("digits-speed") is not None:
    out |= _digit_effects(
      results["digits-speed"], curves.get("digits-speed"), longer.get("digits-speed"), start
    )
  motion = results.get("motion-classes")
  if motion is not None:
    v = float(pd.to_numeric(motion.value).iloc[0])
    frame = ladder_frame(motion, curves.get("motion-classes"), start=start)
    out["C3"] = [
      Effect(
        f"Skip-Sideways − Sideways at {v:g} px/frame",
        paired_ladder(frame, "skip_sideways", "sideways", v),
        _longer_ladder(longer.get("motion-classes"), "skip_sideways", "sideways", v),
        Test("above", 0.0, EQUIVALENCE),
        "skip_sideways",
      )
    ]
  for name, df in results.items():  # C4: skill, anchor "newest", every horizon
    if name.startswith("next-frame") and df is not None and (df.anchor == "newest").all():
      df = add_skill(df)
      for v, h in _skill_settings(df):
        frame = _skill_ladder(_setting(df, v, h), curves.get(name), v, start)
        for other, style in (("sideways", "skip_sideways"), ("backprop", "backprop")):
          effect = Effect(
            f"Skip-Sideways − {_plot_name(other)} skill, {v:g} px/frame, h = {h}",
            paired_ladder(frame, "skip_sideways", other, v),
            None,
            Test("above", 0.0),
            style,
            "skill",
          )
          out.setdefault("C4", []).append(effect)
  for name, df in results.items():
    if name.startswith("stash-") and df is not None:
      out.setdefault("C5", []).extend(_stash_effects(name[6:], df, curves.get(name), start))
  return dict(sorted(out.items()))


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


def claims(results: dict, curves: dict | None = None, longer: dict | None = None) -> list[Claim]:
  """The claims C1–C5 from the figures' sweeps.

  Args:
    results: maps ``"digits-speed"``, ``"digits-stride"``, ``"motion-classes"``,
      ``"next-frame-newest"``, ``"next-frame-input"``, ``"stash-digits"``, ``"stash-motion"``
      and the max-readout sweeps (:data:`MAX_READOUT`) to DataFrames of
      :func:`~sideways_lab.experiments.sweep`; a claim whose sweep is missing is "not measured".
    curves: the sweeps' learning curves by the same names
      (:func:`~sideways_lab.experiments.read_curves`): the ladders of budgets. A sweep without
      curves is read at its final budget only.
    longer: results of longer runs of the same settings by the same names (e.g. seed 0 at
      2.5× the steps), or None.
  """
  curves, longer = curves or {}, longer or {}
  digits, motion = results.get("digits-speed"), results.get("motion-classes")
  stash = {n[len("stash-") :]: df for n, df in results.items() if n.startswith("stash-")}
  stash = {k: df for k, df in stash.items() if df is not None}
  if digits is None:
    c1, c2 = _unmeasured("C1", "digits-speed"), _unmeasured("C2", "digits-speed")
  else:
    mx = MAX_READOUT["digits-speed"]
    c1 = _robustness(
      claim_c1(digits, curves.get("digits-speed"), longer.get("digits-speed")),
      claim_c1(results[mx], curves.get(mx), longer.get(mx)) if mx in results else None,
    )
    c2 = _robustness(
      claim_c2(
        digits,
        results.get("digits-stride"),
        {k: curves.get(f"digits-{k}") for k in ("speed", "stride")},
        {k: longer.get(f"digits-{k}") for k in ("speed", "stride")},
      ),
      claim_c2(results[mx], None, {"speed": curves.get(mx)}, {"speed": longer.get(mx)})
      if mx in results
      else None,
    )
  if motion is None:
    c3 = _unmeasured("C3", "motion-classes")
  else:
    mx = MAX_READOUT["motion-classes"]
    c3 = _robustness(
      claim_c3(motion, curves.get("motion-classes"), longer.get("motion-classes")),
      claim_c3(results[mx], curves.get(mx), longer.get(mx)) if mx in results else None,
    )
  nf = {n: df for n, df in results.items() if n.startswith("next-frame") and df is not None}
  c4 = claim_c4(nf, curves) if nf else _unmeasured("C4", "next-frame")
  stash_curves = {k: curves.get(f"stash-{k}") for k in stash}
  c5 = claim_c5(stash, stash_curves) if stash else _unmeasured("C5", "stash")
  return [c1, c2, c3, c4, c5]


def digest(claim_list: Sequence[Claim]) -> str:
  """The claims in one line each: ``- **C1** — verdict: one sentence.`` (the landing page
  and the README show these)."""
  return "\n".join(f"- **{c.id}** — {c.verdict}: {c.summary}" for c in claim_list)


def _seeds_note(claim_list: Sequence[Claim]) -> str:
  """How many seeds decide the claims, and what that makes of a 95 % interval."""
  seeds = sorted({c.seeds for c in claim_list if c.seeds})
  if not seeds:
    return ""
  n = seeds[0]
  if n < 2:
    return f"The deciding comparisons have {n} seed: no interval can be given."
  t = t_quantile(n - 1)
  return (
    f"The deciding comparisons have {' or '.join(map(str, seeds))} seeds. A 95 % interval "
    f"over {n} seeds is the mean ± t·sd/√{n} with t = t_{{0.975, {n - 1}}} = {t:.2f}, i.e. "
    f'± {t / np.sqrt(n):.2f} standard deviations of the paired difference ("twice the '
    f'standard error" covers only {100 * _coverage(n):.0f} %); an open claim says how many '
    f"seeds its spread would need. More seeds need only training (`figures.CLAIM_SEEDS`, or the "
    f"`--seeds` option of `sideways-lab sweep`): the claims take any number."
  )


def _coverage(n: int) -> float:
  """The confidence of mean ± 2·sd/√n over ``n`` seeds (bisection on :func:`t_quantile`)."""
  lo, hi = 0.01, 0.999
  for _ in range(40):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if t_quantile(n - 1, mid) < 2 else (lo, mid)
  return (lo + hi) / 2


def claims_report(claim_list: Sequence[Claim], header: str = "") -> str:
  """The claims as Markdown (``figures/claims.md``): a digest, the seeds, then the table."""
  lines = ["# Claims of the papers, tested", ""]
  if header:
    lines += [header, ""]
  lines += ["## Digest", "", digest(claim_list), ""]
  note = _seeds_note(claim_list)
  if note:
    lines += [note, ""]
  lines += [
    "How a verdict is read (docs/design.md §9): a claim's effect, a difference paired by seed, "
    "gets its 95 % Student-t interval at every held-out evaluation of the last half of its runs "
    "(a constant learning rate makes these the results of shorter runs); the claim is "
    "reproduced where the interval clears the claim's bound at every budget from the half (or "
    "from the step where it emerges), not reproduced where it lies wholly on the other side, "
    "and inconclusive otherwise; budget-limited only where a longer run contradicts that.",
    "",
    "## Evidence",
    "",
  ]
  lines += [
    "| claim | measurement | numbers (mean ± std over seeds; paired differences: mean [95 % "
    "interval]) | verdict | why | other readout | budgets and trend | converged |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for c in claim_list:
    lines.append(
      f"| **{c.id}** {c.claim} | {c.measurement} | {c.numbers} | **{c.verdict}** | "
      f"{c.why or '—'} | {c.robustness or '—'} | {c.budgets or '—'} | {c.converged or '—'} |"
    )
  return "\n".join(lines) + "\n"
