"""Model parallelism (sl.parallel) against the single-device Sideways engine.

The multi-device checks run in one subprocess with 4 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``; this pytest process has already
started JAX with one device); it prints a JSON report that the tests below assert on. Two
real processes: tests/test_distributed.py.
"""

import ast
import json
import os
import subprocess
import sys
import textwrap

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core_helpers import assert_trees_close, mse, reversible_setup, setup

import sideways_lab as sl
from sideways_lab import analysis as an
from sideways_lab import parallel as par
from sideways_lab import partition as part

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))


def conv_unit(channels):
  """A unit that keeps the frame's shape: identical copies make a chain of equal stages."""

  def f(inputs):
    return jnp.tanh(hk.Conv2D(channels, 3, name="conv")(inputs[0]))

  return f


def conv_setup(L=4, C=2, T=6, B=2, H=4, seed=0):
  graph = sl.chain([conv_unit(C) for _ in range(L)])
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  video = jax.random.normal(k1, (B, T, H, H, C))
  targets = jax.random.normal(k2, (B, T, H, H, C))
  return graph, graph.init(k3, video[:, 0]), video, targets


# -- placement and the latency model (no devices needed) ---------------------------------------


def test_partition_is_contiguous_and_balanced():
  assert part.assignment(4, 4) == (0, 1, 2, 3)
  assert part.assignment(4, 2) == (0, 0, 1, 1)
  assert part.assignment(3, 8) == (0, 1, 2)  # more devices than units
  assert part.assignment(5, 1) == (0, 0, 0, 0, 0)
  # unequal costs: the heavy first unit gets a device of its own
  a = part.assignment(4, 2, costs=[3.0, 1.0, 1.0, 1.0])
  assert a == (0, 1, 1, 1)
  costs = [1.0, 5.0, 2.0, 2.0, 1.0, 4.0]
  a = part.assignment(6, 3, costs)
  assert list(a) == sorted(a) and set(a) == {0, 1, 2}
  assert par.tick_time_model(costs, a) == 6.0  # the optimum: [1,5] [2,2,1] [4]


def test_one_partition_shared_by_the_core_and_the_analysis():
  loads = [1.0, 5.0, 2.0, 2.0, 1.0, 4.0]
  assert part.groups(loads, 3) == ((1, 2), (3, 4), (5, 6))
  assert an.latency_model(6, "sideways", 3, forward_cost=loads, backward_cost=0.0).partition == (
    part.groups(loads, 3)
  )
  assert part.assignment(6, 3, loads) == (0, 0, 1, 1, 2, 2)
  # the core does not depend on the analysis layer
  tree = ast.parse(open(os.path.join(ROOT, "sideways_lab", "parallel.py")).read())
  imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
  imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
  assert not any(m.startswith("sideways_lab.analysis") for m in imported if m)


def test_unit_step_is_the_vjp_of_one_unit():
  graph, params, video, _ = setup("skip")
  k = 3  # reads unit 2 and unit 1
  x = [jax.random.normal(jax.random.PRNGKey(i), (2, 3)) for i in range(2)]
  cot = jnp.ones((2, 3))
  out, g, msgs = sl.engine.unit_step(graph, k, params[k - 1], x, cot)
  f = lambda p, xs: jnp.sum(graph.apply_unit(k, p, xs) * cot)
  g_ref, m_ref = jax.grad(f, argnums=(0, 1))(params[k - 1], x)
  np.testing.assert_allclose(out, graph.apply_unit(k, params[k - 1], x), rtol=1e-6)
  assert_trees_close(g, g_ref, rtol=1e-6, atol=1e-7)
  assert_trees_close(msgs, m_ref, rtol=1e-6, atol=1e-7)
  assert len(msgs) == len(graph.edges[k])


def test_partition_rejects_bad_arguments():
  with pytest.raises(ValueError, match="num_devices"):
    part.assignment(4, 0)
  with pytest.raises(ValueError, match="costs"):
    part.assignment(3, 2, costs=[1.0, 2.0])


def test_tick_time_model():
  assert par.tick_time_model([1, 1, 1, 1], [0, 0, 0, 0]) == 4
  assert par.tick_time_model([1, 1, 1, 1], [0, 0, 1, 1], comm=0.5) == 2.5
  assert par.tick_time_model([1, 2, 1], [0, 1, 2], comm=[0, 0, 3]) == 4


def test_device_specs_route_skips_both_ways():
  graph, _, _, _ = setup("skip")  # unit k reads k-1 and k-2
  specs = par._device_specs(graph, (0, 0, 1, 1), 0)
  assert specs[0].units == (1, 2) and specs[1].units == (3, 4)
  assert specs[0].send_outs == (1, 2)  # unit 1 -> unit 3 (skip), unit 2 -> units 3, 4
  assert specs[1].remote == (1, 2)
  # (unit, wait) sent and (unit, wait, from device) received: nothing waits without a stash
  assert specs[1].send_msgs == ((1, 0), (2, 0)) and specs[0].recv_msgs == ((1, 0, 1), (2, 0, 1))
  assert specs[1].top and not specs[0].top
  # the exact twin on the dense graph: unit 4's message to unit 1 waits 4 ticks, to unit 2 two
  dense, _, _, _ = setup("dense")
  specs = par._device_specs(dense, (0, 0, 1, 1), "full")
  assert specs[1].send_msgs == ((1, 2), (1, 4), (2, 0), (2, 2))
  assert specs[0].lines == (1, 2) and specs[0].lags == (6, 4) and specs[1].lags == (2, 0)


# -- one device, in process ---------------------------------------------------------------------


def test_device_pipeline_on_one_device_equals_sideways():
  graph, params, video, targets = setup("mixed", T=8)  # skips and delays
  mask = np.array([True] * 7 + [False])
  ref, rinfo = sl.gradients(graph, params, video, targets, mse, method="sideways", mask=mask)
  eng = par.DevicePipeline(graph, 1)
  assert eng.num_devices == 1 and eng.units_on(0) == (1, 2, 3, 4)
  grads, info = eng.gradients(params, video, targets, mse, mask=mask)
  assert_trees_close(grads, ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(info["loss"], rinfo["loss"], rtol=1e-6)
  np.testing.assert_array_equal(info["loss_ticks"], rinfo["loss_ticks"])
  np.testing.assert_allclose(
    info["tick_loss"][info["loss_ticks"]], rinfo["tick_loss"][rinfo["loss_ticks"]], rtol=1e-6
  )


def test_sharded_graph_on_one_device_equals_sideways():
  graph, params, video, targets = setup("mixed", T=8)  # skips, delays, a different top
  mask = np.array([True] * 7 + [False])
  ref, rinfo = sl.gradients(graph, params, video, targets, mse, method="sideways", mask=mask)
  eng = par.ShardedGraph(graph, 1)
  assert eng.num_devices == 1 and eng.units_on(0) == (1, 2, 3, 4)
  grads, info = eng.gradients(params, video, targets, mse, mask=mask)
  assert_trees_close(grads, ref, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(info["loss"], rinfo["loss"], rtol=1e-6)
  np.testing.assert_array_equal(info["loss_ticks"], rinfo["loss_ticks"])


def test_bad_arguments_are_named():
  graph, params, video, targets = setup("skip")
  with pytest.raises(ValueError, match="single axis 'stage'"):
    par.ShardedGraph(graph, mesh=jax.sharding.Mesh(np.array(jax.devices()), ("x",)))
  with pytest.raises(TypeError, match="graph"):
    par.ShardedGraph("not a graph")
  with pytest.raises(ValueError, match="devices=3"):
    par.DevicePipeline(graph, 3)  # this process has one device
  with pytest.raises(ValueError, match="assignment"):
    par.DevicePipeline(graph, 1, assignment=(0, 0, 1))
  with pytest.raises(ValueError, match="one_per_device"):
    par.DevicePipeline(graph, 1, assignment="one_per_device")
  with pytest.raises(TypeError, match="graph"):
    par.DevicePipeline("not a graph")
  eng = par.DevicePipeline(graph, 1)
  with pytest.raises(ValueError, match="targets"):
    eng.gradients(params, video, targets[:, :3], mse)
  with pytest.raises(ValueError, match="no loss tick"):
    eng.gradients(params, video[:, :2], targets[:, :2], mse)
  with pytest.raises(TypeError, match="state"):
    eng.stream_gradients(params, video, targets, mse, state=None)


def test_engine_for_picks_the_sharded_route_unless_given_an_assignment():
  graph, params, video, _ = setup("skip")
  assert isinstance(par.engine_for(graph, devices=1), par.ShardedGraph)
  assert isinstance(par.engine_for(graph, devices=1, assignment="contiguous"), par.DevicePipeline)
  eng = par.engine_for(graph, devices=1, method="pipelined_exact")
  assert eng.stash == "full" and eng.drain == sl.schedule.drain_ticks(graph, "full")


@pytest.mark.parametrize("route", ["devices", "sharded"])
@pytest.mark.parametrize("kind", ["chain", "skip", "dense", "temporal"])
def test_every_method_and_stash_on_one_device_equals_the_engine(route, kind):
  graph, params, video, targets = setup(kind)
  r = tuple(sl.schedule.exact_lags(graph)[1:-1])
  for method, stash in [
    ("pipelined_exact", 0),
    ("sideways", 1),
    ("sideways", r),
    ("sideways", tuple(x // 2 for x in r)),
    ("sideways", sl.schedule.Stash(tuple(x // 2 for x in r), dtype="int8")),
  ]:
    ref, rinfo = sl.gradients(graph, params, video, targets, mse, method=method, stash=stash)
    grads, info = par.gradients(
      graph, params, video, targets, mse, method, stash=stash, devices=1, route=route
    )
    assert_trees_close(grads, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(info["loss"], rinfo["loss"], rtol=1e-6)


@pytest.mark.parametrize("route", ["devices", "sharded"])
def test_carry_down_on_one_device_equals_the_engine(route):
  """Reversible units recover their inputs from the outputs carried down with the messages;
  unit 3 stashes (it is not reversible)."""
  graph, params, video, targets = reversible_setup(L=5, plain=(3,))
  mask = np.arange(video.shape[1]) != 7
  ref, rinfo = sl.gradients(graph, params, video, targets, mse, mask=mask, stash="carry")
  exact, _ = sl.gradients(graph, params, video, targets, mse, "pipelined_exact", mask=mask)
  grads, info = par.gradients(
    graph, params, video, targets, mse, mask=mask, stash="carry", devices=1, route=route
  )
  assert_trees_close(grads, ref, rtol=1e-5, atol=1e-7)
  assert_trees_close(grads, exact, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(info["loss"], rinfo["loss"], rtol=1e-6)


def test_routes_check_method_and_stash():
  graph, _, _, _ = setup("chain")
  for cls in (par.ShardedGraph, par.DevicePipeline):
    with pytest.raises(ValueError, match="method"):
      cls(graph, 1, method="bptt")
    with pytest.raises(ValueError, match="stash"):
      cls(graph, 1, stash=(1, 2))  # L - 1 = 3 depths
    with pytest.raises(ValueError, match="r_3 = 2"):
      cls(graph, 1, stash=(0, 0, 3))
    with pytest.raises(ValueError, match="stash"):
      cls(graph, 1, method="pipelined_exact", stash=2)


def test_message_bytes_of_a_skip_graph():
  graph, params, video, _ = setup("skip")  # outputs (B=2, 3) float32 below the top
  b = par.message_bytes(graph, params, video[:, 0], 4)
  one = 2 * 3 * 4  # one output: B x width x 4 bytes
  assert b["up"] == {1: one, 2: one} and b["down"] == {1: one, 2: one}
  b = par.message_bytes(graph, params, video[:, 0], 2)  # units (1, 2) | (3, 4)
  assert b["up"] == {1: 2 * one} and b["down"] == {1: 2 * one}


# -- four simulated devices, in a subprocess ----------------------------------------------------

WORKER = textwrap.dedent(r"""
  import json, sys
  import jax, jax.numpy as jnp, numpy as np
  import sideways_lab as sl
  from sideways_lab import parallel as par
  from core_helpers import setup, mse, reversible_setup
  from test_parallel import conv_setup

  report = {"num_devices": len(jax.devices())}

  def np_leaves(tree):
      return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]

  def max_abs(a):   # in NumPy: eager jnp ops would compile once per shape and device
      return max(float(np.abs(x).max()) for x in np_leaves(a))

  def max_abs_diff(a, b):   # empty arrays (delay lines of length 0) differ by nothing
      return max((float(np.abs(x - y).max()) for x, y in zip(np_leaves(a), np_leaves(b))
                  if x.size), default=0.0)

  def rel(a, b):
      return max_abs_diff(a, b) / max(max_abs(b), 1e-30)

  def check(name, eng, graph, params, video, targets):
      ref, rinfo = sl.gradients(graph, params, video, targets, mse, method=eng.method,
                                stash=0 if eng.method != "sideways" else eng.stash)
      grads, info = eng.gradients(params, video, targets, mse)
      placed = []
      if isinstance(eng, par.DevicePipeline):   # unit k's gradient lives on unit k's device
          placed = [sorted(d.id for d in jax.tree_util.tree_leaves(grads[k - 1])[0].devices())
                    == [eng.devices[eng.assignment[k - 1]].id]
                    for k in range(1, graph.num_units + 1)]
      report[name] = {"rel_err": rel(grads, ref), "grad_norm": max_abs(ref),
                      "loss_err": abs(float(info["loss"] - rinfo["loss"])),
                      "devices": eng.num_devices, "placed": all(placed)}

  def check_stream(name, eng, graph, params, video, targets, cuts, first_state=True):
      # first_state=False: before every unit's first valid tick the single-device engine
      # skips idle units (their outputs stay zero) where the routes compute them; those values
      # never meet a non-zero cotangent, so only the state after the first chunk is compared
      stash = eng.stash
      ref_state = sl.init_state(graph, params, video, stash=stash)
      state = eng.init_state(params, video)
      errs, state_errs, loss_errs = [], [], []
      for a, b in zip(cuts[:-1], cuts[1:]):
          gr, ir, ref_state = sl.stream_gradients(graph, params, video[:, a:b],
                                                  targets[:, a:b], mse, ref_state, stash=stash)
          g, i, state = eng.stream_gradients(params, video[:, a:b], targets[:, a:b], mse, state)
          errs.append(max_abs_diff(g, gr) / max(max_abs(gr), 1e-30))
          loss_errs.append(abs(float(i["loss"] - ir["loss"])))
          back = eng.gather_state(state)
          state_errs.append(max_abs_diff(
              tuple(back.buffers) + tuple(back.messages) + tuple(back.delayed)
              + tuple(back.carried),
              tuple(ref_state.buffers) + tuple(ref_state.messages) + tuple(ref_state.delayed)
              + tuple(ref_state.carried)))
          assert int(back.tick) == int(ref_state.tick) == b
      # a stream can continue on the single-device engine from the gathered state
      g1, _, _ = sl.stream_gradients(graph, params, video, targets, mse, eng.gather_state(state),
                                     stash=stash)
      g2, _, _ = sl.stream_gradients(graph, params, video, targets, mse, ref_state, stash=stash)
      report[name] = {"rel_err": max(errs),
                      "state_err": max(state_errs if first_state else state_errs[1:]),
                      "loss_err": max(loss_errs), "handoff_err": rel(g1, g2)}

  for kind in ["chain", "skip", "mixed"]:
      graph, params, video, targets = setup(kind, T=6)
      check(kind + "/one_per_device", par.DevicePipeline(graph, 4, "one_per_device"),
            graph, params, video, targets)
  graph, params, video, targets = setup("skip", T=6)
  check("skip/interleaved", par.DevicePipeline(graph, 2, assignment=(0, 1, 0, 1)),
        graph, params, video, targets)
  check_stream("skip/stream", par.DevicePipeline(graph, 4), graph, params, video, targets,
               [0, 3, 6])

  for kind in ["skip", "mixed"]:                     # one unit per stage
      graph, params, video, targets = setup(kind, T=6)
      check(f"sharded/{kind}/4", par.ShardedGraph(graph, 4), graph, params, video, targets)
  graph, params, video, targets = setup("dense", T=6)
  check("sharded/dense/3", par.ShardedGraph(graph, 3), graph, params, video, targets)  # uneven
  graph, params, video, targets = conv_setup()
  check("sharded/conv/2", par.ShardedGraph(graph, 2), graph, params, video, targets)
  graph, params, video, targets = setup("skip", T=6)
  check_stream("sharded/stream", par.ShardedGraph(graph, 4), graph, params, video, targets,
               [0, 3, 6])
  # every method and stash on both routes, on graphs with skips, dense edges and delays
  for kind, labels in [("dense", ["exact"]), ("temporal", ["exact", "half"])]:
      graph, params, video, targets = setup(kind)
      r = tuple(sl.schedule.exact_lags(graph)[1:-1])
      for label in labels:
          kw = (dict(method="pipelined_exact") if label == "exact"
                else dict(stash=tuple(x // 2 for x in r)))
          check(f"{kind}/{label}", par.DevicePipeline(graph, 4, "one_per_device", **kw),
                graph, params, video, targets)
          check(f"sharded/{kind}/{label}", par.ShardedGraph(graph, 4, **kw),
                graph, params, video, targets)
  graph, params, video, targets = setup("dense", T=8)
  check_stream("sharded/dense/stream/exact", par.ShardedGraph(graph, 2, method="pipelined_exact"),
               graph, params, video, targets, [0, 3, 8], first_state=False)
  # carry-down: units 2 and 4 reversible, unit 3 stashes; outputs carried across devices
  graph, params, video, targets = reversible_setup(L=5, T=8, plain=(3,))
  for name, eng in [("rev/carry", par.DevicePipeline(graph, 4, (0, 1, 1, 2, 3), stash="carry")),
                    ("sharded/rev/carry", par.ShardedGraph(graph, 4, stash="carry"))]:
      check(name, eng, graph, params, video, targets)
      check_stream(name + "/stream", eng, graph, params, video, targets, [0, 4, 8],
                   first_state=False)
  try:
      par.ShardedGraph(setup("chain", L=3)[0], 4)
  except ValueError as e:
      report["too_few_units"] = str(e)
  print("REPORT" + json.dumps(report))
""")


@pytest.fixture(scope="module")
def report():
  env = dict(os.environ)
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
  proc = subprocess.run(
    [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=900, cwd=TESTS
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("REPORT")][-1]
  return json.loads(line[len("REPORT") :])


def test_subprocess_sees_four_devices(report):
  assert report["num_devices"] == 4


@pytest.mark.parametrize(
  "name",
  ["chain/one_per_device", "skip/one_per_device", "mixed/one_per_device", "skip/interleaved"],
)
def test_device_pipeline_equals_sideways_on_several_devices(report, name):
  r = report[name]
  assert r["grad_norm"] > 1e-4  # a real, non-zero gradient
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6
  assert r["placed"]  # and each unit's grads on its own device
  assert r["devices"] == (2 if name == "skip/interleaved" else 4)


@pytest.mark.parametrize("name", ["skip/4", "mixed/4", "dense/3", "conv/2"])
def test_sharded_graph_equals_sideways_on_several_devices(report, name):
  r = report[f"sharded/{name}"]
  assert r["devices"] == int(name.split("/")[1]) and r["grad_norm"] > 1e-4
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6


def test_sharded_graph_needs_a_unit_per_device(report):
  assert "L=3 units but the mesh has 4 devices" in report["too_few_units"]


@pytest.mark.parametrize("name", ["skip/stream", "sharded/stream"])
def test_streaming_state_across_devices(report, name):
  r = report[name]
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6
  assert r["state_err"] < 1e-6  # buffers and messages gather back exactly
  assert r["handoff_err"] < 1e-5  # and the single-device engine goes on


@pytest.mark.parametrize("name", ["dense/exact", "temporal/exact", "temporal/half"])
@pytest.mark.parametrize("route", ["", "sharded/"])
def test_every_method_and_stash_on_four_devices(report, route, name):
  """The exact twin, and a per-unit stash (half of each exact lag: messages wait)."""
  r = report[f"{route}{name}"]
  assert r["devices"] == 4 and r["grad_norm"] > 1e-4
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6


@pytest.mark.parametrize("route", ["", "sharded/"])
def test_carry_down_on_four_devices(report, route):
  """Outputs carried down across devices: a clip, and a stream in two chunks whose state
  (carried outputs included) gathers back to the single-device engine's."""
  r = report[f"{route}rev/carry"]
  assert r["devices"] == 4 and r["grad_norm"] > 1e-4
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6
  r = report[f"{route}rev/carry/stream"]
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6
  assert r["state_err"] < 1e-5 and r["handoff_err"] < 1e-5


def test_streaming_the_exact_twin_across_devices(report):
  r = report["sharded/dense/stream/exact"]
  assert r["rel_err"] < 1e-5 and r["loss_err"] < 1e-6
  assert r["state_err"] < 1e-6  # buffers, messages and delay lines gather back exactly
  assert r["handoff_err"] < 1e-5
