"""The program that tests/test_distributed.py runs on two real processes (sideways_lab.launch).

Every process computes the same checks: the sharded route over the global mesh (one stage per
process) against the single-device engine run locally in the same process; process p writes
``report_p.json`` into the directory given as the first argument. With ``DIST_WORKER_DIE=N``
process 1 kills itself (SIGKILL) after N clips, to test the failure paths.
"""

import functools
import json
import os
import signal
import sys
import time

import jax
import numpy as np
import optax
from core_helpers import mse, setup

import sideways_lab as sl
from sideways_lab import parallel as par

TRAIN_STEPS = 3
LEARNING_RATE = 0.1
STREAM_CUTS = (0, 3, 6, 9)  # three chunks of 3 frames (one compiled chunk program)


def leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def rel_err(a, b):
  num = max(float(np.abs(x - y).max()) for x, y in zip(leaves(a), leaves(b)))
  return num / max(max(float(np.abs(y).max()) for y in leaves(b)), 1e-30)


def check_gradients(kind, report, method="sideways", stash=0, label="grads"):
  graph, params, video, targets = setup(kind, T=9 if kind != "temporal" else 11)
  eng = par.ShardedGraph(graph, method=method, stash=stash)  # every process's devices
  grads, info = eng.gradients(params, video, targets, mse)
  ref, rinfo = sl.gradients(graph, params, video, targets, mse, method=method, stash=stash)
  report[f"{kind}/{label}"] = {
    "rel_err": rel_err(grads, ref),
    "grad_norm": max(float(np.abs(x).max()) for x in leaves(ref)),
    "loss_err": abs(float(info["loss"]) - float(rinfo["loss"])),
    "stages": eng.num_devices,
    "assignment": list(eng.assignment),
  }


def check_training(kind, report):
  """A few Adam steps from the same start: sharded gradients vs single-device ones."""
  graph, params, video, targets = setup(kind, T=9)
  eng = par.ShardedGraph(graph)
  opt = optax.adam(LEARNING_RATE)

  @jax.jit
  def update(g, state, p):  # on this process's device, the same for both runs
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state

  runs = {}
  for name, grad_fn in (
    ("sharded", lambda p, v, y: eng.gradients(p, v, y, mse)),
    ("single", lambda p, v, y: sl.gradients(graph, p, v, y, mse, method="sideways")),
  ):
    p, state, losses = params, opt.init(params), []
    for step in range(TRAIN_STEPS):
      v, y = video * (1.0 + 0.1 * step), targets  # a different clip per step
      g, info = grad_fn(p, v, y)
      p, state = update(jax.device_get(g), state, p)
      losses.append(float(info["loss"]))
      if (
        os.environ.get("DIST_WORKER_DIE")
        and jax.process_index() == 1
        and name == "sharded"
        and step + 1 >= int(os.environ["DIST_WORKER_DIE"])
      ):
        os.kill(os.getpid(), signal.SIGKILL)
    runs[name] = (p, losses)
  report[f"{kind}/train"] = {
    "param_rel_err": rel_err(runs["sharded"][0], runs["single"][0]),
    "moved": rel_err(runs["single"][0], params),
    "loss_err": max(abs(a - b) for a, b in zip(runs["sharded"][1], runs["single"][1])),
  }


def check_streaming(kind, report):
  graph, params, video, targets = setup(kind, T=9)
  eng = par.ShardedGraph(graph)
  ref_state = sl.init_state(graph, params, video)
  state = eng.init_state(params, video)
  errs, state_errs = [], []
  for a, b in zip(STREAM_CUTS[:-1], STREAM_CUTS[1:]):
    gr, _, ref_state = sl.stream_gradients(
      graph, params, video[:, a:b], targets[:, a:b], mse, ref_state
    )
    g, _, state = eng.stream_gradients(params, video[:, a:b], targets[:, a:b], mse, state)
    errs.append(rel_err(g, gr))
    back = eng.gather_state(state)  # all-gathered from both processes
    state_errs.append(
      rel_err(
        tuple(back.buffers) + tuple(back.messages),
        tuple(ref_state.buffers) + tuple(ref_state.messages),
      )
    )
  report[f"{kind}/stream"] = {"rel_err": max(errs), "state_err": max(state_errs[1:])}


def main(out_dir):
  report = {
    "process": jax.process_index(),
    "processes": jax.process_count(),
    "devices": len(jax.devices()),
    "local_devices": len(jax.local_devices()),
    "platform": jax.devices()[0].platform,
  }
  if os.environ.get("DIST_WORKER_DIE"):
    check_training("skip", report)
  else:
    for check, kind in (
      (check_gradients, "chain"),
      (check_gradients, "skip"),
      (functools.partial(check_gradients, method="pipelined_exact", label="exact"), "temporal"),
      (functools.partial(check_gradients, stash=(4, 0, 1), label="stash"), "temporal"),
      (check_training, "skip"),
      (check_streaming, "skip"),
    ):
      t0 = time.perf_counter()
      check(kind, report)
      name = getattr(check, "func", check).__name__
      report[f"time/{name}/{kind}"] = time.perf_counter() - t0
  with open(os.path.join(out_dir, f"report_{jax.process_index()}.json"), "w") as f:
    json.dump(report, f)


if __name__ == "__main__":
  main(sys.argv[1])
