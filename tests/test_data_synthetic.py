"""Tests of the offline synthetic video generators and of stride_frames."""

import itertools
import warnings

import numpy as np
import pytest

from sideways_lab import data

# ---------------------------------------------------------------- moving digits


def test_moving_digits_shape_dtype_range():
  video = data.moving_digits(3, 5, size=(40, 48), num_digits=2, speed=1.5)
  assert video.shape == (3, 5, 40, 48, 1)
  assert video.dtype == np.float32
  assert video.min() >= 0.0 and video.max() <= 1.0
  assert video.max() > 0.5  # Digits are drawn.


def test_moving_digits_speed_zero_is_static():
  video = data.moving_digits(4, 6, speed=0, num_digits=3, occlusion=0.1)
  assert np.array_equal(video, np.broadcast_to(video[:, :1], video.shape))
  assert video.std() > 0  # Not a blank video.


def test_moving_digits_speed_sets_displacement():
  # One digit on a big canvas, short clip: no bounce, the centre of mass
  # moves `speed` pixels per frame.
  for speed in (0.5, 2.0, 3.0):
    video = data.moving_digits(8, 3, size=(96, 96), digit_size=20, speed=speed, seed=1)[..., 0]
    ys, xs = np.mgrid[:96, :96]
    mass = video.sum((2, 3))
    cy = (video * ys).sum((2, 3)) / mass
    cx = (video * xs).sum((2, 3)) / mass
    step = np.hypot(np.diff(cy, axis=1), np.diff(cx, axis=1))
    # Digits near a wall may bounce; most clips move freely.
    assert np.median(step) == pytest.approx(speed, rel=0.05)


def test_moving_digits_stays_on_canvas_and_bounces():
  video = data.moving_digits(4, 200, size=(32, 32), speed=3.0, seed=2)
  per_frame = video.sum((2, 3, 4))
  # The digit never leaves the canvas: ink is conserved up to interpolation.
  assert per_frame.min() > 0.7 * per_frame.max(axis=1).min()


def test_moving_digits_deterministic_and_seeded():
  a = data.moving_digits(2, 4, seed=5, noise=0.1)
  b = data.moving_digits(2, 4, seed=5, noise=0.1)
  c = data.moving_digits(2, 4, seed=6, noise=0.1)
  assert np.array_equal(a, b)
  assert not np.array_equal(a, c)


def test_moving_digits_batches_infinite_distinct_deterministic():
  it1 = data.moving_digits_batches(2, 4, seed=3, size=(32, 32), speed=1.0)
  it2 = data.moving_digits_batches(2, 4, seed=3, size=(32, 32), speed=1.0)
  first = list(itertools.islice(it1, 5))
  second = list(itertools.islice(it2, 5))
  for x, y in zip(first, second):
    assert np.array_equal(x, y)
  for x, y in itertools.combinations(first, 2):
    assert not np.array_equal(x, y)
  assert np.array_equal(first[0], data.moving_digits(2, 4, seed=3, size=(32, 32), speed=1.0))


def test_moving_digits_noise_and_occlusion():
  clean = data.moving_digits(2, 3, speed=0, seed=0)
  noisy = data.moving_digits(2, 3, speed=0, seed=0, noise=0.2)
  assert 0.05 < np.abs(noisy - clean).mean() < 0.2
  occluded = data.moving_digits(2, 3, speed=0, seed=0, occlusion=0.25)
  frac = (occluded == data.synthetic.OCCLUDER_VALUE).mean(axis=(1, 2, 3, 4))
  assert np.allclose(frac, 0.25, atol=0.02)


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(speed=-1.0), ValueError, "speed"),
    (dict(noise=-0.1), ValueError, "noise"),
    (dict(occlusion=1.0), ValueError, "occlusion"),
    (dict(num_digits=0), ValueError, "num_digits"),
    (dict(size=(0, 64)), ValueError, "size"),
    (dict(size="big"), TypeError, "size"),
    (dict(digit_size=64), ValueError, "digit_size"),
    (dict(seed=1.5), TypeError, "seed"),
  ],
)
def test_moving_digits_bad_knobs(kwargs, error, match):
  with pytest.raises(error, match=match):
    data.moving_digits(1, 2, **kwargs)


def test_moving_digits_bad_sizes():
  with pytest.raises(ValueError, match="batch_size"):
    data.moving_digits(0, 2)
  with pytest.raises(TypeError, match="num_frames"):
    data.moving_digits(1, 2.0)
  with pytest.raises(TypeError, match="unexpected"):
    data.moving_digits_batches(1, 2, sped=3)
  with pytest.raises(ValueError, match="speed"):  # Checked at the call.
    data.moving_digits_batches(1, 2, speed=-1)


# --------------------------------------------------------------- motion classes


def test_motion_classes_shapes_labels():
  assert len(data.MOTION_CLASS_NAMES) >= 6
  assert len(set(data.MOTION_CLASS_NAMES)) == len(data.MOTION_CLASS_NAMES)
  video, labels = data.motion_classes(16, 6, size=(24, 28), seed=0)
  assert video.shape == (16, 6, 24, 28, 1) and video.dtype == np.float32
  assert labels.shape == (16,) and labels.dtype == np.int32
  assert video.min() >= 0 and video.max() <= 1
  # Balanced labels within a batch.
  counts = np.bincount(labels, minlength=len(data.MOTION_CLASS_NAMES))
  assert counts.min() == 2 and counts.max() == 2


def test_motion_classes_deterministic_and_batches():
  a = data.motion_classes(8, 4, seed=3)
  b = data.motion_classes(8, 4, seed=3)
  assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
  it = data.motion_classes_batches(8, 4, seed=3)
  first, second = next(it), next(it)
  assert np.array_equal(first[0], a[0]) and np.array_equal(first[1], a[1])
  assert not np.array_equal(first[0], second[0])


def test_motion_classes_motion_is_what_the_label_says():
  # Translation classes: the content of frame t+1 is frame t shifted by `speed`
  # pixels (the canvas is a torus), in the labelled direction.
  video, labels = data.motion_classes(32, 3, size=(32, 32), speed=2.0, seed=4)
  shifts = {0: (0, 2), 1: (0, -2), 2: (2, 0), 3: (-2, 0)}
  for b in range(32):
    label = int(labels[b])
    if label in shifts:
      rolled = np.roll(video[b, 0, ..., 0], shifts[label], axis=(0, 1))
      assert np.abs(rolled - video[b, 1, ..., 0]).max() < 1e-4
    elif label in (6, 7):  # Grow / shrink: ink increases / decreases.
      ink = video[b, :, ..., 0].sum((1, 2))
      assert (np.diff(ink) > 0).all() if label == 6 else (np.diff(ink) < 0).all()


def test_motion_classes_forced_labels_pair_the_clips():
  """Forcing labels keeps every other draw: right/left (and clockwise/anticlockwise)
  versions of a seed share their first frame and differ afterwards."""
  free, free_labels = data.motion_classes(6, 4, size=16, seed=5, speed=2.0)
  pairs = {}
  for label in (0, 1, 4, 5):
    video, labels = data.motion_classes(6, 4, size=16, seed=5, speed=2.0, labels=[label] * 6)
    assert labels.dtype == np.int32 and (labels == label).all()
    pairs[label] = video
  for a, b in ((0, 1), (4, 5)):
    assert np.array_equal(pairs[a][:, 0], pairs[b][:, 0])
    assert np.abs(pairs[a][:, 1:] - pairs[b][:, 1:]).max() > 0.1
  # forcing the labels the seed draws anyway reproduces the unforced batch exactly
  forced, _ = data.motion_classes(6, 4, size=16, seed=5, speed=2.0, labels=free_labels)
  assert np.array_equal(forced, free)
  for bad in ([0] * 5, [8] * 6, [-1] * 6, [0.5] * 6):
    with pytest.raises(ValueError, match="labels"):
      data.motion_classes(6, 4, size=16, seed=5, labels=bad)


def _random_conv_features(chans, filters):
  """ReLU of a fixed random circular convolution, averaged over positions:
  position-invariant, nonlinear features.  chans (N, C, H, W), filters
  (K, C, k, k) -> (N, K)."""
  h, w = chans.shape[-2:]
  kernel = np.zeros(filters.shape[:2] + (h, w), np.float32)
  kernel[..., : filters.shape[-2], : filters.shape[-1]] = filters
  spectrum = np.einsum("nchw,kchw->nkhw", np.fft.rfft2(chans), np.fft.rfft2(kernel))
  z = np.fft.irfft2(spectrum, s=(h, w))
  return np.maximum(z, 0).mean((2, 3))


def test_motion_classes_single_frames_are_at_chance_pairs_are_not():
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from threadpoolctl import threadpool_limits

  size, t_len, n_cls = 20, 4, len(data.MOTION_CLASS_NAMES)
  chance = 1.0 / n_cls
  x_train, y_train = data.motion_classes(320, t_len, size=size, seed=0)
  x_test, y_test = data.motion_classes(160, t_len, size=size, seed=1)

  def fit_score(f_train, l_train, f_test, l_test, **kw):
    clf = make_pipeline(StandardScaler(), LogisticRegression(**kw))
    # One BLAS thread: small problems, and a busy machine makes threads thrash.
    with warnings.catch_warnings(), threadpool_limits(1):
      warnings.simplefilter("ignore", ConvergenceWarning)
      clf.fit(f_train, l_train)
      return clf.score(f_test, l_test)

  # 1. Logistic regression on the pixels of single held-out frames: chance.
  frames = lambda x: x[..., 0].reshape(-1, size * size)  # noqa: E731
  acc_pixels = fit_score(
    frames(x_train[:160]),
    np.repeat(y_train[:160], t_len),
    frames(x_test),
    np.repeat(y_test, t_len),
    C=0.1,
    max_iter=40,
  )
  # 2. Even with nonlinear position-invariant features of a frame: chance.
  filters = np.random.default_rng(0).standard_normal((32, 2, 5, 5)).astype(np.float32)
  single = (
    lambda x: _random_conv_features(  # noqa: E731
      x[..., 0].reshape(-1, 1, size, size), filters[:, :1]
    )
  )
  acc_single = fit_score(
    single(x_train),
    np.repeat(y_train, t_len),
    single(x_test),
    np.repeat(y_test, t_len),
    max_iter=200,
  )

  # 3. The same features of two consecutive frames (their mean and difference):
  #    far better.
  def pairs(x):
    a, b = x[:, :-1, ..., 0], x[:, 1:, ..., 0]
    chans = np.stack([(a + b) / 2, b - a], axis=2).reshape(-1, 2, size, size)
    return _random_conv_features(chans, filters)

  acc_pairs = fit_score(
    pairs(x_train),
    np.repeat(y_train, t_len - 1),
    pairs(x_test),
    np.repeat(y_test, t_len - 1),
    max_iter=200,
  )
  # 640 / 480 test samples: the std of a chance-level accuracy is ~0.013.
  assert acc_pixels < chance + 0.07, acc_pixels
  assert acc_single < chance + 0.07, acc_single
  assert acc_pairs > 0.6, acc_pairs


def test_motion_classes_bad_args():
  with pytest.raises(ValueError, match="speed"):
    data.motion_classes(2, 4, speed=0)
  with pytest.raises(ValueError, match="size"):
    data.motion_classes(2, 4, size=(4, 4))
  with pytest.raises(ValueError, match="noise"):
    data.motion_classes_batches(2, 4, noise=-1)


# ---------------------------------------------------------------- stride_frames


def test_stride_frames_axis_rules():
  clip = np.arange(10 * 2 * 2 * 1).reshape(10, 2, 2, 1)
  out = data.stride_frames(clip, 3)
  assert out.shape == (4, 2, 2, 1)
  assert np.array_equal(out, clip[[0, 3, 6, 9]])
  batch = np.stack([clip, clip + 100])  # (B, T, H, W, C): time is axis 1.
  out = data.stride_frames(batch, 4)
  assert out.shape == (2, 3, 2, 2, 1)
  assert np.array_equal(out[1], clip[[0, 4, 8]] + 100)
  assert data.stride_frames(batch, 2, axis=0).shape == (1, 10, 2, 2, 1)
  assert np.array_equal(data.stride_frames(clip, 2, offset=1), clip[1::2])
  assert np.array_equal(data.stride_frames(clip, 1), clip)


def test_stride_frames_makes_smooth_video_rough():
  video = data.moving_digits(1, 9, size=(64, 64), speed=1.0, seed=0)
  rough = data.stride_frames(video, 4)
  assert rough.shape[1] == 3
  smooth_change = np.abs(np.diff(video, axis=1)).mean()
  rough_change = np.abs(np.diff(rough, axis=1)).mean()
  assert rough_change > 2 * smooth_change


@pytest.mark.parametrize(
  "stride, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_stride_frames_bad_stride(stride, error):
  with pytest.raises(error, match="stride"):
    data.stride_frames(np.zeros((4, 2, 2, 1)), stride)


def test_stride_frames_bad_axis():
  with pytest.raises(ValueError, match="axis"):
    data.stride_frames(np.zeros((4, 2, 2, 1)), 2, axis=4)
  with pytest.raises(ValueError, match="time axis"):
    data.stride_frames(np.float32(1.0), 2)
