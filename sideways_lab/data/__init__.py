"""Data for Sideways experiments: offline synthetic video and real video files.

Everything here returns NumPy arrays (float32 video in ``[0, 1]``, int32 labels);
batches are ``(B, T, H, W, C)``.  Nothing is downloaded and the synthetic
generators store nothing on disk.

* :func:`moving_digits` / :func:`moving_digits_batches` -- scikit-learn digits
  bouncing on a canvas; ``speed`` (pixels per frame) is the smoothness knob.
* :func:`motion_classes` / :func:`motion_classes_batches` -- clips whose label is
  a motion (direction, sense of rotation, growth), invisible in any single frame.
* :func:`stride_frames` -- temporal subsampling of arrays (``stride`` on files).
* :func:`read_video`, :func:`iter_video_frames`, :func:`write_video` -- video files
  (mp4, avi, webm, gif, folders of images) through imageio's PyAV plugin.
* :class:`VideoFolderDataset` -- UCF101 / HMDB51 folder layouts with split files.

scikit-learn (0.9 s to import) is imported on the first call that needs its digits.
"""

from sideways_lab.data.datasets import VideoFolderDataset
from sideways_lab.data.synthetic import (
  MOTION_CLASS_NAMES,
  motion_classes,
  motion_classes_batches,
  moving_digits,
  moving_digits_batches,
)
from sideways_lab.data.video import (
  IMAGE_EXTENSIONS,
  VIDEO_EXTENSIONS,
  iter_video_frames,
  read_video,
  resize_frames,
  stride_frames,
  video_info,
  write_video,
)

__all__ = [
  "IMAGE_EXTENSIONS",
  "MOTION_CLASS_NAMES",
  "VIDEO_EXTENSIONS",
  "VideoFolderDataset",
  "iter_video_frames",
  "motion_classes",
  "motion_classes_batches",
  "moving_digits",
  "moving_digits_batches",
  "read_video",
  "resize_frames",
  "stride_frames",
  "video_info",
  "write_video",
]
