"""Offline synthetic video: moving digits and motion classes.

Both generators draw the 8x8 digits that scikit-learn ships
(``sklearn.datasets.load_digits``, 1797 images, no download), are
deterministic functions of their seed, store nothing on disk and return NumPy
float32 arrays ``(B, T, H, W, 1)`` in ``[0, 1]``.

**Moving digits** (``moving_digits``): ``num_digits`` digits, upsampled to
``digit_size`` pixels, move in straight lines at ``speed`` pixels per frame and
bounce off the canvas walls.  Digit ``k`` of clip ``b`` has top-left corner::

    p(t) = reflect_L(p0 + speed * t * (sin phi, cos phi)),
    reflect_L(x) = L - | (x mod 2L) - L |,   L = (H or W) - digit_size - 1,

with ``p0`` uniform in ``[0, L]^2`` and ``phi`` uniform in ``[0, 2 pi)``, and is
drawn with bilinear sub-pixel placement (so slow speeds move smoothly);
overlapping digits combine by a pixelwise maximum.  ``speed`` is the smoothness
knob: the displacement between consecutive frames.  ``speed = 0`` (and
``noise = 0``) gives a perfectly static video, every frame identical.  Then an
optional static grey occluder (``occlusion`` = fraction of the canvas area it
covers, value 0.5) is drawn on top, and Gaussian noise of std ``noise`` is
added (and the result clipped to ``[0, 1]``).

**Motion classes** (``motion_classes``): one random digit (random brightness on a
random background level) per clip, whose label is its motion:
``MOTION_CLASS_NAMES = (right, left, down, up, clockwise, anticlockwise, grow,
shrink)``.  Clip ``b`` with label ``k`` draws a digit, a brightness, a background
level, a centre ``c_b`` uniform on the ``H x W`` torus, an angle ``theta_b``
uniform in ``[0, 2 pi)`` and a size phase ``u_b`` uniform in ``[0, S)``, the same
draws whatever ``k``, and shows at frame ``t``::

    centre(t)     = (c_b + speed * d_k * t) mod (H, W),
    angle(t)      = (theta_b + s_k * omega * t) mod 2 pi,
    log radius(t) = log r_min + ((u_b + g_k * g * t) mod S),   S = log(r_max / r_min),

with ``d_k`` the unit direction of ``right``/``left``/``down``/``up`` (else 0),
``s_k = +1 / -1`` for ``clockwise``/``anticlockwise`` (else 0), ``g_k = +1 / -1``
for ``grow``/``shrink`` (else 0), and the rates ``omega``, ``g`` of
:func:`motion_classes`.  The log-radius moves at a constant rate on a bounded
range and wraps: a growing digit jumps from ``r_max`` back to ``r_min`` once every
``S / g`` frames (a shrinking one from ``r_min`` to ``r_max``).  A uniform variable
plus a constant, modulo its range, is uniform again, so at *every* frame index
``t`` the centre, angle and log-radius are uniform and independent of each other
and of the digit, brightness and background, in every class: each single frame,
at whatever time, has exactly the same distribution in every class.  A per-frame
model (for example one that sees only the frames that reach a pipelined chain's
loss ticks) is therefore at chance (``1 / 8``); only a model that compares frames
can beat it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from sideways_lab.data import _checks
from sideways_lab.data._checks import ArrayLike, Size
from sideways_lab.data.video import resize_frames

#: The motion classes of :func:`motion_classes`, in label order.
MOTION_CLASS_NAMES: tuple[str, ...] = (
  "right",
  "left",
  "down",
  "up",
  "clockwise",
  "anticlockwise",
  "grow",
  "shrink",
)

OCCLUDER_VALUE = 0.5


@functools.lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
  """The 1797 scikit-learn digits as float32 ``(N, 8, 8)`` in ``[0, 1]``."""
  from sklearn.datasets import load_digits  # here, not at the top: 0.9 s to import

  images = load_digits().images.astype(np.float32) / 16.0
  images.setflags(write=False)
  return images


@functools.lru_cache(maxsize=1)
def _digit_targets() -> np.ndarray:
  """The class (0-9) of each of the 1797 scikit-learn digits, int ``(N,)``."""
  from sklearn.datasets import load_digits  # here, not at the top: 0.9 s to import

  targets = load_digits().target.astype(np.int32)
  targets.setflags(write=False)
  return targets


@functools.lru_cache(maxsize=8)
def _upsampled_digits(digit_size: int) -> np.ndarray:
  """Digits resized (antialiased bilinear) to ``(N, d, d)``, in ``[0, 1]``."""
  images = _digit_images()
  up = resize_frames(images[..., None], (digit_size, digit_size))[..., 0]
  up = np.clip(up, 0.0, 1.0)
  up.setflags(write=False)
  return up


def _check_common(batch_size, num_frames, size, seed):
  batch_size = _checks.positive_int(batch_size, "batch_size")
  num_frames = _checks.positive_int(num_frames, "num_frames")
  size = _checks.size_hw(size, allow_none=False)
  if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"`seed` must be an int, got {seed!r}.")
  return batch_size, num_frames, size, int(seed)


# ----------------------------------------------------------------------------
# Moving digits.
# ----------------------------------------------------------------------------


def _moving_digits_config(
  batch_size, num_frames, size, num_digits, speed, digit_size, noise, occlusion, seed
):
  batch_size, num_frames, (h, w), seed = _check_common(batch_size, num_frames, size, seed)
  num_digits = _checks.positive_int(num_digits, "num_digits")
  speed = _checks.real_in(speed, "speed", 0.0, math.inf, hi_open=True)
  noise = _checks.real_in(noise, "noise", 0.0, math.inf, hi_open=True)
  occlusion = _checks.real_in(occlusion, "occlusion", 0.0, 1.0, hi_open=True)
  if digit_size is None:
    digit_size = max(4, min(round(28 * min(h, w) / 64), min(h, w) - 1))
  digit_size = _checks.positive_int(digit_size, "digit_size")
  if digit_size > min(h, w) - 1:
    raise ValueError(
      f"`digit_size`={digit_size} must be smaller than the canvas size {(h, w)} minus one."
    )
  return dict(
    batch_size=batch_size,
    num_frames=num_frames,
    h=h,
    w=w,
    num_digits=num_digits,
    speed=speed,
    d=digit_size,
    noise=noise,
    occlusion=occlusion,
  ), seed


def _reflect(x: np.ndarray, length: float) -> np.ndarray:
  """Triangle wave folding the real line onto ``[0, length]`` (bounces)."""
  if length <= 0:
    return np.zeros_like(x)
  m = np.mod(x, 2.0 * length)
  return np.where(m > length, 2.0 * length - m, m)


def _render_moving_digits(
  rng: np.random.Generator, *, batch_size, num_frames, h, w, num_digits, speed, d, noise, occlusion
) -> np.ndarray:
  b, t_len, k_len = batch_size, num_frames, num_digits
  digits = _upsampled_digits(d)
  # Random draws, in a fixed order (determinism).
  which = rng.integers(0, digits.shape[0], size=(b, k_len))
  lengths = np.array([h - d - 1, w - d - 1], np.float64)  # Range of the top-left.
  p0 = rng.uniform(0.0, 1.0, size=(b, k_len, 2)) * lengths
  phi = rng.uniform(0.0, 2.0 * np.pi, size=(b, k_len))

  t = np.arange(t_len, dtype=np.float64)
  velocity = speed * np.stack([np.sin(phi), np.cos(phi)], -1)  # (B, K, 2)
  raw = p0[:, :, None, :] + velocity[:, :, None, :] * t[None, None, :, None]
  pos = np.stack(
    [_reflect(raw[..., 0], lengths[0]), _reflect(raw[..., 1], lengths[1])], -1
  )  # (B, K, T, 2), top-left corner in [0, L].

  canvas = np.zeros((b, t_len, h, w), np.float32)
  offsets = np.arange(d + 1)
  bi = np.arange(b)[:, None, None, None]
  ti = np.arange(t_len)[None, :, None, None]
  for k in range(k_len):
    ipos = np.floor(pos[:, k]).astype(np.int64)  # (B, T, 2)
    ipos = np.minimum(ipos, lengths.astype(np.int64))
    frac = (pos[:, k] - ipos).astype(np.float32)
    fy = frac[..., 0][..., None, None]
    fx = frac[..., 1][..., None, None]
    padded = np.pad(digits[which[:, k]], ((0, 0), (1, 1), (1, 1)))[:, None]
    # Bilinear shift by (fy, fx): canvas pixel (iy + r) sees digit row r - fy.
    patch = (
      (1 - fy) * (1 - fx) * padded[..., 1:, 1:]
      + (1 - fy) * fx * padded[..., 1:, :-1]
      + fy * (1 - fx) * padded[..., :-1, 1:]
      + fy * fx * padded[..., :-1, :-1]
    )  # (B, T, d+1, d+1)
    rows = (ipos[..., 0][..., None] + offsets)[:, :, :, None]
    cols = (ipos[..., 1][..., None] + offsets)[:, :, None, :]
    canvas[bi, ti, rows, cols] = np.maximum(canvas[bi, ti, rows, cols], patch)

  if occlusion > 0:
    oh = max(1, round(h * math.sqrt(occlusion)))
    ow = max(1, round(w * math.sqrt(occlusion)))
    top = rng.integers(0, h - oh + 1, size=b)
    left = rng.integers(0, w - ow + 1, size=b)
    yy = np.arange(h)[None, :, None]
    xx = np.arange(w)[None, None, :]
    mask = (
      (yy >= top[:, None, None])
      & (yy < (top + oh)[:, None, None])
      & (xx >= left[:, None, None])
      & (xx < (left + ow)[:, None, None])
    )
    canvas = np.where(mask[:, None], np.float32(OCCLUDER_VALUE), canvas)
  if noise > 0:
    canvas = canvas + np.float32(noise) * rng.standard_normal(canvas.shape, dtype=np.float32)
  return np.clip(canvas, 0.0, 1.0, out=canvas)[..., None], which


def moving_digits(
  batch_size: int,
  num_frames: int,
  *,
  size: Size = (64, 64),
  num_digits: int = 1,
  speed: float = 2.0,
  digit_size: int | None = None,
  noise: float = 0.0,
  occlusion: float = 0.0,
  seed: int = 0,
  return_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """One batch of bouncing scikit-learn digits (see the module docstring).

  Args:
    batch_size: ``B``, number of clips.
    num_frames: ``T``, frames per clip.
    size: canvas ``(H, W)`` (or an int for a square).
    num_digits: digits per clip.
    speed: pixels per frame, ``>= 0``; the smoothness of the video.  ``0``
      gives a static video (all frames identical when ``noise = 0``).
    digit_size: side of a digit in pixels (``< min(H, W)``); default
      ``28 * min(H, W) / 64`` as in Moving MNIST.
    noise: std of additive Gaussian pixel noise (``>= 0``), then clipped.
    occlusion: area fraction in ``[0, 1)`` of a static grey rectangle drawn
      over the digits.
    seed: the batch is a deterministic function of the seed and the knobs.
    return_labels: also return the identity (0-9) of each clip's digits.

  Returns:
    float32 array ``(B, T, H, W, 1)`` in ``[0, 1]``.  Equal to the first batch
    of ``moving_digits_batches`` with the same arguments.  With
    ``return_labels``: ``(video, labels)``, labels int32 ``(B, num_digits)`` (the
    digits' classes; the video is the same as without them).
  """
  config, seed = _moving_digits_config(
    batch_size, num_frames, size, num_digits, speed, digit_size, noise, occlusion, seed
  )
  video, which = _render_moving_digits(np.random.default_rng(seed), **config)
  if return_labels:
    return video, _digit_targets()[which].astype(np.int32)
  return video


def moving_digits_batches(
  batch_size: int, num_frames: int, *, seed: int = 0, **knobs
) -> Iterator[np.ndarray]:
  """An endless iterator of :func:`moving_digits` batches, each different.

  The sequence of batches is a deterministic function of ``seed`` and the
  knobs (``size``, ``num_digits``, ``speed``, ``digit_size``, ``noise``,
  ``occlusion``; same meaning and defaults as :func:`moving_digits`).
  Arguments are checked when this function is called, not at the first
  ``next``.

  Yields:
    float32 arrays ``(B, T, H, W, 1)`` in ``[0, 1]``.
  """
  allowed = {"size", "num_digits", "speed", "digit_size", "noise", "occlusion"}
  unknown = set(knobs) - allowed
  if unknown:
    raise TypeError(
      f"moving_digits_batches() got unexpected keyword arguments "
      f"{sorted(unknown)}; allowed: {sorted(allowed)}."
    )
  defaults = dict(size=(64, 64), num_digits=1, speed=2.0, digit_size=None, noise=0.0, occlusion=0.0)
  defaults.update(knobs)
  config, seed = _moving_digits_config(batch_size, num_frames, seed=seed, **defaults)

  def generate():
    rng = np.random.default_rng(seed)
    while True:
      yield _render_moving_digits(rng, **config)[0]

  return generate()


# ----------------------------------------------------------------------------
# Motion classes.
# ----------------------------------------------------------------------------

# The range [r_min, r_max] of the object's half-width (fraction of min(H, W)) in every frame.
_RADIUS_RANGE = (0.1, 0.4)
_MAX_SCALE_CHANGE = 2.5  # Grow/shrink change the size by at most this factor over a clip.


def _motion_config(batch_size, num_frames, size, seed, speed, noise):
  batch_size, num_frames, (h, w), seed = _check_common(batch_size, num_frames, size, seed)
  speed = _checks.real_in(speed, "speed", 0.0, math.inf, hi_open=True)
  if speed == 0:
    raise ValueError(
      "`speed` must be > 0 for motion_classes: with no motion the classes are indistinguishable."
    )
  noise = _checks.real_in(noise, "noise", 0.0, math.inf, hi_open=True)
  if min(h, w) < 8:
    raise ValueError(f"`size` must be at least 8x8 for motion_classes, got {(h, w)}.")
  return dict(
    batch_size=batch_size, num_frames=num_frames, h=h, w=w, speed=speed, noise=noise
  ), seed


def _bilinear_sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """Samples ``images`` (B, n, n) at continuous (rows, cols) (B, ...) with zeros
  outside; pixel ``i`` has its centre at coordinate ``i``."""
  n = images.shape[-1]
  pad = 2
  m = n + 2 * pad
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad))).reshape(-1)
  r = np.clip(rows + np.float32(pad), 0.0, m - 1.001)
  c = np.clip(cols + np.float32(pad), 0.0, m - 1.001)
  r0 = r.astype(np.int32)  # floor, as r >= 0.
  c0 = c.astype(np.int32)
  fr = r - r0
  fc = c - c0
  base = (np.arange(images.shape[0], dtype=np.int32) * (m * m)).reshape(
    (-1,) + (1,) * (rows.ndim - 1)
  )
  flat = base + r0 * m + c0
  top = (1 - fc) * np.take(padded, flat) + fc * np.take(padded, flat + 1)
  bottom = (1 - fc) * np.take(padded, flat + m) + fc * np.take(padded, flat + m + 1)
  return (1 - fr) * top + fr * bottom


_CHUNK = 8


def _warp(images, centre, angle, radius, h, w):
  """Renders ``images`` (b, n, n) centred at ``centre`` (b, T, 2), rotated by
  ``angle`` (b, T) and of half-width ``radius`` (b, T) on an (h, w) torus."""
  f32 = np.float32
  yy = np.arange(h, dtype=f32)[None, None, :, None]
  xx = np.arange(w, dtype=f32)[None, None, None, :]
  cy = centre[..., 0].astype(f32)[..., None, None]
  cx = centre[..., 1].astype(f32)[..., None, None]
  # Torus displacement of each pixel from the centre.
  dy = np.mod(yy - cy + f32(h / 2.0), f32(h)) - f32(h / 2.0)  # (b, T, H, 1)
  dx = np.mod(xx - cx + f32(w / 2.0), f32(w)) - f32(w / 2.0)  # (b, T, 1, W)
  n = images.shape[-1]
  # Digit pixel coordinate = (u + 1) n / 2 - 1/2 with u = R(-angle) d / radius.
  k = (f32(n / 2.0) / radius.astype(f32))[..., None, None]
  cos = np.cos(angle).astype(f32)[..., None, None] * k
  sin = np.sin(angle).astype(f32)[..., None, None] * k
  offset = f32(n / 2.0 - 0.5)
  cols = (cos * dx + offset) + sin * dy
  rows = (cos * dy + offset) - sin * dx
  return _bilinear_sample(images, rows, cols)  # (b, T, H, W)


def _growth_rate(speed: float, r_mid: float, num_frames: int, size_range: float) -> float:
  """``g = min(speed / (2 r_mid), log(2.5) / (T - 1), S / 4)``: d log(radius) / frame.

  The rim of a digit of radius ``r_mid`` moves ~``speed / 2`` px/frame, the size changes
  by at most a factor 2.5 over a clip of ``T`` frames, and a step is at most a quarter of
  the log-radius range ``S`` (so that a step of growth, ``+g``, is never mistaken for the
  wrap of a shrinking digit, a step of ``S - g >= 3 g``)."""
  growth = min(0.5 * speed / r_mid, size_range / 4.0)
  if num_frames > 1:
    growth = min(growth, math.log(_MAX_SCALE_CHANGE) / (num_frames - 1))
  return growth


def _render_motion_classes(
  rng: np.random.Generator, *, batch_size, num_frames, h, w, speed, noise, labels=None
):
  b, t_len = batch_size, num_frames
  n_cls = len(MOTION_CLASS_NAMES)
  digits = _digit_images()
  side = min(h, w)
  log_r_min = math.log(_RADIUS_RANGE[0] * side)
  size_range = math.log(_RADIUS_RANGE[1] / _RADIUS_RANGE[0])  # S, the log-radius range.
  r_mid = side * math.sqrt(_RADIUS_RANGE[0] * _RADIUS_RANGE[1])
  omega = speed / r_mid  # rad/frame: the rim moves ~speed px/frame.
  growth = _growth_rate(speed, r_mid, t_len, size_range)

  # Random draws, in a fixed order.  Balanced labels in random order.
  drawn = rng.permutation(np.arange(b) % n_cls).astype(np.int32)
  labels = drawn if labels is None else labels  # Forced labels leave every later draw alone.
  which = rng.integers(0, digits.shape[0], size=b)
  brightness = rng.uniform(0.6, 1.0, size=b).astype(np.float32)
  background = rng.uniform(0.0, 0.2, size=b).astype(np.float32)
  centre0 = rng.uniform(0.0, 1.0, size=(b, 2)) * np.array([h, w])
  angle0 = rng.uniform(0.0, 2.0 * np.pi, size=b)
  size_phase = rng.uniform(0.0, size_range, size=b)

  t = np.arange(t_len, dtype=np.float64)
  direction = np.zeros((b, 2))  # (dy, dx) per frame.
  direction[labels == 0] = (0, 1)
  direction[labels == 1] = (0, -1)
  direction[labels == 2] = (1, 0)
  direction[labels == 3] = (-1, 0)
  centre = centre0[:, None, :] + speed * direction[:, None, :] * t[None, :, None]
  spin = np.select([labels == 4, labels == 5], [1.0, -1.0], 0.0)
  angle = angle0[:, None] + spin[:, None] * omega * t[None, :]  # Clockwise on screen.
  sense = np.select([labels == 6, labels == 7], [1.0, -1.0], 0.0)
  log_size = np.mod(size_phase[:, None] + sense[:, None] * growth * t[None, :], size_range)
  radius = np.exp(log_r_min + log_size)  # (B, T), uniform log in [log r_min, log r_max).

  # Inverse warp: torus displacement of each pixel from the centre, rotated
  # back and scaled to the digit's [-1, 1]^2 square.
  video = np.empty((b, t_len, h, w), np.float32)
  images = digits[which]
  for lo in range(0, b, _CHUNK):  # Chunks of clips keep the temporaries in cache.
    sl = slice(lo, lo + _CHUNK)
    shape = _warp(images[sl], centre[sl], angle[sl], radius[sl], h, w)
    video[sl] = (
      background[sl, None, None, None] + (brightness - background)[sl, None, None, None] * shape
    )
  if noise > 0:
    video += np.float32(noise) * rng.standard_normal(video.shape, dtype=np.float32)
  np.clip(video, 0.0, 1.0, out=video)
  return video[..., None], labels


def motion_classes(
  batch_size: int,
  num_frames: int,
  *,
  size: Size = (32, 32),
  seed: int = 0,
  speed: float = 1.0,
  noise: float = 0.0,
  labels: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """One batch of the motion-classes task (see the module docstring).

  Each clip shows one random digit (random brightness in ``[0.6, 1]`` over a
  random background level in ``[0, 0.2]``) moving on a torus; the label is
  the motion, an index into :data:`MOTION_CLASS_NAMES`:

  * ``right``/``left``/``down``/``up``: translation at ``speed`` px/frame;
  * ``clockwise``/``anticlockwise``: rotation at ``speed / r`` rad/frame
    (``r`` the typical radius, so the rim moves ~``speed`` px/frame);
  * ``grow``/``shrink``: the radius changes by a factor ``exp(+-g)`` per frame,
    ``g = min(speed / (2 r), log(2.5) / (T - 1), S / 4)``, on the range
    ``[r_min, r_max] = [0.1, 0.4] min(H, W)`` (``S = log 4``), wrapping around at its ends.

  At every frame index, single frames have the same distribution in every class
  (the module docstring gives the law), so per-frame models are at chance
  (``1 / 8``); labels are balanced within a batch.

  Args:
    batch_size: ``B``.
    num_frames: ``T`` (the task needs ``T >= 2``; 8-16 is typical).
    size: canvas ``(H, W)`` (or an int), at least 8x8.
    seed: the batch is a deterministic function of the seed and the knobs.
    speed: pixels per frame, ``> 0``.
    noise: std of additive Gaussian pixel noise, then clipped to ``[0, 1]``.
    labels: optional ``(B,)`` ints in ``[0, 8)`` that force each clip's class; every
      other draw (digit, brightness, position, angle, size) is the one the seed gives
      without them, so two calls that differ only in ``labels`` show the same digits, from
      the same first frame, moving differently (paired clips for analysis).

  Returns:
    ``(video, labels)``: float32 ``(B, T, H, W, 1)`` in ``[0, 1]`` and int32
    ``(B,)`` in ``[0, 8)``.
  """
  config, seed = _motion_config(batch_size, num_frames, size, seed, speed, noise)
  if labels is not None:
    forced = np.asarray(labels)
    if (
      forced.shape != (config["batch_size"],)
      or forced.dtype.kind not in "iu"
      or forced.min() < 0
      or forced.max() >= len(MOTION_CLASS_NAMES)
    ):
      raise ValueError(
        f"`labels` must be {config['batch_size']} ints in "
        f"[0, {len(MOTION_CLASS_NAMES)}), got {labels!r}."
      )
    config["labels"] = forced.astype(np.int32)
  return _render_motion_classes(np.random.default_rng(seed), **config)


def motion_classes_batches(
  batch_size: int,
  num_frames: int,
  *,
  size: Size = (32, 32),
  seed: int = 0,
  speed: float = 1.0,
  noise: float = 0.0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """An endless iterator of :func:`motion_classes` batches ``(video, labels)``,
  each different, deterministic from ``seed`` (the first equals
  ``motion_classes(..., seed=seed)``).  Arguments are checked at the call."""
  config, seed = _motion_config(batch_size, num_frames, size, seed, speed, noise)

  def generate():
    rng = np.random.default_rng(seed)
    while True:
      yield _render_motion_classes(rng, **config)

  return generate()
