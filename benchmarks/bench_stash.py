"""The ways to close Sideways' gap (docs/design.md §5): time per clip and bytes beyond Sideways.

On the digits task's training configuration (``training.TASK_DEFAULTS["digits"]``: L = 4 units,
width 32, GroupNorm groups 8, unit 1 downsampling, B = 16 clips of 8 frames of 16×16×1), for
today's chain (``models.build_graph(config, "sideways")``) and the reversible chain
(``models.reversible_chain(config)``), every way of closing the gap is one jitted
``sl.gradients`` call:

* chain: the values of the stash frontier's sweep (``figures.SWEEPS["stash-digits"]``):
  Sideways (``stash=0``), ``stash=1``, every full-or-nothing per-unit allocation, the full
  stash, the full stash stored in bfloat16 and in int8 (``Stash("full", dtype=...)``), and the
  exact twin (``method="pipelined_exact"``);
* reversible chain (``figures.SWEEPS["stash-digits-rev"]``): Sideways, carry-down
  (``stash="carry"``, also with unit 1's frames in int8), the full stash compressed and in
  float32, and the exact twin.

Time: the median of ``--repeats`` calls after one warm-up call, all rows timed in turn, round
after round, so that a change in the machine's load hits them alike; each ratio is to the same
network's Sideways in the same run. Bytes beyond Sideways: the formula ``engine.stash_bytes``
and the compiled program's memory (``memory_analysis()``: temp + argument + output − alias, as
``analysis.compiled_memory`` counts it) minus Sideways', each also as a ratio to the same
network's full stash. The load average is printed before, after and at each round.

Run: ``python benchmarks/bench_stash.py [--quick] [--repeats N]`` (``--quick``: the tiny quick
configuration, one repeat); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax

import sideways_lab as sl
from sideways_lab import experiments, figures, models, schedule, training

FIELDS = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")


def stash_rows(rev_graph, quick: bool) -> list[tuple[str, str, str, object]]:
  """``(network, label, method, stash)`` of every row: the values of the stash frontier's sweeps
  (``figures.SWEEPS["stash-digits"]`` on the chain, ``["stash-digits-rev"]`` on the reversible
  chain), each "full" as both the sideways method's full stash and the exact twin."""
  assert schedule.why_not_carry(rev_graph, 2) is None, "the reversible chain's unit 2 carries"
  rows = []
  for network, sweep in (("chain", "stash-digits"), ("reversible", "stash-digits-rev")):
    for value in figures.sweep_spec(sweep, quick)["values"]:
      rows.append((network, f"stash {value}", "sideways", experiments.parse_stash(value)))
    rows.append((network, "pipelined_exact (exact twin)", "pipelined_exact", 0))
  return rows


def compile_row(graph, params, video, targets, loss_fn, mask, method, stash):
  """The compiled ``sl.gradients`` program of one row (one compilation, reused for timing)."""

  def f(p, v, y):
    return sl.gradients(graph, p, v, y, loss_fn, method, mask, stash, check_finite=False)[0]

  return jax.jit(f).lower(params, video, targets).compile()


def compiled_bytes(compiled) -> int | None:
  """temp + argument + output − alias bytes of a compiled program (None without an analysis)."""
  try:
    ma = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    return None
  if ma is None or ma.temp_size_in_bytes is None:
    return None
  return sum(getattr(ma, k) or 0 for k in FIELDS) - (getattr(ma, "alias_size_in_bytes", 0) or 0)


def measure(quick: bool, repeats: int):
  """Compiles and times every row; returns ``(config, rows, seconds, formula, compiled, loads)``
  with dicts keyed by ``(network, label)``."""
  cfg = training.default_config("digits", "sideways", quick=quick)
  tr = training.Trainer(cfg)
  video, targets, _ = tr.batch(0)
  graphs = {
    "chain": models.build_graph(cfg.model, "sideways"),
    "reversible": models.reversible_chain(cfg.model),
  }
  params = {n: g.init(jax.random.PRNGKey(0), video[:, 0]) for n, g in graphs.items()}
  mask, loss_fn = tr.task.mask, tr.task.loss_fn
  rows = stash_rows(graphs["reversible"], quick)
  frame = jax.ShapeDtypeStruct(video[:, 0].shape, video.dtype)
  fns, formula, mem = {}, {}, {}
  for n, label, method, stash in rows:
    key = (n, label)
    fns[key] = compile_row(graphs[n], params[n], video, targets, loss_fn, mask, method, stash)
    mem[key] = compiled_bytes(fns[key])
    st = stash if method == "sideways" else "full"  # the exact twin keeps the full stash
    formula[key] = sl.engine.stash_bytes(graphs[n], params[n], frame, st)
    jax.block_until_ready(fns[key](params[n], video, targets))  # warm-up
  times, loads = {key: [] for key in fns}, []
  for _ in range(repeats):
    loads.append(os.getloadavg()[0])
    for (n, label), f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(params[n], video, targets))
      times[(n, label)].append(time.perf_counter() - t0)
  seconds = {key: statistics.median(ts) for key, ts in times.items()}
  return cfg, rows, seconds, formula, mem, loads


def _ratio(x, base) -> str:
  return "-" if x is None or not base else f"**{x / base:.2f}**"


def table(rows, seconds, formula, mem) -> str:
  """The Markdown table of :func:`measure`'s results."""
  lines = [
    "| network | gradient | ms/clip | time / sideways | stash_bytes KiB | / full | "
    "compiled KiB beyond sideways | / full |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for n, label, _, _ in rows:
    key, side, full = (n, label), (n, "stash 0"), (n, "stash full")
    extra = None if mem[key] is None or mem[side] is None else mem[key] - mem[side]
    full_extra = None if mem[full] is None or mem[side] is None else mem[full] - mem[side]
    lines.append(
      f"| {n} | {label} | {1e3 * seconds[key]:.1f} | "
      f"**{seconds[key] / seconds[side]:.2f}** | {formula[key] / 2**10:.0f} | "
      f"{_ratio(formula[key], formula[full])} | "
      f"{'-' if extra is None else f'{extra / 2**10:.0f}'} | {_ratio(extra, full_extra)} |"
    )
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="the tiny quick configuration, 1 repeat")
  ap.add_argument("--repeats", type=int, default=7, help="timed calls per row (median)")
  args = ap.parse_args(argv)
  repeats = 1 if args.quick else args.repeats
  print(f"load average before: {os.getloadavg()}", flush=True)
  cfg, rows, seconds, formula, mem, loads = measure(args.quick, repeats)
  m, d = cfg.model, cfg.data
  print(
    f"\nthe digits configuration{' (quick)' if args.quick else ''} on "
    f"{jax.devices()[0].device_kind}: L={m.num_units}, width {m.width}, groups {m.groups}, "
    f"downsample {m.downsample}, B={cfg.batch_size}, {d.size[0]}x{d.size[1]}x1, "
    f"T={d.num_frames}; median of {repeats} calls per row after a warm-up; "
    f"1-min load average at each round: {', '.join(f'{x:.2f}' for x in loads)}\n"
  )
  print(table(rows, seconds, formula, mem))
  print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
