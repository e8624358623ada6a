"""Two real JAX processes on this machine (loopback, jax.distributed with gloo), started by
``python -m sideways_lab.launch``: the sharded route across processes equals the
single-device engine, and every failure path ends every process in bounded time.

The checks themselves run in the processes (tests/dist_worker.py), which write a JSON report
per process; the tests here assert on the reports and on the launcher's exit and messages.
Every subprocess has a timeout and is killed by its process group if it outlives it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sideways_lab import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
RUN_TIMEOUT_S = 600  # a whole two-process run (compiles included; ~50 s on an idle
# 2-core box, several minutes when it is oversubscribed)
EXIT_TIMEOUT_S = 20  # from a failure to every process gone
HEARTBEAT_S = 5  # a silent peer counts as dead after this long (tests only)


def _env(**extra):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


def _launch(args, timeout, **env):
  """Runs the launcher in its own process group; kills the group if it overruns."""
  cmd = [sys.executable, "-m", "sideways_lab.launch", *args]
  proc = subprocess.Popen(
    cmd,
    env=_env(**env),
    cwd=TESTS,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    pytest.fail(f"the launcher did not finish within {timeout} s:\n{err[-3000:]}")
  return proc.returncode, out, err


def _gone(pid: int) -> bool:
  """True when ``pid`` has exited (a zombie waiting for its reaper counts as exited)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"
  except OSError:
    return True


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  """Two processes with two CPU devices each: a global mesh of 4 stages, one unit each, so
  the span-2 skips cross a process boundary (stage distance 2) and the chain edges do both."""
  out = tmp_path_factory.mktemp("dist")
  rc, _, err = _launch(
    ["--processes", "2", "--devices-per-process", "2", "dist_worker.py", str(out)], RUN_TIMEOUT_S
  )
  assert rc == 0, err[-4000:]
  return [json.loads((out / f"report_{p}.json").read_text()) for p in range(2)]


def test_two_processes_see_one_global_mesh(reports):
  for p, r in enumerate(reports):
    assert (r["process"], r["processes"], r["devices"], r["local_devices"]) == (p, 2, 4, 2)


@pytest.mark.parametrize("kind", ["chain", "skip"])
def test_sharded_gradients_across_processes_equal_one_device(reports, kind):
  for r in reports:
    g = r[f"{kind}/grads"]
    assert g["stages"] == 4 and g["assignment"] == [0, 1, 2, 3]
    assert g["grad_norm"] > 1e-3  # a real gradient
    assert g["rel_err"] < 1e-5 and g["loss_err"] < 1e-6


@pytest.mark.parametrize("label", ["exact", "stash"])
def test_exact_twin_and_per_unit_stash_across_processes_equal_one_device(reports, label):
  """The delayed graph (messages that wait, a drain longer than L - 1) over 4 stages on 2
  processes: ``pipelined_exact`` and ``stash=(4, 0, 1)`` as on one device."""
  for r in reports:
    g = r[f"temporal/{label}"]
    assert g["stages"] == 4 and g["grad_norm"] > 1e-3
    assert g["rel_err"] < 1e-5 and g["loss_err"] < 1e-6


def test_skip_sideways_trains_across_processes_like_one_device(reports):
  for r in reports:
    t = r["skip/train"]
    assert t["moved"] > 1e-2  # the steps changed the parameters
    assert t["param_rel_err"] < 1e-5 and t["loss_err"] < 1e-5


def test_streaming_chunks_across_processes(reports):
  for r in reports:
    s = r["skip/stream"]
    assert s["rel_err"] < 1e-5
    assert s["state_err"] < 1e-6  # gathered from both processes


def _pid_script(tmp_path):
  """A program that records its pid per process, then waits; with ``DIE=1`` process 1
  SIGKILLs itself once both pids are recorded (a process killed mid-run)."""
  script = tmp_path / "wait.py"
  script.write_text(
    "import os, signal, time, jax\n"
    f"d = {str(tmp_path)!r}\n"
    "open(os.path.join(d, f'pid_{jax.process_index()}.tmp'), 'w').write(str(os.getpid()))\n"
    "os.rename(os.path.join(d, f'pid_{jax.process_index()}.tmp'),\n"
    "          os.path.join(d, f'pid_{jax.process_index()}'))\n"
    "while os.environ.get('DIE') and jax.process_index() == 1:\n"
    "  if os.path.exists(os.path.join(d, 'pid_0')):\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "  time.sleep(0.1)\n"
    "time.sleep(120)\n"
  )
  return script


def _wait_for_pids(tmp_path, n=2):
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while len(list(tmp_path.glob("pid_?"))) < n:
    assert time.monotonic() < deadline, "the processes did not start"
    time.sleep(0.1)
  return [int((tmp_path / f"pid_{i}").read_text()) for i in range(n)]


def test_a_killed_process_stops_the_launch(tmp_path):
  """Process 1 is SIGKILLed mid-run: the launcher names it, stops process 0 and exits with
  an error, and no process is left."""
  cmd = [
    sys.executable,
    "-m",
    "sideways_lab.launch",
    "--processes",
    "2",
    str(_pid_script(tmp_path)),
  ]
  proc = subprocess.Popen(
    cmd, env=_env(DIE="1"), cwd=TESTS, stderr=subprocess.PIPE, text=True, start_new_session=True
  )
  try:
    pids = _wait_for_pids(tmp_path)
    _, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == launch.EXIT_PEER_FAILED
  assert "process 1 of 2 failed (killed by signal SIGKILL); stopping the others" in err
  assert all(_gone(pid) for pid in pids)


def test_a_survivor_exits_with_a_clear_error_without_the_launcher(tmp_path):
  """Two processes joined by hand (as on a cluster); process 1 dies mid-run: process 0 gets
  the broken collective and exits with a message naming the cause, well before any
  heartbeat or shutdown timeout."""
  port = launch.free_port()
  procs = []
  for i in range(2):
    cmd = [
      sys.executable,
      "-m",
      "sideways_lab.launch",
      "--coordinator",
      f"127.0.0.1:{port}",
      "--num-processes",
      "2",
      "--process-id",
      str(i),
      "--heartbeat-timeout",
      str(HEARTBEAT_S),
      "dist_worker.py",
      str(tmp_path),
    ]
    procs.append(
      subprocess.Popen(
        cmd,
        env=_env(DIST_WORKER_DIE="1"),
        cwd=TESTS,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
      )
    )
  try:
    _, err1 = procs[1].communicate(timeout=RUN_TIMEOUT_S)
    t_dead = time.monotonic()
    _, err0 = procs[0].communicate(timeout=EXIT_TIMEOUT_S)
    waited = time.monotonic() - t_dead
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
  assert procs[1].returncode == -signal.SIGKILL
  assert procs[0].returncode == launch.EXIT_PEER_FAILED
  assert "process 0 of 2 failed: lost contact with another process" in err0
  assert waited < EXIT_TIMEOUT_S


def test_unreachable_coordinator_is_a_clear_error():
  port = launch.free_port()  # nobody listens there
  t0 = time.monotonic()
  rc, _, err = _launch(
    [
      "--coordinator",
      f"127.0.0.1:{port}",
      "--num-processes",
      "2",
      "--process-id",
      "1",
      "--timeout",
      "1",
      "dist_worker.py",
      ".",
    ],
    EXIT_TIMEOUT_S + 30,
  )
  assert rc == launch.EXIT_PEER_FAILED
  assert f"cannot reach the coordinator at 127.0.0.1:{port} within 1 s" in err
  assert "process 1 of 2" in err
  assert time.monotonic() - t0 < EXIT_TIMEOUT_S + 30


def test_ctrl_c_stops_every_process(tmp_path):
  """SIGINT to the launcher (Ctrl-C) stops both processes; none is left behind."""
  cmd = [
    sys.executable,
    "-m",
    "sideways_lab.launch",
    "--processes",
    "2",
    str(_pid_script(tmp_path)),
  ]
  proc = subprocess.Popen(
    cmd, env=_env(), cwd=TESTS, stderr=subprocess.PIPE, text=True, start_new_session=True
  )
  try:
    pids = _wait_for_pids(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == launch.EXIT_INTERRUPTED
  assert "interrupted; stopping 2 processes" in err
  assert all(_gone(pid) for pid in pids)


def test_killing_the_launcher_kills_its_processes(tmp_path):
  """SIGKILL to the launcher (it cannot clean up): its processes die with it (no orphans)."""
  cmd = [
    sys.executable,
    "-m",
    "sideways_lab.launch",
    "--processes",
    "2",
    str(_pid_script(tmp_path)),
  ]
  proc = subprocess.Popen(
    cmd, env=_env(), cwd=TESTS, stderr=subprocess.DEVNULL, start_new_session=True
  )
  pids = []
  try:
    pids = _wait_for_pids(tmp_path)
    proc.kill()
    proc.wait(timeout=EXIT_TIMEOUT_S)
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
      time.sleep(0.1)
    left = [pid for pid in pids if not _gone(pid)]
  finally:
    for pid in pids:
      if not _gone(pid):
        os.kill(pid, signal.SIGKILL)  # do not leave them behind if the test fails
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert not left, f"processes {left} outlived their launcher"


def test_launcher_arguments_are_checked():
  with pytest.raises(SystemExit):
    launch.main(["--processes", "2", "--process-id", "0", "x.py"])
  with pytest.raises(SystemExit):
    launch.main(["--coordinator", "127.0.0.1:1", "x.py"])  # lacks the count and the id
  with pytest.raises(ValueError, match="HOST:PORT"):
    launch.initialize("no-port", 2, 1)
  with pytest.raises(ValueError, match="process_id"):
    launch.initialize("127.0.0.1:1", 2, 2)
  # `sideways-lab train --processes N ...` hands the other flags to the launched processes
  assert launch.without_option(["--task", "t", "--processes", "2", "--quick"], "--processes") == [
    "--task",
    "t",
    "--quick",
  ]
  assert launch.without_option(["--processes=2", "--out", "d"], "--processes") == ["--out", "d"]


def test_train_on_two_processes_takes_an_exact_twin(tmp_path):
  """`launch train` runs the command line's train on the sharded route: the exact twin of
  Sideways (method pipelined_exact) trains, writes results.json and a checkpoint."""
  out = tmp_path / "run"
  args = ["--processes", "2", "train", "--task", "next-frame", "--scheme", "sideways_exact"]
  rc, stdout, err = _launch([*args, "--quick", "--steps", "2", "--out", str(out)], RUN_TIMEOUT_S)
  assert rc == 0, err[-4000:]
  result = json.loads((out / "results.json").read_text())
  assert result["method"] == "pipelined_exact" and result["processes"] == 2
  assert result["steps"] == 2 and result["train_loss"] == result["train_loss"]  # not NaN
  assert (out / "ckpt_00000002.npz").is_file()


def test_backprop_is_refused_across_processes(tmp_path):
  from sideways_lab import cli

  args = ["train", "--processes", "2", "--task", "next-frame", "--scheme", "backprop"]
  args += ["--out", str(tmp_path)]
  assert cli.main(args) == cli.EXIT_USAGE  # before any process starts
