"""Tasks: targets, masks, metrics and the cosine helper."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sideways_lab as sl
from sideways_lab import tasks


def test_next_frame_targets_and_mask():
  t = tasks.make_task(tasks.TaskConfig("next-frame", num_frames=6, size=(8, 8), horizon=2))
  video, targets, _ = t.batch(2, seed=3)
  assert video.shape == (2, 6, 8, 8, 1) and video.dtype == np.float32
  np.testing.assert_array_equal(targets[:, :4], video[:, 2:])
  assert not targets[:, 4:].any()
  np.testing.assert_array_equal(t.mask, [1, 1, 1, 1, 0, 0])
  v2, _, _ = t.batch(2, seed=3)
  np.testing.assert_array_equal(video, v2)  # deterministic in the seed


def test_classification_batch_and_metrics():
  t = tasks.make_task(tasks.TaskConfig("motion-classes", num_frames=4, size=(8, 8)))
  video, targets, extras = t.batch(3, seed=0)
  assert targets.shape == (3, 4) and (targets == extras["labels"][:, None]).all()
  K = t.num_classes
  assert t.chance == pytest.approx(1 / K)
  labels = np.array([0, 1, 2])
  logits = np.zeros((3, 4, K))
  logits[np.arange(3), :, labels] = 1.0  # right at every tick
  logits[0, 0, 3] = 10.0  # wrong at tick 0 of clip 0 (not a loss tick)
  logits[1, 1, 3] = 1.5  # wrong at tick 1 of clip 1, clip still right
  V = np.array([False, True, True, True])
  m = t.metrics(logits, targets, V, {"labels": labels})
  assert m["accuracy"] == 1.0
  assert m["tick_accuracy"] == pytest.approx(8 / 9)
  assert m["loss"] > 0
  np.testing.assert_array_equal(
    m["confusion"], np.eye(K, dtype=int)[[0, 1, 2]].T @ np.eye(K, dtype=int)[[0, 1, 2]]
  )
  # clip 2 predicted as class 5 over V: one off-diagonal count, row = true class 2
  logits[2, 1:, 5] = 3.0
  m = t.metrics(logits, targets, V, {"labels": labels})
  assert m["accuracy"] == pytest.approx(2 / 3)
  assert m["confusion"][2, 5] == 1 and m["confusion"][2, 2] == 0 and m["confusion"].sum() == 3
  acc = tasks.class_accuracy(m["confusion"])
  assert list(acc) == list(sl.data.MOTION_CLASS_NAMES)
  assert acc["right"] == 1.0 and acc["down"] == 0.0 and np.isnan(acc["up"])


def test_prediction_metrics():
  t = tasks.make_task(tasks.TaskConfig("next-frame", num_frames=4, size=(8, 8)))
  video, targets, _ = t.batch(2, seed=1)
  V = np.array([True, True, True, False])
  perfect = t.metrics(targets, targets, V, {})
  assert perfect["mse"] == 0 and perfect["ssim"] == pytest.approx(1.0, abs=1e-5)
  assert perfect["psnr"] == pytest.approx(100.0)
  noisy = t.metrics(np.clip(targets + 0.1, 0, 1), targets, V, {})
  assert 0 < noisy["mse"] <= 0.01 + 1e-6 and noisy["psnr"] >= 20 - 1e-3 and noisy["ssim"] < 1


def test_ssim_properties():
  rng = np.random.default_rng(0)
  a = rng.random((3, 8, 8, 1)).astype(np.float32)
  b = rng.random((3, 8, 8, 1)).astype(np.float32)
  s = tasks.ssim(a, b)
  assert s.shape == (3,)
  np.testing.assert_allclose(tasks.ssim(a, a), 1.0, atol=1e-5)
  assert (s < 0.5).all()
  np.testing.assert_allclose(tasks.ssim(a, b), tasks.ssim(b, a), atol=1e-6)


def test_grad_cosine():
  g = ({"a": {"w": jnp.array([1.0, 0.0])}}, {"b": {"w": jnp.array([1.0, 2.0])}})
  h = ({"a": {"w": jnp.array([0.0, 3.0])}}, {"b": {"w": jnp.array([-2.0, -4.0])}})
  np.testing.assert_allclose(tasks.grad_cosine(g, h), [0.0, -1.0], atol=1e-6)
  np.testing.assert_allclose(tasks.grad_cosine(g, g), [1.0, 1.0], atol=1e-6)
  zero = jax.tree_util.tree_map(jnp.zeros_like, g)
  assert (
    np.isnan(tasks.grad_cosine(g, zero)).all() and np.isnan(tasks.grad_cosine(zero, zero)).all()
  )
  with pytest.raises(ValueError, match="units"):
    tasks.grad_cosine(g, g[:1])


def test_cosine_convention_for_zero_vectors():
  """One cosine for the package: NaN where either vector is zero, batched along leading axes."""
  a = jnp.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
  b = jnp.array([[6.0, 8.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
  c = np.asarray(tasks.cosine(a, b))
  np.testing.assert_allclose(c[0], 1.0, atol=1e-6)
  assert np.isnan(c[1:]).all()
  with pytest.raises(ValueError, match="same shape"):
    tasks.cosine(a, b[:, :1])


def test_bad_task_config():
  with pytest.raises(ValueError, match="task"):
    tasks.TaskConfig("kinetics")
  with pytest.raises(ValueError, match="horizon"):
    tasks.TaskConfig("next-frame", num_frames=4, horizon=4)
  with pytest.raises(ValueError, match="num_frames"):
    tasks.TaskConfig(num_frames=1)
  with pytest.raises(ValueError, match="size"):
    tasks.TaskConfig(size=(2, 8))
