"""Tests of read_video / iter_video_frames / write_video / resize_frames on tiny
files written into pytest's tmp_path."""

import numpy as np
import pytest

from sideways_lab import data


def _clip(num_frames=12, size=(24, 32), speed=2.0, seed=0):
  """A moving-digit clip (T, H, W, 3) with strong frame-to-frame changes."""
  gray = data.moving_digits(1, num_frames, size=size, speed=speed, seed=seed)[0]
  ramp = np.linspace(0.2, 1.0, size[1], dtype=np.float32)[None, None, :, None]
  return np.concatenate([gray, gray * ramp, 1.0 - gray], axis=-1)


def _frame_match(decoded, original):
  """Index of the original frame closest to each decoded frame."""
  d = np.abs(decoded[:, None] - original[None]).mean(axis=(2, 3, 4))
  return d.argmin(axis=1)


@pytest.mark.parametrize(
  "ext, tol", [(".mp4", 0.03), (".avi", 0.03), (".webm", 0.03), (".gif", 0.08), ("", 0.003)]
)
def test_write_read_roundtrip(tmp_path, ext, tol):
  clip = _clip()
  path = data.write_video(tmp_path / f"clip{ext}", clip, fps=12)
  video = data.read_video(path)
  assert video.shape == clip.shape and video.dtype == np.float32
  assert video.min() >= 0 and video.max() <= 1
  assert np.abs(video - clip).mean() < tol
  assert np.array_equal(_frame_match(video, clip), np.arange(len(clip)))


@pytest.mark.parametrize("ext", [".mp4", ".avi", ""])
def test_stride_max_frames_start(tmp_path, ext):
  clip = _clip(num_frames=14)
  path = data.write_video(tmp_path / f"clip{ext}", clip, fps=10)
  full = data.read_video(path)
  strided = data.read_video(path, stride=4)
  assert strided.shape[0] == 4  # Frames 0, 4, 8, 12.
  np.testing.assert_allclose(strided, data.stride_frames(full, 4), atol=1e-6)
  assert np.array_equal(_frame_match(strided, clip), [0, 4, 8, 12])
  part = data.read_video(path, stride=3, max_frames=2, start=5)
  np.testing.assert_allclose(part, full[[5, 8]], atol=1e-6)
  streamed = list(data.iter_video_frames(path, max_frames=3))
  assert len(streamed) == 3 and streamed[0].shape == clip.shape[1:]


def test_iter_video_frames_is_lazy_and_closes(tmp_path):
  path = data.write_video(tmp_path / "clip.mp4", _clip(num_frames=30), fps=10)
  frames = data.iter_video_frames(path)
  first = next(frames)
  assert first.shape == (24, 32, 3)
  frames.close()  # Closing the generator releases the file; no hang.


def test_resize_on_read_is_antialiased(tmp_path):
  # A 1-pixel checkerboard averages to grey when shrunk (no aliasing).
  board = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)
  frames = np.repeat(board[None, :, :, None], 3, axis=0)
  folder = data.write_video(tmp_path / "frames", frames)
  small = data.read_video(folder, size=(8, 8))
  assert small.shape == (3, 8, 8, 1)
  np.testing.assert_allclose(small, 0.5, atol=0.02)
  # Video files are resized by FFmpeg (area averaging when shrinking).
  board_video = data.write_video(tmp_path / "board.mp4", np.repeat(frames, 3, axis=-1), fps=10)
  small = data.read_video(board_video, size=(8, 8))
  assert small.shape == (3, 8, 8, 3)
  np.testing.assert_allclose(small, 0.5, atol=0.03)
  video = data.write_video(tmp_path / "clip.mp4", _clip(), fps=10)
  assert data.read_video(video, size=16).shape == (12, 16, 16, 3)
  assert data.read_video(video, size=(48, 40)).shape == (12, 48, 40, 3)


def _tent_matrix(n_in: int, n_out: int) -> np.ndarray:
  """The (n_out, n_in) resampling matrix of the module docstring, in float64:
  ``w_ij = k((j - c_i) / s)`` normalised per row, ``k(u) = max(0, 1 - |u|)``,
  ``c_i = (i + 1/2) n_in / n_out - 1/2``, ``s = max(1, n_in / n_out)``."""
  scale = n_in / n_out
  centres = (np.arange(n_out) + 0.5) * scale - 0.5
  w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None] - centres[:, None]) / max(1.0, scale))
  return w / w.sum(1, keepdims=True)


@pytest.mark.parametrize(
  "hw,size",
  [
    ((6, 8), (3, 4)),
    ((8, 8), (13, 11)),
    ((7, 5), (13, 2)),
    ((64, 48), (10, 9)),
    ((8, 8), (16, 16)),
  ],
)
def test_resize_frames_is_the_tent_filter(hw, size):
  x = np.random.default_rng(0).random((2, *hw, 3))
  ref = np.einsum("ih,jw,bhwc->bijc", _tent_matrix(hw[0], size[0]), _tent_matrix(hw[1], size[1]), x)
  got = data.resize_frames(x.astype(np.float32), size)
  assert got.dtype == np.float32 and got.shape == (2, *size, 3)
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_resize_frames_math():
  x = np.random.default_rng(0).random((2, 6, 8, 3), dtype=np.float32)
  assert np.array_equal(data.resize_frames(x, (6, 8)), x)  # Identity.
  # Halving = averaging with a tent over each 2x2 neighbourhood: the mean is kept.
  y = data.resize_frames(x, (3, 4))
  assert y.shape == (2, 3, 4, 3)
  np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=0.05)
  const = np.full((1, 7, 5, 1), 0.3, np.float32)
  np.testing.assert_allclose(data.resize_frames(const, (13, 2)), 0.3, atol=1e-6)
  u8 = (x * 255).astype(np.uint8)
  assert data.resize_frames(u8, 4).dtype == np.float32
  assert data.resize_frames(u8, 4).max() <= 1.0


def test_image_folder_natural_order_and_gray(tmp_path):
  import imageio.v3 as iio

  folder = tmp_path / "frames"
  folder.mkdir()
  for t in range(11):  # frame_2 must come before frame_10.
    iio.imwrite(folder / f"frame_{t}.png", np.full((6, 4), t * 20, np.uint8))
  (folder / "notes.txt").write_text("not a frame")
  video = data.read_video(folder)
  assert video.shape == (11, 6, 4, 1)
  np.testing.assert_allclose(video[:, 0, 0, 0], np.arange(11) * 20 / 255, atol=1e-6)
  assert data.video_info(folder)["num_frames"] == 11


def test_video_info(tmp_path):
  path = data.write_video(tmp_path / "clip.avi", _clip(num_frames=10), fps=5)
  info = data.video_info(path)
  assert info["num_frames"] == 10 and (info["height"], info["width"]) == (24, 32)
  assert info["fps"] == pytest.approx(5.0)


# -------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.mp4"):
    data.read_video(tmp_path / "nope.mp4")


def test_empty_file(tmp_path):
  path = tmp_path / "empty.mp4"
  path.write_bytes(b"")
  with pytest.raises(ValueError, match=r"empty\.mp4.*empty"):
    data.read_video(path)


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".webm"])
def test_corrupt_file(tmp_path, ext):
  path = tmp_path / f"corrupt{ext}"
  path.write_bytes(b"this is not a video" * 500)
  with pytest.raises(ValueError, match=f"corrupt{ext}"):
    data.read_video(path)


def test_truncated_file(tmp_path):
  good = data.write_video(tmp_path / "good.avi", _clip(num_frames=20), fps=10)
  raw = good.read_bytes()
  bad = tmp_path / "truncated.avi"
  bad.write_bytes(raw[: len(raw) // 3])
  # Either decodes the frames that survive or raises naming the file; never hangs.
  try:
    video = data.read_video(bad)
  except ValueError as err:
    assert "truncated.avi" in str(err)
  else:
    assert 0 < len(video) < 20


def test_video_without_frames(tmp_path):
  folder = tmp_path / "no_frames"
  folder.mkdir()
  with pytest.raises(ValueError, match="no_frames.*no image frames"):
    data.read_video(folder)
  # A valid container holding only audio.
  import av

  path = tmp_path / "audio_only.mp4"
  with av.open(str(path), "w") as container:
    stream = container.add_stream("aac", rate=8000)
    frame = av.AudioFrame.from_ndarray(
      np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate = 8000
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  with pytest.raises(ValueError, match="audio_only.mp4.*no video stream"):
    data.read_video(path)


def test_start_past_the_end(tmp_path):
  path = data.write_video(tmp_path / "clip.mp4", _clip(num_frames=5), fps=10)
  with pytest.raises(ValueError, match="clip.mp4.*no frames"):
    data.read_video(path, start=50)


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=-1), ValueError, "stride"),
    (dict(stride=2.0), TypeError, "stride"),
    (dict(max_frames=0), ValueError, "max_frames"),
    (dict(size=(0, 8)), ValueError, "size"),
    (dict(size=(8,)), TypeError, "size"),
    (dict(size=-3), ValueError, "size"),
    (dict(start=-1), ValueError, "start"),
  ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
  path = data.write_video(tmp_path / "clip.mp4", _clip(num_frames=3), fps=10)
  with pytest.raises(error, match=match):
    data.read_video(path, **kwargs)


def test_bad_path_type():
  with pytest.raises(TypeError, match="path"):
    data.read_video(42)


def test_write_video_bad_input(tmp_path):
  with pytest.raises(ValueError, match="shape"):
    data.write_video(tmp_path / "a.mp4", np.zeros((4, 8, 8, 2)))
  with pytest.raises(ValueError, match="shape"):
    data.write_video(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3)))
  with pytest.raises(FileNotFoundError, match="missing_dir"):
    data.write_video(tmp_path / "missing_dir" / "a.mp4", np.zeros((2, 8, 8, 3)))
  with pytest.raises(ValueError, match="fps"):
    data.write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3)), fps=0)
  with pytest.raises(ValueError, match="even"):
    data.write_video(tmp_path / "a.avi", np.zeros((2, 7, 8, 3)))
  # Odd sizes are fine in mp4 (4:4:4 chroma).
  odd = data.write_video(tmp_path / "odd.mp4", np.full((3, 7, 9, 3), 0.5))
  assert data.read_video(odd).shape == (3, 7, 9, 3)
