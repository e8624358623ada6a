"""Throughput of the data pipeline (sideways_lab.data); prints a Markdown table.

  python benchmarks/bench_data.py            # the numbers in benchmarks/README.md
  python benchmarks/bench_data.py --quick    # a fast smoke run

Measures:
  * synthetic generators, clips per second at 64x64, T = 32 (batches of 32);
  * read_video on a generated 10-second 320x240 mp4 (H.264, 25 fps, 250
    frames): full decode vs stride 4, native size and resized to 64x64.

Each number is the best of ``--repeats`` runs (after one warm-up run).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from sideways_lab import data


def best_time(fn, repeats: int) -> float:
  fn()  # Warm-up (imports, caches).
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  repeats = 1 if args.quick else args.repeats
  batch, t_len, size = (8, 8, 64) if args.quick else (32, 32, 64)
  rows = []

  def row(name, seconds, count, unit):
    rows.append((name, f"{seconds * 1e3:.1f}", f"{count / seconds:,.0f} {unit}"))

  synthetic = {
    "moving_digits, 1 digit, speed 2": lambda: data.moving_digits(
      batch, t_len, size=(size, size), num_digits=1, seed=0
    ),
    "moving_digits, 3 digits, noise + occlusion": lambda: data.moving_digits(
      batch, t_len, size=(size, size), num_digits=3, noise=0.1, occlusion=0.1, seed=0
    ),
    "motion_classes": lambda: data.motion_classes(batch, t_len, size=(size, size), seed=0),
  }
  for name, fn in synthetic.items():
    row(f"{name} (B={batch}, T={t_len}, {size}x{size})", best_time(fn, repeats), batch, "clips/s")

  row(
    f"motion_classes at its default size (B={batch}, T={t_len // 2}, 32x32)",
    best_time(lambda: data.motion_classes(batch, t_len // 2, seed=0), repeats),
    batch,
    "clips/s",
  )

  seconds, fps = (2, 25) if args.quick else (10, 25)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "bench.mp4")
    frames = data.moving_digits(
      1, seconds * fps, size=(240, 320), num_digits=3, noise=0.05, speed=2.0, seed=0
    )[0]
    data.write_video(path, frames, fps=fps)
    n = seconds * fps
    mb = os.path.getsize(path) / 2**20
    for label, kwargs in [
      ("full decode", {}),
      ("stride 4", dict(stride=4)),
      ("full decode, size 64x64", dict(size=(64, 64))),
      ("stride 4, size 64x64", dict(stride=4, size=(64, 64))),
      ("first 32 frames (max_frames)", dict(max_frames=32)),
    ]:
      secs = best_time(lambda: data.read_video(path, **kwargs), repeats)
      got = len(data.read_video(path, **kwargs))
      covered = min(n, kwargs.get("max_frames", n) * kwargs.get("stride", 1))
      rows.append(
        (
          f"read_video {seconds} s 320x240 mp4 ({mb:.1f} MiB): {label}",
          f"{secs * 1e3:.1f}",
          f"{covered / secs:,.0f} file frames/s ({got} returned)",
        )
      )

  print(
    f"Machine: {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} CPU cores, numpy {np.__version__}\n"
  )
  print("| benchmark | time (ms) | throughput |")
  print("|---|---:|---:|")
  for name, ms, thr in rows:
    print(f"| {name} | {ms} | {thr} |")


if __name__ == "__main__":
  main()
