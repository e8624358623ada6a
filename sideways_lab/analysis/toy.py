"""Small, self-contained models, tasks and data for the analysis sweeps.

The sweeps need tiny networks that compile fast on a CPU; these are written here so that
the analysis does not depend on the exact names of ``sl.models``.

* :func:`conv_units` — L conv units that keep the frame's spatial shape: unit k computes
  ``tanh(Σ_e conv3x3_{k,e}(inputs[e]))`` (one conv per input, so skips merge by a sum) and
  the last unit is linear with ``out_channels`` channels (a frame, for next-frame prediction).
* :func:`graph_for` — a cached chain (Sideways) or skip (Skip-Sideways) graph of such units
  (cached so that repeated sweeps reuse the engine's compiled functions).
* :func:`next_frame_task` — targets ``y^t = x_{t+1}`` (the last tick masked) and an MSE loss.
* :func:`digits_video` — moving digits from ``sl.data.moving_digits`` (a small fallback is
  used only while that module is unavailable).
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab.graph import UnitGraph, chain_edges, skip_edges
from sideways_lab.models import Conv   # im2col conv: its gradient is fast inside lax.scan on CPU

SCHEMES = ("sideways", "skip_sideways")


def check_scheme(scheme) -> str:
  """Returns ``scheme`` or raises a ValueError naming the toy schemes."""
  if scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
  return scheme


def conv_units(num_units: int, width: int = 8, out_channels: int = 1) -> list:
  """L conv units, shape-preserving; the last is linear with ``out_channels`` channels."""
  def make(k):
    last = k == num_units

    def unit(inputs):
      ch = out_channels if last else width
      h = sum(Conv(ch, 3, name=f"conv{e}")(x) for e, x in enumerate(inputs))
      return h if last else jnp.tanh(h)
    return unit
  return [make(k) for k in range(1, num_units + 1)]


def mlp_units(num_units: int, width: int, frame_shape) -> list:
  """L dense units: unit k computes ``tanh(Σ_e W_{k,e} flatten(inputs[e]) + b_k)``; the last
  is linear and reshapes to ``frame_shape`` (H, W, C).

  Dense weights are position-specific, so a gradient computed with a stale activation (a
  digit elsewhere on the canvas) points elsewhere: alignment is sensitive to motion.
  """
  frame_shape = tuple(int(s) for s in frame_shape)
  n_out = int(np.prod(frame_shape))

  def make(k):
    last = k == num_units

    def unit(inputs):
      B = inputs[0].shape[0]
      n = n_out if last else width
      h = sum(hk.Linear(n, with_bias=(e == 0), name=f"linear{e}")(x.reshape(B, -1))
              for e, x in enumerate(inputs))
      return h.reshape((B,) + frame_shape) if last else jnp.tanh(h)
    return unit
  return [make(k) for k in range(1, num_units + 1)]


MODELS = ("mlp", "conv")


@functools.lru_cache(maxsize=64)
def graph_for(scheme: str, num_units: int, width: int = 8, frame_shape=(16, 16, 1),
              model: str = "mlp", span: int = 2) -> UnitGraph:
  """A chain (``"sideways"``) or skip (``"skip_sideways"``) graph of toy units.

  ``model="mlp"`` (:func:`mlp_units`, the default of the sweeps) or ``"conv"``
  (:func:`conv_units`). Cached, so repeated calls reuse the engine's compiled functions.
  """
  check_scheme(scheme)
  if model not in MODELS:
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")
  frame_shape = tuple(frame_shape)
  edges = chain_edges(num_units) if scheme == "sideways" else skip_edges(num_units, span)
  units = (mlp_units(num_units, width, frame_shape) if model == "mlp"
           else conv_units(num_units, width, frame_shape[-1]))
  return UnitGraph(units, edges, name=scheme)


def mse(output, target):
  """Mean squared error (batch mean): the loss of next-frame prediction."""
  return jnp.mean((output - target) ** 2)


def next_frame_task(video):
  """Targets ``y^t = x_{t+1}`` (the last frame repeated at the masked last tick) and the mask.

  Returns ``(targets (B, T, H, W, C), mask (T,) bool)``.
  """
  video = np.asarray(video)
  targets = np.concatenate([video[:, 1:], video[:, -1:]], axis=1)
  mask = np.ones(video.shape[1], bool)
  mask[-1] = False
  return targets, mask


def digits_video(batch_size: int, num_frames: int, size=(16, 16), speed: float = 1.0,
                 seed: int = 0) -> np.ndarray:
  """Moving digits (B, T, H, W, 1) float32 (``sl.data.moving_digits``)."""
  from sideways_lab.data import moving_digits
  return np.asarray(moving_digits(batch_size, num_frames, size=tuple(size), speed=float(speed),
                                  seed=seed), np.float32)
