"""Engine benchmarks. Ratios are measured against baselines in the same run.

1. Time per clip of every gradient method (``backprop``, ``bptt``, ``pipelined_exact``,
   ``sideways`` with ``stash`` ∈ {0, 1, 2, full, per unit}) on a conv chain whose units use
   ``hk.Conv2D`` or the package's im2col ``models.Conv``.
2. Compiled temporary memory of the same methods vs the clip length T, for both conv kinds.
3. Speed-up over what a newcomer would write: an un-jitted Python loop over ticks calling
   ``jax.vjp`` per unit, and a Python loop over ticks calling one jitted tick.
4. Time per training step of each of the five schemes in the experiments' configuration
   (``experiments.budget``) of a task.

The ways to close Sideways' gap (stashes, compressed stashes, carry-down) are timed and sized
by ``benchmarks/bench_stash.py``.

Run: ``python benchmarks/bench_engine.py [--quick] [--rounds N]
[--tables time,memory,naive,steps] [--tasks digits]``; prints Markdown tables and the
load average before and after.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sideways_lab as sl
from sideways_lab.models import Conv

CONVS = {"hk.Conv2D": hk.Conv2D, "models.Conv": Conv}
# (label, method, stash): every method, and the stash knob of Sideways
VARIANTS = [
  ("backprop", "backprop", 0),
  ("bptt", "bptt", 0),
  ("pipelined_exact", "pipelined_exact", 0),
  ("sideways", "sideways", 0),
  ("sideways stash=1", "sideways", 1),
  ("sideways stash=2", "sideways", 2),
  ("sideways stash=full", "sideways", "full"),
  ("sideways stash=(2, 0, 0)", "sideways", (2, 0, 0)),  # only unit 1 keeps past inputs
]
NAIVE_TICKS = 8  # the un-jitted naive loop is slow: it runs this many frames


def conv_unit(conv, channels):
  def f(inputs):
    h = sum(conv(channels, 3, name=f"conv{i}")(a) for i, a in enumerate(inputs))
    return jax.nn.relu(h)

  return f


def head(num_classes=10):
  def f(inputs):
    h = sum(jnp.mean(a, axis=(1, 2)) for a in inputs)
    return hk.Linear(num_classes)(h)

  return f


def conv_chain(L=6, channels=32, conv=Conv):
  return sl.chain([conv_unit(conv, channels) for _ in range(L - 1)] + [head()])


def xent(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def grad_fn(graph, method, stash):
  return jax.jit(
    lambda p, v, y: sl.gradients(
      graph, p, v, y, xent, method=method, stash=stash, check_finite=False
    )[0]
  )


def timeit(fn, repeats=5):
  jax.block_until_ready(fn())  # compile + warm up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def max_diff(a, b) -> float:
  return max(
    float(jnp.max(jnp.abs(x - y)))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


# -- what a newcomer writes (chain graphs) ------------------------------------------------------


def _naive_tick(graph, params, bufs, cots, x, y, w):
  """One Sideways tick of a chain: every unit's VJP at its current input (docs/design.md §5)."""
  L = graph.num_units
  outs, new_cots, grads = [x], [], []
  for k in range(1, L + 1):
    inp = x if k == 1 else bufs[k - 2]
    out, vjp = jax.vjp(lambda p, a, k=k: graph.apply_unit(k, p, [a]), params[k - 1], inp)
    c = jax.grad(lambda o: w * xent(o, y))(out) if k == L else cots[k - 1]
    g, m = vjp(c)
    outs.append(out)
    grads.append(g)
    new_cots.append(m)
  # unit k's message goes to unit k-1 (none for unit 1: the frame)
  return tuple(outs[1:L]), tuple(new_cots[1:]), tuple(grads)


_jitted_tick = jax.jit(_naive_tick, static_argnums=0)  # one compiled tick per graph


def naive_sideways(graph, params, video, targets, jit_tick=False):
  """The newcomer's version: a Python loop over T + L - 1 ticks; ``jit_tick`` jits the tick.

  Buffers and messages start at zero, as in the engine, so the result is the same Ĝ.
  """
  T = video.shape[1]
  L = graph.num_units
  V = sl.schedule.loss_ticks(graph, T)
  bufs, a = [], video[:, 0]
  for k in range(1, L):
    a = jax.eval_shape(lambda p, a, k=k: graph.apply_unit(k, p, [a]), params[k - 1], a)
    bufs.append(jnp.zeros(a.shape, a.dtype))
  bufs = tuple(bufs)
  cots = bufs
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  tick = functools.partial(_jitted_tick if jit_tick else _naive_tick, graph)
  for t in range(T + L - 1):
    w = float(V[t]) / V.sum() if t < T else 0.0
    bufs, cots, g = tick(params, bufs, cots, video[:, min(t, T - 1)], targets[:, min(t, T - 1)], w)
    grads = jax.tree_util.tree_map(jnp.add, grads, g)
  return grads


# -- the tables ---------------------------------------------------------------------------------


def time_table(graphs, params, video, labels, rounds):
  """Every (conv, variant) timed in turn, round after round (median of the rounds)."""
  fns = {(c, v): grad_fn(graphs[c], m, s) for c in CONVS for v, m, s in VARIANTS}
  grads = {key: jax.block_until_ready(f(params[key[0]], video, labels)) for key, f in fns.items()}
  times = {key: [] for key in fns}
  for _ in range(rounds):
    for key, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(params[key[0]], video, labels))
      times[key].append(time.perf_counter() - t0)
  t = {key: statistics.median(ts) for key, ts in times.items()}
  print(
    "| method | hk.Conv2D (ms/clip) | models.Conv (ms/clip) | hk.Conv2D / models.Conv | "
    "time / sideways (models.Conv) | max abs diff of grads (hk vs models) |"
  )
  print("|---|---:|---:|---:|---:|---:|")
  for v, _, _ in VARIANTS:
    a, b = t[("hk.Conv2D", v)], t[("models.Conv", v)]
    print(
      f"| {v} | {1e3 * a:.1f} | {1e3 * b:.1f} | **{a / b:.2f}** | "
      f"{b / t[('models.Conv', 'sideways')]:.2f} | "
      f"{max_diff(grads[('hk.Conv2D', v)], grads[('models.Conv', v)]):.1e} |"
    )
  exact = grads[("models.Conv", "bptt")]
  print(
    "\nmax |grad - bptt| (models.Conv): "
    + ", ".join(f"{v} {max_diff(grads[('models.Conv', v)], exact):.1e}" for v, _, _ in VARIANTS)
  )
  return t


def memory_table(graphs, params, B, H, C, Ts):
  """Compiled temporary memory vs T; hk.Conv2D units at the shortest and longest T only."""
  print(
    "\n| units | method | "
    + " | ".join(f"T={T} (MiB)" for T in Ts)
    + f" | T={Ts[-1]} / T={Ts[0]} |"
  )
  print("|---|---|" + "---:|" * (len(Ts) + 1))
  for c in CONVS:
    for v, m, s in VARIANTS:
      sizes = []
      for T in Ts if c == "models.Conv" else (Ts[0], Ts[-1]):
        vid = jax.ShapeDtypeStruct((B, T, H, H, C), jnp.float32)
        y = jax.ShapeDtypeStruct((B, T), jnp.int32)
        ma = grad_fn(graphs[c], m, s).lower(params[c], vid, y).compile().memory_analysis()
        sizes.append(ma.temp_size_in_bytes / 2**20)
      cells = [f"{x:.2f}" for x in sizes]
      if len(sizes) < len(Ts):
        cells = [cells[0]] + ["-"] * (len(Ts) - 2) + [cells[-1]]
      print(f"| {c} | {v} | " + " | ".join(cells) + f" | {sizes[-1] / sizes[0]:.2f}x |", flush=True)


def naive_table(graphs, params, video, labels):
  Tn = min(NAIVE_TICKS, video.shape[1])
  vn, yn = video[:, :Tn], labels[:, :Tn]
  T = video.shape[1]
  print(
    "\n| units | implementation | frames | ms/frame | speed-up of sl.gradients | "
    "max abs diff |\n|---|---|---:|---:|---:|---:|"
  )
  for c in CONVS:
    g, p = graphs[c], params[c]
    f = grad_fn(g, "sideways", 0)
    fast = {
      n: timeit(lambda f=f, p=p, v=v, y=y: f(p, v, y)) / n
      for n, v, y in [(Tn, vn, yn), (T, video, labels)]
    }
    rows = [
      ("un-jitted loop, jax.vjp per unit", Tn, vn, yn, False, 2),
      ("Python loop of one jitted tick", T, video, labels, True, 3),
    ]
    for name, n, v, y, jit_tick, reps in rows:
      run = functools.partial(naive_sideways, g, p, v, y, jit_tick)
      t = timeit(run, repeats=reps) / n
      err = max_diff(run(), f(p, v, y))
      print(
        f"| {c} | {name} | {n} | {1e3 * t:.1f} | **{t / fast[n]:.1f}x** "
        f"(sl.gradients {1e3 * fast[n]:.2f} ms/frame) | {err:.1e} |"
      )


def steps_table(tasks, rounds, quick):
  """Seconds per training step (``Trainer.train_step``: clips, gradients, update) of the five
  schemes in the experiments' configuration, round after round (median of the rounds)."""
  from sideways_lab import experiments, training
  from sideways_lab.models import SCHEMES

  print(
    "\n| task | " + " | ".join(SCHEMES) + " | sideways_exact / sideways | skip_exact / "
    "skip_sideways |"
  )
  print("|---|" + "---:|" * (len(SCHEMES) + 2))
  for task in tasks:
    trainers = {}
    for scheme in SCHEMES:
      cfg = training.default_config(task, scheme, seed=0, **experiments.budget(task, quick))
      tr = training.Trainer(cfg)
      p, o = tr.init()
      p, o, _ = tr.train_step(p, o, 0)  # compile
      trainers[scheme] = [tr, p, o]
    times = {s: [] for s in SCHEMES}
    for r in range(rounds):
      for scheme, (tr, p, o) in trainers.items():
        t0 = time.perf_counter()
        p, o, _ = tr.train_step(p, o, 1 + r)
        times[scheme].append(time.perf_counter() - t0)
        trainers[scheme][1:] = [p, o]
    t = {s: statistics.median(ts) for s, ts in times.items()}
    cells = " | ".join(f"{1e3 * t[s]:.1f}" for s in SCHEMES)
    print(
      f"| {task} (ms/step) | {cells} | **{t['sideways_exact'] / t['sideways']:.2f}** | "
      f"**{t['skip_exact'] / t['skip_sideways']:.2f}** |"
    )


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument(
    "--tables",
    default="time,memory,naive,steps",
    help="comma-separated subset of time, memory, naive, steps",
  )
  ap.add_argument("--tasks", default="digits", help="tasks of the steps table (comma-separated)")
  args = ap.parse_args(argv)
  L, B, H, C, width, T, Ts = 4, 4, 32, 1, 16, 16, (16, 32, 64, 128)
  if args.quick:
    L, B, H, width, T, Ts, args.rounds = 3, 1, 8, 4, 8, (8, 16), 1
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.random((B, T, H, H, C), np.float32))
  labels = jnp.asarray(np.repeat(rng.integers(0, 10, (B, 1)), T, 1))
  graphs = {c: conv_chain(L, width, conv) for c, conv in CONVS.items()}
  # the same parameters for both conv kinds (same names and shapes), so results must agree
  shared = graphs["models.Conv"].init(jax.random.PRNGKey(0), video[:, 0])
  params = {c: shared for c in CONVS}
  print(
    f"# engine benchmarks on {jax.devices()[0].device_kind}, {jax.device_count()} "
    f"device(s); conv chain L={L} (width {width}), B={B}, {H}x{H}x{C}, T={T}\n"
  )
  tables = args.tables.split(",")
  print(f"load average before: {os.getloadavg()}\n")
  if "time" in tables:
    time_table(graphs, params, video, labels, args.rounds)
  if "memory" in tables:
    memory_table(graphs, params, B, H, C, Ts)
  if "naive" in tables:
    naive_table(graphs, params, video, labels)
  if "steps" in tables:
    steps_table(args.tasks.split(","), args.rounds, args.quick)
  print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
