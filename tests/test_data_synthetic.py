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
    elif label in (6, 7):  # Grow / shrink: ink increases / decreases, but where the size wraps.
      steps = np.diff(np.log(_digit_area(video[b])))
      sense = 1 if label == 6 else -1
      # A step of the size is 2g = 0.31 in log ink; a wrap, 2(S - g) = 2.5 the other way.
      assert ((sense * steps > 0) | (sense * steps < -1.0)).all(), steps


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


def _digit_area(video):
  """Pixel mass above the background of each frame: (..., H, W, 1) -> (...)."""
  frames = video[..., 0]
  return (frames - frames.min(axis=(-2, -1), keepdims=True)).sum(axis=(-2, -1))


def _best_threshold_accuracy(a, b):
  """The best accuracy of ``x > c`` (or ``x < c``) telling samples ``a`` from samples ``b``."""
  x = np.concatenate([a, b])
  is_b = np.concatenate([np.zeros(len(a)), np.ones(len(b))])[np.argsort(x, kind="stable")]
  # Accuracy of "b above the cut" for every cut between sorted samples.
  acc = (np.r_[0, np.cumsum(1 - is_b)] + is_b.sum() - np.r_[0, np.cumsum(is_b)]) / len(x)
  return max(acc.max(), 1 - acc.min())


def test_motion_classes_digit_area_does_not_tell_grow_from_shrink_at_any_frame():
  """At every frame index, the size of the digit is distributed alike in grow and shrink
  clips: a threshold on one frame's digit area is at chance (512 clips per class, so the
  best of all thresholds reaches ~0.53).  The growth law this replaced, ``log r = log r0 +
  g (t - (T-1)/2)`` with ``log r0`` uniform, scored 1.00 at frames 0 and 15, 0.88 at frame
  4 and 0.57 only at the middle frames, on these clips (speed 2, T = 16).  The area does see
  the size: the sign of its change between consecutive frames tells grow from shrink."""
  n, t_len = 512, 16
  grow, _ = data.motion_classes(n, t_len, size=16, speed=2.0, seed=1, labels=np.full(n, 6))
  shrink, _ = data.motion_classes(n, t_len, size=16, speed=2.0, seed=2, labels=np.full(n, 7))
  area_grow, area_shrink = _digit_area(grow), _digit_area(shrink)  # (n, T)
  per_frame = [_best_threshold_accuracy(area_grow[:, t], area_shrink[:, t]) for t in range(t_len)]
  assert max(per_frame) <= 0.6, np.round(per_frame, 2)
  # Positive control: consecutive frames (the size wraps in a fraction g / S of the steps).
  changes = _best_threshold_accuracy(np.diff(area_grow).ravel(), np.diff(area_shrink).ravel())
  assert changes >= 0.9, changes


def _frame_features(frames):
  """Per-frame statistics (N, H, W) -> (N, 11): log digit mass, log mass over contrast, log
  radius of gyration, background, peak, circular centroid (cos, sin) of each axis, and the
  orientation (cos 2a, sin 2a) of the second moments, all about the centroid on the torus."""
  lo, hi = frames.min(axis=(1, 2)), frames.max(axis=(1, 2))
  mass = frames - lo[:, None, None]
  total = np.maximum(mass.sum(axis=(1, 2)), 1e-6)
  centroid, offsets = [], []
  for axis, n in ((2, frames.shape[1]), (1, frames.shape[2])):
    profile = mass.sum(axis=axis)  # (N, n)
    z = (profile * np.exp(2j * np.pi * np.arange(n) / n)).sum(axis=1) / total
    centroid += [z.real, z.imag]
    centre = np.angle(z) * n / (2 * np.pi)
    offsets.append((np.arange(n)[None] - centre[:, None] + n / 2) % n - n / 2)
  dy, dx = offsets[0][:, :, None], offsets[1][:, None, :]
  cyy, cxx, cxy = ((mass * m).sum(axis=(1, 2)) / total for m in (dy * dy, dx * dx, dy * dx))
  trace = np.maximum(cyy + cxx, 1e-6)
  return np.stack(
    [
      np.log(total),
      np.log(total / np.maximum(hi - lo, 1e-3)),
      0.5 * np.log(trace),
      lo,
      hi,
      *centroid,
      (cyy - cxx) / trace,
      2 * cxy / trace,
    ],
    axis=1,
  )


def test_motion_classes_per_frame_model_is_at_chance_on_the_chains_loss_frames():
  """A pipelined chain of L = 4 units is a per-frame model: its loss ticks t >= L - 1 of a
  T = 16 clip see frames t - L + 1, i.e. frames 0..12.  A logistic regression on statistics
  of one such frame that also knows the frame's index (stronger than the chain, which does
  not) is at chance for the 8 classes, and at chance telling grow from shrink.  With the
  growth law this replaced it scored 0.19 on the 8 classes and 0.86 on grow against shrink
  (the size of a frame of known index gave the label away).  The same model on two
  consecutive frames is far above chance: the statistics see the motion."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  from threadpoolctl import threadpool_limits

  n, t_len, num_units = 512, 16, 4
  seen = np.arange(t_len - num_units + 1)  # The frames of the loss ticks: 0..12.
  index = seen / seen[-1]

  def per_frame(video):  # (n, T, H, W, 1) -> (n * 13, 44): statistics x (1, t, t^2)
    f = _frame_features(video[:, seen][..., 0].reshape((-1,) + video.shape[2:4]))
    f = np.concatenate([f, f[:, :3] ** 2], axis=1)  # Quadratic in the size statistics.
    t = np.tile(index, len(video))[:, None]
    return np.concatenate([f, f * t, f * t * t, t, t * t], axis=1)

  def two_frames(video):  # Statistics of frames t and t + 1, and how they turned.
    f = _frame_features(video[..., 0].reshape((-1,) + video.shape[2:4]))
    f = f.reshape(len(video), video.shape[1], -1)
    a, b = f[:, :-1], f[:, 1:]
    # Im(z_{t+1} conj z_t) of each axis' centroid and of the orientation: the sense of a turn.
    turns = [a[..., i] * b[..., i + 1] - a[..., i + 1] * b[..., i] for i in (5, 7, 9)]
    # tanh of the size changes: the rare wrap of the size (a large jump) must not outweigh
    # the steady small steps of growth (they cancel on average over a cycle).
    sized = np.tanh(4 * (b - a)[..., :3])
    pairs = np.concatenate([a, b - a, sized, np.stack(turns, axis=-1)], axis=2)
    return pairs.reshape(-1, pairs.shape[-1])

  def score(features, keep=None):
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    (a, ya), (b, yb) = train, test
    fa, fb = features(a), features(b)
    ya, yb = np.repeat(ya, len(fa) // len(ya)), np.repeat(yb, len(fb) // len(yb))
    if keep is not None:
      fa, ya, fb, yb = (
        fa[np.isin(ya, keep)],
        ya[np.isin(ya, keep)],
        fb[np.isin(yb, keep)],
        yb[np.isin(yb, keep)],
      )
    with warnings.catch_warnings(), threadpool_limits(1):
      warnings.simplefilter("ignore", ConvergenceWarning)
      return clf.fit(fa, ya).score(fb, yb)

  train = data.motion_classes(n, t_len, size=16, speed=2.0, seed=10)
  test = data.motion_classes(n, t_len, size=16, speed=2.0, seed=11)
  # Frames of one clip are correlated: the std of an accuracy is taken over held-out clips
  # (n = 512: 0.015 for the 8 classes, 0.044 for the 128 grow and shrink clips), at most.
  chance = 1 / len(data.MOTION_CLASS_NAMES)
  assert abs(score(per_frame) - chance) < 4 * np.sqrt(chance * (1 - chance) / n)
  assert abs(score(per_frame, keep=[6, 7]) - 0.5) < 4 * np.sqrt(0.25 / (n // 4))
  assert score(two_frames) > 0.5
  assert score(two_frames, keep=[6, 7]) > 0.9


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
