"""The ``sideways-lab`` command line.

Subcommands::

  sideways-lab demo                       per-unit gradient alignment of Sideways and
                                          Skip-Sideways on a synthetic clip (seconds)
  sideways-lab train --task T --scheme S --out DIR [--resume] [--steps N] ...
  sideways-lab evaluate CHECKPOINT [--clips N]
  sideways-lab compare --task T --out DIR [--quick]
  sideways-lab figures [--quick] [--out DIR]   (when sideways_lab.figures is installed)

Errors in the arguments (unknown task or scheme, impossible values, a checkpoint of another
model, a corrupt file) print one clear line and exit with status 2; nothing already saved is
overwritten. Ctrl-C during ``train`` saves a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

from sideways_lab.models import SCHEMES, SKIP_KINDS, TASKS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _number(kind, ok, what: str):
  """An argparse type: ``kind(s)`` that must satisfy ``ok``, else "expected {what}"."""
  def parse(s: str):
    try:
      v = kind(s)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
    if not ok(v):
      raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
    return v
  return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a finite positive number")


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

def _cmd_demo(args) -> int:
  from sideways_lab import training
  print(f"Gradient alignment at initialisation: cosine(sideways, pipelined_exact) per unit\n"
        f"moving digits, next-frame prediction, {args.frames} frames of "
        f"{args.size}x{args.size}, {args.units} units, speed {args.speed} px/frame\n",
        flush=True)
  cos = training.alignment("next-frame", num_units=args.units, num_frames=args.frames,
                           size=(args.size, args.size), speed=args.speed, seed=args.seed)
  print(format_alignment_table(cos))
  print("\n1.000 means the Sideways estimate points exactly along the true gradient of the "
        "pipelined network;\nunits far from the output see gradients from older frames "
        "(a mismatch of 2(L-k) frames on a chain).")
  return 0


def format_alignment_table(cos: dict) -> str:
  """A text table of per-unit cosines: one row per unit, one column per scheme."""
  names = {"sideways": "Sideways (chain)", "skip_sideways": "Skip-Sideways (skips)"}
  cols = list(cos)
  L = len(next(iter(cos.values())))
  heads = ["unit"] + [names.get(c, c) for c in cols]
  widths = [max(4, len(h)) for h in heads]
  rows = [[str(k + 1)] + [f"{cos[c][k]:+.3f}" for c in cols] for k in range(L)]
  rows.append(["mean"] + [f"{sum(cos[c]) / L:+.3f}" for c in cols])
  fmt = lambda r: "  ".join(x.rjust(w) for x, w in zip(r, widths))
  sep = "  ".join("-" * w for w in widths)
  return "\n".join([fmt(heads), sep] + [fmt(r) for r in rows[:-1]] + [sep, fmt(rows[-1])])


# ---------------------------------------------------------------------------------------------
# train / evaluate / compare
# ---------------------------------------------------------------------------------------------

def _config_from_args(args):
  from sideways_lab import training
  over = {}
  for name in ("steps", "batch_size", "learning_rate", "optimizer", "update_every",
               "checkpoint_every", "keep", "eval_every", "eval_clips"):
    v = getattr(args, name, None)
    if v is not None:
      over[name] = v
  model = {k: getattr(args, k) for k in ("num_units", "width", "span", "skips", "skip_kernel")
           if getattr(args, k, None) is not None}
  data = {k: getattr(args, k) for k in ("num_frames", "speed") if getattr(args, k, None)
          is not None}
  if getattr(args, "size", None) is not None:
    data["size"] = (args.size, args.size)
  return training.default_config(args.task, args.scheme, quick=args.quick, seed=args.seed,
                                 model=model, data=data, **over)


def _cmd_train(args) -> int:
  from pathlib import Path

  from sideways_lab import training
  if args.resume and (Path(args.out) / "config.json").exists() and args.task is None:
    cfg = training.TrainConfig.from_dict(json.loads((Path(args.out) / "config.json").read_text()))
    if args.steps is not None:
      cfg = cfg.replace(steps=args.steps)
  else:
    if args.task is None or args.scheme is None:
      raise ValueError("train needs --task and --scheme (or --resume on a run directory)")
    cfg = _config_from_args(args)
  try:
    r = training.train(cfg, args.out, resume=args.resume, progress=not args.no_progress and None)
  except KeyboardInterrupt:
    print(f"\ninterrupted: a checkpoint was saved in {args.out}; continue with "
          f"`sideways-lab train --out {args.out} --resume`", file=sys.stderr)
    return EXIT_INTERRUPTED
  print(json.dumps({"task": cfg.task, "scheme": cfg.scheme, "step": r.step,
                    "train_time_s": round(r.train_time_s, 2), **r.test}, indent=1))
  return 0


def _cmd_evaluate(args) -> int:
  from sideways_lab import training
  print(json.dumps(training.evaluate(args.checkpoint, args.clips, seed=args.seed), indent=1))
  return 0


def _cmd_compare(args) -> int:
  from pathlib import Path

  from sideways_lab import training
  res = training.compare(args.task, args.out, quick=args.quick, seed=args.seed,
                         overwrite=args.overwrite, progress=not args.no_progress and None,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
  print((Path(args.out) / "results.md").read_text())
  return 0 if res else 1


def _add_figures(sub) -> None:
  """Registers ``figures`` when ``sideways_lab.figures`` is importable."""
  try:
    figures = importlib.import_module("sideways_lab.figures")
  except ImportError:
    return
  p = sub.add_parser("figures", help="regenerate the paper-style figures")
  figures.add_arguments(p)
  p.set_defaults(func=figures.run)


def build_parser() -> argparse.ArgumentParser:
  """The ``sideways-lab`` argument parser: one subparser per subcommand, ``func`` its handler."""
  parser = argparse.ArgumentParser(
      prog="sideways-lab",
      description="Sideways and Skip-Sideways: depth-parallel training of video networks.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True

  p = sub.add_parser("demo", help="per-unit gradient alignment of Sideways and Skip-Sideways")
  p.add_argument("--units", type=_positive_int, default=4)
  p.add_argument("--frames", type=_positive_int, default=12)
  p.add_argument("--size", type=_positive_int, default=16)
  p.add_argument("--speed", type=float, default=1.0)
  p.add_argument("--seed", type=_non_negative_int, default=0)
  p.set_defaults(func=_cmd_demo)

  def common(p, needs_task=True):
    p.add_argument("--task", choices=TASKS, required=needs_task and False, default=None)
    p.add_argument("--quick", action="store_true", help="a tiny budget (seconds)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

  p = sub.add_parser("train", help="train one scheme")
  common(p)
  p.add_argument("--scheme", choices=tuple(SCHEMES), default=None)
  p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl)")
  p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
  p.add_argument("--steps", type=_non_negative_int)
  p.add_argument("--batch-size", type=_positive_int)
  p.add_argument("--learning-rate", type=_positive_float)
  p.add_argument("--optimizer", choices=("adam", "sgd", "momentum"))
  p.add_argument("--update-every", type=_non_negative_int,
                 help="online updates every K ticks (0: one update per clip)")
  p.add_argument("--checkpoint-every", type=_non_negative_int)
  p.add_argument("--keep", type=_positive_int, help="checkpoints kept")
  p.add_argument("--eval-every", type=_non_negative_int)
  p.add_argument("--eval-clips", type=_positive_int)
  p.add_argument("--num-units", type=_positive_int)
  p.add_argument("--width", type=_positive_int)
  p.add_argument("--span", type=_positive_int)
  p.add_argument("--skips", choices=SKIP_KINDS,
                 help="skip graph: a skip of --span, dense skips, or span skips plus every "
                      "unit into the last (span_head)")
  p.add_argument("--skip-kernel", type=_positive_int, help="kernel of the skip projections")
  p.add_argument("--num-frames", type=_positive_int)
  p.add_argument("--size", type=_positive_int)
  p.add_argument("--speed", type=float)
  p.set_defaults(func=_cmd_train)

  p = sub.add_parser("evaluate", help="test metrics of a checkpoint")
  p.add_argument("checkpoint", help="a ckpt_*.npz file or a run directory")
  p.add_argument("--clips", type=_positive_int, default=None)
  p.add_argument("--seed", type=_non_negative_int, default=None)
  p.set_defaults(func=_cmd_evaluate)

  p = sub.add_parser("compare", help="train every scheme on the same data and budget")
  p.add_argument("--task", choices=TASKS, required=True)
  p.add_argument("--out", required=True, help="directory for results.json and results.md")
  p.add_argument("--quick", action="store_true", help="a tiny budget (seconds)")
  p.add_argument("--seed", type=_non_negative_int, default=0)
  p.add_argument("--overwrite", action="store_true", help="replace existing results")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_cmd_compare)

  _add_figures(sub)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``sideways-lab`` console script; returns the exit status."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return args.func(args)
  except (ValueError, TypeError, FileExistsError, FileNotFoundError,
          NotADirectoryError) as e:
    print(f"sideways-lab {args.command}: error: {e}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
