"""Tasks (DESIGN.md §7): classification of motion and next-frame prediction.

A task turns clips into per-tick targets and a loss, and measures outputs:

* **motion-classes** (classification): the clip's label is the target at every tick;
  ``loss = mean_b CE(logits_b, label_b)``. Clip accuracy takes the argmax of the logits
  averaged over the loss ticks V; per-tick accuracy averages ``1{argmax logits^t = label}``
  over V. Chance is ``1 / num_classes``.
* **next-frame**: the target of tick t is ``x_{t+h}`` (h = ``horizon``), masked where
  ``t + h >= T``; ``loss = mean (out - x_{t+h})^2``; metrics MSE, PSNR (data range 1) and
  SSIM (Gaussian window), averaged over the frames of V.

Data come from ``sideways_lab.data`` (moving digits, motion classes).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab import data
from sideways_lab.models import check_task


# ---------------------------------------------------------------------------------------------
# Data (sideways_lab.data)
# ---------------------------------------------------------------------------------------------

def moving_digits(batch_size, num_frames, *, size=(16, 16), speed=1.0, seed=0):
  """Moving digits (``sl.data.moving_digits``): (B, T, H, W, 1) float32 in [0, 1]."""
  return np.asarray(data.moving_digits(batch_size, num_frames, size=tuple(size), speed=speed,
                                       seed=seed), np.float32)


def motion_classes(batch_size, num_frames, *, size=(16, 16), speed=1.0, seed=0):
  """Motion classes (``sl.data.motion_classes``): (video, labels int32 (B,))."""
  v, y = data.motion_classes(batch_size, num_frames, size=tuple(size), speed=speed, seed=seed)
  return np.asarray(v, np.float32), np.asarray(y, np.int32)


def num_motion_classes() -> int:
  """The number of motion classes, ``len(data.MOTION_CLASS_NAMES)``."""
  return len(data.MOTION_CLASS_NAMES)


def class_accuracy(confusion) -> dict:
  """``{class name: recall}`` from a motion-classes confusion matrix (rows: true class)."""
  confusion = np.asarray(confusion)
  totals = confusion.sum(axis=1)
  return {name: float(confusion[i, i] / totals[i]) if totals[i] else float("nan")
          for i, name in enumerate(data.MOTION_CLASS_NAMES)}


# ---------------------------------------------------------------------------------------------
# Losses and metrics
# ---------------------------------------------------------------------------------------------

def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``mean_b -log softmax(logits_b)[label_b]``; logits (B, K), labels int (B,)."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """``mean (pred - target)^2`` over every element (the batch mean of per-frame MSE)."""
  return jnp.mean(jnp.square(pred - target))


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
  x = np.arange(size) - (size - 1) / 2
  g = np.exp(-x ** 2 / (2 * sigma ** 2))
  g = g / g.sum()
  return np.outer(g, g).astype(np.float32)


def ssim(a, b, *, window: int = 7, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
  """Structural similarity of frames (..., H, W, C), one value per frame (mean over pixels
  and channels), with a Gaussian window (VALID filtering; the window shrinks to fit small
  frames) and the usual constants ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  lead, (H, W, C) = a.shape[:-3], a.shape[-3:]
  win = min(window, H, W)
  kern = jnp.asarray(_gaussian_window(win, sigma))[:, :, None, None]

  def filt(x):  # x: (N, H, W, C) -> per-channel filtered (N, h, w, C)
    x = jnp.moveaxis(x, -1, 1).reshape(-1, H, W, 1)
    y = jax.lax.conv_general_dilated(x, kern, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y

  a2 = a.reshape((-1, H, W, C))
  b2 = b.reshape((-1, H, W, C))
  mu_a, mu_b = filt(a2), filt(b2)
  s_aa = filt(a2 * a2) - mu_a ** 2
  s_bb = filt(b2 * b2) - mu_b ** 2
  s_ab = filt(a2 * b2) - mu_a * mu_b
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
  per = m.reshape((-1, C) + m.shape[1:3]).mean(axis=(1, 2, 3))
  return np.asarray(per).reshape(lead)


def psnr_from_mse(m, data_range: float = 1.0):
  """``10 log10(R^2 / mse)`` (mse clamped at 1e-10)."""
  return 10.0 * np.log10(data_range ** 2 / np.maximum(np.asarray(m, np.float64), 1e-10))


def grad_cosine(g1, g2, eps: float = 1e-12) -> np.ndarray:
  """Per-unit cosine similarity of two gradients (tuples of L per-unit pytrees): (L,) array.

  ``cos_k = <g1_k, g2_k> / (|g1_k| |g2_k|)`` over all of unit k's parameters (NaN where
  either gradient of the unit is zero)."""
  if len(g1) != len(g2):
    raise ValueError(f"g1 and g2 must have the same number of units, got {len(g1)} and "
                     f"{len(g2)}")
  out = []
  for a, b in zip(g1, g2):
    va = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(a)])
    vb = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(b)])
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    out.append(float(va @ vb / (na * nb)) if na > eps and nb > eps else float("nan"))
  return np.asarray(out)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """The data and targets of a task.

  Attributes:
    task: "motion-classes" or "next-frame".
    num_frames: T, frames per clip.
    size: (H, W) of the frames.
    speed: pixels per frame of the motion (the smoothness knob).
    horizon: h, the prediction horizon (next-frame only).
  """
  task: str = "motion-classes"
  num_frames: int = 12
  size: tuple = (16, 16)
  speed: float = 1.0
  horizon: int = 1

  def __post_init__(self):
    check_task(self.task)
    if not isinstance(self.num_frames, int) or isinstance(self.num_frames, bool) \
        or self.num_frames < 2:
      raise ValueError(f"num_frames must be an int >= 2, got {self.num_frames!r}")
    size = tuple(self.size)
    if len(size) != 2 or any((not isinstance(s, int)) or s < 4 for s in size):
      raise ValueError(f"size must be (H, W) with ints >= 4, got {self.size!r}")
    object.__setattr__(self, "size", size)
    if not (isinstance(self.speed, (int, float)) and np.isfinite(self.speed) and self.speed >= 0):
      raise ValueError(f"speed must be a finite number >= 0, got {self.speed!r}")
    if not isinstance(self.horizon, int) or self.horizon < 1 or self.horizon >= self.num_frames:
      raise ValueError(f"horizon must be an int in 1..num_frames-1={self.num_frames - 1}, got "
                       f"{self.horizon!r}")

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["size"] = list(self.size)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "TaskConfig":
    d = dict(d)
    if "size" in d:
      d["size"] = tuple(d["size"])
    return cls(**d)


class Task:
  """A task: batches ``(video, targets, extras)``, a loss, a mask and metrics.

  ``loss_fn`` is one function object per task class (so jitted steps do not recompile).
  """

  kind: str = ""

  def __init__(self, config: TaskConfig):
    self.config = config

  @property
  def mask(self):
    """(T,) bool array of ticks with a target, or None (every tick)."""
    return None

  def batch(self, batch_size: int, seed: int):
    raise NotImplementedError

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    raise NotImplementedError


class Classification(Task):
  """Motion classes: the clip's label at every tick, cross-entropy loss."""

  kind = "classification"
  loss_fn = staticmethod(cross_entropy)

  @property
  def num_classes(self) -> int:
    return num_motion_classes()

  @property
  def chance(self) -> float:
    return 1.0 / self.num_classes

  def batch(self, batch_size: int, seed: int):
    """``(video (B,T,H,W,C), targets int32 (B,T), {"labels": (B,)})``."""
    c = self.config
    video, labels = motion_classes(batch_size, c.num_frames, size=c.size, speed=c.speed,
                                   seed=seed)
    targets = np.repeat(labels[:, None], c.num_frames, axis=1).astype(np.int32)
    return video, targets, {"labels": labels}

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    """Clip accuracy from the mean logits over V; per-tick accuracy over V; the loss; and
    ``confusion`` (K, K) int counts of clips, rows the true class, columns the predicted one
    (an array: :meth:`~sideways_lab.training.Trainer.evaluate` sums it over batches instead of averaging)."""
    logits = np.asarray(outputs, np.float64)[:, np.asarray(loss_ticks, bool)]   # (B, |V|, K)
    labels = np.asarray(extras["labels"])
    clip_pred = logits.mean(axis=1).argmax(-1)
    tick_correct = logits.argmax(-1) == labels[:, None]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    ce = -np.take_along_axis(logp, np.broadcast_to(labels[:, None, None], logp.shape[:2] + (1,)),
                             -1).mean()
    K = logits.shape[-1]
    confusion = np.bincount(labels * K + clip_pred, minlength=K * K).reshape(K, K)
    return {"accuracy": float((clip_pred == labels).mean()),
            "tick_accuracy": float(tick_correct.mean()),
            "loss": float(ce),
            "confusion": confusion}


class NextFrame(Task):
  """Next-frame prediction: target ``x_{t+h}``, masked where absent; MSE loss."""

  kind = "prediction"
  loss_fn = staticmethod(mse)
  chance = None

  @property
  def mask(self):
    c = self.config
    return np.arange(c.num_frames) + c.horizon < c.num_frames

  def batch(self, batch_size: int, seed: int):
    """``(video, targets (B,T,H,W,C) = x_{t+h} (zeros where masked), {})``."""
    c = self.config
    video = moving_digits(batch_size, c.num_frames, size=c.size, speed=c.speed, seed=seed)
    return video, shift_targets(video, c.horizon), {}

  def metrics(self, outputs, targets, loss_ticks, extras) -> dict:
    """MSE, PSNR (mean of per-frame PSNR) and SSIM over the frames of V."""
    V = np.asarray(loss_ticks, bool)
    out = np.asarray(outputs, np.float32)[:, V]
    tgt = np.asarray(targets, np.float32)[:, V]
    per_frame = np.mean((out - tgt) ** 2, axis=(2, 3, 4))
    return {"mse": float(per_frame.mean()),
            "psnr": float(psnr_from_mse(per_frame).mean()),
            "ssim": float(np.mean(ssim(out, tgt))),
            "loss": float(per_frame.mean())}


def shift_targets(video, horizon: int = 1) -> np.ndarray:
  """``targets[:, t] = x_{t+h}`` for ``t + h < T``, zeros after: (B, T, ...)."""
  video = np.asarray(video)
  targets = np.zeros_like(video)
  targets[:, :video.shape[1] - horizon] = video[:, horizon:]
  return targets


def make_task(config: TaskConfig) -> Task:
  """The :class:`Task` of ``config.task``."""
  if not isinstance(config, TaskConfig):
    raise TypeError(f"config must be a TaskConfig, got {type(config).__name__}")
  return Classification(config) if config.task == "motion-classes" else NextFrame(config)
