"""Run a program on several JAX processes: local ones started here, or one process of a cluster.

Usage::

    # N local processes (loopback coordinator on a free port), each running the program:
    python -m sideways_lab.launch --processes 2 [--devices-per-process K] PROGRAM [ARGS...]
    # one process of a cluster (run this on every host, with its own --process-id):
    python -m sideways_lab.launch --coordinator HOST:PORT --num-processes N --process-id I \
        PROGRAM [ARGS...]

``PROGRAM`` is ``train [TRAIN FLAGS]`` (``sideways-lab train`` on the sharded route: the
command line parses the flags and calls :func:`train_sharded`), ``-m MODULE`` or a script
path; it runs after ``jax.distributed.initialize``, so ``jax.devices()`` is the global list
of every process's devices and ``sl.parallel.ShardedGraph(graph)`` spans them all.

A local launch is supervised: every process runs in its own session and is killed with the
launcher (Linux ``PR_SET_PDEATHSIG``); when one exits with an error (or is killed), the
launcher names it, stops the others (SIGTERM, then SIGKILL after a grace period: a process
stuck in a collective does not see SIGTERM) and exits with its code; Ctrl-C stops them all.
A process whose peer dies mid-run gets an error from the collective (gloo reports the closed
connection) and exits at once with ``EXIT_PEER_FAILED`` instead of waiting at JAX's shutdown
barrier.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence

import jax
import optax

from sideways_lab import checkpoint, parallel, training

__all__ = [
  "EXIT_INTERRUPTED",
  "EXIT_PEER_FAILED",
  "LaunchError",
  "free_port",
  "initialize",
  "launch_local",
  "IN_LAUNCH",
  "main",
  "train_sharded",
  "without_option",
]

EXIT_PEER_FAILED = 3  # this process failed, or a collective lost another process
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
CONNECT_TIMEOUT_S = 60  # how long a process waits for the coordinator and its peers
HEARTBEAT_TIMEOUT_S = 20  # a process that sends no heartbeat for this long is dead
GRACE_S = 3.0  # between SIGTERM and SIGKILL when stopping processes
POLL_S = 0.05  # how often the launcher looks at its processes
ENV = {
  "coordinator": "SIDEWAYS_LAB_COORDINATOR",
  "num_processes": "SIDEWAYS_LAB_NUM_PROCESSES",
  "process_id": "SIDEWAYS_LAB_PROCESS_ID",
}
IN_LAUNCH = "SIDEWAYS_LAB_IN_LAUNCH"  # set while a launched process runs its program
_PR_SET_PDEATHSIG = 1  # prctl option: a signal to this process when its parent dies


class LaunchError(RuntimeError):
  """A process could not join the cluster (the message says why and what to check)."""


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that is free on ``host`` now (the OS picks it)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def _split_address(address: str) -> tuple[str, int]:
  host, _, port = str(address).rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"coordinator must be HOST:PORT (e.g. 127.0.0.1:12345), got {address!r}")
  return host, int(port)


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once a TCP connection to ``address`` succeeds; raises :class:`LaunchError` after
  ``timeout_s`` (JAX itself would abort the process with a bare DEADLINE_EXCEEDED)."""
  host, port = _split_address(address)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port), timeout=1.0):
        return
    except OSError as e:
      if time.monotonic() > deadline:
        raise LaunchError(
          f"cannot reach the coordinator at {address} within {timeout_s:g} s "
          f"({e}): is process 0 running, and are the address and port the ones "
          f"it was given (and open in the firewall)?"
        ) from None
      time.sleep(0.2)


def _check_port_free(address: str) -> None:
  host, port = _split_address(address)
  bind = "0.0.0.0" if host not in ("127.0.0.1", "localhost") else host
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind((bind, port))
    except OSError as e:
      raise LaunchError(
        f"process 0 cannot serve as coordinator on {address}: port {port} is "
        f"in use ({e}); pick another port"
      ) from None


def initialize(
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  timeout_s: float = CONNECT_TIMEOUT_S,
  heartbeat_s: int = HEARTBEAT_TIMEOUT_S,
) -> None:
  """``jax.distributed.initialize`` with the checks and settings this package needs.

  Arguments default to the environment variables ``SIDEWAYS_LAB_COORDINATOR``,
  ``SIDEWAYS_LAB_NUM_PROCESSES`` and ``SIDEWAYS_LAB_PROCESS_ID`` (set by :func:`main`). CPU
  processes exchange data with gloo (``jax_cpu_collectives_implementation``). Process 0
  checks that the coordinator port is free; the others wait up to ``timeout_s`` for it to
  answer, and raise :class:`LaunchError` with the reason instead of JAX's abort.
  """
  coordinator = coordinator or os.environ.get(ENV["coordinator"])
  num_processes = int(
    num_processes if num_processes is not None else os.environ.get(ENV["num_processes"], "0")
  )
  process_id = int(
    process_id if process_id is not None else os.environ.get(ENV["process_id"], "-1")
  )
  if not coordinator:
    raise ValueError(f"coordinator is required (HOST:PORT, or set {ENV['coordinator']})")
  if num_processes < 1:
    raise ValueError(f"num_processes must be a positive int, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in 0..{num_processes - 1}, got {process_id}")
  _split_address(coordinator)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if process_id == 0:
    _check_port_free(coordinator)
  else:
    _wait_for_coordinator(coordinator, timeout_s)
  jax.distributed.initialize(
    coordinator_address=coordinator,
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=int(timeout_s),
    heartbeat_timeout_seconds=int(heartbeat_s),
  )


# ---------------------------------------------------------------------------------------------
# The supervisor of local processes
# ---------------------------------------------------------------------------------------------


def _describe(rc: int) -> str:
  if rc < 0:
    with contextlib.suppress(ValueError):
      return f"killed by signal {signal.Signals(-rc).name}"
    return f"killed by signal {-rc}"
  return f"exit code {rc}"


def _child_setup() -> None:  # runs in the child between fork and exec
  os.setsid()  # its own session: the launcher forwards Ctrl-C itself
  with contextlib.suppress(Exception):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _stop(procs: list, grace_s: float) -> None:
  """SIGTERM to every running process group, then SIGKILL to those left after ``grace_s``."""
  for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, sig)
    deadline = time.monotonic() + wait
    while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
      time.sleep(POLL_S)


def launch_local(
  program: Sequence[str],
  processes: int,
  *,
  port: int | None = None,
  devices_per_process: int | None = None,
  timeout_s: float = CONNECT_TIMEOUT_S,
  heartbeat_s: int = HEARTBEAT_TIMEOUT_S,
  grace_s: float = GRACE_S,
  env: dict | None = None,
) -> int:
  """Starts ``processes`` local processes running ``program`` and supervises them.

  The coordinator is process 0 on ``127.0.0.1:port`` (a free port by default). Returns 0 when
  all succeed; else the first failure's code (``EXIT_PEER_FAILED`` for a signal), after
  stopping the others and printing which process failed; ``EXIT_INTERRUPTED`` on Ctrl-C.
  """
  if not isinstance(processes, int) or processes < 1:
    raise ValueError(f"processes must be a positive int, got {processes!r}")
  address = f"127.0.0.1:{port or free_port()}"
  base = dict(os.environ if env is None else env)
  if devices_per_process:
    base["XLA_FLAGS"] = (
      base.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices_per_process}"
    )
  procs = []
  for i in range(processes):
    cmd = [
      sys.executable,
      "-m",
      "sideways_lab.launch",
      "--coordinator",
      address,
      "--num-processes",
      str(processes),
      "--process-id",
      str(i),
      "--timeout",
      str(timeout_s),
      "--heartbeat-timeout",
      str(heartbeat_s),
      *program,
    ]
    procs.append(subprocess.Popen(cmd, env=base, preexec_fn=_child_setup))  # noqa: PLW1509
  interrupted = []
  handler = lambda signum, frame: interrupted.append(signum)
  old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, rc) for i, rc in enumerate(codes) if rc not in (None, 0)]
      if failed:
        i, rc = failed[0]
        print(
          f"sideways_lab.launch: process {i} of {processes} failed ({_describe(rc)}); "
          f"stopping the others",
          file=sys.stderr,
          flush=True,
        )
        _stop(procs, grace_s)
        return rc if rc > 0 else EXIT_PEER_FAILED
      if all(rc == 0 for rc in codes):
        return 0
      if interrupted:
        print(
          f"sideways_lab.launch: interrupted; stopping {processes} processes",
          file=sys.stderr,
          flush=True,
        )
        _stop(procs, grace_s)
        return EXIT_INTERRUPTED
      time.sleep(POLL_S)
  finally:
    _stop(procs, grace_s)
    for s, h in old.items():
      signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
# One process: join, then run the program
# ---------------------------------------------------------------------------------------------


def without_option(argv: Sequence[str], name: str) -> list:
  """``argv`` without the option ``name`` and its value (``name V`` or ``name=V``)."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a == name:
      skip = True
    elif not a.startswith(name + "="):
      out.append(a)
  return out


def _run_program(program: Sequence[str]) -> int:
  if not program:
    raise ValueError("no program given: pass `train ...`, `-m MODULE ...` or a script path")
  if program[0] == "train":  # the command line parses the flags and calls train_sharded
    program = ["-m", "sideways_lab.cli", *program]
  if program[0] == "-m":
    if len(program) < 2:
      raise ValueError("-m needs a module name")
    sys.argv = [program[1], *program[2:]]
    runpy.run_module(program[1], run_name="__main__", alter_sys=True)
    return 0
  sys.argv = list(program)
  runpy.run_path(program[0], run_name="__main__")
  return 0


def _join_and_run(args, program: Sequence[str]) -> None:
  """Runs ``program`` in this process of the cluster; never returns (``os._exit``), so that a
  failure does not wait at JAX's shutdown barrier for processes that are gone."""
  who = f"process {args.process_id} of {args.num_processes}"
  try:
    initialize(
      args.coordinator,
      args.num_processes,
      args.process_id,
      timeout_s=args.timeout,
      heartbeat_s=args.heartbeat_timeout,
    )
  except (LaunchError, ValueError) as e:
    print(f"sideways_lab.launch: {who}: {e}", file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_FAILED)
  # jax.distributed's preemption notifier takes SIGTERM; give it back its usual meaning
  signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
  os.environ[IN_LAUNCH] = "1"
  code = 0
  try:
    code = _run_program(program) or 0
  except KeyboardInterrupt:
    code = EXIT_INTERRUPTED
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except Exception as e:  # noqa: BLE001 — every failure ends the process with a named cause
    traceback.print_exc()
    lost = any(
      w in str(e)
      for w in (
        "Connection closed by peer",
        "Connection reset",
        "Gloo",
        "heartbeat",
        "coordination service",
      )
    )
    why = (
      "lost contact with another process (it failed or was killed)"
      if lost
      else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    )
    print(f"sideways_lab.launch: {who} failed: {why}", file=sys.stderr, flush=True)
    code = EXIT_PEER_FAILED
  sys.stdout.flush()
  sys.stderr.flush()
  if code == 0:
    jax.distributed.shutdown()  # every process got here: the barrier passes at once
  os._exit(code)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m sideways_lab.launch",
    description="Run PROGRAM (`train ...`, `-m MODULE ...` or a script) on several JAX "
    "processes: --processes N starts N local ones on a loopback coordinator; "
    "--coordinator/--num-processes/--process-id join a cluster.",
  )
  p.add_argument("--processes", type=int, help="start this many local processes")
  p.add_argument("--port", type=int, help="coordinator port for --processes (default: free)")
  p.add_argument(
    "--devices-per-process", type=int, help="simulated CPU devices per local process (XLA_FLAGS)"
  )
  p.add_argument("--coordinator", help="HOST:PORT of process 0 (join a cluster)")
  p.add_argument("--num-processes", type=int, help="processes in the cluster")
  p.add_argument("--process-id", type=int, help="this process's index, 0..N-1")
  p.add_argument(
    "--timeout",
    type=float,
    default=CONNECT_TIMEOUT_S,
    help=f"seconds to wait for the coordinator and peers ({CONNECT_TIMEOUT_S})",
  )
  p.add_argument(
    "--heartbeat-timeout",
    type=int,
    default=HEARTBEAT_TIMEOUT_S,
    help=f"seconds of silence before a peer counts as dead ({HEARTBEAT_TIMEOUT_S})",
  )
  p.add_argument(
    "program",
    nargs=argparse.REMAINDER,
    help="`train [flags]`, `-m MODULE [args]` or `SCRIPT [args]`",
  )
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m sideways_lab.launch``: parses the options and launches or joins; returns the
  exit status."""
  p = _parser()
  args = p.parse_args(argv)
  program = list(args.program)
  if program[:1] == ["--"]:
    program = program[1:]
  if not program:
    p.error("no program given: pass `train ...`, `-m MODULE ...` or a script path")
  joining = [args.coordinator, args.num_processes, args.process_id]
  if args.processes is not None:
    if any(v is not None for v in joining):
      p.error(
        "--processes starts local processes; do not combine it with --coordinator, "
        "--num-processes or --process-id"
      )
    if args.processes < 1:
      p.error(f"--processes must be >= 1, got {args.processes}")
    return launch_local(
      program,
      args.processes,
      port=args.port,
      devices_per_process=args.devices_per_process,
      timeout_s=args.timeout,
      heartbeat_s=args.heartbeat_timeout,
    )
  if any(v is None for v in joining):
    p.error("give either --processes N, or all of --coordinator, --num-processes and --process-id")
  _join_and_run(args, program)
  return 0  # not reached


# ---------------------------------------------------------------------------------------------
# Distributed training (the `train` program)
# ---------------------------------------------------------------------------------------------


def train_sharded(cfg: training.TrainConfig, out: str | None = None) -> dict:
  """Trains ``cfg`` on the sharded route, every unit on its stage of the global mesh.

  Any scheme whose method runs forward in time (``sideways``, ``skip_sideways`` and their
  exact twins ``sideways_exact``, ``skip_exact``: ``ShardedGraph(method=...)``); ``backprop``
  has a synchronous forward and trains on one process. Every process draws the same clips
  (same seed) and applies the same optimizer update to the gradients, which
  ``ShardedGraph.gradients`` returns replicated; process 0 appends to ``metrics.jsonl``,
  writes ``results.json`` atomically and saves a checkpoint of the last step in ``out``.
  Per-clip updates only. Returns the results (on every process; the test metrics on 0).
  """
  trainer = training.Trainer(cfg)
  if trainer.method not in parallel.METHODS:
    raise ValueError(
      f"--scheme {cfg.scheme} uses method {trainer.method!r}, whose synchronous forward "
      f"cannot be pipelined over processes; train it without --processes"
    )
  if cfg.update_every:
    raise ValueError("the distributed route makes per-clip updates; drop --update-every")
  eng = parallel.ShardedGraph(trainer.graph, method=trainer.method)
  params, opt_state = trainer.init()
  update = jax.jit(lambda g, s, p: trainer.optimizer.update(g, s, p))
  lead = jax.process_index() == 0
  out = os.path.abspath(out) if (lead and out) else None
  if out:
    os.makedirs(out, exist_ok=True)
  t0, loss = time.perf_counter(), float("nan")
  for step in range(cfg.steps):
    video, targets, _ = trainer.batch(step)
    grads, info = eng.gradients(
      params, video, targets, trainer.task.loss_fn, mask=trainer.task.mask
    )
    updates, opt_state = update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    loss = float(info["loss"])
    if out:
      with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step + 1, "loss": loss}) + "\n")
  result = {
    "task": cfg.task,
    "scheme": cfg.scheme,
    "method": trainer.method,
    "steps": cfg.steps,
    "train_loss": loss,
    "processes": jax.process_count(),
    "devices": eng.num_devices,
    "assignment": list(eng.assignment),
    "train_time_s": round(time.perf_counter() - t0, 2),
  }
  if lead:
    params = jax.tree_util.tree_map(jax.device_get, params)
    result.update(trainer.evaluate(params))
    if out:
      opt_state = jax.tree_util.tree_map(jax.device_get, opt_state)
      checkpoint.save(out, cfg.steps, params, opt_state, manifest={"config": cfg.to_dict()})
      checkpoint.atomic_write_text(os.path.join(out, "results.json"), json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  sys.exit(main())
