"""Core engine benchmarks (issue: core). Ratios are measured against a baseline in the same run.

1. Time per clip of ``sideways`` over ``backprop`` on a conv chain (6 units, batch 4, 32×32, T=64).
2. Compiled temporary memory of ``sideways`` and ``pipelined_exact`` vs clip length T.
3. Speed-up per frame over the naive implementation a newcomer would write: a Python loop over
   ticks calling ``jax.vjp`` per unit.

Run: ``python benchmarks/bench_engine.py [--quick]``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import sideways_lab as sl
from sideways_lab.models import Conv   # hk.Conv2D's gradient is ~10x slower inside a scan on CPU


def conv_unit(channels=32):
  def f(inputs):
    h = sum(Conv(channels, 3, name=f"conv{i}")(a) for i, a in enumerate(inputs))
    return jax.nn.relu(h)
  return f


def head(num_classes=10):
  def f(inputs):
    h = sum(jnp.mean(a, axis=(1, 2)) for a in inputs)
    return hk.Linear(num_classes)(h)
  return f


def conv_chain(L=6, channels=32):
  return sl.chain([conv_unit(channels) for _ in range(L - 1)] + [head()])


def xent(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def timeit(fn, repeats=5):
  jax.block_until_ready(fn())          # compile + warm up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def naive_sideways(graph, params, video, targets, loss_fn):
  """The newcomer's version: a Python loop over ticks, jax.vjp per unit, nothing jitted."""
  B, T = video.shape[:2]
  L = graph.num_units
  first = sl.schedule.first_valid_ticks(graph)[-1]
  n = T - first
  bufs = [None] * (L + 1)
  cots = [None] * (L + 1)
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  for t in range(T + L - 1):
    x = video[:, min(t, T - 1)]
    outs, new_cots = [x], [None] * (L + 1)
    for k in range(1, L + 1):
      inp = x if k == 1 else (bufs[k - 1] if bufs[k - 1] is not None else None)
      if inp is None:
        break
      out, vjp = jax.vjp(lambda p, a: graph.apply_unit(k, p, [a]), params[k - 1], inp)
      outs.append(out)
      if k == L:
        c = (jax.grad(lambda o: loss_fn(o, targets[:, t]) / n)(out) if first <= t < T
             else jnp.zeros_like(out))
      else:
        c = cots[k] if cots[k] is not None else jnp.zeros_like(out)
      g, m = vjp(c)
      grads = grads[:k - 1] + (jax.tree_util.tree_map(jnp.add, grads[k - 1], g),) + grads[k:]
      new_cots[k - 1] = m
    bufs = outs + [None] * (L + 1 - len(outs))
    cots = new_cots
  return grads


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--rounds", type=int, default=7)
  args = ap.parse_args(argv)
  L, B, H, T = 6, 4, 32, 64
  Ts = (16, 32, 64, 128)
  if args.quick:
    B, H, T, Ts = 2, 16, 16, (8, 16, 32)
  graph = conv_chain(L)
  rng = np.random.default_rng(0)
  video = jnp.asarray(rng.random((B, T, H, H, 1), np.float32))
  labels = jnp.asarray(np.repeat(rng.integers(0, 10, (B, 1)), T, 1))
  params = graph.init(jax.random.PRNGKey(0), video[:, 0])
  print(f"# engine benchmarks on {jax.devices()[0].device_kind}, "
        f"{jax.device_count()} device(s); conv chain L={L}, B={B}, {H}x{H}, T={T}\n")

  # 1. time per clip: the methods are timed in turn, round after round, so that a change in
  # the machine's load hits them alike; the median of the rounds is reported.
  fns = {m: jax.jit(lambda p, v, y, m=m: sl.gradients(graph, p, v, y, xent, method=m)[0])
         for m in sl.METHODS}
  rounds = {m: [] for m in sl.METHODS}
  for m, f in fns.items():
    jax.block_until_ready(f(params, video, labels))           # compile and warm up
  for _ in range(args.rounds):
    for m, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(params, video, labels))
      rounds[m].append(time.perf_counter() - t0)
  times = {m: statistics.median(r) for m, r in rounds.items()}
  print("| method | time per clip (ms) | ratio to backprop |\n|---|---|---|")
  for m, t in times.items():
    print(f"| {m} | {1e3 * t:.1f} | {t / times['backprop']:.3f} |")

  # 2. compiled temporary memory vs T
  print("\n| T | sideways temp (MiB) | pipelined_exact temp (MiB) | backprop temp (MiB) |"
        "\n|---|---|---|---|")
  mem = {}
  for TT in Ts:
    v = jax.ShapeDtypeStruct((B, TT, H, H, 1), jnp.float32)
    y = jax.ShapeDtypeStruct((B, TT), jnp.int32)
    row = []
    for method in ("sideways", "pipelined_exact", "backprop"):
      f = jax.jit(lambda p, v, y, m=method: sl.gradients(graph, p, v, y, xent, method=m,
                                                         check_finite=False)[0])
      ma = f.lower(params, v, y).compile().memory_analysis()
      size = getattr(ma, "temp_size_in_bytes", float("nan")) / 2**20
      mem[(TT, method)] = size
      row.append(f"{size:.2f}")
    print(f"| {TT} | " + " | ".join(row) + " |")
  lo, hi = Ts[0], Ts[-1]
  print(f"\nsideways temp memory T={hi} / T={lo}: "
        f"{mem[(hi, 'sideways')] / mem[(lo, 'sideways')]:.2f}x; pipelined_exact: "
        f"{mem[(hi, 'pipelined_exact')] / mem[(lo, 'pipelined_exact')]:.2f}x")

  # 3. naive implementation
  Tn = 8
  vn, yn = video[:, :Tn], labels[:, :Tn]
  t_naive = timeit(lambda: naive_sideways(graph, params, vn, yn, xent), repeats=2)
  f = jax.jit(lambda p, v, y: sl.gradients(graph, p, v, y, xent, method="sideways")[0])
  t_fast = timeit(lambda: f(params, vn, yn))
  g_naive = naive_sideways(graph, params, vn, yn, xent)
  err = max(float(jnp.max(jnp.abs(a - b))) for a, b in
            zip(jax.tree_util.tree_leaves(g_naive), jax.tree_util.tree_leaves(f(params, vn, yn))))
  print(f"\nnaive (Python loop + jax.vjp per unit) vs sl.gradients, T={Tn}: "
        f"{1e3 * t_naive / Tn:.1f} ms/frame vs {1e3 * t_fast / Tn:.2f} ms/frame: "
        f"speed-up {t_naive / t_fast:.1f}x (max |difference| {err:.1e})")


if __name__ == "__main__":
  main()
