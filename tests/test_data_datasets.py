"""Tests of VideoFolderDataset on miniature UCF101 / HMDB51 trees that the tests
write themselves."""

import numpy as np
import pytest

from sideways_lab import data

H, W = 16, 24


def _write_clip(path, label, num_frames):
  """A clip whose every pixel encodes (label, frame index): channel 0 is the
  label / 4, channel 1 the frame index / 32 (robust to lossy codecs)."""
  t = np.arange(num_frames, dtype=np.float32)[:, None, None]
  frames = np.zeros((num_frames, H, W, 3), np.float32)
  frames[..., 0] = (label + 1) / 4
  frames[..., 1] = t / 32
  frames[..., 2] = 0.5
  data.write_video(path, frames, fps=10)


def _decode(clip):
  """(label, frame indices) encoded by _write_clip."""
  label = int(round(clip[..., 0].mean() * 4 - 1))
  frames = np.round(clip[..., 1].mean(axis=(1, 2)) * 32).astype(int)
  return label, frames


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "CuttingInKitchen"]


@pytest.fixture
def ucf_root(tmp_path):
  """root/<Class>/v_<Class>_gXX_c01.avi + root/ucfTrainTestlist/{classInd,
  trainlist01, testlist01}.txt, 3 classes, 2 train + 1 test videos each."""
  root = tmp_path / "UCF101"
  lists = root / "ucfTrainTestlist"
  lists.mkdir(parents=True)
  train, test = [], []
  for label, cls in enumerate(UCF_CLASSES):
    (root / cls).mkdir()
    for g in (1, 2, 3):
      name = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
      _write_clip(root / name, label, num_frames=10 + 4 * g)
      if g < 3:
        train.append(f"{name} {label + 1}")
      else:
        test.append(name)
  (lists / "classInd.txt").write_text(
    "\n".join(f"{i + 1} {c}" for i, c in enumerate(UCF_CLASSES)) + "\n"
  )
  (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")  # Windows EOLs.
  (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
  return root


HMDB_CLASSES = ["brush_hair", "cartwheel"]


@pytest.fixture
def hmdb_root(tmp_path):
  root = tmp_path / "hmdb51"
  splits = tmp_path / "testTrainMulti_7030_splits"  # Next to root, as shipped.
  splits.mkdir()
  for label, cls in enumerate(HMDB_CLASSES):
    (root / cls).mkdir(parents=True)
    lines = []
    for i, tag in enumerate(["1", "1", "2", "0"]):
      name = f"{cls}_clip_{i}.avi"
      _write_clip(root / cls / name, label, num_frames=12)
      lines.append(f"{name} {tag} ")
    (splits / f"{cls}_test_split1.txt").write_text("\n".join(lines) + "\n")
  return root


def test_ucf101_train_and_test(ucf_root):
  train = data.VideoFolderDataset(
    ucf_root,
    layout="ucf101",
    split=1,
    subset="train",
    num_frames=4,
    size=(8, 12),
    stride=2,
    verbose=False,
  )
  test = data.VideoFolderDataset(
    ucf_root, layout="ucf101", subset="test", num_frames=4, size=(8, 12), verbose=False
  )
  assert train.classes == tuple(UCF_CLASSES) == test.classes
  assert len(train) == 6 and len(test) == 3
  assert "videos=6" in repr(train)
  batches = list(train.batches(4, shuffle=True, seed=0))
  assert [b[0].shape for b in batches] == [(4, 4, 8, 12, 3), (2, 4, 8, 12, 3)]
  labels = np.concatenate([b[1] for b in batches])
  assert labels.dtype == np.int32 and sorted(labels) == [0, 0, 1, 1, 2, 2]
  for video, lab in batches:
    assert video.dtype == np.float32 and 0 <= video.min() and video.max() <= 1
    for clip, label in zip(video, lab):
      decoded_label, frames = _decode(clip)
      assert decoded_label == label
      assert np.array_equal(np.diff(frames), [2, 2, 2])  # stride 2.
  # Test clips are centred: videos of 22 frames, span 4 -> start 9.
  clip, label = test[0]
  assert clip.shape == (4, 8, 12, 3) and label == 0
  assert np.array_equal(_decode(clip)[1], [9, 10, 11, 12])


def test_batches_deterministic_and_shuffled(ucf_root):
  ds = data.VideoFolderDataset(ucf_root, num_frames=3, size=(8, 8), verbose=False)
  a = list(ds.batches(6, seed=1))
  b = list(ds.batches(6, seed=1, num_workers=2))
  c = list(ds.batches(6, seed=2))
  assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[0][1], b[0][1])
  assert not np.array_equal(a[0][1], c[0][1]) or not np.array_equal(a[0][0], c[0][0])
  ordered = next(ds.batches(6, shuffle=False))[1]
  assert np.array_equal(ordered, [0, 0, 1, 1, 2, 2])
  assert len(list(ds.batches(4, drop_remainder=True, epochs=3))) == 3
  endless = ds.batches(5, epochs=None, drop_remainder=True)
  assert all(next(endless)[0].shape[0] == 5 for _ in range(4))


def test_short_videos_loop(ucf_root):
  ds = data.VideoFolderDataset(
    ucf_root, num_frames=8, stride=3, size=(8, 8), clip_sampling="start", verbose=False
  )
  clip = ds.load_clip(0)  # 14 frames, stride 3 -> frames 0, 3, 6, 9, 12, then loops.
  assert np.array_equal(_decode(clip)[1], [0, 3, 6, 9, 12, 0, 3, 6])


def test_ucf101_without_class_index(ucf_root):
  (ucf_root / "ucfTrainTestlist" / "classInd.txt").unlink()
  ds = data.VideoFolderDataset(ucf_root, subset="test", num_frames=2, verbose=False)
  assert ds.classes == tuple(UCF_CLASSES)


def test_hmdb51_layout(hmdb_root):
  train = data.VideoFolderDataset(
    hmdb_root, layout="hmdb51", subset="train", num_frames=5, size=None, verbose=False
  )
  test = data.VideoFolderDataset(
    hmdb_root, layout="hmdb51", subset="test", num_frames=5, size=None, verbose=False
  )
  assert train.classes == tuple(HMDB_CLASSES) == test.classes
  assert len(train) == 4 and len(test) == 2
  names = sorted(p.name for p, _ in test.samples)
  assert names == ["brush_hair_clip_2.avi", "cartwheel_clip_2.avi"]
  video, labels = next(test.batches(2, shuffle=False))
  assert video.shape == (2, 5, H, W, 3) and list(labels) == [0, 1]


def test_folders_layout_and_frame_folders(tmp_path):
  root = tmp_path / "videos"
  for label, cls in enumerate(["a", "b"]):
    (root / cls).mkdir(parents=True)
    _write_clip(root / cls / "x.mp4", label, 6)
    _write_clip(root / cls / "y.webm", label, 6)
  (root / "empty_dir").mkdir()
  ds = data.VideoFolderDataset(root, layout="folders", num_frames=4, size=(8, 8), verbose=False)
  assert ds.classes == ("a", "b") and len(ds) == 4
  video, labels = next(ds.batches(4, shuffle=False))
  assert [_decode(c)[0] for c in video] == list(labels) == [0, 0, 1, 1]


def test_progress_bar_while_indexing(ucf_root, capsys):
  data.VideoFolderDataset(ucf_root, num_frames=2, verbose=True)
  assert "Indexing ucf101" in capsys.readouterr().err


# -------------------------------------------------------------------- bad input


def test_missing_and_corrupt_videos_are_skipped_with_a_warning(ucf_root):
  (ucf_root / "Basketball" / "v_Basketball_g01_c01.avi").unlink()
  (ucf_root / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g02_c01.avi").write_bytes(b"junk" * 99)
  lists = ucf_root / "ucfTrainTestlist"
  with open(lists / "trainlist01.txt", "a") as f:
    f.write("CuttingInKitchen/v_CuttingInKitchen_g99_c01.avi 3\n")
  with pytest.warns(UserWarning, match=r"skipped 3 of 7") as record:
    ds = data.VideoFolderDataset(ucf_root, num_frames=2, verbose=False)
  message = str(record[0].message)
  assert "v_Basketball_g01_c01.avi' (missing)" in message
  assert "v_CuttingInKitchen_g99_c01.avi' (missing)" in message
  assert "v_ApplyEyeMakeup_g02_c01.avi' (unreadable" in message
  assert len(ds) == 4 and len(ds.skipped) == 3
  assert all(p.exists() for p, _ in ds.samples)


def test_without_probe_only_existence_is_checked(ucf_root):
  (ucf_root / "Basketball" / "v_Basketball_g01_c01.avi").unlink()
  with pytest.warns(UserWarning, match="skipped 1 of 6"):
    ds = data.VideoFolderDataset(ucf_root, num_frames=2, probe=False, verbose=False)
  assert len(ds) == 5


def test_no_usable_video(tmp_path):
  root = tmp_path / "UCF101"
  root.mkdir()
  (root / "trainlist01.txt").write_text("Foo/v_Foo_g01_c01.avi 1\n")
  with pytest.warns(UserWarning, match="skipped 1 of 1"):
    with pytest.raises(ValueError, match="no usable video"):
      data.VideoFolderDataset(root, num_frames=2, verbose=False)


def test_missing_root_and_split_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    data.VideoFolderDataset(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
    data.VideoFolderDataset(tmp_path, split=2, verbose=False)
  with pytest.raises(FileNotFoundError, match="_test_split1.txt"):
    data.VideoFolderDataset(tmp_path, layout="hmdb51", verbose=False)
  with pytest.raises(FileNotFoundError, match="split folder"):
    data.VideoFolderDataset(tmp_path, split_dir=tmp_path / "nope", verbose=False)


def test_malformed_split_files(ucf_root, hmdb_root):
  lists = ucf_root / "ucfTrainTestlist"
  (lists / "trainlist01.txt").write_text("no_class_folder.avi 1\n")
  with pytest.raises(ValueError, match=r"trainlist01.txt', line 1"):
    data.VideoFolderDataset(ucf_root, verbose=False)
  (lists / "trainlist01.txt").write_text("Unknown/v_Unknown_g01_c01.avi 1\n")
  with pytest.raises(ValueError, match="Unknown"):
    data.VideoFolderDataset(ucf_root, verbose=False)
  split = hmdb_root.parent / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt"
  split.write_text("cartwheel_clip_0.avi 7\n")
  with pytest.raises(ValueError, match=r"cartwheel_test_split1.txt', line 1"):
    data.VideoFolderDataset(hmdb_root, layout="hmdb51", verbose=False)


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(layout="kinetics"), ValueError, "layout"),
    (dict(subset="val"), ValueError, "subset"),
    (dict(num_frames=0), ValueError, "num_frames"),
    (dict(stride=-1), ValueError, "stride"),
    (dict(size=(8, 0)), ValueError, "size"),
    (dict(split=0), ValueError, "split"),
    (dict(clip_sampling="middle"), ValueError, "clip_sampling"),
  ],
)
def test_bad_dataset_arguments(ucf_root, kwargs, error, match):
  with pytest.raises(error, match=match):
    data.VideoFolderDataset(ucf_root, verbose=False, **kwargs)


def test_bad_batch_arguments(ucf_root):
  ds = data.VideoFolderDataset(ucf_root, num_frames=2, size=8, verbose=False)
  with pytest.raises(ValueError, match="batch_size"):
    ds.batches(0)
  with pytest.raises(ValueError, match="batch_size"):
    ds.batches(7, drop_remainder=True)
  with pytest.raises(ValueError, match="epochs"):
    ds.batches(2, epochs=0)
  with pytest.raises(IndexError):
    ds[6]


def test_mixed_sizes_need_size(tmp_path):
  root = tmp_path / "v"
  (root / "a").mkdir(parents=True)
  _write_clip(root / "a" / "x.mp4", 0, 4)
  data.write_video(root / "a" / "y.mp4", np.zeros((4, 8, 8, 3)))
  ds = data.VideoFolderDataset(root, layout="folders", num_frames=2, size=None, verbose=False)
  with pytest.raises(ValueError, match="size"):
    next(ds.batches(2))
