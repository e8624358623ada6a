"""Model parallelism: Sideways tick time vs number of devices, measured and projected.

Usage:
  python benchmarks/bench_parallel.py                 # CPU: 1 vs 2 simulated devices
  python benchmarks/bench_parallel.py --quick         # a smoke run (tiny sizes)
  python benchmarks/bench_parallel.py --real-devices  # GPUs (or whatever jax.devices() has):
                                                      # D = 1, 2, 4, ... up to all of them
  python benchmarks/bench_parallel.py --processes 1 2 # real JAX processes on this machine
      [--task next-frame --scheme skip_sideways]      # (sideways_lab.launch, gloo on CPU):
                                                      # the default training model on the
                                                      # sharded route, one stage per process
Options: --units L (4) --width C (16) --size S (32) --batch B (8) --frames T (16)
         --repeats N (3) --devices 1 2 (CPU mode) --threads single|default

The model is a *balanced chain*: L identical units ``tanh(conv3x3(C -> C))`` on (B, S, S, C)
frames, so every unit costs the same and L/D units go on each device. For each D it times one
clip of Sideways (T ticks + L-1 drain ticks; warm-up first, median of N, block_until_ready):

* ``reference``: the single-device engine ``sl.gradients(..., method="sideways")`` (D = 1);
* ``devices``: :class:`sl.parallel.DevicePipeline` (per-device jitted steps, host loop);
* ``sharded``: :class:`sl.parallel.ShardedGraph` (shard_map + ppermute, one jitted scan);

and reports the tick time (clip time / (T + L - 1)) beside the latency model's projection
``tick_time(D) = max_d Σ_{k on d} (F_k + B_k) + C·1{D>1}`` with F_k, B_k measured per unit
(``sl.analysis.unit_costs``) and C the measured time to move one activation and one message
between two devices. On CPU each D runs in its own process with
``XLA_FLAGS=--xla_force_host_platform_device_count=D``; ``--threads single`` (default) also
makes every simulated device single-threaded, so that "a device" is one core and the
comparison is about model parallelism, not about XLA's intra-op threads.
Results are recorded in benchmarks/README.md under "## Model parallelism".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(a):
  import haiku as hk
  import jax
  import jax.numpy as jnp
  import numpy as np

  import sideways_lab as sl

  def unit(inputs):
    return jnp.tanh(hk.Conv2D(a.width, 3, name="conv")(inputs[0]))

  graph = sl.chain([unit] * a.units, name="balanced_chain")
  rng = np.random.default_rng(0)
  video = rng.normal(size=(a.batch, a.frames, a.size, a.size, a.width)).astype(np.float32)
  targets = rng.normal(size=video.shape).astype(np.float32)
  params = graph.init(jax.random.PRNGKey(0), jnp.asarray(video[:, 0]))
  return graph, params, jnp.asarray(video), jnp.asarray(targets)


def mse(o, y):
  import jax.numpy as jnp

  return jnp.mean((o - y) ** 2)


def timed(fn, repeats):
  """(median seconds to completion, median seconds until the call returned)."""
  import jax

  jax.block_until_ready(fn())
  full, dispatch = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    t1 = time.perf_counter()
    jax.block_until_ready(out)
    full.append(time.perf_counter() - t0)
    dispatch.append(t1 - t0)
  return statistics.median(full), statistics.median(dispatch)


def comm_cost(devices, shape, repeats=20):
  """Seconds to move one activation up and one message down between two devices."""
  import jax
  import numpy as np

  if len(devices) < 2:
    return 0.0
  x = jax.device_put(np.ones(shape, np.float32), devices[0])
  y = jax.device_put(np.ones(shape, np.float32), devices[1])
  ts = []
  for _ in range(repeats + 2):
    t0 = time.perf_counter()
    jax.block_until_ready((jax.device_put(x, devices[1]), jax.device_put(y, devices[0])))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts[2:])


def measure(a, num_devices_list, want_costs):
  """Rows of measurements for each D in ``num_devices_list`` (devices of this process)."""
  import jax

  import sideways_lab as sl
  from sideways_lab import parallel as par

  graph, params, video, targets = build(a)
  L, T = a.units, a.frames
  ticks = T + L - 1
  devs = jax.devices()
  rows = []
  info = {"device": f"{devs[0].platform}:{devs[0].device_kind}", "visible_devices": len(devs)}
  if want_costs:
    from sideways_lab import analysis as an

    c = an.unit_costs(graph, params, video[:, 0], repeats=max(5, a.repeats * 3))
    info["forward_s"], info["backward_s"], info["vjp_s"] = c.forward, c.backward, c.vjp
    t, _ = timed(
      lambda: sl.gradients(graph, params, video, targets, mse, method="sideways")[0], a.repeats
    )
    rows.append(dict(route="reference", D=1, tick_ms=1e3 * t / ticks, clip_s=t))
  for D in num_devices_list:
    d = devs[:D]
    info[f"comm_s_{D}"] = comm_cost(d, video[:, 0].shape)
    for route, eng in (
      ("devices", par.DevicePipeline(graph, d)),
      ("sharded", par.ShardedGraph(graph, d)),
    ):
      t, disp = timed(lambda: eng.gradients(params, video, targets, mse)[0], a.repeats)
      rows.append(
        dict(
          route=route,
          D=D,
          tick_ms=1e3 * t / ticks,
          clip_s=t,
          dispatch_ms_per_tick=1e3 * disp / ticks,
        )
      )
  return rows, info


def projection(a, info, D):
  """The latency model's tick time (ms) on D devices from the measured per-unit costs."""
  from sideways_lab.analysis.latency import latency_model

  comm = info.get(f"comm_s_{D}", info.get("comm_s_2", 0.0)) if D > 1 else 0.0
  m = latency_model(
    a.units,
    "sideways",
    D,
    forward_cost=list(info["forward_s"]),
    backward_cost=list(info["backward_s"]),
    comm_cost=comm,
  )
  return 1e3 * m.tick_time


def worker(a):
  rows, info = measure(a, [a.worker], want_costs=a.worker == 1)
  print("RESULT" + json.dumps({"rows": rows, "info": info}))


def run_cpu(a):
  results = {"rows": [], "info": {}}
  flags = "--xla_force_host_platform_device_count={D}"
  if a.threads == "single":
    flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  for D in sorted(set([1] + a.devices)):
    env = dict(
      os.environ,
      XLA_FLAGS=flags.format(D=D),
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    )
    args = [sys.executable, os.path.abspath(__file__), "--worker", str(D)] + a.passthrough
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    if p.returncode:
      sys.exit(f"worker D={D} failed:\n{p.stderr[-3000:]}")
    r = json.loads([l for l in p.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
    results["rows"] += r["rows"]
    results["info"].update(r["info"])
  return results


def run_real(a):
  import jax

  n = len(jax.devices())
  Ds = sorted({D for D in [1, 2, 4, 8, n] if D <= n})
  rows, info = measure(a, Ds, want_costs=True)
  return {"rows": rows, "info": info}


def dist_worker(a):
  """One process of a ``--processes P`` run: the default training model of ``--task`` /
  ``--scheme`` on the sharded route over every process's devices."""
  import jax

  import sideways_lab as sl
  from sideways_lab import parallel as par
  from sideways_lab import training

  tr = training.Trainer(training.default_config(a.task, a.scheme))
  params, _ = tr.init()
  video, targets, _ = tr.batch(0)
  loss_fn, mask = tr.task.loss_fn, tr.task.mask
  eng = par.ShardedGraph(tr.graph, method=tr.method)
  L, T = tr.graph.num_units, video.shape[1]
  ticks = T + eng.drain
  t, _ = timed(lambda: eng.gradients(params, video, targets, loss_fn, mask)[0], a.repeats)
  row = dict(
    route="sharded",
    processes=jax.process_count(),
    D=eng.num_devices,
    tick_ms=1e3 * t / ticks,
    clip_s=t,
    assignment=list(eng.assignment),
  )
  rows = [row]
  if jax.process_count() == 1:
    t, _ = timed(
      lambda: sl.gradients(tr.graph, params, video, targets, loss_fn, tr.method, mask=mask)[0],
      a.repeats,
    )
    rows.append(dict(route="reference", processes=1, D=1, tick_ms=1e3 * t / ticks, clip_s=t))
  frame = video[:, 0]
  info = {
    "model": f"{a.task}/{a.scheme} default: L={L}, video {tuple(video.shape)}",
    "edges": {k: list(v) for k, v in tr.graph.edges.items()},
    "message_bytes": {
      str(D): par.message_bytes(tr.graph, params, frame, D) for D in sorted({2, L})
    },
  }
  if jax.process_index() == 0:
    print("RESULT" + json.dumps({"rows": rows, "info": info}))


def run_processes(a):
  """``--processes P ...``: one launch of P local processes per P."""
  rows, info = [], {}
  for n in a.processes:
    env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    )
    env.pop("XLA_FLAGS", None)
    args = [
      sys.executable,
      "-m",
      "sideways_lab.launch",
      "--processes",
      str(n),
      os.path.abspath(__file__),
      "--dist-worker",
      "--task",
      a.task,
      "--scheme",
      a.scheme,
      "--repeats",
      str(a.repeats),
    ]
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    if p.returncode:
      sys.exit(f"launch of {n} processes failed:\n{p.stderr[-3000:]}")
    r = json.loads([l for l in p.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
    rows += r["rows"]
    info.update(r["info"])
  print(
    f"\nmodel: {info['model']}; edges {info['edges']}; one CPU device per process, "
    f"median of {a.repeats}; load average {os.getloadavg()[0]:.1f}"
  )
  print("bytes per tick and stage boundary (up: outputs, down: messages), by stage distance:")
  for D, b in info["message_bytes"].items():
    print(f"  D={D}: up {b['up']}  down {b['down']}")
  print("\n| route | processes | tick (ms) | clip (s) |\n|---|---:|---:|---:|")
  for r in rows:
    print(f"| {r['route']} | {r['processes']} | {r['tick_ms']:.1f} | {r['clip_s']:.2f} |")
  if a.json:
    with open(a.json, "w") as f:
      json.dump({"rows": rows, "info": info}, f, indent=1)


def report(a, res):
  rows, info = res["rows"], res["info"]
  ref = next((r for r in rows if r["route"] == "reference"), None)
  print(
    f"\ndevice: {info['device']}; balanced chain L={a.units} of conv3x3 {a.width}->{a.width}"
    f" + tanh, frames {a.batch}x{a.size}x{a.size}x{a.width}, T={a.frames} "
    f"(+{a.units - 1} drain ticks), threads={a.threads}, median of {a.repeats}"
  )
  print(
    "per-unit F+B (ms): "
    + ", ".join(f"{1e3 * (f + b):.2f}" for f, b in zip(info["forward_s"], info["backward_s"]))
  )
  print(
    "comm per tick (ms): "
    + ", ".join(
      f"D={k.split('_')[-1]}: {1e3 * v:.3f}" for k, v in info.items() if k.startswith("comm_s_")
    )
  )
  print(
    "\n| route | D | tick (ms) | vs reference | vs same route D=1 | host dispatch (ms/tick) "
    "| model tick (ms) |"
  )
  print("|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    base = next((b for b in rows if b["route"] == r["route"] and b["D"] == 1), r)
    model = projection(a, info, r["D"])
    disp = r.get("dispatch_ms_per_tick")
    print(
      f"| {r['route']} | {r['D']} | {r['tick_ms']:.2f} | "
      f"{ref['tick_ms'] / r['tick_ms']:.2f}x | {base['tick_ms'] / r['tick_ms']:.2f}x | "
      f"{'-' if disp is None else f'{disp:.3f}'} | {model:.2f} |"
    )
  if a.json:
    with open(a.json, "w") as f:
      json.dump(
        {"args": {k: v for k, v in vars(a).items() if k != "passthrough"}, **res}, f, indent=1
      )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--units", type=int, default=4)
  ap.add_argument("--width", type=int, default=16)
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--frames", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--devices", type=int, nargs="+", default=[2])
  ap.add_argument("--threads", choices=["single", "default"], default="single")
  ap.add_argument("--real-devices", action="store_true")
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--json", default=None, help="also write the results to this file")
  ap.add_argument(
    "--processes",
    type=int,
    nargs="+",
    default=None,
    help="real local processes (sideways_lab.launch), e.g. 1 2",
  )
  ap.add_argument("--task", default="next-frame", help="with --processes: the default model of")
  ap.add_argument("--scheme", default="skip_sideways")
  ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
  ap.add_argument("--dist-worker", action="store_true", help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.dist_worker:
    return dist_worker(a)
  if a.processes:
    return run_processes(a)
  if a.quick:
    a.width, a.size, a.batch, a.frames, a.repeats = 4, 8, 2, 6, 2
  a.passthrough = [
    "--units",
    str(a.units),
    "--width",
    str(a.width),
    "--size",
    str(a.size),
    "--batch",
    str(a.batch),
    "--frames",
    str(a.frames),
    "--repeats",
    str(a.repeats),
  ]
  if a.worker:
    return worker(a)
  res = run_real(a) if a.real_devices else run_cpu(a)
  report(a, res)


if __name__ == "__main__":
  main()
