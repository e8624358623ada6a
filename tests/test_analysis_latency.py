"""The latency model, the timeline, measured costs and memory; the model agrees with the engine."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sideways_lab as sl
from sideways_lab import analysis as an
from sideways_lab import plotting
from sideways_lab.models import ModelConfig, build_graph
from sideways_lab.partition import groups
from sideways_lab.tasks import mse

# ---------------------------------------------------------------------------------------------
# Instrumented runs of the engine
# ---------------------------------------------------------------------------------------------


def _w():
  return hk.get_parameter("w", [], init=hk.initializers.Constant(1.0))


def _sum_unit(inputs):
  return _w() * sum(inputs)


def _prod_unit(inputs):
  out = inputs[0]
  for x in inputs[1:]:
    out = out * x
  return _w() * out


GRAPHS = {
  "chain": lambda u: sl.chain([u] * 4),
  "skips": lambda u: sl.skips([u] * 4, span=2),
  "skips3": lambda u: sl.skips([u] * 5, span=3),
}


@pytest.mark.parametrize("kind", list(GRAPHS))
def test_model_agrees_with_instrumented_engine(kind):
  T = 10
  ones = jnp.ones((1, T, 1, 1, 1), jnp.float32)
  scheme = "sideways" if kind == "chain" else "skip_sideways"

  # First output: with product units, out_L^t != 0 iff its whole ancestry is valid
  # (buffers start at zero); the frames are all ones.
  g_prod = GRAPHS[kind](_prod_unit)
  p = g_prod.init(jax.random.PRNGKey(0), ones[:, 0])
  out, valid = sl.forward(g_prod, p, ones)
  first_nonzero = int(np.flatnonzero(np.asarray(out)[0, :, 0, 0, 0] != 0)[0])
  model = an.latency_model(g_prod, scheme)
  assert first_nonzero == model.first_output_tick == int(np.flatnonzero(valid)[0])

  # Output latency: with sum units, the first output that depends on frame f (through the
  # Jacobian) is at tick f + output_latency.
  g = GRAPHS[kind](_sum_unit)
  L = g.num_units
  p = g.init(jax.random.PRNGKey(0), ones[:, 0])
  jac = jax.jacrev(lambda v: sl.forward(g, p, v, check_finite=False)[0][0, :, 0, 0, 0])(ones)
  dep = np.asarray(jac)[:, 0, :, 0, 0, 0] != 0  # dep[t, f]: out_L^t depends on x_f
  f = 2
  assert int(np.flatnonzero(dep[:, f])[0]) - f == model.output_latency

  # Gradient delay: Sideways with a single loss tick s: unit k's per-tick gradient is first
  # non-zero at tick s + gradient_delay[k-1].
  s = model.first_output_tick + 1
  mask = np.zeros(T, bool)
  mask[s] = True
  loss_fn = lambda o, y: jnp.sum(o)
  _, info = sl.gradients(g, p, ones, jnp.zeros_like(ones), loss_fn, "sideways", mask, per_tick=True)
  per = info["per_tick_grads"]
  first_grad = [int(np.flatnonzero(np.asarray(per[k]["~"]["w"]) != 0)[0]) for k in range(L)]
  assert [t - s for t in first_grad] == list(model.gradient_delay)

  # ... and the timeline says the same: unit k's first valid backward for loss tick s.
  tl = an.timeline(g, scheme, T + L - 1, num_frames=T)
  for k in range(1, L + 1):
    ticks = [
      i["tick"]
      for i in tl.items
      if i["unit"] == k and i["kind"] == "backward" and s in i["loss_ticks"]
    ]
    assert min(ticks) == first_grad[k - 1]
  first_fwd_top = min(
    i["tick"] for i in tl.items if i["unit"] == L and i["kind"] == "forward" and i["valid"]
  )
  assert first_fwd_top == model.first_output_tick


def test_chain_counts():
  m = an.latency_model(5, "sideways")
  assert m.first_output_tick == 4 and m.output_latency == 4
  assert m.gradient_delay == (4, 3, 2, 1, 0)
  skip = an.latency_model(5, "skip_sideways")
  assert skip.output_latency < m.output_latency
  assert all(a <= b for a, b in zip(skip.gradient_delay, m.gradient_delay))


# ---------------------------------------------------------------------------------------------
# Costs, devices, partition
# ---------------------------------------------------------------------------------------------


def test_partition():
  assert groups([1, 1, 1, 1], 2) == ((1, 2), (3, 4))
  assert groups([3, 1, 1, 1], 2) == ((1,), (2, 3, 4))
  assert groups([1, 2, 3], 3) == ((1,), (2,), (3,))
  assert groups([5, 1, 1], 1) == ((1, 2, 3),)
  with pytest.raises(ValueError, match="devices"):
    groups([1, 1], 3)


def test_cost_model_numbers():
  L, F, B, C = 4, 1.0, 2.0, 0.5
  bp = an.latency_model(L, "backprop", L, forward_cost=F, backward_cost=B, comm_cost=C)
  sw = an.latency_model(L, "sideways", L, forward_cost=F, backward_cost=B, comm_cost=C)
  assert bp.tick_time == pytest.approx(L * (F + B) + 2 * (L - 1) * C)  # blocking
  assert sw.tick_time == pytest.approx(F + B + C)
  assert sw.throughput == pytest.approx(1 / (F + B + C))
  assert bp.time_to_first_output == pytest.approx(L * F + (L - 1) * C)
  assert sw.time_to_first_output == pytest.approx(L * (F + B + C))  # 4 ticks
  assert bp.gradient_delay_time[0] == pytest.approx(3 * B + 3 * C)
  assert sw.gradient_delay_time == pytest.approx(tuple(d * sw.tick_time for d in (3, 2, 1, 0)))
  assert bp.utilisation == pytest.approx((F + B) / bp.tick_time)
  assert sw.utilisation == pytest.approx((F + B) / (F + B + C))
  # One device: no communication, pipelining buys nothing.
  one = an.latency_model(L, "sideways", 1, forward_cost=F, backward_cost=B, comm_cost=C)
  assert one.tick_time == pytest.approx(L * (F + B)) and one.utilisation == 1.0
  # Unequal costs: the slowest device sets the tick.
  m = an.latency_model(3, "sideways", 2, forward_cost=[1, 1, 4], backward_cost=[1, 1, 4])
  assert m.partition == ((1, 2), (3,)) and m.tick_time == pytest.approx(8.0)
  assert m.device_utilisation == pytest.approx((0.5, 1.0))
  t = an.latency_table(4, forward_cost=1.0, backward_cost=1.0)
  s4 = t[(t.scheme == "sideways") & (t.num_devices == 4)]
  assert len(s4) == 1 and s4.speedup_vs_backprop.iloc[0] == pytest.approx(4.0)
  assert len(t) == 4 * len(an.LATENCY_SCHEMES) and t.attrs["forward_cost"] == 1.0
  with pytest.raises(ValueError, match="forward_cost"):
    an.latency_model(3, "sideways", forward_cost=[1, 2])
  with pytest.raises(ValueError, match="scheme"):
    an.latency_model(3, "nope")
  with pytest.raises(ValueError, match="partition"):
    an.latency_model(3, "sideways", partition_=((1,), (3,)))


def test_timeline_backprop_and_plot():
  L = 3
  tl = an.timeline(L, "backprop", 20, L)
  # Each unit works 2 ticks (forward, backward; the top 1) out of every 2L - 1.
  P = 2 * L - 1
  assert tl.busy[:, :P].sum(1).tolist() == [2, 2, 1]
  ups = [(i["tick"], i["unit"]) for i in tl.items if i["frame"] == 1 and i["kind"] == "forward"]
  assert ups == [(P, 1), (P + 1, 2), (P + 2, 3)]
  sw = an.timeline(L, "sideways", 6, L)
  assert sw.busy[:, 4:].all()  # steady state: every device works
  assert [i["frame"] for i in sw.at(2, 5) if i["kind"] == "forward"] == [3]
  rows = sw.to_rows()
  assert {"device", "tick", "unit", "kind", "frame", "loss_ticks", "start"} <= set(rows[0])
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(2)
  plotting.plot_timeline(axes[0], sw)
  plotting.plot_timeline(axes[1], tl, time=True)
  outlines = [p for p in axes[0].patches if p.get_facecolor()[3] == 0]  # one per work item
  assert len(outlines) == len(sw.items)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Measured costs and memory
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
  graph = build_graph(ModelConfig(task="next-frame", num_units=3, width=8), "sideways")
  frame = jnp.ones((2, 8, 8, 1), jnp.float32)
  return graph, graph.init(jax.random.PRNGKey(0), frame), frame


def test_unit_costs_and_projection(small):
  graph, params, frame = small
  c = an.unit_costs(graph, params, frame, repeats=3, warmup=1)
  assert len(c.forward) == 3 and all(f > 0 for f in c.forward)
  assert all(b >= 0 for b in c.backward) and all(v > 0 for v in c.vjp)
  t = an.project_speedup(c, devices=[1, 3])
  assert len(t) == 2 * 3
  one = t[(t.scheme == "sideways") & (t.num_devices == 1)]
  assert len(one) == 1 and one.speedup_vs_backprop.iloc[0] == pytest.approx(1.0)
  three = t[(t.scheme == "sideways") & (t.num_devices == 3)]
  assert len(three) == 1 and three.speedup_vs_backprop.iloc[0] >= 1.0
  assert len(c.to_rows()) == 3


def test_memory_vs_clip_length(small, tmp_path):
  graph, params, _ = small
  t = an.memory_vs_clip_length(
    graph, params, [6, 24], mse, frame_shape=(8, 8, 1), methods=("sideways", "bptt"), cache=tmp_path
  )
  assert len(t) == 4
  get = lambda m, T: t.loc[(t.method == m) & (t.clip_length == T), "temp_size_in_bytes"].item()
  if pd.isna(get("sideways", 6)):
    pytest.skip("this backend gives no memory analysis")
  # Sideways keeps O(L) buffers: its scratch memory does not grow with T; BPTT's does.
  assert get("sideways", 24) <= 1.1 * get("sideways", 6)
  assert get("bptt", 24) > 1.5 * get("bptt", 6)
  again = an.memory_vs_clip_length(
    graph, params, [6, 24], mse, frame_shape=(8, 8, 1), methods=("sideways", "bptt"), cache=tmp_path
  )
  assert again.attrs["from_cache"]
  pd.testing.assert_frame_equal(again, t)
