"""The task losses and metrics (optax, dm-pix) against references written out here.

The SSIM reference is the hand-written implementation the package used before dm-pix; the
library must agree with it to 1e-4 on test clips (moving digits against their next frames, a
noisy and a blurred copy, frames smaller than the window, three channels).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sideways_lab import data, tasks

SSIM_TOLERANCE = 1e-4


def _reference_ssim(a, b, window=7, sigma=1.5, data_range=1.0):
  """Gaussian-window SSIM per frame of (..., H, W, C), VALID filtering, in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  lead, (H, W, C) = a.shape[:-3], a.shape[-3:]
  win = min(window, H, W)
  x = np.arange(win) - (win - 1) / 2
  g = np.exp(-(x**2) / (2 * sigma**2))
  kern = np.outer(g, g) / g.sum() ** 2

  def filt(z):  # (N, H, W, C) -> (N, H - win + 1, W - win + 1, C)
    h, w = H - win + 1, W - win + 1
    return sum(kern[u, v] * z[:, u : u + h, v : v + w] for u in range(win) for v in range(win))

  a2, b2 = a.reshape(-1, H, W, C), b.reshape(-1, H, W, C)
  mu_a, mu_b = filt(a2), filt(b2)
  s_aa = filt(a2 * a2) - mu_a**2
  s_bb = filt(b2 * b2) - mu_b**2
  s_ab = filt(a2 * b2) - mu_a * mu_b
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
  return m.mean(axis=(1, 2, 3)).reshape(lead)


def _clip_pairs():
  rng = np.random.default_rng(0)
  video = data.moving_digits(3, 9, size=(16, 16), speed=1.0, seed=0)  # (3, 9, 16, 16, 1)
  now, nxt = video[:, :-1], video[:, 1:]
  noisy = np.clip(now + 0.1 * rng.standard_normal(now.shape), 0, 1).astype(np.float32)
  blurred = (now + np.roll(now, 1, axis=-2) + np.roll(now, 1, axis=-3)) / 3
  small = data.moving_digits(2, 4, size=(6, 6), speed=1.0, seed=1)
  rgb = np.concatenate([now, 1 - now, noisy], axis=-1)
  return {
    "next frame": (now, nxt),
    "noisy": (now, noisy),
    "blurred": (now, blurred),
    "6x6 frames": (small[:, :-1], small[:, 1:]),
    "3 channels": (rgb, rgb[..., ::-1]),
  }


@pytest.mark.parametrize("name", list(_clip_pairs()))
def test_ssim_agrees_with_the_reference_to_1e4(name):
  a, b = _clip_pairs()[name]
  got = tasks.ssim(a, b)
  assert got.shape == a.shape[:-3]
  np.testing.assert_allclose(got, _reference_ssim(a, b), atol=SSIM_TOLERANCE)


def test_ssim_of_a_frame_with_itself_is_one():
  a = _clip_pairs()["next frame"][0]
  np.testing.assert_allclose(tasks.ssim(a, a), 1.0, atol=1e-5)


def test_cross_entropy_is_the_mean_negative_log_softmax():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 8)) * 3
  labels = jnp.array([0, 7, 3, 3, 1])
  z = np.asarray(logits, np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  ref = -logp[np.arange(5), np.asarray(labels)].mean()
  assert float(tasks.cross_entropy(logits, labels)) == pytest.approx(ref, rel=1e-6)
  # the gradient is (softmax - onehot) / B
  g = jax.grad(tasks.cross_entropy)(logits, labels)
  np.testing.assert_allclose(g, (np.exp(logp) - np.eye(8)[np.asarray(labels)]) / 5, atol=1e-6)


def test_mse_and_psnr():
  pred = np.full((2, 3, 4, 4, 1), 0.5, np.float32)
  target = pred + np.float32(0.1)
  assert float(tasks.mse(pred, target)) == pytest.approx(0.01, rel=1e-5)
  assert tasks.psnr_from_mse(0.01) == pytest.approx(20.0)
  assert tasks.psnr_from_mse(0.0) == pytest.approx(100.0)  # clamped at 1e-10
