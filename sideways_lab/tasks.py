"""Tasks (docs/design.md §7): digit identity, motion classes and next-frame prediction.

A task turns clips into per-tick targets and a loss, and measures outputs:

* **digits** (classification of appearance): moving digits whose label is the digit; a single
  frame carries the label, so per-frame BP learns it.
* **motion-classes** (classification of motion): the label is a motion no single frame shows.
* both: the clip's label is the target at every tick;
  ``loss = mean_b CE(logits_b, label_b)``. Clip accuracy takes the argmax of the logits
  averaged over the loss ticks V; per-tick accuracy averages ``1{argmax logits^t = label}``
  over V. Chance is ``1 / num_classes``.
* **next-frame**: the target of tick t is ``x_{a(t)+h}`` (h = ``horizon``; ``a(t) = t`` for
  ``anchor="input"``, the newest frame reaching the output for ``"newest"``), masked where it
  lies beyond the clip; ``loss = mean (out - x_{t+h})^2``; metrics MSE, PSNR (data range 1) and
  SSIM (Gaussian window), averaged over the frames of V.

Data come from ``sideways_lab.data`` (moving digits, motion classes).
"""

from __future__ import annotations

import dataclasses

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sideways_lab import data, schedule
from sideways_lab.models import check_task

#: The classes of the digit-identity task.
DIGIT_NAMES = tuple(str(i) for i in range(10))


# ---------------------------------------------------------------------------------------------
# Data (sideways_lab.data)
# ---------------------------------------------------------------------------------------------


def num_motion_classes() -> int:
  """The number of motion classes (8)."""
  return len(data.MOTION_CLASS_NAMES)


def num_classes(task: str) -> int:
  """Classes of a classification task: 10 digits or 8 motion classes."""
  return len(DIGIT_NAMES) if check_task(task) == "digits" else num_motion_classes()


def class_accuracy(confusion, names=None) -> dict:
  """``{class name: recall}`` from a confusion matrix (rows: true class); ``names`` default
  to the motion classes."""
  confusion = np.asarray(confusion)
  names = data.MOTION_CLASS_NAMES if names is None else names
  totals = confusion.sum(axis=1)
  return {
    name: float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
    for i, name in enumerate(names)
  }


# ---------------------------------------------------------------------------------------------
# Losses and metrics
# ---------------------------------------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``mean_b -log softmax(logits_b)[label_b]``; logits (B, K), labels int (B,) (optax)."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """``mean (pred - target)^2`` over every element (the batch mean of per-frame MSE; optax)."""
  return jnp.mean(optax.squared_error(pred, target))


def ssim(a, b, *, window: int = 7, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
  """Structural similarity of frames (..., H, W, C), one value per frame (dm-pix).

  ``SSIM = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2))`` averaged
  over pixels and channels, with means and (co)variances from a ``window``×``window`` Gaussian
  window of std ``sigma`` (VALID filtering; the window shrinks to fit small frames) and
  ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2`` for the data range R.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  lead, (H, W, C) = a.shape[:-3], a.shape[-3:]
  per = dm_pix.ssim(
    a.reshape((-1, H, W, C)),
    b.reshape((-1, H, W, C)),
    max_val=data_range,
    filter_size=min(window, H, W),
    filter_sigma=sigma,
  )
  return np.asarray(per).reshape(lead)


def psnr_from_mse(m, data_range: float = 1.0):
  """``10 log10(R^2 / mse)`` (mse clamped at 1e-10).

  From an MSE rather than from frames (``dm_pix.psnr``), because callers average the MSE over
  ticks or clips first.
  """
  return 10.0 * np.log10(data_range**2 / np.maximum(np.asarray(m, np.float64), 1e-10))


def flatten(tree) -> jax.Array:
  """All leaves of a pytree, raveled and concatenated: (P,) float32 (``(0,)`` for no leaves)."""
  leaves = jax.tree_util.tree_leaves(tree)
  if not leaves:
    return jnp.zeros((0,), jnp.float32)
  return jnp.concatenate([jnp.ravel(jnp.asarray(x)).astype(jnp.float32) for x in leaves])


def cosine(a, b) -> jax.Array:
  """Cosine similarity of two vectors along their last axis (leading axes broadcast).

  ``cos = <a/|a|, b/|b|>``, clipped to [-1, 1]; **NaN where either vector is zero**: a zero
  gradient has no direction, so its alignment is undefined (neither perfect nor absent), and
  means over units or seeds that contain one come out NaN instead of silently biased. Jittable.

  Args:
    a, b: (..., P) arrays of the same shape.
  Returns:
    (...,) float32.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
  na = jnp.linalg.norm(a, axis=-1, keepdims=True)
  nb = jnp.linalg.norm(b, axis=-1, keepdims=True)
  cos = jnp.sum((a / jnp.where(na > 0, na, 1.0)) * (b / jnp.where(nb > 0, nb, 1.0)), axis=-1)
  return jnp.where((na[..., 0] > 0) & (nb[..., 0] > 0), jnp.clip(cos, -1.0, 1.0), jnp.nan)


def grad_cosine(g1, g2) -> np.ndarray:
  """Per-unit :func:`cosine` of two gradients (tuples of L per-unit pytrees): (L,) array.

  ``cos_k = <g1_k, g2_k> / (|g1_k| |g2_k|)`` over all of unit k's parameters (NaN where
  either gradient of the unit is zero)."""
  if len(g1) != len(g2):
    raise ValueError(f"g1 and g2 must have the same number of units, got {len(g1)} and {len(g2)}")
  return np.asarray([float(cosine(flatten(a), flatten(b))) for a, b in zip(g1, g2)])


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

ANCHORS = ("input", "newest")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """The data and targets of a task.

  Attributes:
    task: "digits" (the digit's identity), "motion-classes" or "next-frame".
    num_frames: T, frames per clip.
    size: (H, W) of the frames.
    speed: pixels per frame of the motion (the smoothness knob).
    stride: keep every ``stride``-th frame of a clip drawn ``stride`` times longer (the
      frame-stride knob; on moving digits a stride s at speed v shows the same clips as
      stride 1 at speed s·v).
    horizon: h, the prediction horizon (next-frame only).
    anchor: what the horizon counts from (next-frame only): "input" — the target of tick t
      is ``x_{t+h}`` (the pipeline's latency counts against it); "newest" — the target is
      ``x_{n(t)+h}``, n(t) the newest frame that reaches the output at tick t
      (:func:`newest_frames`), so every scheme forecasts h frames past what it has seen.
  """

  task: str = "motion-classes"
  num_frames: int = 12
  size: tuple = (16, 16)
  speed: float = 1.0
  stride: int = 1
  horizon: int = 1
  anchor: str = "input"

  def __post_init__(self):
    check_task(self.task)
    if (
      not isinstance(self.num_frames, int)
      or isinstance(self.num_frames, bool)
      or self.num_frames < 2
    ):
      raise ValueError(f"num_frames must be an int >= 2, got {self.num_frames!r}")
    size = tuple(self.size)
    if len(size) != 2 or any((not isinstance(s, int)) or s < 4 for s in size):
      raise ValueError(f"size must be (H, W) with ints >= 4, got {self.size!r}")
    object.__setattr__(self, "size", size)
    if not (isinstance(self.speed, (int, float)) and np.isfinite(self.speed) and self.speed >= 0):
      raise ValueError(f"speed must be a finite number >= 0, got {self.speed!r}")
    if not isinstance(self.stride, int) or isinstance(self.stride, bool) or self.stride < 1:
      raise ValueError(f"stride must be an int >= 1, got {self.stride!r}")
    if not isinstance(self.horizon, int) or self.horizon < 1 or self.horizon >= self.num_frames:
      raise ValueError(
        f"horizon must be an int in 1..num_frames-1={self.num_frames - 1}, got {self.horizon!r}"
      )
    if self.anchor not in ANCHORS:
      raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")

  def to_dict(self) -> dict:
    """The config as JSON-ready plain values (tuples as lists)."""
    d = dataclasses.asdict(self)
    d["size"] = list(self.size)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> TaskConfig:
    """The config that :meth:`to_dict` returned ``d`` for."""
    d = dict(d)
    if "size" in d:
      d["size"] = tuple(d["size"])
    return cls(**d)


def newest_frames(edges, num_frames: int, mode: str = "pipelined") -> np.ndarray:
  """``n(t)``: the newest frame that reaches the output ``out_L^t`` (-1 where none): (T,) int.

  From :func:`sideways_lab.schedule.frames_integrated`: ``t`` for a synchronous network,
  ``t - L + 1`` on a pipelined chain, newer through skips (``t - 1`` for span-2 skips).
  """
  frames = schedule.frames_integrated(edges, num_frames, mode)[-1]
  return np.asarray([max(f) if f else -1 for f in frames], np.int64)


class Task:
  """A task: batches ``(video, targets, extras)``, a loss, a mask and metrics.

  ``loss_fn`` is one function object per task class (so jitted steps do not recompile).
  ``edges`` and ``mode`` (the scheme's graph and forward mode) matter only where the targets
  depend on the pipeline (next-frame with ``anchor="newest"``).
  """

  kind: str = ""
  chance: float | None = None

  def __init__(self, config: TaskConfig, edges=None, mode: str = "pipelined"):
    self.config = config
    self.edges = edges
    self.mode = mode

  @property
  def mask(self):
    """(T,) bool array of ticks with a target, or None (every tick)."""
    return None

  def batch(self, batch_size: int, seed: int):
    """``(video (B, T, H, W, C), targets (B, T, ...), extras dict)``: the clips of ``seed``."""
    raise NotImplementedError

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    """The task's metrics of ``outputs`` (B, T, ...) against ``targets`` over the loss ticks."""
    raise NotImplementedError


def _strided(video, stride: int):
  return video if stride == 1 else data.stride_frames(video, stride, axis=1)


class Classification(Task):
  """The clip's label at every tick, cross-entropy loss (digit identity, motion classes)."""

  kind = "classification"
  loss_fn = staticmethod(cross_entropy)

  @property
  def class_names(self) -> tuple:
    """The K class names, indexed by label."""
    return DIGIT_NAMES if self.config.task == "digits" else data.MOTION_CLASS_NAMES

  @property
  def num_classes(self) -> int:
    """K, the number of classes."""
    return len(self.class_names)

  @property
  def chance(self) -> float:
    """The accuracy of a uniform guess, 1 / K."""
    return 1.0 / self.num_classes

  def clips(self, batch_size: int, seed: int, labels=None):
    """``(video (B, T, H, W, 1), labels int32 (B,))`` at the configured speed and stride.

    ``labels`` forces the motion classes (paired clips; motion-classes only)."""
    c = self.config
    n = c.num_frames * c.stride
    if c.task == "digits":
      if labels is not None:
        raise ValueError("labels can be forced only for motion-classes")
      video, y = data.moving_digits(
        batch_size, n, size=c.size, speed=c.speed, seed=seed, return_labels=True
      )
      y = y[:, 0]
    else:
      video, y = data.motion_classes(
        batch_size, n, size=c.size, speed=c.speed, seed=seed, labels=labels
      )
    video = _strided(video, c.stride)[:, : c.num_frames]
    return np.asarray(video, np.float32), np.asarray(y, np.int32)

  def batch(self, batch_size: int, seed: int):
    """``(video (B,T,H,W,C), targets int32 (B,T), {"labels": (B,)})``."""
    video, labels = self.clips(batch_size, seed)
    targets = np.repeat(labels[:, None], self.config.num_frames, axis=1).astype(np.int32)
    return video, targets, {"labels": labels}

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    """Clip accuracy from the mean logits over V; per-tick accuracy over V; the loss; and
    ``confusion`` (K, K) int counts of clips, rows the true class, columns the predicted one
    (an array: :meth:`~sideways_lab.training.Trainer.evaluate` sums it over batches instead of
    averaging)."""
    logits = jnp.asarray(outputs, jnp.float32)[:, np.asarray(loss_ticks, bool)]  # (B, |V|, K)
    labels = np.asarray(extras["labels"])
    clip_pred = np.asarray(logits.mean(axis=1).argmax(-1))
    tick_correct = np.asarray(logits.argmax(-1)) == labels[:, None]
    ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(jnp.asarray(labels)[:, None], logits.shape[:2])
    )
    K = logits.shape[-1]
    confusion = np.bincount(labels * K + clip_pred, minlength=K * K).reshape(K, K)
    return {
      "accuracy": float((clip_pred == labels).mean()),
      "tick_accuracy": float(tick_correct.mean()),
      "loss": float(ce.mean()),
      "confusion": confusion,
    }


class NextFrame(Task):
  """Next-frame prediction: the target of tick t is frame ``a(t) + h`` (``a(t) = t`` for
  ``anchor="input"``, the newest frame that reaches the output for ``"newest"``), masked where
  it lies beyond the clip; MSE loss."""

  kind = "prediction"
  loss_fn = staticmethod(mse)

  def __init__(self, config: TaskConfig, edges=None, mode: str = "pipelined"):
    super().__init__(config, edges, mode)
    T = config.num_frames
    if config.anchor == "newest":
      if edges is None:
        raise ValueError("anchor='newest' needs the scheme's graph: pass edges= (and mode=)")
      anchor = newest_frames(edges, T, mode)
    else:
      anchor = np.arange(T)
    index = anchor + config.horizon
    self._mask = (anchor >= 0) & (index < T)
    self.target_index = np.where(self._mask, index, 0)  # (T,) frame index of each target

  @property
  def mask(self):
    return self._mask

  def clips(self, batch_size: int, seed: int):
    """Moving digits (B, T, H, W, 1) at the configured speed and stride."""
    c = self.config
    video = data.moving_digits(
      batch_size, c.num_frames * c.stride, size=c.size, speed=c.speed, seed=seed
    )
    return np.asarray(_strided(video, c.stride)[:, : c.num_frames], np.float32)

  def batch(self, batch_size: int, seed: int):
    """``(video, targets (B,T,H,W,C), {})``: ``targets[:, t] = x_{target_index[t]}`` (zeros
    where masked)."""
    video = self.clips(batch_size, seed)
    targets = video[:, self.target_index] * self._mask[None, :, None, None, None]
    return video, targets.astype(np.float32), {}

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    """MSE, PSNR (mean of per-frame PSNR) and SSIM over the frames of V."""
    return frame_metrics(outputs, targets, loss_ticks)


def frame_metrics(outputs, targets, loss_ticks) -> dict:
  """``{"mse", "psnr", "ssim", "loss"}`` of predicted frames (B, T, H, W, C) over the ticks of
  ``loss_ticks`` (T,) bool (PSNR and SSIM per frame, then averaged)."""
  V = np.asarray(loss_ticks, bool)
  out = np.asarray(outputs, np.float32)[:, V]
  tgt = np.asarray(targets, np.float32)[:, V]
  per_frame = np.mean((out - tgt) ** 2, axis=(2, 3, 4))
  return {
    "mse": float(per_frame.mean()),
    "psnr": float(psnr_from_mse(per_frame).mean()),
    "ssim": float(np.mean(ssim(out, tgt))),
    "loss": float(per_frame.mean()),
  }


def shift_targets(video, horizon: int = 1) -> np.ndarray:
  """``targets[:, t] = x_{t+h}`` for ``t + h < T``, zeros after: (B, T, ...)."""
  video = np.asarray(video)
  targets = np.zeros_like(video)
  targets[:, : video.shape[1] - horizon] = video[:, horizon:]
  return targets


def make_task(config: TaskConfig, edges=None, mode: str = "pipelined") -> Task:
  """The :class:`Task` of ``config.task`` for a scheme's graph ``edges`` and forward ``mode``."""
  if not isinstance(config, TaskConfig):
    raise TypeError(f"config must be a TaskConfig, got {type(config).__name__}")
  cls = NextFrame if config.task == "next-frame" else Classification
  return cls(config, edges, mode)
