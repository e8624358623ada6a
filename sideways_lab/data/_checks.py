"""Argument checks shared by the data modules (clear errors, never silent)."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: A file or folder: a str or an os.PathLike.
PathLike = str | os.PathLike
#: ``(H, W)``, or one int for a square.
Size = int | tuple[int, int]
#: Anything ``np.asarray`` takes.
ArrayLike = npt.ArrayLike


def positive_int(value: object, name: str, *, allow_none: bool = False) -> int | None:
  """Returns ``int(value)``; TypeError if not an integer, ValueError if ``<= 0``."""
  if value is None and allow_none:
    return None
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise TypeError(
      f"`{name}` must be a positive integer{' or None' if allow_none else ''}, "
      f"got {value!r} of type {type(value).__name__}."
    )
  if value <= 0:
    raise ValueError(f"`{name}` must be a positive integer, got {value}.")
  return int(value)


def non_negative_int(value: object, name: str) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
    raise TypeError(f"`{name}` must be a non-negative integer, got {value!r}.")
  if value < 0:
    raise ValueError(f"`{name}` must be a non-negative integer, got {value}.")
  return int(value)


def real_in(value: object, name: str, lo: float, hi: float, *, hi_open: bool = False) -> float:
  """Returns ``float(value)`` after checking ``lo <= value <= hi`` (``< hi`` if open)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise TypeError(f"`{name}` must be a real number, got {value!r}.")
  value = float(value)
  ok = lo <= value and (value < hi if hi_open else value <= hi)
  if not np.isfinite(value) or not ok:
    bracket = ")" if hi_open else "]"
    raise ValueError(f"`{name}` must be in [{lo}, {hi}{bracket}, got {value}.")
  return value


def size_hw(
  size: Size | None, name: str = "size", *, allow_none: bool = True
) -> tuple[int, int] | None:
  """Normalises ``size`` to ``(H, W)``: an int means a square; None passes through."""
  if size is None:
    if allow_none:
      return None
    raise TypeError(f"`{name}` must be an int or a pair (H, W) of ints, got None.")
  if isinstance(size, numbers.Integral) and not isinstance(size, (bool, np.bool_)):
    s = positive_int(size, name)
    return (s, s)
  if isinstance(size, (tuple, list, np.ndarray)) and len(size) == 2:
    return (positive_int(size[0], f"{name}[0]"), positive_int(size[1], f"{name}[1]"))
  raise TypeError(f"`{name}` must be an int or a pair (H, W) of positive ints, got {size!r}.")


def as_path(path: PathLike, name: str = "path") -> Path:
  if isinstance(path, (str, os.PathLike)):
    return Path(path)
  raise TypeError(f"`{name}` must be a str or os.PathLike, got {type(path).__name__}.")
