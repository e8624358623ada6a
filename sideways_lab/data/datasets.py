"""Folder datasets of real video: UCF101 and HMDB51 layouts with split files.

Both layouts are a root folder with one sub-folder of videos per class::

    root/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi
    root/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi

* **UCF101** split files (``ucfTrainTestlist/``): ``trainlist0N.txt`` with lines
  ``Class/video.avi <label 1..101>``, ``testlist0N.txt`` with lines
  ``Class/video.avi`` and optionally ``classInd.txt`` (``<label> Class``) which
  fixes the label order.  Without ``classInd.txt`` the classes are the sorted
  class folders named in the split's train and test lists.
* **HMDB51** split files (``testTrainMulti_7030_splits/``): one
  ``<class>_test_splitN.txt`` per class with lines ``video.avi <id>``, ``id``
  1 = train, 2 = test, 0 = unused.  Classes are sorted by name.
* ``layout="folders"``: no split files, every video file in every class folder.

A listed video may also be a folder of its frames (the same name without the
extension).  Listed videos that are missing or cannot be decoded are skipped
with one warning that counts and names them (``dataset.skipped``).

Batches hold fixed-length clips: ``num_frames`` frames ``stride`` apart,
starting at a random frame (``clip_sampling="random"``, default for training),
in the middle of the video (``"center"``, default for testing) or at frame 0
(``"start"``).  Videos shorter than the clip are looped: frame ``t`` of the
clip is kept frame ``t mod n``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sideways_lab.data import _checks
from sideways_lab.data._checks import PathLike, Size
from sideways_lab.data.video import VIDEO_EXTENSIONS, iter_video_frames, video_info

LAYOUTS = ("ucf101", "hmdb51", "folders")
SUBSETS = ("train", "test")
CLIP_SAMPLINGS = ("random", "center", "start")

_UCF_SPLIT_DIRS = ("ucfTrainTestlist", "splits")
_HMDB_SPLIT_DIRS = ("testTrainMulti_7030_splits", "splits")
_MAX_LISTED = 20


def _find_split_dir(root: Path, split_dir, names: Sequence[str], pattern: str) -> Path:
  """The first of ``split_dir`` / root / root/<names> / root.parent/<names> that
  holds a file matching ``pattern``."""
  if split_dir is not None:
    split_dir = _checks.as_path(split_dir, "split_dir")
    if not split_dir.is_dir():
      raise FileNotFoundError(f"split folder not found: '{split_dir}'")
    candidates = [split_dir]
  else:
    candidates = [root] + [root / n for n in names] + [root.parent / n for n in names]
  for folder in candidates:
    if folder.is_dir() and any(folder.glob(pattern)):
      return folder
  raise FileNotFoundError(
    f"no split file matching '{pattern}' in any of: "
    + ", ".join(f"'{c}'" for c in candidates)
    + "; pass `split_dir`"
  )


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
  try:
    text = path.read_text(encoding="utf-8", errors="replace")
  except OSError as err:
    raise ValueError(f"cannot read split file '{path}': {err}") from None
  return [(i + 1, line.split()) for i, line in enumerate(text.splitlines()) if line.strip()]


class VideoFolderDataset:
  """Clips and labels from a UCF101 / HMDB51 style folder (module docstring).

  Attributes:
    classes: tuple of class names; label ``i`` is ``classes[i]``.
    samples: list of ``(path, label)`` of the usable videos.
    skipped: list of ``(path, reason)`` of listed videos that were skipped.

  Example::

    ds = VideoFolderDataset("UCF101", layout="ucf101", split=1, subset="train",
                            num_frames=16, size=(112, 112), stride=2)
    for video, labels in ds.batches(8, seed=0):
        ...  # video (8, 16, 112, 112, 3) float32 in [0, 1], labels (8,) int32
  """

  def __init__(
    self,
    root: PathLike,
    *,
    layout: str = "ucf101",
    split: int = 1,
    subset: str = "train",
    split_dir: PathLike | None = None,
    num_frames: int = 16,
    size: Size | None = (112, 112),
    stride: int = 1,
    clip_sampling: str | None = None,
    probe: bool = True,
    verbose: bool = True,
  ):
    """Indexes the dataset (with a progress bar when ``verbose``).

    Args:
      root: folder holding the class folders.
      layout: ``"ucf101"``, ``"hmdb51"`` or ``"folders"``.
      split: official split number (1, 2 or 3).
      subset: ``"train"`` or ``"test"`` (ignored by ``"folders"``).
      split_dir: folder of the split files; default: ``root``, then
        ``root/ucfTrainTestlist`` (``root/testTrainMulti_7030_splits``), then
        those names next to ``root``.
      num_frames: ``T``, frames per clip (positive).
      size: ``(H, W)`` every frame is resized to (antialiased), or None if
        all videos already share a size.
      stride: temporal stride within a clip (positive).
      clip_sampling: ``"random"`` / ``"center"`` / ``"start"``; default
        random for train, center for test.
      probe: open every video and decode its first frame while indexing, to
        skip corrupt or empty files up front (slower to index); otherwise
        only check that files exist.
      verbose: show a tqdm progress bar while indexing.

    Raises:
      FileNotFoundError: missing root, split folder or split file.
      ValueError: bad arguments, malformed split files, or no usable video.
    """
    self.root = _checks.as_path(root, "root")
    if not self.root.is_dir():
      raise FileNotFoundError(f"dataset root folder not found: '{self.root}'")
    if layout not in LAYOUTS:
      raise ValueError(f"`layout` must be one of {LAYOUTS}, got {layout!r}.")
    if subset not in SUBSETS:
      raise ValueError(f"`subset` must be one of {SUBSETS}, got {subset!r}.")
    self.layout, self.subset = layout, subset
    self.split = _checks.positive_int(split, "split")
    self.num_frames = _checks.positive_int(num_frames, "num_frames")
    self.size = _checks.size_hw(size)
    self.stride = _checks.positive_int(stride, "stride")
    if clip_sampling is None:
      clip_sampling = "random" if subset == "train" else "center"
    if clip_sampling not in CLIP_SAMPLINGS:
      raise ValueError(f"`clip_sampling` must be one of {CLIP_SAMPLINGS}, got {clip_sampling!r}.")
    self.clip_sampling = clip_sampling

    if layout == "ucf101":
      classes, entries, self.split_files = self._parse_ucf101(split_dir)
    elif layout == "hmdb51":
      classes, entries, self.split_files = self._parse_hmdb51(split_dir)
    else:
      classes, entries, self.split_files = self._parse_folders()
    self.classes: tuple[str, ...] = tuple(classes)
    self._index(entries, probe, verbose)

  # -- Parsing ---------------------------------------------------------------

  def _parse_ucf101(self, split_dir):
    name = f"{self.subset}list{self.split:02d}.txt"
    folder = _find_split_dir(self.root, split_dir, _UCF_SPLIT_DIRS, name)
    list_file = folder / name
    other = folder / f"{'test' if self.subset == 'train' else 'train'}list{self.split:02d}.txt"

    def parse(path):
      out = []
      for lineno, tokens in _read_lines(path):
        rel = tokens[0].replace("\\", "/")
        parts = [p for p in rel.split("/") if p]
        if len(parts) < 2 or len(tokens) > 2:
          raise ValueError(
            f"split file '{path}', line {lineno}: expected "
            f"'<Class>/<video> [label]', got {' '.join(tokens)!r}"
          )
        out.append(("/".join(parts), parts[0]))
      return out

    entries = parse(list_file)
    files = [list_file]
    class_ind = folder / "classInd.txt"
    if class_ind.is_file():
      classes = {}
      for lineno, tokens in _read_lines(class_ind):
        if len(tokens) != 2 or not tokens[0].isdigit():
          raise ValueError(
            f"class index file '{class_ind}', line {lineno}: "
            f"expected '<label> <Class>', got {' '.join(tokens)!r}"
          )
        classes[int(tokens[0])] = tokens[1]
      names = [classes[k] for k in sorted(classes)]
      files.append(class_ind)
    else:
      names = {c for _, c in entries}
      if other.is_file():
        names |= {c for _, c in parse(other)}
      names = sorted(names)
    label_of = {c: i for i, c in enumerate(names)}
    unknown = sorted({c for _, c in entries if c not in label_of})
    if unknown:
      raise ValueError(
        f"split file '{list_file}' names classes missing from "
        f"'{class_ind}': {unknown[:_MAX_LISTED]}"
      )
    return names, [(self.root / rel, label_of[c]) for rel, c in entries], files

  def _parse_hmdb51(self, split_dir):
    suffix = f"_test_split{self.split}.txt"
    folder = _find_split_dir(self.root, split_dir, _HMDB_SPLIT_DIRS, f"*{suffix}")
    files = sorted(folder.glob(f"*{suffix}"))
    names = sorted(f.name[: -len(suffix)] for f in files)
    label_of = {c: i for i, c in enumerate(names)}
    wanted = "1" if self.subset == "train" else "2"
    entries = []
    for file in files:
      cls = file.name[: -len(suffix)]
      for lineno, tokens in _read_lines(file):
        if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
          raise ValueError(
            f"split file '{file}', line {lineno}: expected "
            f"'<video> <0|1|2>', got {' '.join(tokens)!r}"
          )
        if tokens[1] == wanted:
          entries.append((self.root / cls / tokens[0], label_of[cls]))
    return names, entries, files

  def _parse_folders(self):
    names = sorted(
      d.name
      for d in self.root.iterdir()
      if d.is_dir()
      and any(f.suffix.lower() in VIDEO_EXTENSIONS for f in d.iterdir() if f.is_file())
    )
    if not names:
      raise ValueError(
        f"no class folder with video files ({', '.join(VIDEO_EXTENSIONS)}) in '{self.root}'"
      )
    entries = []
    for label, cls in enumerate(names):
      entries += [
        (f, label)
        for f in sorted((self.root / cls).iterdir())
        if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS
      ]
    return names, entries, []

  # -- Indexing --------------------------------------------------------------

  def _index(self, entries, probe: bool, verbose: bool) -> None:
    samples, counts, skipped = [], [], []
    desc = f"Indexing {self.layout}" + (
      "" if self.layout == "folders" else f" split {self.split} {self.subset}"
    )
    for path, label in tqdm(entries, desc=desc, unit="video", disable=not verbose, leave=False):
      if not path.exists() and path.with_suffix("").is_dir():
        path = path.with_suffix("")  # Pre-extracted frames.
      if not path.exists():
        skipped.append((path, "missing"))
        continue
      num = None
      if probe:
        try:
          with contextlib.closing(iter_video_frames(path, max_frames=1)) as it:
            first = next(it, None)
          if first is None:
            skipped.append((path, "no frames"))
            continue
          info = video_info(path)
          num = info["num_frames"]
          if num is None and info["duration"] and info["fps"]:
            num = int(round(info["duration"] * info["fps"]))  # webm, mkv.
        except (ValueError, OSError) as err:
          skipped.append((path, f"unreadable ({err})"))
          continue
      samples.append((path, int(label)))
      counts.append(num)
    self.samples: list[tuple[Path, int]] = samples
    self._num_video_frames: list[int | None] = counts
    self.skipped: list[tuple[Path, str]] = skipped
    if skipped:
      listed = "; ".join(f"'{p}' ({why})" for p, why in skipped[:_MAX_LISTED])
      more = len(skipped) - _MAX_LISTED
      warnings.warn(
        f"VideoFolderDataset: skipped {len(skipped)} of {len(entries)} listed "
        f"videos under '{self.root}': {listed}"
        + (f"; and {more} more (see `.skipped`)" if more > 0 else ""),
        stacklevel=3,
      )
    if not samples:
      where = ", ".join(f"'{f}'" for f in self.split_files[:3]) or f"'{self.root}'"
      raise ValueError(
        f"no usable video for {self.layout} split {self.split} "
        f"{self.subset} (from {where}); {len(skipped)} listed "
        "videos were skipped"
      )

  # -- Access ----------------------------------------------------------------

  @property
  def num_classes(self) -> int:
    """The number of classes of the dataset."""
    return len(self.classes)

  def __len__(self) -> int:
    return len(self.samples)

  def __repr__(self) -> str:
    return (
      f"VideoFolderDataset(root='{self.root}', layout={self.layout!r}, "
      f"split={self.split}, subset={self.subset!r}, videos={len(self)}, "
      f"classes={self.num_classes}, num_frames={self.num_frames}, "
      f"size={self.size}, stride={self.stride})"
    )

  def _clip_start(self, index: int, rng: np.random.Generator | None) -> int:
    n = self._num_video_frames[index]
    span = (self.num_frames - 1) * self.stride + 1
    if n is None or n <= span or self.clip_sampling == "start":
      return 0
    if self.clip_sampling == "center" or rng is None:
      return (n - span) // 2
    return int(rng.integers(0, n - span + 1))

  def load_clip(self, index: int, start: int = 0) -> np.ndarray:
    """Clip of video ``index`` from frame ``start``: float32 ``(T, H, W, 3)``.

    Frame ``t`` is frame ``start + t * stride`` of the video; short videos
    loop (frame ``t mod n`` of the ``n`` frames read).
    """
    path, _ = self.samples[index]
    frames = list(
      iter_video_frames(
        path, size=self.size, stride=self.stride, max_frames=self.num_frames, start=start
      )
    )
    if not frames and start > 0:  # The container's frame count was wrong.
      frames = list(
        iter_video_frames(path, size=self.size, stride=self.stride, max_frames=self.num_frames)
      )
    if not frames:
      raise ValueError(f"video '{path}' contains no frames")
    clip = np.stack(frames)
    if clip.shape[-1] == 1:
      clip = np.repeat(clip, 3, axis=-1)
    if len(clip) < self.num_frames:
      clip = clip[np.arange(self.num_frames) % len(clip)]
    return clip

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    """``(clip, label)`` of video ``index``, the clip taken from the middle of
    the video (deterministic)."""
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} videos")
    index %= len(self)
    n = self._num_video_frames[index]
    span = (self.num_frames - 1) * self.stride + 1
    start = 0 if n is None or n <= span else (n - span) // 2
    return self.load_clip(index, start), self.samples[index][1]

  def batches(
    self,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    *,
    drop_remainder: bool = False,
    epochs: int | None = 1,
    num_workers: int = 0,
  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over batches of clips.

    Args:
      batch_size: ``B`` (positive).
      shuffle: visit the videos in a random order, new for every epoch.
      seed: the order and the clip starts are deterministic from the seed.
      drop_remainder: drop the last, smaller batch of each epoch.
      epochs: passes over the videos (positive), or None for endless.
      num_workers: decode the clips of a batch on this many threads (0: in
        the calling thread).  Results do not depend on it.

    Yields:
      ``(video, labels)``: float32 ``(B, T, H, W, 3)`` in ``[0, 1]`` and int32
      ``(B,)``.
    """
    batch_size = _checks.positive_int(batch_size, "batch_size")
    epochs = _checks.positive_int(epochs, "epochs", allow_none=True)
    num_workers = _checks.non_negative_int(num_workers, "num_workers")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise TypeError(f"`seed` must be an int, got {seed!r}.")
    if drop_remainder and batch_size > len(self):
      raise ValueError(
        f"`batch_size`={batch_size} exceeds the {len(self)} videos "
        "with drop_remainder=True: no batch would be produced."
      )
    return self._batches(batch_size, shuffle, int(seed), drop_remainder, epochs, num_workers)

  def _batches(self, batch_size, shuffle, seed, drop_remainder, epochs, num_workers):
    rng = np.random.default_rng(seed)
    pool = concurrent.futures.ThreadPoolExecutor(num_workers) if num_workers > 0 else None
    try:
      epoch = 0
      while epochs is None or epoch < epochs:
        epoch += 1
        order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
        for lo in range(0, len(order), batch_size):
          idx = order[lo : lo + batch_size]
          if drop_remainder and len(idx) < batch_size:
            break
          starts = [self._clip_start(int(i), rng) for i in idx]
          if pool is None:
            clips = [self.load_clip(int(i), s) for i, s in zip(idx, starts)]
          else:
            clips = list(pool.map(self.load_clip, [int(i) for i in idx], starts))
          try:
            video = np.stack(clips)
          except ValueError:
            shapes = sorted({c.shape for c in clips})
            raise ValueError(
              f"clips of different shapes {shapes} in one batch; "
              "pass `size=(H, W)` to resize every video"
            ) from None
          labels = np.array([self.samples[int(i)][1] for i in idx], np.int32)
          yield video, labels
    finally:
      if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
