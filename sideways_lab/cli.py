"""The ``sideways-lab`` command line.

Subcommands::

  sideways-lab demo                       per-unit gradient alignment of Sideways and
                                          Skip-Sideways on a synthetic clip (seconds)
  sideways-lab train --task T --scheme S --out DIR [--resume] [--steps N] ...
  sideways-lab evaluate CHECKPOINT [--clips N]
  sideways-lab compare --task T --out DIR [--quick]
  sideways-lab sweep --task T --knob K --values V,... --out DIR [--quick] [--reuse-other-code]
  sideways-lab figures [--quick] [--out DIR] [--only NAME ...] [--from-results DIR]
                       [--reuse-other-code]

The training flags of ``train`` are generated from :data:`TRAIN_FLAGS`, one entry per field of
the configuration dataclasses (:class:`~sideways_lab.training.TrainConfig`,
:class:`~sideways_lab.models.ModelConfig`, :class:`~sideways_lab.tasks.TaskConfig`): the flag
is the field's name with dashes, its help the first sentence of the field's entry in the
dataclass docstring. A new subcommand registers itself in :data:`SUBCOMMANDS`.

Errors in the arguments (unknown task or scheme, impossible values, a checkpoint of another
model, a corrupt file) print one clear line and exit with status 2; nothing already saved is
overwritten. Ctrl-C during ``train`` saves a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from sideways_lab import experiments, figures, training
from sideways_lab.models import READOUTS, SCHEMES, SKIP_KINDS, TASKS, ModelConfig, method_of
from sideways_lab.tasks import TaskConfig
from sideways_lab.training import OPTIMIZERS, SCHEDULES, TrainConfig

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _number(kind: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
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
# The training flags: one list, generated from the configuration dataclasses
# ---------------------------------------------------------------------------------------------

# Where each configuration's fields go in ``training.default_config``: top-level keywords, or
# the ``model=`` / ``data=`` dicts.
_SECTIONS = {TrainConfig: None, ModelConfig: "model", TaskConfig: "data"}


@dataclasses.dataclass(frozen=True)
class Flag:
  """A command-line flag for one field of a configuration dataclass.

  Attributes:
    config: ``TrainConfig``, ``ModelConfig`` or ``TaskConfig``.
    field: the field's name; the flag is ``--field-name``.
    parse: the argparse type (checks the value; its error is the command's error).
    choices: the allowed values, for a string field.
    value: turns the parsed value into the field's value (``--size 16`` -> ``(16, 16)``).
    note: appended to the help taken from the dataclass docstring.
  """

  config: type
  field: str
  parse: Callable[[str], Any] | None = None
  choices: tuple[str, ...] | None = None
  value: Callable[[Any], Any] | None = None
  note: str = ""

  @property
  def option(self) -> str:
    """The command-line option, ``--`` and the field's name with dashes."""
    return "--" + self.field.replace("_", "-")

  @property
  def help(self) -> str:
    """The help text, the first sentence of the field's docstring entry and the note."""
    return field_help(self.config, self.field) + self.note


TRAIN_FLAGS: tuple[Flag, ...] = (
  Flag(TrainConfig, "steps", _non_negative_int),
  Flag(TrainConfig, "batch_size", _positive_int),
  Flag(TrainConfig, "learning_rate", _positive_float),
  Flag(TrainConfig, "optimizer", choices=OPTIMIZERS),
  Flag(TrainConfig, "schedule", choices=SCHEDULES),
  Flag(TrainConfig, "warmup", _non_negative_int),
  Flag(
    TrainConfig,
    "stash",
    experiments.parse_stash,
    note=' ("6-0-2": per unit; "full@int8": stored in int8; "carry": with --reversible yes)',
  ),
  Flag(TrainConfig, "update_every", _non_negative_int),
  Flag(TrainConfig, "checkpoint_every", _non_negative_int),
  Flag(TrainConfig, "keep", _positive_int),
  Flag(TrainConfig, "eval_every", _non_negative_int),
  Flag(TrainConfig, "eval_clips", _positive_int),
  Flag(ModelConfig, "num_units", _positive_int),
  Flag(ModelConfig, "width", _positive_int),
  Flag(ModelConfig, "span", _positive_int),
  Flag(ModelConfig, "skips", choices=SKIP_KINDS),
  Flag(ModelConfig, "skip_kernel", _positive_int),
  Flag(ModelConfig, "readout", choices=READOUTS),
  Flag(ModelConfig, "reversible", choices=("yes", "no"), value=lambda s: s == "yes"),
  Flag(TaskConfig, "num_frames", _positive_int),
  Flag(TaskConfig, "size", _positive_int, value=lambda s: (s, s), note=" (one int: a square)"),
  Flag(TaskConfig, "speed", float),
)


def field_help(config: type, field: str) -> str:
  """The first sentence of ``field``'s entry under "Attributes:" in ``config``'s docstring."""
  doc = inspect.getdoc(config) or ""
  entry = re.search(rf"^\s*{field}: (.*?)(?=^\s*\w+: |\Z)", doc, flags=re.M | re.S)
  if entry is None:
    raise ValueError(f"{config.__name__}'s docstring does not describe the field {field!r}")
  text = " ".join(entry.group(1).split())
  sentence = re.match(r"(.*?\.)(?:\s|$)", text)
  return (sentence.group(1) if sentence else text).rstrip(".").replace("%", "%%")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
  """Adds one optional flag per entry of :data:`TRAIN_FLAGS` (default: the config's)."""
  for flag in TRAIN_FLAGS:
    parser.add_argument(
      flag.option,
      dest=flag.field,
      type=flag.parse,
      choices=flag.choices,
      default=None,
      help=flag.help,
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
  """The flags of :data:`TRAIN_FLAGS` that were given, as ``default_config`` keywords."""
  over: dict[str, Any] = {"model": {}, "data": {}}
  for flag in TRAIN_FLAGS:
    v = getattr(args, flag.field, None)
    if v is None:
      continue
    v = flag.value(v) if flag.value else v
    section = _SECTIONS[flag.config]
    (over[section] if section else over)[flag.field] = v
  return over


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
  print(
    f"Gradient alignment at initialisation: cosine(sideways, pipelined_exact) per unit\n"
    f"moving digits, next-frame prediction, {args.frames} frames of "
    f"{args.size}x{args.size}, {args.units} units, speed {args.speed} px/frame\n",
    flush=True,
  )
  cos = training.init_alignment(
    "next-frame",
    num_units=args.units,
    num_frames=args.frames,
    size=(args.size, args.size),
    speed=args.speed,
    seed=args.seed,
  )
  print(format_alignment_table(cos))
  print(
    "\n1.000 means the Sideways estimate points exactly along the true gradient of the "
    "pipelined network;\nunits far from the output see gradients from older frames "
    "(a mismatch of 2(L-k) frames on a chain)."
  )
  return 0


def format_alignment_table(cos: dict[str, Sequence[float]]) -> str:
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


def _add_demo(sub) -> None:
  p = sub.add_parser("demo", help="per-unit gradient alignment of Sideways and Skip-Sideways")
  p.add_argument("--units", type=_positive_int, default=4)
  p.add_argument("--frames", type=_positive_int, default=12)
  p.add_argument("--size", type=_positive_int, default=16)
  p.add_argument("--speed", type=float, default=1.0)
  p.add_argument("--seed", type=_non_negative_int, default=0)
  p.set_defaults(func=_cmd_demo)


# ---------------------------------------------------------------------------------------------
# train / evaluate / compare / figures
# ---------------------------------------------------------------------------------------------


def _progress(args: argparse.Namespace) -> bool:
  """``progress=`` of the training functions: False with --no-progress, else the rule of
  :func:`sideways_lab.training.show_progress` (a bar in a terminal, none with --quick)."""
  return training.show_progress(False if args.no_progress else None, args.quick or None)


def _cmd_train(args: argparse.Namespace) -> int:
  from sideways_lab import launch  # it starts processes (and imports JAX's distributed runtime)

  if args.processes or os.environ.get(launch.IN_LAUNCH):
    return _train_processes(args, launch)
  saved = Path(args.out) / "config.json"
  if args.resume and saved.exists() and args.task is None:
    cfg = TrainConfig.from_dict(json.loads(saved.read_text()))
    if args.steps is not None:
      cfg = cfg.replace(steps=args.steps)
  else:
    if args.task is None or args.scheme is None:
      raise ValueError("train needs --task and --scheme (or --resume on a run directory)")
    cfg = training.default_config(
      args.task, args.scheme, quick=args.quick, seed=args.seed, **config_overrides(args)
    )
  try:
    r = training.train(cfg, args.out, resume=args.resume, progress=_progress(args))
  except KeyboardInterrupt:
    print(
      f"\ninterrupted: a checkpoint was saved in {args.out}; continue with "
      f"`sideways-lab train --out {args.out} --resume`",
      file=sys.stderr,
    )
    return EXIT_INTERRUPTED
  print(
    json.dumps(
      {
        "task": cfg.task,
        "scheme": cfg.scheme,
        "step": r.step,
        "train_time_s": round(r.train_time_s, 2),
        **r.test,
      },
      indent=1,
    )
  )
  return 0


def _train_processes(args: argparse.Namespace, launch) -> int:
  """``train --processes N``: starts N processes that each run this command (without
  ``--processes``); inside one of them, trains on the sharded route (``launch.train_sharded``)."""
  if args.task is None or args.scheme is None:
    raise ValueError("train --processes needs --task and --scheme")
  if args.resume:
    raise ValueError("train --processes does not take --resume")
  cfg = training.default_config(
    args.task, args.scheme, quick=args.quick, seed=args.seed, **config_overrides(args)
  )
  if method_of(cfg.scheme) == "backprop":
    raise ValueError(
      f"--scheme {cfg.scheme} has a synchronous forward, which cannot be pipelined over "
      f"processes; train it without --processes"
    )
  if args.processes:
    argv = launch.without_option(args.argv[1:], "--processes")
    return launch.launch_local(["train", *argv], args.processes)
  result = launch.train_sharded(cfg, args.out)
  if jax.process_index() == 0:
    print(json.dumps(result, indent=1), flush=True)
  return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
  print(json.dumps(training.evaluate(args.checkpoint, args.clips, seed=args.seed), indent=1))
  return 0


def _print_table(df, out) -> None:
  """The mean over seeds of a sweep's test metric, scheme × knob value, and where it went."""
  metric = "accuracy" if "accuracy" in df.columns else "mse"
  table = experiments.summarize(df, metric).pivot(index="scheme", columns="value", values="mean")
  print(f"{metric} (mean over {df.seed.nunique()} seeds):")
  print(table.to_string(float_format=lambda x: f"{x:.4f}"))
  if "converged" in df.columns and not df.converged.dropna().astype(bool).all():
    late = df[~df.converged.fillna(True).astype(bool)]
    print(f"not converged (loss still changing over the last fifth): {len(late)} run(s)")
  print(f"wrote {Path(out) / 'results.csv'} and curves.csv ({len(df)} rows)")


def _cmd_compare(args: argparse.Namespace) -> int:
  df = experiments.compare(
    args.task,
    args.out,
    quick=args.quick or None,
    progress=_progress(args),
    log=lambda m: print(m, file=sys.stderr, flush=True),
  )
  _print_table(df, args.out)
  return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
  df = experiments.sweep(
    args.task,
    args.knob,
    args.values,
    schemes=args.schemes,
    seeds=args.seeds,
    steps=args.steps,
    anchor=args.anchor,
    quick=args.quick or None,
    out=args.out,
    progress=_progress(args),
    log=print,
    reuse_other_code=args.reuse_other_code,
    overrides=dict(model=dict(reversible=True)) if args.reversible else None,
  )
  _print_table(df, args.out)
  return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
  """--quick, --seed and --no-progress, shared by the commands that train."""
  p.add_argument("--quick", action="store_true", help="a tiny budget (seconds)")
  p.add_argument("--seed", type=_non_negative_int, default=0)
  p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train(sub) -> None:
  p = sub.add_parser("train", help="train one scheme")
  p.add_argument("--task", choices=TASKS, default=None)
  _add_run_options(p)
  p.add_argument("--scheme", choices=tuple(SCHEMES), default=None)
  p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl)")
  p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
  p.add_argument(
    "--processes",
    type=_positive_int,
    default=None,
    help="train on N local JAX processes, units split over them "
    "(python -m sideways_lab.launch --processes N train ...)",
  )
  add_training_flags(p)
  p.set_defaults(func=_cmd_train)


def _add_evaluate(sub) -> None:
  p = sub.add_parser("evaluate", help="test metrics of a checkpoint")
  p.add_argument("checkpoint", help="a ckpt_*.npz file or a run directory")
  p.add_argument("--clips", type=_positive_int, default=None)
  p.add_argument("--seed", type=_non_negative_int, default=None)
  p.set_defaults(func=_cmd_evaluate)


def _add_compare(sub) -> None:
  p = sub.add_parser("compare", help="train every scheme once on the same clips (a one-seed sweep)")
  p.add_argument("--task", choices=TASKS, required=True)
  p.add_argument("--out", required=True, help="directory of results.csv, curves.csv and runs")
  p.add_argument("--quick", action="store_true", help="a tiny budget (seconds)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_cmd_compare)


def _add_sweep(sub) -> None:
  p = sub.add_parser(
    "sweep", help="train every scheme over a knob's values and seeds (results.csv)"
  )
  p.add_argument("--task", required=True, help="digits, motion-classes or next-frame")
  p.add_argument(
    "--knob",
    required=True,
    help="speed (pixels per frame), stride (keep every s-th frame) or stash (the sideways "
    'method\'s stash: 0, 1, 2, full, carry or per-unit depths like "6-0-2", with "@int8" or '
    '"@bfloat16" for a compressed store)',
  )
  p.add_argument("--values", required=True, help="comma-separated knob values, e.g. 0.5,1,2")
  p.add_argument(
    "--schemes",
    default=None,
    help="comma-separated schemes (default: backprop, sideways, sideways_exact, "
    "skip_sideways, skip_exact; next-frame adds copy_newest, mean_frame)",
  )
  p.add_argument("--seeds", type=_positive_int, default=3, help="seeds per setting (default 3)")
  p.add_argument(
    "--reversible",
    action="store_true",
    help="chain schemes on the network whose hidden units are reversible (ModelConfig."
    "reversible; needed by the stash value carry)",
  )
  p.add_argument(
    "--steps", type=_positive_int, default=None, help="training steps per run (default: the task's)"
  )
  p.add_argument(
    "--anchor", default="newest", help="next-frame: newest (default) or input (latency counts)"
  )
  p.add_argument("--quick", action="store_true", help="tiny budgets (seconds per run)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.add_argument("--out", required=True, help="directory of results.csv, curves.csv and the runs")
  _add_reuse_other_code(p)
  p.set_defaults(func=_cmd_sweep)


def _add_reuse_other_code(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--reuse-other-code",
    action="store_true",
    help="reuse cached runs computed by other code (another hash of the training sources) "
    "instead of retraining them; they are listed in the log and in results.csv (other_code)",
  )


def _cmd_figures(args) -> int:
  """``sideways-lab figures``: train ``--sweeps`` into the cache, or draw every figure."""
  quick = experiments.is_quick(args.quick or None)
  if args.sweeps and args.from_results:
    raise ValueError("--sweeps trains and --from-results draws without training: give one")
  if args.sweeps:
    t0 = time.perf_counter()
    figures.run_sweeps(
      args.sweeps, quick=quick, work_dir=args.work_dir, reuse_other_code=args.reuse_other_code
    )
    print(f"trained {len(args.sweeps)} sweeps in {time.perf_counter() - t0:.0f} s")
    return 0
  m = figures.generate(
    args.out,
    quick=quick,
    only=args.only,
    work_dir=args.work_dir,
    reuse_other_code=args.reuse_other_code,
    from_results=args.from_results,
  )
  print(f"wrote {len(m['figures'])} figures to {args.out} in {m['total_time_s']:.0f} s")
  return 0


def _add_figures(sub) -> None:
  p = sub.add_parser("figures", help="regenerate the paper-style figures")
  p.add_argument("--out", default="figures", help="output directory (default: figures)")
  p.add_argument(
    "--quick",
    action="store_true",
    help="tiny budgets (about a minute on a laptop CPU; also SIDEWAYS_LAB_QUICK=1)",
  )
  p.add_argument("--only", nargs="+", choices=list(figures.FIGURES), help="only these figures")
  p.add_argument(
    "--sweeps",
    nargs="+",
    choices=list(figures.SWEEPS),
    help="only train these sweeps into the work dir, draw nothing (processes that share a "
    "work dir may each train disjoint sweeps; a later figures run reads them back)",
  )
  p.add_argument(
    "--work-dir",
    default=None,
    help="where the sweeps' runs are cached (default: "
    ".sideways_cache/figures-<mode>; a rerun reuses the finished runs of the same code)",
  )
  _add_reuse_other_code(p)
  p.add_argument(
    "--from-results",
    default=None,
    metavar="DIR",
    help="draw the figures and claims.md from the results an earlier run wrote (e.g. "
    "figures/results: <sweep>.csv, curves-<sweep>.csv, alignment.csv) without training; "
    "figures that need the runs' checkpoints are skipped",
  )
  p.set_defaults(func=_cmd_figures)


# The subcommands in the order of ``--help``; each adds its parser and sets ``func``.
SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
  _add_demo,
  _add_train,
  _add_evaluate,
  _add_compare,
  _add_sweep,
  _add_figures,
)


def build_parser() -> argparse.ArgumentParser:
  """The ``sideways-lab`` argument parser, one subparser per entry of :data:`SUBCOMMANDS`."""
  parser = argparse.ArgumentParser(
    prog="sideways-lab",
    description="Sideways and Skip-Sideways: depth-parallel training of video networks.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for add in SUBCOMMANDS:
    add(sub)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the ``sideways-lab`` console script; returns the exit status."""
  parser = build_parser()
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(argv)
  args.argv = argv
  try:
    return args.func(args)
  except (ValueError, TypeError, FileExistsError, FileNotFoundError, NotADirectoryError) as e:
    print(f"sideways-lab {args.command}: error: {e}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
