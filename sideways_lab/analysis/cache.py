"""A small on-disk cache of analysis results (pandas DataFrames as JSON; never pickle).

``cached(name, args, compute, cache)`` returns ``compute()`` — a :class:`pandas.DataFrame` —
and stores it as JSON at ``<cache dir>/<name>-<key>.json``, where ``key`` is the first 16 hex
digits of ``SHA-256(name, CACHE_VERSION, args)``; a later call with the same name and
arguments reads the file instead of computing. The file holds ``{"name", "key", "args",
"attrs", "columns", "rows"}``: ``rows`` are the DataFrame's records (JSON keeps ints, floats,
strings, None, NaN and ±inf as they were, so a result read back equals the computed one),
``attrs`` its ``DataFrame.attrs``. A file that cannot be read (corrupt, truncated, foreign)
is computed again and overwritten, with a warning.

The cache directory is, in order: the ``cache`` argument when it is a path, the environment
variable ``SIDEWAYS_LAB_CACHE``, ``./.sideways_cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Part of every key: raised whenever cached results change meaning (the network, the clips'
#: seeds), so that files written before are computed again instead of read as current.
CACHE_VERSION = 3
CACHE_ENV = "SIDEWAYS_LAB_CACHE"
DEFAULT_DIR = ".sideways_cache"
KEY_HEX_DIGITS = 16


def jsonable(x: Any) -> Any:
  """A JSON-serialisable, deterministic version of ``x`` (for cache keys and attributes).

  Arrays become their SHA-256, shape and dtype; paths their resolved path, size and
  modification time; callables their qualified name; dicts are sorted by key.
  """
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and hasattr(x, "shape")):
    a = np.asarray(x)
    return {
      "array_sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
      "shape": list(a.shape),
      "dtype": str(a.dtype),
    }
  if isinstance(x, Path):
    return _path_fingerprint(x)
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, (str, int, float, bool)) or x is None:
    return x
  if callable(x):
    return getattr(x, "__module__", "") + "." + getattr(x, "__qualname__", repr(x))
  return repr(x)


def _path_fingerprint(p: Path) -> dict:
  try:
    st = p.stat()
  except OSError:
    return {"path": str(p)}
  return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_dir(cache: bool | str | os.PathLike = True) -> Path:
  """The cache directory: ``cache`` if a path, else $SIDEWAYS_LAB_CACHE, else ./.sideways_cache."""
  if isinstance(cache, (str, os.PathLike)):
    return Path(cache)
  env = os.environ.get(CACHE_ENV)
  return Path(env) if env else Path.cwd() / DEFAULT_DIR


def cache_key(name: str, args: dict) -> str:
  """``SHA-256(name, CACHE_VERSION, jsonable(args))``, its first 16 hex digits."""
  blob = json.dumps(
    {"name": name, "version": CACHE_VERSION, "args": jsonable(args)}, sort_keys=True
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:KEY_HEX_DIGITS]


def _records(df: pd.DataFrame) -> list[dict]:
  """The rows of ``df`` as dicts of plain Python values (NumPy scalars unwrapped)."""
  return [
    {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
    for r in df.to_dict(orient="records")
  ]


def _write(path: Path, payload: dict) -> None:
  """Writes JSON atomically (a temporary file, then a rename)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(payload, indent=1, allow_nan=True))
  os.replace(tmp, path)


def _read(path: Path) -> pd.DataFrame:
  """The DataFrame stored at ``path``; raises ValueError/KeyError/TypeError if unreadable."""
  payload = json.loads(path.read_text())
  df = pd.DataFrame.from_records(payload["rows"], columns=payload["columns"])
  df.attrs.update(payload["attrs"])
  return df


def cached(
  name: str,
  args: dict,
  compute: Callable[[], pd.DataFrame],
  cache: bool | str | os.PathLike | None = True,
) -> pd.DataFrame:
  """``compute()``, stored as JSON under the cache directory and read back on later calls.

  Args:
    name: the computation's name (the start of the file name, and part of the key).
    args: every argument the result depends on (see :func:`jsonable`).
    compute: ``() -> DataFrame``; its ``attrs`` must be JSON-serialisable.
    cache: True (the default directory), False or None (no cache), or a directory.
  Returns:
    the DataFrame, with ``attrs["from_cache"]`` (bool) and, when cached,
    ``attrs["cache_path"]`` (str).
  """
  if cache is False or cache is None:
    df = compute()
    df.attrs["from_cache"] = False
    return df
  key = cache_key(name, args)
  path = cache_dir(cache) / f"{name}-{key}.json"
  if path.exists():
    try:
      df = _read(path)
      df.attrs.update(from_cache=True, cache_path=str(path))
      return df
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      warnings.warn(
        f"unreadable cache file {path} ({type(e).__name__}: {e}); computing again",
        RuntimeWarning,
        stacklevel=2,
      )
  df = compute()
  df.attrs = jsonable(dict(df.attrs))  # as it will read back
  _write(
    path,
    {
      "name": name,
      "key": key,
      "args": jsonable(args),
      "attrs": df.attrs,
      "columns": [str(c) for c in df.columns],
      "rows": _records(df),
    },
  )
  df.attrs.update(from_cache=False, cache_path=str(path))
  return df
