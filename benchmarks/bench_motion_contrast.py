"""How well does the Sideways estimate align on the part of the gradient that sees motion?

  python benchmarks/bench_motion_contrast.py            # the table in benchmarks/README.md
  python benchmarks/bench_motion_contrast.py --quick    # a fast smoke run

The whole-gradient cosine between ``sideways`` and ``pipelined_exact`` is ~1 on the motion
classes, because most of a gradient is about the frames' appearance and the target, which
both methods see alike. What teaches the task is the *motion contrast*: the difference between
the gradients of two batches that show the same digits from the same first frame (paired clips,
``motion_classes(..., labels=...)``) moving in opposite senses, with the same target::

    Δg(method) = g(method; clips moving as class a, target a)
                 − g(method; clips as class b, target a)

Per unit k, prints cos(Δg_k(sideways), Δg_k(pipelined_exact)) and the whole-gradient cosine
cos(g_k(sideways), g_k(pipelined_exact)) at initialisation, over a range of speeds, on the
Skip-Sideways graph of the default motion-classes network (right vs left) and of the 5-unit
network with stride 2 in unit 3 (clockwise vs anticlockwise).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab import data, engine, tasks, training

SETUPS = (  # name, model overrides, class a, class b
  ("default network, right vs left", {}, 0, 1),
  (
    "5 units, stride 2 in unit 3, clockwise vs anticlockwise",
    {"num_units": 5, "downsample": [3]},
    4,
    5,
  ),
)


def contrast_cosines(model: dict, a: int, b: int, speed: float, clips: int, seed: int = 7):
  """``(contrast cos (L,), whole-gradient cos (L,))`` at init for one setup and speed."""
  cfg = training.default_config(
    "motion-classes", "skip_sideways", model=dict(model), data={"speed": speed}
  )
  tr = training.Trainer(cfg)
  params, _ = tr.init()
  T, (h, w) = cfg.data.num_frames, cfg.data.size
  targets = jnp.full((clips, T), a, jnp.int32)

  def grad(label, method):
    video, _ = data.motion_classes(
      clips, T, size=(h, w), seed=seed, speed=speed, labels=np.full(clips, label)
    )
    g, _ = engine.gradients(
      tr.graph, params, jnp.asarray(video), targets, tr.task.loss_fn, method, mask=tr.task.mask
    )
    return g

  g = {(c, m): grad(c, m) for c in (a, b) for m in ("sideways", "pipelined_exact")}
  diff = {
    m: jax.tree_util.tree_map(jnp.subtract, g[a, m], g[b, m])
    for m in ("sideways", "pipelined_exact")
  }
  return (
    np.asarray(tasks.grad_cosine(diff["sideways"], diff["pipelined_exact"])),
    np.asarray(tasks.grad_cosine(g[a, "sideways"], g[a, "pipelined_exact"])),
  )


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="one speed, 4 clips")
  args = p.parse_args(argv)
  speeds = (2.0,) if args.quick else (0.25, 0.5, 1.0, 2.0, 4.0)
  clips = 4 if args.quick else 32
  for name, model, a, b in SETUPS:
    print(f"\n{name} ({clips} paired clips, at init)\n")
    print("| speed (px/frame) | motion-contrast cosine, units 1..L | whole-gradient cosine |")
    print("| ---: | --- | --- |")
    for speed in speeds:
      contrast, whole = contrast_cosines(model, a, b, speed, clips)
      fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)
      print(f"| {speed:g} | {fmt(contrast)} | {fmt(whole)} |", flush=True)


if __name__ == "__main__":
  main()
