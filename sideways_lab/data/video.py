"""Real video: reading, writing, resizing and temporal striding.

All readers return float32 frames in ``[0, 1]`` with shape ``(H, W, C)``
(``C = 3`` for video files, 1 or 3 for image folders) and videos of shape
``(T, H, W, C)``.  Decoding goes through imageio's PyAV plugin (FFmpeg ships
inside the ``av`` wheels), frame by frame, so a long video never has to fit in
memory; ``stride`` and ``max_frames`` skip the colour conversion and resizing of
the frames they drop and stop decoding as soon as enough frames were read.

Resizing is antialiased.  Video files are resized by FFmpeg (swscale) in the
same pass as the YUV -> RGB conversion: area averaging when shrinking, bilinear
interpolation when enlarging.  Folders of images and arrays
(:func:`resize_frames`) use ``jax.image.resize(method="linear", antialias=True)``, a
separable filter: along each axis, output sample ``i`` (centre
``c_i = (i + 1/2) n_in / n_out - 1/2`` in input pixels) is::

    y_i = sum_j k((j - c_i) / s) x_j / sum_j k((j - c_i) / s),
    k(u) = max(0, 1 - |u|),   s = max(1, n_in / n_out),

i.e. bilinear interpolation when upsampling and a triangle (tent) filter as wide
as the shrink factor when downsampling, so that no aliasing appears.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import imageio.v3 as iio
import jax
import numpy as np

from sideways_lab.data import _checks
from sideways_lab.data._checks import ArrayLike, PathLike, Size

#: Extensions read through PyAV (anything else that is a file is tried too).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")
#: Extensions of the images that make up a folder of frames.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


# ----------------------------------------------------------------------------
# Striding and resizing of arrays.
# ----------------------------------------------------------------------------


def stride_frames(
  video: ArrayLike, stride: int, axis: int | None = None, *, offset: int = 0
) -> np.ndarray:
  """Keeps every ``stride``-th frame: ``out[t] = video[offset + stride * t]``.

  Makes smooth video rough: with ``stride = s`` the displacement between
  consecutive output frames is ``s`` times that of the input.

  Args:
    video: array of frames, ``(T, H, W, C)`` or a batch ``(B, T, H, W, C)``
      (any array with a time axis works if ``axis`` is given).
    stride: positive int.
    axis: the time axis.  Default: 1 for 5-D arrays (batches), else 0.
    offset: index of the first frame kept (``0 <= offset``).

  Returns:
    A view of ``video`` with ``ceil((T - offset) / stride)`` frames along
    ``axis``; other axes unchanged.
  """
  stride = _checks.positive_int(stride, "stride")
  offset = _checks.non_negative_int(offset, "offset")
  video = np.asarray(video)
  if video.ndim == 0:
    raise ValueError("`video` must have a time axis, got a scalar (0-d array).")
  if axis is None:
    axis = 1 if video.ndim == 5 else 0
  if not -video.ndim <= axis < video.ndim:
    raise ValueError(
      f"`axis`={axis} is out of range for a {video.ndim}-d video of shape {video.shape}."
    )
  index = [slice(None)] * video.ndim
  index[axis] = slice(offset, None, stride)
  return video[tuple(index)]


def resize_frames(frames: ArrayLike, size: Size) -> np.ndarray:
  """Resizes images with antialiasing (see the module docstring for the filter).

  Args:
    frames: ``(..., H, W, C)`` array (any leading axes, e.g. ``(T, H, W, C)``).
      Integer arrays are first scaled to ``[0, 1]`` by their dtype's maximum.
    size: ``(H', W')`` or an int for a square.

  Returns:
    float32 array ``(..., H', W', C)``.  Same size in, same values out.
  """
  size = _checks.size_hw(size, allow_none=False)
  frames = _to_float(np.asarray(frames))
  if frames.ndim < 3:
    raise ValueError(f"`frames` must have shape (..., H, W, C), got {frames.shape}.")
  h, w = frames.shape[-3:-1]
  if (h, w) == size:
    return frames
  shape = frames.shape[:-3] + size + frames.shape[-1:]
  resized = jax.image.resize(frames, shape, method="linear", antialias=True)
  return np.asarray(resized, dtype=np.float32)


def _to_float(array: np.ndarray) -> np.ndarray:
  """uint8/uint16/bool/float -> float32 in [0, 1] (floats are passed through)."""
  if array.dtype == np.bool_:
    return array.astype(np.float32)
  if np.issubdtype(array.dtype, np.integer):
    return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
  if np.issubdtype(array.dtype, np.floating):
    return array.astype(np.float32, copy=False)
  raise TypeError(f"frames must be numeric, got dtype {array.dtype}.")


def _prepare_frame(frame: np.ndarray, size) -> np.ndarray:
  """An image from a decoder -> float32 (H, W, C) in [0, 1], resized."""
  frame = np.asarray(frame)
  if frame.ndim == 2:
    frame = frame[:, :, None]
  if frame.ndim != 3:
    raise ValueError(f"expected an image (H, W) or (H, W, C), got shape {frame.shape}")
  if frame.shape[-1] == 4:  # RGBA: drop alpha.
    frame = frame[..., :3]
  elif frame.shape[-1] == 2:  # Gray + alpha.
    frame = frame[..., :1]
  frame = _to_float(frame)
  if size is not None:
    frame = resize_frames(frame, size)
  return np.clip(frame, 0.0, 1.0)


# ----------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------


def _natural_key(path: Path):
  return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path.name)]


def _image_files(folder: Path):
  return sorted(
    (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
    key=_natural_key,
  )


def _check_file(path: Path) -> None:
  if not path.exists():
    raise FileNotFoundError(f"video file not found: '{path}'")
  if path.is_file() and path.stat().st_size == 0:
    raise ValueError(f"video file '{path}' is empty (0 bytes)")


def _open_pyav(path: Path):
  """Opens ``path`` with imageio's PyAV plugin; ValueError naming the file if not."""
  try:
    return iio.imopen(path, "r", plugin="pyav")
  except Exception as err:  # imageio raises several types for unreadable files.
    if _has_no_video_stream(path):
      raise ValueError(f"video file '{path}' contains no video stream (no frames)") from None
    raise ValueError(
      f"cannot open video file '{path}': it is corrupt or not a "
      f"video FFmpeg can decode ({type(err).__name__}: {err})"
    ) from None


def _close_pyav(plugin) -> None:
  """Closes an imageio PyAV plugin like ``plugin.close()`` but without its
  ``gc.collect()``, which is only needed for FFmpeg filter graphs (unused here)
  and costs ~0.15 s per file once JAX is imported."""
  container = getattr(plugin, "_container", None)
  if container is None or not hasattr(plugin, "request"):  # pragma: no cover
    plugin.close()
    return
  try:
    if plugin._video_stream is not None and plugin.request.mode.io_mode == "w":
      plugin._flush_writer()
    plugin._video_stream = None
    plugin._container = None
    container.close()
  finally:
    # As imageio does: drop PyAV's thread-local swscale pool (joins its workers).
    thread_local = getattr(av.video.frame, "_thread_local", None)
    if getattr(thread_local, "reformatter", None) is not None:
      del thread_local.reformatter
    plugin.request.finish()
    plugin.close = lambda: None  # The plugin's __del__ calls close() again.


def _has_no_video_stream(path: Path) -> bool:
  """True if FFmpeg opens ``path`` but finds no video stream in it."""
  try:
    with av.open(str(path)) as container:
      return len(container.streams.video) == 0
  except Exception:
    return False


def iter_video_frames(
  path: PathLike,
  size: Size | None = None,
  stride: int = 1,
  max_frames: int | None = None,
  *,
  start: int = 0,
) -> Iterator[np.ndarray]:
  """Streams the frames of a video file or of a folder of images.

  Yields frames ``start, start + stride, start + 2 stride, ...`` (at most
  ``max_frames`` of them), each float32 ``(H, W, C)`` in ``[0, 1]``.  Frames
  that are not kept are decoded (inter-frame codecs need them) but not
  converted to RGB nor resized; decoding stops once ``max_frames`` frames were
  yielded.  Image folders read only the kept files (natural sort order:
  ``f2.png`` before ``f10.png``).

  Args:
    path: a video file (mp4, avi, webm, mkv, mov, gif, ...) or a folder of
      image frames (png, jpg, ...).
    size: ``(H, W)`` (or an int for a square) to resize every frame to, with
      antialiasing; None keeps the native size.
    stride: keep every ``stride``-th frame (positive int).
    max_frames: stop after this many frames (positive int) or None for all.
    start: index of the first kept frame (non-negative int).

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: empty, corrupt or undecodable file, empty folder, frames of
      different sizes in a folder (with ``size=None``), bad arguments.
    TypeError: arguments of the wrong type.
  """
  path = _checks.as_path(path)
  size = _checks.size_hw(size)
  stride = _checks.positive_int(stride, "stride")
  max_frames = _checks.positive_int(max_frames, "max_frames", allow_none=True)
  start = _checks.non_negative_int(start, "start")
  _check_file(path)
  if path.is_dir():
    return _iter_folder(path, size, stride, max_frames, start)
  if path.suffix.lower() in IMAGE_EXTENSIONS:
    return _iter_single_image(path, size, start)
  return _iter_pyav(path, size, stride, max_frames, start)


def _iter_single_image(path: Path, size, start: int):
  if start > 0:
    return
  try:
    image = iio.imread(path)
  except Exception as err:
    raise ValueError(f"cannot read image file '{path}' ({type(err).__name__}: {err})") from None
  yield _prepare_frame(image, size)


def _iter_folder(folder: Path, size, stride: int, max_frames, start: int):
  files = _image_files(folder)
  if not files:
    raise ValueError(
      f"folder '{folder}' contains no image frames (looked for {', '.join(IMAGE_EXTENSIONS)})"
    )
  files = files[start::stride]
  if max_frames is not None:
    files = files[:max_frames]
  shape = None
  for file in files:
    try:
      image = iio.imread(file)
    except Exception as err:
      raise ValueError(f"cannot read image frame '{file}' ({type(err).__name__}: {err})") from None
    frame = _prepare_frame(image, size)
    if shape is None:
      shape = frame.shape
    elif frame.shape != shape:
      raise ValueError(
        f"image frame '{file}' has shape {frame.shape} but the first "
        f"frame of '{folder}' has shape {shape}; pass `size` to "
        "resize them all"
      )
    yield frame


def _iter_pyav(path: Path, size, stride: int, max_frames, start: int):
  plugin = _open_pyav(path)
  try:
    container = getattr(plugin, "_container", None)
    stream = getattr(plugin, "_video_stream", None)
    if container is not None and stream is not None:
      # Multi-threaded decoding; convert only the frames that are kept.
      try:
        stream.thread_type = "AUTO"
      except Exception:  # pragma: no cover - older PyAV
        pass
      decoded = container.decode(stream)
      if size is None:
        convert = lambda f: f.to_ndarray(format="rgb24")  # noqa: E731
      else:
        # FFmpeg's swscale resizes during the colour conversion: area
        # averaging (antialiased) when shrinking, bilinear when enlarging.
        def convert(f, out_h=size[0], out_w=size[1]):
          shrink = out_h < f.height or out_w < f.width
          return f.to_ndarray(
            width=out_w,
            height=out_h,
            format="rgb24",
            interpolation="AREA" if shrink else "BILINEAR",
          )

        size = None  # Resized by `convert`.
    else:  # pragma: no cover - a future imageio without these attributes.
      decoded = plugin.iter(format="rgb24")
      convert = lambda f: f  # noqa: E731
    index, kept = -1, 0
    while max_frames is None or kept < max_frames:
      try:
        frame = next(decoded)
      except StopIteration:
        break
      except (av.FFmpegError, ValueError, OSError) as err:
        raise ValueError(
          f"error decoding frame {index + 1} of video file '{path}': {err}"
        ) from None
      index += 1
      if index < start or (index - start) % stride:
        continue
      kept += 1
      yield _prepare_frame(convert(frame), size)
  finally:
    _close_pyav(plugin)


def read_video(
  path: PathLike,
  size: Size | None = None,
  stride: int = 1,
  max_frames: int | None = None,
  *,
  start: int = 0,
) -> np.ndarray:
  """Reads a video file or a folder of image frames into memory.

  ``read_video(path, size, stride, max_frames)[t]`` is frame
  ``start + stride * t`` of the file, resized to ``size`` with antialiasing.
  See :func:`iter_video_frames` for the arguments and errors (this is
  ``np.stack(list(iter_video_frames(...)))``).

  Returns:
    float32 array ``(T, H, W, C)`` in ``[0, 1]``, ``T >= 1``.

  Raises:
    ValueError: also when no frame is left (empty video, ``start`` past the
      end).
  """
  frames = list(
    iter_video_frames(path, size=size, stride=stride, max_frames=max_frames, start=start)
  )
  if not frames:
    path = Path(path)
    raise ValueError(
      f"video '{path}' contains no frames" + (f" at or after frame start={start}" if start else "")
    )
  return np.stack(frames)


def video_info(path: PathLike) -> dict:
  """Container metadata without decoding: ``num_frames`` (None if the container
  does not say), ``fps``, ``height``, ``width``, ``duration`` (seconds or None).

  Folders of images report their number of image files.  Raises like
  :func:`iter_video_frames`.
  """
  path = _checks.as_path(path)
  _check_file(path)
  if path.is_dir():
    files = _image_files(path)
    if not files:
      raise ValueError(f"folder '{path}' contains no image frames")
    try:
      props = iio.improps(files[0])
    except Exception as err:
      raise ValueError(f"cannot read image frame '{files[0]}' ({err})") from None
    return dict(
      num_frames=len(files),
      fps=None,
      height=int(props.shape[0]),
      width=int(props.shape[1]),
      duration=None,
    )
  plugin = _open_pyav(path)
  try:
    stream = plugin._video_stream
    n = int(stream.frames or 0)
    fps = float(stream.guessed_rate) if stream.guessed_rate else None
    duration = None
    if stream.duration is not None and stream.time_base is not None:
      duration = float(stream.duration * stream.time_base)
    elif plugin._container.duration is not None:
      duration = plugin._container.duration / 1e6
    if n == 0 and duration and fps:
      n_estimate = None  # Containers like webm do not store a frame count.
    else:
      n_estimate = n if n > 0 else None
    return dict(
      num_frames=n_estimate,
      fps=fps,
      height=int(stream.codec_context.height),
      width=int(stream.codec_context.width),
      duration=duration,
    )
  except ValueError:
    raise
  except Exception as err:
    raise ValueError(f"cannot read the metadata of video file '{path}' ({err})") from None
  finally:
    _close_pyav(plugin)


# ----------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------

_DEFAULT_CODECS = {
  ".mp4": "libx264",
  ".m4v": "libx264",
  ".mov": "libx264",
  ".mkv": "libx264",
  ".avi": "mpeg4",
  ".webm": "libvpx-vp9",
}


def _to_uint8(frames) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype == np.uint8:
    return frames
  if np.issubdtype(frames.dtype, np.floating) or frames.dtype == np.bool_:
    return np.round(np.clip(frames.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
  if np.issubdtype(frames.dtype, np.integer):
    return np.clip(frames, 0, 255).astype(np.uint8)
  raise TypeError(f"`frames` must be numeric, got dtype {frames.dtype}.")


def write_video(
  path: PathLike, frames: ArrayLike, fps: float = 25, *, codec: str | None = None
) -> Path:
  """Writes frames to a video file or to a folder of PNG images.

  Args:
    path: destination.  The extension picks the format: ``.mp4``/``.mov``/
      ``.mkv`` (H.264), ``.avi`` (MPEG-4 part 2, like UCF101/HMDB51),
      ``.webm`` (VP9), ``.gif`` (FFmpeg's GIF encoder, 8-bit 3-3-2 colours,
      every frame kept); a path without extension is a folder of
      ``frame_00000.png``, ... .  The parent folder must exist.
    frames: ``(T, H, W)``, ``(T, H, W, 1)`` or ``(T, H, W, 3)``; floats in
      ``[0, 1]`` (clipped) or uint8.  Video codecs other than H.264 need even
      ``H`` and ``W`` (H.264 switches to 4:4:4 chroma for odd sizes).
    fps: frames per second (positive).
    codec: FFmpeg encoder name overriding the default for the extension.

  Returns:
    The path written.  Lossy codecs change pixel values slightly; the number
    and size of frames read back by :func:`read_video` are preserved.
  """
  path = _checks.as_path(path)
  fps = _checks.real_in(fps, "fps", 1e-3, 1e4)
  frames = _to_uint8(frames)
  if frames.ndim == 3:
    frames = frames[..., None]
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or 0 in frames.shape:
    raise ValueError(
      "`frames` must have shape (T, H, W), (T, H, W, 1) or "
      f"(T, H, W, 3) with T, H, W > 0, got {frames.shape}."
    )
  if not path.parent.exists():
    raise FileNotFoundError(f"cannot write '{path}': folder '{path.parent}' does not exist")
  suffix = path.suffix.lower()
  if suffix == "":
    path.mkdir(exist_ok=True)
    for t, frame in enumerate(frames):
      iio.imwrite(path / f"frame_{t:05d}.png", frame[..., 0] if frame.shape[-1] == 1 else frame)
    return path
  if suffix in IMAGE_EXTENSIONS:
    raise ValueError(
      f"'{path}' is an image path; write a video (.mp4, .avi, .webm, "
      ".gif) or a folder (a path without extension)"
    )
  rgb = np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames
  if suffix == ".gif":
    # FFmpeg's GIF encoder keeps every frame (Pillow merges identical ones);
    # colours are quantised to 8 bits (3-3-2).
    codec, pixel_format = codec or "gif", "rgb8"
  else:
    codec = codec or _DEFAULT_CODECS.get(suffix, "libx264")
    odd = rgb.shape[1] % 2 or rgb.shape[2] % 2
    pixel_format = "yuv444p" if odd and codec == "libx264" else "yuv420p"
    if odd and codec != "libx264":
      raise ValueError(
        f"codec '{codec}' for '{path}' needs an even height and "
        f"width, got {rgb.shape[1]}x{rgb.shape[2]}; pad the frames "
        "or write .mp4"
      )
  rate = Fraction(fps).limit_denominator(1001) if fps != int(fps) else int(fps)
  try:
    out = iio.imopen(path, "w", plugin="pyav")
    try:
      out.init_video_stream(codec, fps=rate, pixel_format=pixel_format)
      for frame in rgb:
        out.write_frame(frame)
    finally:
      _close_pyav(out)
  except Exception as err:
    raise ValueError(
      f"could not write video '{path}' with codec '{codec}' ({type(err).__name__}: {err})"
    ) from None
  return path
