"""Tidy tables and an on-disk cache for analysis results (no pandas, no pickle).

A :class:`Table` is a list of rows (dicts of plain Python scalars/strings) plus a ``meta`` dict.
It converts to rows, CSV and JSON, filters, and aggregates (mean, std, count over groups).

The cache stores a table as JSON under ``<cache dir>/<name>-<key>.json`` where the key is a
SHA-256 of the computation's name and arguments; the cache dir is, in order: the ``cache``
argument (a path), the environment variable ``SIDEWAYS_LAB_CACHE``, ``./.sideways_cache``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

CACHE_VERSION = 1
CACHE_ENV = "SIDEWAYS_LAB_CACHE"
QUICK_ENV = "SIDEWAYS_LAB_QUICK"


def is_quick(quick: bool | None = None) -> bool:
  """``quick`` if given, else whether the env var SIDEWAYS_LAB_QUICK is set to a true value."""
  if quick is not None:
    return bool(quick)
  return os.environ.get(QUICK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _plain(v: Any) -> Any:
  """A JSON-friendly scalar: numpy scalars to Python, non-finite floats kept as floats."""
  if isinstance(v, (np.generic,)):
    v = v.item()
  if isinstance(v, np.ndarray) and v.ndim == 0:
    v = v.item()
  return v


@dataclasses.dataclass
class Table:
  """A tidy table: one observation per row.

  Attributes:
    rows: list of dicts with the same keys (missing keys read as None).
    meta: free-form description (the arguments of the sweep, units of measure...).
  """
  rows: list
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.rows = [{k: _plain(v) for k, v in r.items()} for r in self.rows]

  def __len__(self) -> int:
    return len(self.rows)

  def __iter__(self):
    return iter(self.rows)

  def __repr__(self) -> str:
    return f"Table({len(self.rows)} rows, columns={self.columns})"

  @property
  def columns(self) -> list[str]:
    cols: list[str] = []
    for r in self.rows:
      for k in r:
        if k not in cols:
          cols.append(k)
    return cols

  def to_rows(self) -> list[dict]:
    """A copy of the rows."""
    return [dict(r) for r in self.rows]

  def column(self, name: str) -> np.ndarray:
    """The values of a column as a NumPy array (object dtype when mixed)."""
    if name not in self.columns:
      raise KeyError(f"no column {name!r}; columns are {self.columns}")
    vals = [r.get(name) for r in self.rows]
    try:
      return np.asarray(vals, dtype=float)
    except (TypeError, ValueError):
      return np.asarray(vals, dtype=object)

  def where(self, **conditions) -> "Table":
    """The rows whose columns equal the given values (a callable value is a predicate)."""
    def ok(r):
      for k, v in conditions.items():
        if callable(v):
          if not v(r.get(k)):
            return False
        elif r.get(k) != v:
          return False
      return True
    return Table([r for r in self.rows if ok(r)], dict(self.meta))

  def mean(self, by: Sequence[str], metrics: Sequence[str] | None = None) -> "Table":
    """Groups by the columns ``by`` and gives ``<metric>`` (mean), ``<metric>_std`` and ``n``.

    Non-finite values are ignored in the mean (NaN marks "no gradient").
    """
    by = list(by)
    if metrics is None:
      metrics = [c for c in self.columns if c not in by and all(
          isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
          for r in self.rows)]
    groups: dict = {}
    for r in self.rows:
      groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    out = []
    for key, rs in groups.items():
      row = dict(zip(by, key))
      for m in metrics:
        v = np.asarray([r.get(m) for r in rs], float)
        v = v[np.isfinite(v)]
        row[m] = float(v.mean()) if v.size else math.nan
        row[m + "_std"] = float(v.std()) if v.size else math.nan
      row["n"] = len(rs)
      out.append(row)
    return Table(out, dict(self.meta, aggregated_by=by))

  # -- files -----------------------------------------------------------------------------------
  def to_csv(self, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=self.columns)
      w.writeheader()
      for r in self.rows:
        w.writerow(r)
    return path

  def to_json(self, path=None) -> str:
    """The table as JSON (``{"meta": ..., "rows": [...]}``); written to ``path`` if given."""
    text = json.dumps({"meta": _jsonable(self.meta), "rows": self.rows}, indent=1,
                      allow_nan=True)
    if path is not None:
      path = Path(path)
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_suffix(path.suffix + ".tmp")
      tmp.write_text(text)
      os.replace(tmp, path)
    return text

  @classmethod
  def from_json(cls, path_or_text) -> "Table":
    text = path_or_text
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str)
                                          and not path_or_text.lstrip().startswith("{")):
      text = Path(path_or_text).read_text()
    d = json.loads(text)
    return cls(d["rows"], d.get("meta", {}))


def _jsonable(x: Any) -> Any:
  """A JSON-serialisable, deterministic version of ``x`` (for cache keys and metadata)."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray) or hasattr(x, "__array__") and hasattr(x, "shape"):
    a = np.asarray(x)
    return {"array_sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
            "shape": list(a.shape), "dtype": str(a.dtype)}
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
  p = Path(p)
  try:
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
  except OSError:
    return {"path": str(p)}


def cache_dir(cache=None) -> Path:
  """The cache directory: ``cache`` if a path, else $SIDEWAYS_LAB_CACHE, else ./.sideways_cache."""
  if isinstance(cache, (str, os.PathLike)):
    return Path(cache)
  env = os.environ.get(CACHE_ENV)
  return Path(env) if env else Path.cwd() / ".sideways_cache"


def cache_key(name: str, args: dict) -> str:
  """SHA-256 (hex, 16 chars) of the name, the cache version and the JSON of ``args``."""
  blob = json.dumps({"name": name, "version": CACHE_VERSION, "args": _jsonable(args)},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(name: str, args: dict, compute: Callable[[], Table], cache=True) -> Table:
  """``compute()`` with its table stored as JSON under the cache dir.

  Args:
    name: the computation's name (part of the file name and the key).
    args: every argument the result depends on.
    compute: builds the :class:`Table`.
    cache: True (the default dir), False/None (no cache), or a directory path.
  """
  if cache is False or cache is None:
    return compute()
  path = cache_dir(cache) / f"{name}-{cache_key(name, args)}.json"
  if path.exists():
    try:
      t = Table.from_json(path)
      t.meta["cache_path"] = str(path)
      t.meta["from_cache"] = True
      return t
    except (ValueError, KeyError):
      pass   # a corrupt or foreign file: recompute and overwrite
  table = compute()
  table.meta = dict(table.meta, cache_key=cache_key(name, args), args=_jsonable(args))
  table.to_json(path)
  table.meta["cache_path"] = str(path)
  table.meta["from_cache"] = False
  return table
