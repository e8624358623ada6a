"""Measured per-unit costs -> projected speed-up of pipelined training; compiled memory vs T.

Usage:  python benchmarks/bench_unit_costs.py [--units 4] [--width 16] [--size 32]
                                              [--batch 8] [--repeats 30] [--comm 0.0]

Prints (1) the median forward / backward time of each unit of the next-frame network
(``sl.models.predictor_units`` wired as a chain by ``build_graph``; jitted, warmed up,
block_until_ready), (2) the latency model fed
with those costs for D = 1..L devices (throughput and speed-up over blocking BP on the same
devices; comm cost C in seconds), (3) the compiled memory of each gradient method vs clip
length. Results are recorded in benchmarks/README.md under "## Analysis".
"""

import argparse

import jax
import numpy as np
import pandas as pd

from sideways_lab import analysis as an
from sideways_lab.models import ModelConfig, build_graph
from sideways_lab.tasks import mse


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--units", type=int, default=4)
  ap.add_argument("--width", type=int, default=16)
  ap.add_argument("--size", type=int, default=32)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--repeats", type=int, default=30)
  ap.add_argument("--comm", type=float, default=0.0)
  ap.add_argument("--clip-lengths", type=int, nargs="+", default=[8, 16, 32, 64])
  a = ap.parse_args()
  graph = build_graph(ModelConfig(task="next-frame", num_units=a.units, width=a.width), "sideways")
  frame = np.random.default_rng(0).random((a.batch, a.size, a.size, 1), np.float32)
  params = graph.init(jax.random.PRNGKey(0), frame)
  print(
    f"device: {jax.devices()[0]}; next-frame chain L={a.units} width={a.width} "
    f"frames {a.batch}x{a.size}x{a.size}x1"
  )
  c = an.unit_costs(graph, params, frame, repeats=a.repeats)
  print("\nunit  forward_ms  backward_ms  vjp_ms")
  for r in c.to_rows():
    print(
      f"{r['unit']:4d}  {1e3 * r['forward_s']:10.3f}  {1e3 * r['backward_s']:11.3f}  "
      f"{1e3 * r['vjp_s']:6.3f}"
    )
  t = an.project_speedup(c, devices=range(1, a.units + 1), comm_cost=a.comm)
  print("\nscheme          D  tick_ms  frames/s  utilisation  speedup_vs_BP")
  for r in t.itertuples():
    print(
      f"{r.scheme:14s} {r.num_devices:2d}  {1e3 * r.tick_time:7.3f}  "
      f"{r.throughput:8.1f}  {r.utilisation:11.2f}  {r.speedup_vs_backprop:13.2f}"
    )
  m = an.memory_vs_clip_length(
    graph, params, a.clip_lengths, mse, frame_shape=(a.size, a.size, 1), batch_size=a.batch
  )
  print("\nmethod           T  temp_KiB  args_KiB")
  kib = lambda b: "     n/a" if pd.isna(b) else f"{b / 1024:8.1f}"
  for r in m.itertuples():
    print(
      f"{r.method:15s} {r.clip_length:3d}  {kib(r.temp_size_in_bytes)}  "
      f"{kib(r.argument_size_in_bytes)}"
    )


if __name__ == "__main__":
  main()
