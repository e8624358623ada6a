"""Training one scheme: per-clip and online updates, evaluation, checkpoints.

A run is described by a :class:`TrainConfig` (task, scheme, model, data, optimiser, budget,
seed). :func:`train` builds the graph of the scheme (:mod:`sideways_lab.models`), draws the
training clips of step i from a seed derived from ``(seed, i)`` (so a run is reproducible and
a resumed run sees exactly the clips an uninterrupted one would), and applies one optax
update per step:

* ``update_every = 0`` (per clip): ``g = sl.gradients(graph, θ, clip, targets, loss, method)``,
  ``θ ← θ + optax_update(g)``; one jitted step (the engine's ``lax.scan`` over ticks inside).
* ``update_every = K`` (online): the clip is a stream cut into chunks of K ticks; after each
  chunk ``g = Σ_{t∈chunk} g^t`` from ``sl.stream_gradients`` (Sideways, carrying buffers and
  in-flight messages across chunks) or per-frame BP, and an update. A step is still one batch
  of clips (T/K updates).

Metrics go to ``out_dir/metrics.jsonl`` (one JSON object a line), checkpoints to
``out_dir/ckpt_*.npz`` (:mod:`sideways_lab.checkpoint`); ``resume=True`` continues from the
newest checkpoint so that an interrupted run ends with the same parameters as an
uninterrupted one. Ctrl-C (KeyboardInterrupt) saves a checkpoint of the last completed step
before it propagates.

Every task has one configuration (:data:`sideways_lab.training.TASK_DEFAULTS`), shared by
``sideways-lab train``, the sweeps and the figures (:mod:`sideways_lab.experiments`), which
train through :func:`train` and nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from sideways_lab import checkpoint as ckpt
from sideways_lab import engine, provenance, schedule
from sideways_lab.models import (
  CLASSIFICATION_TASKS,
  ModelConfig,
  build_graph,
  check_scheme,
  check_task,
  edges_of,
  method_of,
  mode_of,
)
from sideways_lab.tasks import TaskConfig, grad_cosine, make_task, num_classes

OPTIMIZERS = ("adam", "sgd", "momentum")
SCHEDULES = ("constant", "cosine")

__all__ = [
  "TrainConfig",
  "Trainer",
  "TrainResult",
  "train",
  "evaluate",
  "default_config",
  "TASK_DEFAULTS",
  "QUICK",
  "is_quick",
  "show_progress",
  "learning_rate",
  "check_stash",
  "stash_to_json",
  "init_alignment",
  "OPTIMIZERS",
  "history",
  "load_run",
  "data_seed",
  "train_seed",
  "test_seed",
]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def check_stash(stash) -> int | str | tuple | schedule.Stash:
  """``stash`` as the engine takes it: an int >= 0, "full", "carry", a tuple of per-unit ints
  >= 0 and "carry" (a list, as JSON stores it, becomes a tuple), or a
  :class:`~sideways_lab.schedule.Stash` of those with its storage dtype (a dict
  ``{"depths", "dtype"}``, as JSON stores it, becomes one). A Stash in float32 is its plain
  depths, so equal stashes have one form (and one run key).
  Errors name ``stash``; whether the graph allows the depths is checked by
  :class:`TrainConfig` (``schedule.check_stash``)."""
  if isinstance(stash, dict):
    unknown = set(stash) - {"depths", "dtype"}
    if unknown:
      raise ValueError(f"stash as a dict takes depths and dtype, got {sorted(unknown)}")
    stash = schedule.Stash(**stash)
  if isinstance(stash, schedule.Stash):
    if stash.dtype not in schedule.STASH_DTYPES:
      raise ValueError(f"stash dtype must be one of {schedule.STASH_DTYPES}, got {stash.dtype!r}")
    if isinstance(stash.depths, (schedule.Stash, dict)):
      raise ValueError("stash depths must be plain depths, not another Stash")
    depths = check_stash(stash.depths)
    if stash.dtype == schedule.STASH_DTYPES[0]:
      return depths
    return dataclasses.replace(stash, depths=depths)
  if isinstance(stash, str) and stash in (schedule.FULL, schedule.CARRY):
    return stash
  if isinstance(stash, (list, tuple)):
    return tuple(s if s == schedule.CARRY else check_int(s, "stash", 0) for s in stash)
  if isinstance(stash, (int, np.integer)) and not isinstance(stash, bool) and stash >= 0:
    return int(stash)
  raise ValueError(
    f'stash must be an int >= 0, "full", "carry", a tuple of per-unit ints and "carry", or a '
    f"schedule.Stash, got {stash!r}"
  )


def stash_to_json(stash):
  """A checked ``stash`` (:func:`check_stash`) as JSON-ready plain values."""
  if isinstance(stash, schedule.Stash):
    return {"depths": stash_to_json(stash.depths), "dtype": stash.dtype}
  return list(stash) if isinstance(stash, tuple) else stash


def check_int(v, name: str, minimum: int = 1) -> int:
  """``int(v)``, or a ValueError naming ``name`` unless ``v`` is an int ``>= minimum``."""
  if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
  return int(v)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a training run.

  Attributes:
    scheme: one of :data:`sideways_lab.models.SCHEMES` ("backprop", "sideways",
      "sideways_exact", "skip_sideways", "skip_exact").
    model: the network (:class:`~sideways_lab.models.ModelConfig`).
    data: the clips and targets (:class:`~sideways_lab.tasks.TaskConfig`).
    steps: training steps (one batch of clips each).
    batch_size: clips per step.
    learning_rate: optimiser step size (> 0).
    optimizer: "adam", "sgd" or "momentum" (0.9).
    schedule: "constant" learning rate, or "cosine" decay to zero over the run's updates.
    warmup: updates over which the learning rate rises linearly from 0 to ``learning_rate``
      before the schedule (0: none). Adam's first steps are large; a warmup keeps them from
      pushing a fresh network onto the plateau where its logits ignore the input.
    stash: the ``stash`` of ``sl.gradients`` for the ``sideways`` method (an int >= 0,
      "full", "carry", a tuple of per-unit depths and "carry", or a
      :class:`~sideways_lab.schedule.Stash` with its storage dtype; docs/design.md
      §5, :func:`check_stash`); other methods need 0.
    clip_norm: global gradient-norm clipping (0 disables).
    update_every: 0 for one update per clip; K >= 1 for online updates every K ticks.
    seed: seeds parameters, training clips and held-out clips.
    eval_every: evaluate every this many steps (0: only at the end).
    eval_clips: held-out clips per evaluation.
    checkpoint_every: save every this many steps (0: only at the end and on Ctrl-C).
    keep: checkpoints kept.
    log_every: write a training-metrics line every this many steps.
  """

  scheme: str = "skip_sideways"
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: TaskConfig = dataclasses.field(default_factory=TaskConfig)
  steps: int = 300
  batch_size: int = 16
  learning_rate: float = 3e-3
  optimizer: str = "adam"
  schedule: str = "constant"
  warmup: int = 0
  stash: Any = 0
  clip_norm: float = 1.0
  update_every: int = 0
  seed: int = 0
  eval_every: int = 0
  eval_clips: int = 128
  checkpoint_every: int = 100
  keep: int = 3
  log_every: int = 10

  def __post_init__(self):
    object.__setattr__(self, "scheme", check_scheme(self.scheme))
    if not isinstance(self.model, ModelConfig):
      raise TypeError(f"model must be a ModelConfig, got {type(self.model).__name__}")
    if not isinstance(self.data, TaskConfig):
      raise TypeError(f"data must be a TaskConfig, got {type(self.data).__name__}")
    if self.model.task != self.data.task:
      raise ValueError(f"model.task={self.model.task!r} differs from data.task={self.data.task!r}")
    check_int(self.steps, "steps", 0)
    check_int(self.batch_size, "batch_size")
    check_int(self.eval_clips, "eval_clips")
    check_int(self.keep, "keep")
    check_int(self.log_every, "log_every")
    for name in ("update_every", "eval_every", "checkpoint_every", "seed", "warmup"):
      check_int(getattr(self, name), name, 0)
    if not (
      isinstance(self.learning_rate, (int, float))
      and math.isfinite(self.learning_rate)
      and self.learning_rate > 0
    ):
      raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
    if not (
      isinstance(self.clip_norm, (int, float))
      and math.isfinite(self.clip_norm)
      and self.clip_norm >= 0
    ):
      raise ValueError(f"clip_norm must be a finite number >= 0, got {self.clip_norm!r}")
    object.__setattr__(self, "stash", check_stash(self.stash))
    if self.stash != 0 and method_of(self.scheme) != "sideways":
      raise ValueError(
        f"stash={self.stash!r} applies to the sideways method only; scheme {self.scheme!r} "
        f"uses {method_of(self.scheme)!r} (its exact twin is stash='full')"
      )
    if self.stash != 0 or self.model.reversible:  # a graph the scheme and stash can run on
      graph = build_graph(self.model, self.scheme)
      schedule.check_stash(graph, self.stash)
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
    T = self.data.num_frames
    if self.update_every > T:
      raise ValueError(f"update_every={self.update_every} exceeds the clip length num_frames={T}")
    if self.update_every and method_of(self.scheme) == "pipelined_exact":
      raise ValueError(
        "update_every (online updates) needs a method without BPTT through the "
        "stream: use scheme backprop, sideways or skip_sideways"
      )
    # a clip must have at least one loss tick for the scheme's graph
    edges, mode = edges_of(self.model, self.scheme), mode_of(self.scheme)
    graph_v = schedule.first_valid_ticks(edges, mode)[-1]
    mask = make_task(self.data, edges, mode).mask
    if not (np.ones(T, bool) if mask is None else mask)[graph_v:].any():
      raise ValueError(
        f"num_frames={T} is too short: the first valid output of the "
        f"{self.scheme} pipeline with {self.model.num_units} units is at tick "
        f"{graph_v}, so no tick has a target"
      )
    if self.task in CLASSIFICATION_TASKS and self.model.num_classes != num_classes(self.task):
      raise ValueError(
        f"model.num_classes={self.model.num_classes} differs from the "
        f"{num_classes(self.task)} classes of the {self.task} data"
      )

  @property
  def task(self) -> str:
    """The task's name (``data.task``)."""
    return self.data.task

  def to_dict(self) -> dict:
    """The config as JSON-ready plain values (the nested configs as dicts)."""
    d = dataclasses.asdict(self)
    d["stash"] = stash_to_json(self.stash)
    d["model"] = self.model.to_dict()
    d["data"] = self.data.to_dict()
    return d

  @classmethod
  def from_dict(cls, d: dict) -> TrainConfig:
    """The config that :meth:`to_dict` returned ``d`` for. The ``code`` entry of a run's
    ``config.json`` (the code identity that trained it, :mod:`sideways_lab.provenance`) is not
    a field and is left out."""
    d = dict(d)
    d.pop("code", None)
    d["model"] = ModelConfig.from_dict(d["model"])
    d["data"] = TaskConfig.from_dict(d["data"])
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown configuration fields {sorted(unknown)}")
    return cls(**d)

  def replace(self, **kw) -> TrainConfig:
    """A copy with the fields in ``kw`` replaced."""
    return dataclasses.replace(self, **kw)


#: The configuration of each task: the setup every scheme is trained with, in the sweeps, the
#: figures and ``sideways-lab train`` alike (docs/design.md §9; the measurements that chose it
#: are in benchmarks/README.md "Training setup"). A linear warmup, then a constant learning
#: rate, so that a run's training loss flattens only where the run has converged.
TASK_DEFAULTS = {
  "digits": dict(
    model=dict(num_units=4, width=32, groups=8, span=2, downsample=(1,), readout="mean"),
    data=dict(num_frames=8, size=(16, 16), speed=1.0),
    steps=1000,
    batch_size=16,
    learning_rate=1e-2,
    warmup=50,
    schedule="constant",
    eval_clips=512,
  ),
  "motion-classes": dict(
    model=dict(num_units=4, width=16, span=2, downsample=(), readout="mean"),
    data=dict(num_frames=12, size=(16, 16), speed=2.0),
    steps=1200,
    batch_size=16,
    learning_rate=3e-3,
    warmup=50,
    schedule="constant",
    eval_clips=512,
  ),
  "next-frame": dict(
    model=dict(num_units=4, width=16, span=2, downsample=(1,)),
    data=dict(num_frames=12, size=(16, 16), speed=1.0, horizon=1),
    steps=600,
    batch_size=16,
    learning_rate=3e-3,
    warmup=50,
    schedule="constant",
    eval_clips=512,
  ),
}
#: Quick mode (tests, notebooks, ``--quick``): a tiny network and budget, seconds per run.
QUICK = dict(
  steps=4,
  batch_size=2,
  eval_clips=8,
  log_every=1,
  warmup=0,
  model=dict(num_units=3, width=8, groups=4, downsample=(1,)),
  data=dict(num_frames=6, size=(12, 12)),
)


def is_quick(quick: bool | None = None) -> bool:
  """``quick`` if given, else whether the environment variable SIDEWAYS_LAB_QUICK is set to
  a true value ("1", "true", "yes", "on"; any other value, or none, means full budgets).

  The one place that reads SIDEWAYS_LAB_QUICK: the figures, the sweeps, the progress bars
  (:func:`show_progress`) and the notebooks (as ``sideways_lab.experiments.is_quick``) call
  it."""
  if quick is not None:
    return bool(quick)
  return os.environ.get("SIDEWAYS_LAB_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


def _in_kernel() -> bool:
  """Whether this code runs in a Jupyter kernel (JupyterLab, Notebook, VS Code): an IPython
  shell with a kernel, not a terminal IPython."""
  ipython = sys.modules.get("IPython")  # never imported here: a kernel has imported it
  shell = ipython.get_ipython() if ipython is not None else None
  return getattr(shell, "kernel", None) is not None


def show_progress(progress: bool | None = None, quick: bool | None = None) -> bool:
  """Whether the training functions (:func:`train`, :func:`sideways_lab.experiments.sweep`,
  :func:`~sideways_lab.experiments.compare`) show their tqdm bars: ``progress`` if it is given,
  else (``progress=None``, their default) all of

  * not quick mode (``quick``; None: :func:`is_quick`, the SIDEWAYS_LAB_QUICK variable),
  * not under pytest (no PYTEST_CURRENT_TEST in the environment; the kernels and processes a
    test starts inherit it, and a test that removes it from their environment gets the
    behaviour of a notebook), and
  * someone is watching: the code runs in a Jupyter kernel (``tqdm.auto`` draws a widget) or
    stderr is a terminal (a text bar).

  So a notebook at full budget shows its bars; quick mode, the test suite and output
  redirected to a file are silent.
  """
  if progress is not None:
    return bool(progress)
  if is_quick(quick) or "PYTEST_CURRENT_TEST" in os.environ:
    return False
  terminal = sys.stderr is not None and sys.stderr.isatty()
  return _in_kernel() or terminal


def default_config(
  task: str, scheme: str = "skip_sideways", *, quick: bool = False, seed: int = 0, **overrides
) -> TrainConfig:
  """The default configuration of ``task`` for ``scheme`` (``quick``: a tiny budget).

  ``overrides`` replace top-level fields; ``model=`` and ``data=`` may be dicts of fields.
  """
  check_task(task)
  check_scheme(scheme)
  d = json.loads(json.dumps(TASK_DEFAULTS[task]))
  if quick:
    for k, v in QUICK.items():
      if isinstance(v, dict):
        d[k].update(v)
      else:
        d[k] = v
  for k in ("model", "data"):
    if isinstance(overrides.get(k), dict):
      d[k].update(overrides.pop(k))
  model_kw = dict(d.pop("model"), task=task)
  if task in CLASSIFICATION_TASKS:
    model_kw.setdefault("num_classes", num_classes(task))
  model = ModelConfig.from_dict(model_kw)
  data = TaskConfig.from_dict(dict(d.pop("data"), task=task))
  d.update(overrides)
  return TrainConfig(scheme=scheme, model=model, data=data, seed=seed, **d)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------

#: The independent streams of clips of a run: training batches, held-out test batches, and the
#: clips on which gradients are analysed
#: (:func:`sideways_lab.experiments.alignment_along_training`).
TRAIN_STREAM, TEST_STREAM, ANALYSIS_STREAM = 0, 1, 2


def data_seed(seed: int, stream: int, index: int) -> int:
  """A 31-bit seed for clip batch ``index`` of ``stream`` (TRAIN_STREAM or TEST_STREAM)."""
  return int(
    np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0] & 0x7FFFFFFF
  )


def train_seed(seed: int, step: int) -> int:
  """The seed of the training clips of ``step`` of the run seeded ``seed``."""
  return data_seed(seed, TRAIN_STREAM, step)


def test_seed(seed: int, index: int) -> int:
  """The seed of held-out batch ``index`` of the run seeded ``seed`` (disjoint from training)."""
  return data_seed(seed, TEST_STREAM, index)


def _core(config: TrainConfig) -> TrainConfig:
  """``config`` without the fields that do not change the compiled program: the seed, the
  data's speed and stride, evaluation, checkpoint and logging fields, and the number of steps
  unless a cosine schedule decays over them (:func:`learning_rate`)."""
  return config.replace(
    seed=0,
    steps=config.steps if config.schedule == "cosine" else 0,
    data=dataclasses.replace(config.data, speed=0.0, stride=1),
    eval_every=0,
    eval_clips=1,
    checkpoint_every=0,
    keep=1,
    log_every=1,
  )


def learning_rate(config: TrainConfig) -> optax.ScalarOrSchedule:
  """The learning rate of update n: ``lr · min(1, n / warmup)``, times the cosine decay
  ``(1 + cos(π (n − warmup) / (N − warmup))) / 2`` over the run's N updates when
  ``schedule="cosine"`` (a constant ``lr`` without warmup or decay).

  A constant schedule does not depend on the run's length, also while the warmup lasts (a
  run shorter than the warmup ends before the full rate): so the first n steps of a longer run
  are the n-step run, and a run's held-out evaluations are the results of shorter runs
  (docs/design.md §9). Only the cosine decay depends on N (its warmup is cut to N − 1)."""
  lr = config.learning_rate
  if config.schedule == "cosine":
    T, K = config.data.num_frames, config.update_every
    updates = max(config.steps * (-(-T // K) if K else 1), 1)
    warmup = min(config.warmup, updates - 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, updates, end_value=0.0)
  if config.warmup:
    return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, config.warmup), optax.constant_schedule(lr)],
      [config.warmup],
    )
  return lr


def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """Gradient clipping (``clip_norm``) then the optimiser with its learning-rate schedule."""
  chain = []
  if config.clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.clip_norm))
  lr = learning_rate(config)
  if config.optimizer == "adam":
    chain.append(optax.adam(lr))
  elif config.optimizer == "momentum":
    chain.append(optax.sgd(lr, momentum=0.9))
  else:
    chain.append(optax.sgd(lr))
  return optax.chain(*chain)


class _Program:
  """The graph, optimiser and jitted steps of a run's :func:`_core` configuration, shared by
  every run that differs only in seed, speed, stride or bookkeeping (so a sweep compiles
  each scheme once, not once per run)."""

  def __init__(self, core: TrainConfig):
    self.graph = build_graph(core.model, core.scheme)
    self.method = method_of(core.scheme)
    self.mode = mode_of(core.scheme)
    self.stash = core.stash
    task = make_task(core.data, self.graph.edges, self.mode)
    self.loss_fn, self.mask = task.loss_fn, task.mask
    self.optimizer = _optimizer(core)
    self.step = jax.jit(self._step_impl)
    self.online_step = jax.jit(self._online_step_impl)

  def _step_impl(self, params, opt_state, video, targets):
    grads, info = engine.gradients(
      self.graph,
      params,
      video,
      targets,
      self.loss_fn,
      self.method,
      mask=self.mask,
      stash=self.stash,
      check_finite=False,
    )
    updates, opt_state = self.optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, info["loss"]

  def _online_step_impl(self, params, opt_state, chunk, targets, state, mask):
    if self.method == "sideways":
      grads, info, state = engine.stream_gradients(
        self.graph, params, chunk, targets, self.loss_fn, state, mask=mask, check_finite=False
      )
    else:  # per-frame BP needs no pipeline state
      grads, info = engine.gradients(
        self.graph, params, chunk, targets, self.loss_fn, "backprop", mask=mask, check_finite=False
      )
    has_loss = jnp.any(info["loss_ticks"])
    updates, new_opt = self.optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)

    # a chunk without a loss tick (the pipeline is still filling) makes no update
    def pick(a, b):
      return jax.tree_util.tree_map(lambda x, y: jnp.where(has_loss, x, y), a, b)

    loss = jnp.where(has_loss, info["loss"], jnp.nan)
    return pick(new_params, params), pick(new_opt, opt_state), state, loss


@functools.lru_cache(maxsize=32)
def _program(core: TrainConfig) -> _Program:
  return _Program(core)


class Trainer:
  """The jitted pieces of a run: init, one training step, evaluation.

  Runs that differ only in seed, speed, stride or bookkeeping share one compiled program.

  Attributes:
    config: the :class:`TrainConfig` of the run.
    task: the task built from ``config.data`` (clips, targets, loss, metrics).
    graph: the :class:`~sideways_lab.graph.UnitGraph` of ``config.model`` and the scheme.
    method: the gradient method of the scheme (``sl.gradients``' ``method``).
    mode: the forward mode of the scheme (``"pipelined"`` or ``"synchronous"``).
    optimizer: the optax transformation (clipping, then Adam, SGD or momentum).
  """

  def __init__(self, config: TrainConfig):
    if not isinstance(config, TrainConfig):
      raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    self.config = config
    program = _program(_core(config))
    self.graph, self.method, self.mode = program.graph, program.method, program.mode
    self.optimizer = program.optimizer
    self.task = make_task(config.data, self.graph.edges, self.mode)
    self._mask = self.task.mask
    self._step = program.step
    self._online_step = program.online_step

  # -- init ------------------------------------------------------------------------------------
  def init(self):
    """``(params, opt_state)`` from the run's seed."""
    c = self.config.data
    frame = jnp.zeros((1,) + tuple(c.size) + (self._channels(),), jnp.float32)
    params = self.graph.init(jax.random.PRNGKey(self.config.seed), frame)
    return params, self.optimizer.init(params)

  def _channels(self) -> int:
    video, _, _ = self.task.batch(1, 0)
    return int(video.shape[-1])

  # -- steps -----------------------------------------------------------------------------------
  def batch(self, step: int):
    """The training clips of ``step``: ``(video, targets, extras)``."""
    return self.task.batch(self.config.batch_size, train_seed(self.config.seed, step))

  def train_step(self, params, opt_state, step: int):
    """One step on the clips of ``step``; returns ``(params, opt_state, mean loss)``."""
    params, opt_state, loss = self._train_step(params, opt_state, step)
    return params, opt_state, float(loss)

  def _train_step(self, params, opt_state, step: int):
    """:meth:`train_step` with the loss of a per-clip update left on the device (a JAX
    scalar), so that the next step's clips are drawn while this step still computes."""
    video, targets, _ = self.batch(step)
    K = self.config.update_every
    if not K:
      return self._step(params, opt_state, video, targets)
    T = video.shape[1]
    mask = self._mask if self._mask is not None else np.ones((T,), bool)
    state = engine.init_state(self.graph, params, video[:, :1])
    losses = []
    for s in range(0, T, K):
      params, opt_state, state, loss = self._online_step(
        params, opt_state, video[:, s : s + K], targets[:, s : s + K], state, mask[s : s + K]
      )
      losses.append(float(loss))
    losses = [x for x in losses if np.isfinite(x)]
    return params, opt_state, float(np.mean(losses)) if losses else float("nan")

  # -- evaluation ------------------------------------------------------------------------------
  def evaluate(
    self, params, num_clips: int | None = None, batch_size: int = 64, seed: int | None = None
  ) -> dict:
    """Metrics on held-out clips (a test stream disjoint from the training seeds).

    Classification: ``accuracy`` (clip accuracy from mean logits over V), ``tick_accuracy``,
    ``loss`` (averaged over clips) and ``confusion`` (K×K nested lists of clip counts, rows the
    true class); prediction: ``mse``, ``psnr``, ``ssim``, ``loss``.
    """
    n = self.config.eval_clips if num_clips is None else num_clips
    check_int(n, "num_clips")
    seed = self.config.seed if seed is None else seed
    T = self.config.data.num_frames
    V = schedule.loss_ticks(self.graph, T, self._mask, self.mode)
    totals, count, i = {}, 0, 0
    while count < n:
      b = min(batch_size, n - count)
      video, targets, extras = self.task.batch(b, test_seed(seed, i))
      outputs, _ = engine.forward(self.graph, params, video, self.mode)
      m = self.task.metrics(outputs, targets, V, extras)
      for k, v in m.items():  # arrays (a confusion matrix) are counts: summed, not averaged
        totals[k] = totals.get(k, 0) + (v if isinstance(v, np.ndarray) else v * b)
      count += b
      i += 1
    return {k: v.tolist() if isinstance(v, np.ndarray) else v / count for k, v in totals.items()}


# ---------------------------------------------------------------------------------------------
# train / evaluate
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
  """What :func:`train` returns."""

  params: Any
  opt_state: Any
  step: int
  test: dict
  train_time_s: float
  history: list
  config: TrainConfig
  resumed_from: int | None = None


def _write_jsonl(path: Path | None, record: dict) -> None:
  if path is not None:
    with open(path, "a") as f:
      f.write(json.dumps(record) + "\n")


def _truncate_jsonl(path: Path, step: int) -> None:
  """Drops metric lines of steps after ``step`` (from an interrupted run), atomically."""
  if not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line).get("step", 0) <= step:
        keep.append(line)
    except json.JSONDecodeError:
      continue
  ckpt.atomic_write_text(path, "".join(x + "\n" for x in keep))


def _manifest(config: TrainConfig, extra: dict | None = None) -> dict:
  m = {"scheme": config.scheme, "task": config.task, "config": config.to_dict()}
  m.update(extra or {})
  return m


def _comparable(cfg: dict) -> dict:
  """A config dict without the fields a resumed run may change (budget and logging)."""
  cfg = dict(cfg)
  if cfg.get("schedule") != "cosine":  # a cosine schedule depends on the number of steps
    cfg.pop("steps", None)
  for k in ("eval_every", "eval_clips", "checkpoint_every", "keep", "log_every"):
    cfg.pop(k, None)
  return cfg


def _open_run(config: TrainConfig, out: Path | None, resume: bool, trainer: Trainer):
  """The run's starting point: ``(params, opt_state, step, resumed_from)``. Checks ``out``
  (a directory with checkpoints needs ``resume``; a resumed configuration must match up to
  the budget and logging fields) and writes ``config.json`` there: the configuration's fields
  and ``code``, the code identity of this process
  (:func:`sideways_lab.provenance.code_identity`)."""
  params, opt_state = trainer.init()
  if out is None:
    return params, opt_state, 0, None
  if out.exists() and not out.is_dir():
    raise NotADirectoryError(f"out_dir {str(out)!r} exists and is not a directory")
  existing = ckpt.list_checkpoints(out)
  start, resumed_from = 0, None
  if resume:
    if not existing:
      raise FileNotFoundError(f"resume=True but {str(out)!r} has no checkpoint to resume")
    params, opt_state, man = ckpt.load(existing[-1][1], params, opt_state)
    old, new = _comparable(man.get("config", {})), _comparable(config.to_dict())
    if old != new:
      diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
      raise ValueError(
        f"the checkpoint in {str(out)!r} was written with another "
        f"configuration (differs in {diff}); resume with the same one"
      )
    params = jax.tree_util.tree_map(jnp.asarray, params)
    opt_state = jax.tree_util.tree_map(jnp.asarray, opt_state)
    start = resumed_from = int(man["step"])
    _truncate_jsonl(out / "metrics.jsonl", start)
  elif existing:
    raise FileExistsError(
      f"{str(out)!r} already holds checkpoints (newest: "
      f"{existing[-1][1].name}); pass resume=True (--resume) to continue "
      f"or choose another directory"
    )
  out.mkdir(parents=True, exist_ok=True)
  record = {**config.to_dict(), "code": provenance.code_identity()}
  ckpt.atomic_write_text(out / "config.json", json.dumps(record, indent=1))
  if start > config.steps:
    raise ValueError(f"the checkpoint is at step {start}, beyond steps={config.steps}")
  return params, opt_state, start, resumed_from


def _check_finite(loss: float, step: int, config: TrainConfig) -> None:
  if not math.isfinite(loss) and config.update_every == 0:
    raise FloatingPointError(
      f"the training loss became {loss} by step {step}; "
      f"lower learning_rate (now {config.learning_rate})"
    )


def train(
  config: TrainConfig,
  out_dir=None,
  *,
  resume: bool = False,
  progress: bool | None = None,
  callback: Callable[[int, float], None] | None = None,
  evaluate_at_end: bool = True,
) -> TrainResult:
  """Trains ``config`` and returns the final parameters and test metrics.

  ``metrics.jsonl`` gets ``{"step", "loss", "time_s"}`` every ``log_every`` steps (``loss``:
  the mean over the steps since the previous line) and ``{"step", "eval"}`` every
  ``eval_every``.

  Args:
    config: the run.
    out_dir: directory for ``config.json`` (the configuration and the identity of the code that
      trains it, :mod:`sideways_lab.provenance`), ``metrics.jsonl`` and checkpoints (None: nothing
      is written); one that holds checkpoints needs ``resume=True`` (nothing is overwritten).
    resume: continue from the newest checkpoint in ``out_dir`` (its configuration must match
      ``config`` up to the budget and logging fields).
    progress: a tqdm bar over the steps with the mean training loss of the last logged steps
      (None: :func:`show_progress`'s rule, on in a notebook or a terminal at full budget, off
      in quick mode and under pytest).
    callback: ``callback(step, loss)`` after every completed step (tests use it to interrupt).
    evaluate_at_end: evaluate on ``config.eval_clips`` held-out clips at the end.

  Returns:
    A :class:`TrainResult`.
  """
  if not isinstance(config, TrainConfig):
    raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
  trainer = Trainer(config)
  out = Path(out_dir) if out_dir is not None else None
  metrics_path = out / "metrics.jsonl" if out is not None else None
  params, opt_state, start, resumed_from = _open_run(config, out, resume, trainer)
  quiet = not show_progress(progress)
  bar = tqdm(total=config.steps, initial=start, disable=quiet, desc=config.scheme, leave=False)
  history: list = []
  done = {"params": params, "opt_state": opt_state, "step": start, "saved": start}

  def record(rec: dict) -> None:
    history.append(rec)
    _write_jsonl(metrics_path, rec)

  def save() -> None:
    if out is not None and done["saved"] != done["step"]:
      ckpt.save(
        out,
        done["step"],
        done["params"],
        done["opt_state"],
        manifest=_manifest(config),
        keep=config.keep,
      )
      done["saved"] = done["step"]

  t0 = time.perf_counter()
  loss_sum, loss_count = 0.0, 0  # since the last log line; summed on the device, read when logged
  try:
    for step in range(start, config.steps):
      params, opt_state, loss = trainer._train_step(params, opt_state, step)
      n = step + 1
      done.update(params=params, opt_state=opt_state, step=n)
      bar.update(1)
      loss_sum, loss_count = loss_sum + loss, loss_count + 1
      logged = n % config.log_every == 0 or n == config.steps
      saving = bool(config.checkpoint_every) and n % config.checkpoint_every == 0
      evaluating = bool(config.eval_every) and n % config.eval_every == 0 and n < config.steps
      # the loss is read back (a device sync) only to log it, before a checkpoint or an
      # evaluation (a non-finite loss must stop the run first), or for a callback
      if logged or saving or evaluating or callback is not None:
        loss = float(loss)
        _check_finite(loss, n, config)
      if logged:
        mean = float(loss_sum) / loss_count
        loss_sum, loss_count = 0.0, 0
        bar.set_postfix(loss=f"{mean:.4f}")
        record({"step": n, "loss": mean, "time_s": round(time.perf_counter() - t0, 3)})
      if evaluating:
        record({"step": n, "eval": trainer.evaluate(params)})
      if saving:
        save()
      if callback is not None:
        callback(n, loss)
  except KeyboardInterrupt:
    save()
    raise
  finally:
    bar.close()
  train_time = time.perf_counter() - t0
  save()
  test = {}
  if evaluate_at_end:
    test = trainer.evaluate(params)
    record({"step": done["step"], "test": test})
  return TrainResult(
    params, opt_state, done["step"], test, train_time, history, config, resumed_from
  )


def history(run_dir) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, training losses)`` from a run directory's ``metrics.jsonl``."""
  steps, losses = [], []
  p = Path(run_dir) / "metrics.jsonl"
  if p.exists():
    for line in p.read_text().splitlines():
      r = json.loads(line)
      if "loss" in r and "test" not in r and "eval" not in r:
        steps.append(r["step"])
        losses.append(r["loss"])
  return np.asarray(steps), np.asarray(losses)


def load_run(path):
  """``(config, trainer, params, manifest)`` from a checkpoint file or run directory."""
  path = Path(path)
  p = ckpt.latest(path) if path.is_dir() else path
  if p is None:
    raise FileNotFoundError(f"no checkpoint (ckpt_*.npz) in {str(path)!r}")
  man = ckpt.read_manifest(p)
  try:
    config = TrainConfig.from_dict(man["config"])
  except (KeyError, TypeError, ValueError) as e:
    raise ckpt.CheckpointError(f"checkpoint {str(p)!r} has no usable configuration: {e}") from e
  trainer = Trainer(config)
  params, _ = trainer.init()
  params, _, man = ckpt.load(p, params)
  return config, trainer, jax.tree_util.tree_map(jnp.asarray, params), man


def evaluate(path, num_clips: int | None = None, seed: int | None = None) -> dict:
  """Test metrics of the checkpoint at ``path`` (a file or a run directory)."""
  config, trainer, params, man = load_run(path)
  m = trainer.evaluate(params, num_clips, seed=seed)
  return {"task": config.task, "scheme": config.scheme, "step": man["step"], **m}


# ---------------------------------------------------------------------------------------------
# Gradient alignment (the demo)
# ---------------------------------------------------------------------------------------------


def init_alignment(
  task: str = "next-frame",
  *,
  num_units: int = 4,
  width: int = 8,
  num_frames: int = 12,
  size=(16, 16),
  batch_size: int = 4,
  speed: float = 1.0,
  seed: int = 0,
) -> dict:
  """Per-unit cosine between the ``sideways`` and ``pipelined_exact`` gradients at init.

  For the chain graph (Sideways) and the skip graph (Skip-Sideways) of ``task``'s model, on
  one synthetic batch. Returns ``{"sideways": (L,) array, "skip_sideways": (L,) array}``.
  """
  out = {}
  for scheme in ("sideways", "skip_sideways"):
    cfg = default_config(
      task,
      scheme,
      seed=seed,
      batch_size=batch_size,
      model=dict(num_units=num_units, width=width),
      data=dict(num_frames=num_frames, size=tuple(size), speed=speed),
    )
    tr = Trainer(cfg)
    params, _ = tr.init()
    video, targets, _ = tr.batch(0)
    g_sw, _ = engine.gradients(
      tr.graph, params, video, targets, tr.task.loss_fn, "sideways", mask=tr.task.mask
    )
    g_ex, _ = engine.gradients(
      tr.graph, params, video, targets, tr.task.loss_fn, "pipelined_exact", mask=tr.task.mask
    )
    out[scheme] = grad_cosine(g_sw, g_ex)
  return out
