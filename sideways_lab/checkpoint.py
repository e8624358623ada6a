"""Checkpoints: NumPy ``.npz`` files with a JSON manifest; never pickle.

A checkpoint of step s is one file ``ckpt_<s:08d>.npz`` holding

* every leaf of ``params`` and ``opt_state`` under its key path (``params/...``,
  ``opt_state/...``), and
* ``__manifest__``: the UTF-8 bytes of a JSON manifest — format version, step, the run's
  configuration, and a *fingerprint* (SHA-256 of the parameter tree's key paths, shapes and
  dtypes) that tells a checkpoint of another model apart.

A readable copy of the manifest is written next to it as ``ckpt_<s:08d>.json``. Files are
written atomically (a temporary file in the same directory, flushed, then ``os.replace``) so
an interrupted write never leaves a half checkpoint under the final name, and only the last
``keep`` checkpoints are kept. Loading uses ``np.load(..., allow_pickle=False)`` and checks
the manifest, the fingerprint, and every key and shape against a template tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import jax
import numpy as np

FORMAT = "sideways_lab.checkpoint/1"
_NAME = re.compile(r"^ckpt_(\d{8,})\.npz$")
MANIFEST_KEY = "__manifest__"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: corrupt, truncated, or from another model."""


def _key(path) -> str:
  return jax.tree_util.keystr(path)


def flatten(tree, prefix: str) -> dict[str, np.ndarray]:
  """``{prefix + keystr(path): np.asarray(leaf)}`` for every leaf of ``tree``."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + _key(p): np.asarray(v) for p, v in leaves}


def fingerprint(params) -> str:
  """SHA-256 of the parameter tree's key paths, shapes and dtypes (not the values)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  desc = [(_key(p), list(np.shape(v)), str(np.asarray(v).dtype)) for p, v in leaves]
  return hashlib.sha256(json.dumps(desc).encode()).hexdigest()


def _atomic_write(path: Path, write) -> None:
  """Writes through ``write(fileobj)`` to a temporary file, fsyncs, then renames to ``path``."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise


def atomic_write_text(path, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (temporary file then rename)."""
  _atomic_write(Path(path), lambda f: f.write(text.encode()))


def checkpoint_path(directory, step: int) -> Path:
  """The file of the checkpoint of ``step`` in ``directory``: ``ckpt_<step, 8 digits>.npz``."""
  return Path(directory) / f"ckpt_{int(step):08d}.npz"


def list_checkpoints(directory) -> list[tuple[int, Path]]:
  """``[(step, path), ...]`` of the checkpoints in ``directory``, oldest first."""
  d = Path(directory)
  if not d.is_dir():
    return []
  out = []
  for p in d.iterdir():
    m = _NAME.match(p.name)
    if m and p.is_file():
      out.append((int(m.group(1)), p))
  return sorted(out)


def latest(directory) -> Path | None:
  """The path of the newest checkpoint in ``directory``, or None."""
  cks = list_checkpoints(directory)
  return cks[-1][1] if cks else None


def save(
  directory,
  step: int,
  params,
  opt_state=None,
  *,
  manifest: dict | None = None,
  keep: int | None = 3,
) -> Path:
  """Saves a checkpoint of ``step`` and keeps the last ``keep`` (None keeps all).

  Args:
    directory: where to write (created if missing).
    step: the number of updates done so far (a non-negative int).
    params, opt_state: pytrees of arrays (any structure; flattened by key path).
    manifest: extra JSON-serialisable fields (the run's configuration, scheme, ...).
    keep: how many checkpoints to keep; older ones are deleted after the new one is in place.

  Returns:
    The path of the new checkpoint.
  """
  if not isinstance(step, (int, np.integer)) or step < 0:
    raise ValueError(f"step must be a non-negative int, got {step!r}")
  if keep is not None and (not isinstance(keep, int) or keep < 1):
    raise ValueError(f"keep must be a positive int or None, got {keep!r}")
  d = Path(directory)
  d.mkdir(parents=True, exist_ok=True)
  arrays = flatten(params, "params")
  if opt_state is not None:
    arrays.update(flatten(opt_state, "opt_state"))
  man = {
    "format": FORMAT,
    "step": int(step),
    "fingerprint": fingerprint(params),
    "keys": sorted(arrays),
  }
  man.update(manifest or {})
  man_text = json.dumps(man, indent=1, sort_keys=True)
  arrays[MANIFEST_KEY] = np.frombuffer(man_text.encode(), np.uint8)
  path = checkpoint_path(d, step)
  _atomic_write(path, lambda f: np.savez(f, **arrays))
  atomic_write_text(path.with_suffix(".json"), man_text)
  if keep is not None:
    for _, old in list_checkpoints(d)[:-keep]:
      old.unlink(missing_ok=True)
      old.with_suffix(".json").unlink(missing_ok=True)
  return path


def read_manifest(path) -> dict:
  """The manifest stored inside a checkpoint file (raises CheckpointError if unreadable)."""
  with _open(path) as z:
    return _manifest(z, path)


def _open(path):
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
  try:
    return np.load(path, allow_pickle=False)
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    raise CheckpointError(
      f"checkpoint {str(path)!r} is corrupt or truncated ({e}); it was left as it is"
    ) from e


def _manifest(z, path) -> dict:
  try:
    man = json.loads(bytes(z[MANIFEST_KEY]).decode())
  except KeyError as e:
    raise CheckpointError(f"{str(path)!r} has no manifest: not a sideways_lab checkpoint") from e
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated ({e})") from e
  if man.get("format") != FORMAT:
    raise CheckpointError(f"{str(path)!r} has format {man.get('format')!r}, expected {FORMAT!r}")
  return man


def _restore(z, path, template, prefix: str):
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  out = []
  for p, ref in leaves:
    k = prefix + _key(p)
    if k not in z.files:
      raise CheckpointError(
        f"checkpoint {str(path)!r} lacks {k!r}: it was written for another model or optimiser"
      )
    try:
      v = z[k]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
      raise CheckpointError(
        f"checkpoint {str(path)!r} is corrupt or truncated at {k!r} ({e})"
      ) from e
    ref = np.asarray(ref)
    if v.shape != ref.shape or v.dtype != ref.dtype:
      raise CheckpointError(
        f"checkpoint {str(path)!r}: {k!r} has shape {v.shape} {v.dtype}, "
        f"the model expects {ref.shape} {ref.dtype} (a checkpoint from "
        f"another model)"
      )
    out.append(v)
  return jax.tree_util.tree_unflatten(treedef, out)


def load(path, params_template, opt_state_template=None):
  """Loads a checkpoint into trees shaped like the templates.

  Args:
    path: a checkpoint file, or a directory (its newest checkpoint is used).
    params_template: a params tree of the model (``graph.init(...)``): structure and shapes.
    opt_state_template: the optimiser state tree, or None to skip it.

  Returns:
    ``(params, opt_state or None, manifest)`` with NumPy leaves.

  Raises:
    FileNotFoundError: no checkpoint there.
    CheckpointError: corrupt or truncated file, or a checkpoint of another model.
  """
  path = Path(path)
  if path.is_dir():
    p = latest(path)
    if p is None:
      raise FileNotFoundError(f"no checkpoint (ckpt_*.npz) in {str(path)!r}")
    path = p
  with _open(path) as z:
    man = _manifest(z, path)
    fp = fingerprint(params_template)
    if man.get("fingerprint") != fp:
      raise CheckpointError(
        f"checkpoint {str(path)!r} is from another model: its parameter fingerprint "
        f"{str(man.get('fingerprint'))[:12]}… differs from this model's {fp[:12]}… "
        f"(scheme {man.get('scheme')!r}, config {man.get('config', {}).get('model')})"
      )
    params = _restore(z, path, params_template, "params")
    opt_state = None
    if opt_state_template is not None:
      opt_state = _restore(z, path, opt_state_template, "opt_state")
  return params, opt_state, man
