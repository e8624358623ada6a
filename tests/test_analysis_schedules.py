"""The schedule simulator against the closed forms of each schedule, its grids against their
dependencies, Sideways' grid against the symbolic schedule, and the simulator against the
latency model where they overlap."""

import dataclasses
import itertools

import numpy as np
import pytest

import sideways_lab as sl
from sideways_lab.analysis import latency as LM
from sideways_lab.analysis import schedules as S

PS, MS, VS = (2, 4, 8), (1, 4, 8, 16), (1, 2)
GRID = list(itertools.product(PS, MS))


def sim(name, p, m, v=1):
  return S.simulate_schedule(name, p, m, v)


def cells(g, kind=None):
  """``(device, slot, cell)`` of every cell (of one kind)."""
  return [
    (d, t, c)
    for d, row in enumerate(g.cells)
    for t, c in enumerate(row)
    if c is not None and (kind is None or c.kind == kind)
  ]


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p,m", GRID)
def test_gpipe_and_1f1b(p, m):
  fill = (p - 1) / (m + p - 1)  # over the whole grid; Megatron's (p-1)/m is over ideal time
  for name in ("gpipe", "1f1b"):
    g = sim(name, p, m)
    assert g.num_slots == 2 * (m + p - 1)
    assert g.bubble == pytest.approx(fill) and g.steady_bubble == pytest.approx(fill)
    assert g.exact and g.weight_versions == (1,) * p
  assert sim("gpipe", p, m).peak_activations == (m,) * p
  assert sim("1f1b", p, m).peak_activations == tuple(min(m, p - s) for s in range(p))


@pytest.mark.parametrize("p,m", GRID)
@pytest.mark.parametrize("v", VS)
def test_interleaved_1f1b(p, m, v):
  g = sim("interleaved_1f1b", p, m, v)
  if m % p == 0:
    assert g.bubble == pytest.approx((p - 1) / (v * m + p - 1))
  else:  # m < p: one group of m micro-batches goes round the devices v times
    assert g.bubble == pytest.approx((v * (p - m) + m - 1) / (v * p + m - 1))
  if v == 1:
    assert g.cells == sim("1f1b", p, m).cells
  else:  # in stage inputs: Megatron-LM's (v-1)p + 2(p-d-1) warm-up chunks, plus one
    warm = [(v - 1) * min(m, p) + 2 * (p - d - 1) + 1 for d in range(p)]
    assert g.peak_activations == tuple(min(v * m, w) / v for w in warm)
    if m >= p + (p - 1) / v:  # rank 0 holds more than 1F1B's p, for a smaller bubble
      assert g.peak_activations[0] == p + (p - 1) / v > sim("1f1b", p, m).peak_activations[0]
  assert g.exact and len(g.weight_staleness) == p * v


@pytest.mark.parametrize("p,m", GRID)
def test_zero_bubble(p, m):
  h1, h2 = sim("zb_h1", p, m), sim("zb_h2", p, m)
  if m >= p:
    assert h1.bubble == pytest.approx((p - 1) / (3 * m + p - 1))
  else:  # the first backward reaches device 0 after 2p - 1 slots
    assert h1.bubble == pytest.approx((2 * p - 1 - m) / (2 * m + 2 * p - 1))
  assert max(h1.peak_activations) == min(m, p)  # 1F1B's peak (held until W)
  assert h2.peak_activations == (min(m, 2 * p - 1),) * p  # about twice 1F1B's
  if m >= 2 * p - 1:  # each device busy for 3m slots in a row: the next iteration goes on
    assert h2.steady_bubble == 0.0 and h2.bubble == pytest.approx(h1.bubble)
  assert h1.steady_bubble == pytest.approx(h1.bubble)  # H1 flushes
  assert h1.exact and h2.exact
  assert len(cells(h1, "W")) == len(cells(h1, "B")) == p * m


@pytest.mark.parametrize("p,m", GRID)
def test_pipedream(p, m):
  g = sim("pipedream", p, m)
  assert [(d, t, c.kind, c.stage, c.microbatches) for d, t, c in cells(g)] == [
    (d, t, c.kind, c.stage, c.microbatches) for d, t, c in cells(sim("1f1b", p, m))
  ]
  assert g.bubble == pytest.approx((p - 1) / (m + p - 1)) and g.steady_bubble == 0.0
  # p - s versions in the steady state; fewer while stage s has not yet run p - s forwards
  # after its first update (all forwards of the warm-up run with the first weights)
  assert g.weight_versions == tuple(min(p - s, m, max(2, m - (p - s) + 2)) for s in range(p))
  if m >= 2 * p - 2:
    assert g.weight_versions == tuple(p - s for s in range(p))
  assert g.weight_staleness == tuple(min(m - 1, p - 1 - s) for s in range(p))
  assert g.input_staleness == (0,) * p
  assert g.exact == (p == 1 or m == 1 or all(x == 0 for x in g.weight_staleness))
  # weight stashing: a backward runs with the weights its forward ran with
  fwd = {(c.stage, c.input): c.version for _, _, c in cells(g, "F")}
  assert all(c.version == fwd[(c.stage, c.input)] for _, _, c in cells(g, "B"))
  assert max(c.stale for _, _, c in cells(g, "B")) == min(m - 1, p - 1)


@pytest.mark.parametrize("p,m", GRID)
def test_blocking_backprop(p, m):
  g = sim("backprop", p, m)
  assert g.num_slots == 2 * p * m and g.bubble == pytest.approx(1 - 1 / p)
  assert g.peak_activations == (1,) * p and g.exact


@pytest.mark.parametrize("p,m", GRID)
def test_sideways(p, m):
  g = sim("sideways", p, m)
  ticks = m + 2 * (p - 1)  # T = m + p - 1 frames and p - 1 drain ticks
  assert g.num_slots == 2 * ticks
  # every unit forwards the frames whose loss it serves and the 2(p-1-s) newer ones that
  # its drain's backwards meet (one frame each for m = 1: the ranges do not touch)
  fwd = [m + 2 * (p - 1 - s) if m >= 2 else p - s for s in range(p)]
  assert [sum(c is not None and c.kind == "F" for c in row) for row in g.cells] == fwd
  assert g.bubble == pytest.approx(1 - (sum(fwd) + p * m) / (2 * p * ticks))
  if m >= 2:
    assert g.bubble == pytest.approx(3 * (p - 1) / (2 * (m + 2 * (p - 1))))
  assert g.input_staleness == tuple(2 * (p - 1 - s) for s in range(p))
  assert g.peak_activations == (1,) * p  # one input buffer per unit
  assert g.weight_versions == (1,) * p and g.weight_staleness == (0,) * p
  assert not g.exact


@pytest.mark.parametrize("p,m", GRID)
def test_sideways_exact_twin(p, m):
  g = sim("sideways_exact", p, m)
  r = sl.schedule.exact_lags(sl.chain_edges(p))
  # the package drains max_k r_k = 2(p-1) ticks, p - 1 more than the last loss needs
  assert g.num_slots == 2 * (m + p - 1 + 2 * (p - 1))
  assert g.bubble == pytest.approx(3 * (p - 1) / (m + 3 * (p - 1)))
  assert g.input_staleness == (0,) * p and g.exact
  assert g.peak_activations == tuple(min(m, r[s + 1] + 1) for s in range(p))  # r_k stashed


@pytest.mark.parametrize("p", PS)
def test_sideways_twin_stash_is_where_the_backward_meets_its_input(p):
  # the stash of the exact twin is the input staleness of Sideways: r_k = 2(L - k)
  r = sl.schedule.exact_lags(sl.chain_edges(p))
  assert sim("sideways", p, 16).input_staleness == tuple(r[1:])
  assert tuple(x - 1 for x in sim("sideways_exact", p, 16).peak_activations) == tuple(r[1:])


# ---------------------------------------------------------------------------------------------
# Dependencies, and one source of truth for Sideways
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", S.SCHEDULES)
def test_every_grid_respects_every_dependency(name):
  for p, m in GRID:
    for v in VS if name == "interleaved_1f1b" else (1,):
      g = sim(name, p, m, v)
      assert S.check_dependencies(g) == [], (name, p, m, v)
      assert g.num_slots == max(t for _, t, _ in cells(g)) + 1 or name == "sideways_exact"


def test_the_dependency_check_can_fail():
  g = sim("1f1b", 4, 8)
  rows = [list(r) for r in g.cells]
  assert rows[1][0] is None and rows[1][3].microbatches == (2,) and rows[0][2].kind == "F"
  rows[1][0], rows[1][3] = rows[1][3], None  # stage 1 forwards micro-batch 2 before stage 0
  assert S.check_dependencies(_with(g, rows)) == [
    "device 1, slot 0: F1 of (2,) runs before F0 of 2"
  ]
  rows = [list(r) for r in g.cells]
  t = next(t for t, c in enumerate(rows[3]) if c is not None and c.kind == "B")
  rows[3][t] = dataclasses.replace(rows[3][t], input=7)
  assert any("meets input 7" in b for b in S.check_dependencies(_with(g, rows)))
  rows = [list(r) for r in g.cells]
  rows[0] = [None if c is not None and c.kind == "B" and c.input == 2 else c for c in rows[0]]
  assert "stage 0 never runs B of micro-batch 2" in S.check_dependencies(_with(g, rows))


def _with(g, rows):
  return dataclasses.replace(g, cells=tuple(tuple(r) for r in rows))


@pytest.mark.parametrize("name", S.SIDEWAYS_SCHEDULES)
def test_sideways_grids_come_from_the_symbolic_schedule(name):
  L, m = 4, 8
  g = sim(name, L, m)
  edges = S.sideways_edges(name, L)
  stash = sl.schedule.FULL if name == "sideways_exact" else 0
  T = m + sl.schedule.first_valid_ticks(edges)[L]
  N = T + sl.schedule.drain_ticks(edges, stash)
  V = sl.schedule.loss_ticks(edges, N, mask=np.arange(N) < T)
  src = sl.schedule.gradient_sources(edges, N)
  mism = sl.schedule.mismatch(edges, N)
  for k in range(1, L + 1):
    for t in range(N):
      c = g.cells[k - 1][2 * t + 1]
      losses = sorted(s for s in src[k][t] if V[s])
      assert (c is None) == (not losses)
      if c is not None:
        assert list(c.microbatches) == [s - (L - 1) for s in losses]
        if name != "sideways_exact":
          assert {c.input - i for i in c.microbatches} <= mism[k][t]
  assert max(g.input_staleness) == (0 if name == "sideways_exact" else 2 * (L - 1))


# ---------------------------------------------------------------------------------------------
# The latency model where it overlaps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sideways", "skip_sideways"])
def test_sideways_grid_agrees_with_the_latency_timeline(name):
  L, m = 4, 6
  g = sim(name, L, m)
  N, T = g.num_slots // 2, m + L - 1
  tl = LM.timeline(L, name, N, num_frames=T)
  back = {
    (i["unit"], i["tick"]): tuple(s - L + 1 for s in i["loss_ticks"])
    for i in tl.items
    if i["kind"] == "backward" and i["valid"]
  }
  assert back == {(d + 1, t // 2): c.microbatches for d, t, c in cells(g, "B")}
  fwd = {(i["unit"], i["tick"]): i["frame"] for i in tl.items if i["kind"] == "forward"}
  valid = {(i["unit"], i["tick"]) for i in tl.items if i["kind"] == "forward" and i["valid"]}
  for d, t, c in cells(g, "F"):  # the grid's forwards are valid timeline forwards
    assert (d + 1, t // 2) in valid and fwd[(d + 1, t // 2)] == c.input
  lat = sl.schedule.latency(S.sideways_edges(name, L), name)
  first = {(d, i): t // 2 for d, t, c in reversed(cells(g, "B")) for i in c.microbatches}
  assert [first[(k - 1, 0)] - (L - 1) for k in range(1, L + 1)] == list(lat.gradient_delay)
  assert min(t for d, t, c in cells(g, "F") if d == L - 1) // 2 == lat.first_output_tick
  model = LM.latency_model(L, name, L, forward_cost=1.0, backward_cost=1.0)
  assert model.tick_time == 2.0 and model.utilisation == 1.0  # a tick is two slots
  mid = [t for t in range(g.num_slots) if all(row[t] is not None for row in g.cells)]
  assert len(mid) >= 2 * (m - L)  # steady state: every device busy, as the model says


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (8, 1)])
def test_blocking_backprop_agrees_with_the_latency_model(p, m):
  g = sim("backprop", p, m)
  model = LM.latency_model(p, "backprop", p, forward_cost=1.0, backward_cost=1.0)
  assert g.num_slots == m * model.tick_time  # a frame up and down before the next
  busy = [sum(c is not None for c in row) / g.num_slots for row in g.cells]
  assert busy == pytest.approx(model.device_utilisation)
  assert 1 - g.bubble == pytest.approx(model.utilisation)


# ---------------------------------------------------------------------------------------------
# The table and the arguments
# ---------------------------------------------------------------------------------------------


def test_table_and_grids():
  df = S.schedule_table(stages=4, microbatches=8, chunks=2)
  assert list(df.schedule) == list(S.SCHEDULES)
  assert df.set_index("schedule").loc["interleaved_1f1b", "v"] == 2
  assert (df.v[df.schedule != "interleaved_1f1b"] == 1).all()
  assert df.set_index("schedule").loc["sideways", "input_staleness_microbatches"] == "6 4 2 0"
  grids = S.schedule_grids(names=("1f1b", "interleaved_1f1b"), stages=(4,), microbatches=(2, 6))
  assert set(grids) == {("1f1b", 4, 2, 1), ("1f1b", 4, 6, 1)} | {
    ("interleaved_1f1b", 4, 2, v) for v in (1, 2)
  }


def test_arguments_are_checked():
  with pytest.raises(ValueError, match="name"):
    S.simulate_schedule("dualpipe", 4, 8)
  with pytest.raises(ValueError, match="stages"):
    S.simulate_schedule("1f1b", 0, 8)
  with pytest.raises(ValueError, match="microbatches"):
    S.simulate_schedule("1f1b", 4, 2.5)
  with pytest.raises(ValueError, match="chunks"):
    S.simulate_schedule("gpipe", 4, 8, 2)
  with pytest.raises(ValueError, match="multiple of stages"):
    S.simulate_schedule("interleaved_1f1b", 4, 6, 2)
