"""The code identity of a run: which code computed a number (docs/design.md §9).

A run records, beside its configuration, the identity of the code that trained it
(:func:`code_identity`)::

  {"package_version": "0.1.0", "git_commit": "<sha>[-dirty]" or None, "source": "<12 hex>"}

* ``package_version``: ``sideways_lab.__version__``;
* ``git_commit``: the commit of the checkout the package runs from, with ``-dirty`` when a
  tracked file differs from it; None outside a checkout (an installed wheel). A commit changes
  with every edit of the docs or notebooks, so it tells *when* a run was made, not whether two
  runs computed the same thing;
* ``source``: :func:`source_hash`, a hash of the source files that decide what a run computes
  (:func:`source_files`). Two runs of one configuration with the same ``source`` were computed
  by the same code; this is what a sweep's cache matches on
  (:func:`sideways_lab.experiments.sweep`).

The identity is computed once per process and package directory: a process runs the code it
imported, so an edit made while it runs does not change its identity (a process that reloads
modules asks again with ``refresh=True``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import subprocess
import tokenize
from pathlib import Path

import sideways_lab

__all__ = [
  "PACKAGE_DIR",
  "UNHASHED",
  "code_identity",
  "git_commit",
  "source_files",
  "source_hash",
  "code_text",
]

#: The directory of the package whose sources are hashed (tests point it at a copy).
PACKAGE_DIR = Path(__file__).resolve().parent

#: Top-level modules and subpackages of the package that are *not* hashed: they do not decide
#: what a trained run computes (its training, its evaluation, its row of results). The front
#: door (``__init__``: lazy imports and the version, which is recorded on its own), this module,
#: the command line and the process launcher (they parse arguments and start processes), the
#: figures, plotting and widgets (they draw numbers, they do not make them), the claims (they
#: are recomputed from the results on every figures run) and ``analysis`` (measurements at
#: initialisation, latency and timing, recomputed by every figures run; no sweep imports it).
#: Every other ``.py`` file is hashed, so a new module counts until it is listed here.
UNHASHED = (
  "__init__.py",
  "provenance.py",
  "cli.py",
  "launch.py",
  "figures.py",
  "claims.py",
  "widgets.py",
  "plotting",
  "analysis",
)

_CACHE: dict[Path, dict] = {}


def source_files(package_dir=None) -> list[Path]:
  """The ``.py`` files of the package (``package_dir``, default :data:`PACKAGE_DIR`) that
  decide what a run computes: every one but those under :data:`UNHASHED`, sorted by their
  path relative to the package. Docs, notebooks, benchmarks and tests are outside the package
  and never hashed."""
  root = Path(PACKAGE_DIR if package_dir is None else package_dir)
  if not root.is_dir():
    raise NotADirectoryError(f"package_dir {str(root)!r} is not a directory")
  files = [
    p
    for p in root.rglob("*.py")
    if p.relative_to(root).parts[0] not in UNHASHED and "__pycache__" not in p.parts
  ]
  return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstring_spans(tree: ast.AST) -> list:
  """``[(start, end)]`` as ``((line, byte col), (line, byte col))`` of every docstring."""
  spans = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
          s = body[0]
          spans.append(((s.lineno, s.col_offset), (s.end_lineno, s.end_col_offset)))
  return spans


def code_text(text: str) -> str:
  """The code of a Python source without what cannot change what it computes: comments,
  docstrings, trailing spaces and blank lines are removed; everything else is kept as written.
  A source that does not parse is returned unchanged."""
  try:
    tree = ast.parse(text)
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
  except (SyntaxError, tokenize.TokenError, ValueError):
    return text
  lines = text.split("\n")
  starts = [0]
  for line in lines:
    starts.append(starts[-1] + len(line) + 1)

  def offset(line: int, col: int, byte_col: bool) -> int:
    if byte_col:  # ast counts UTF-8 bytes, tokenize characters
      col = len(lines[line - 1].encode()[:col].decode(errors="ignore"))
    return starts[line - 1] + col

  cut = [
    (offset(*t.start, False), offset(*t.end, False)) for t in tokens if t.type == tokenize.COMMENT
  ]
  cut += [(offset(*a, True), offset(*b, True)) for a, b in _docstring_spans(tree)]
  kept, pos = [], 0
  for a, b in sorted(cut):
    kept.append(text[pos:a] if a > pos else "")
    pos = max(pos, b)
  kept.append(text[pos:])
  out = [line.rstrip() for line in "".join(kept).split("\n")]
  return "\n".join(line for line in out if line)


def source_hash(package_dir=None) -> str:
  """The first 12 hex digits of ``SHA-256(Σ_f path_f ‖ 0 ‖ code_text(f) ‖ 0)`` over
  :func:`source_files` in order (``path_f`` relative to the package, ``/``-separated).

  Only code counts: an edit of a comment or a docstring (:func:`code_text`), or of a file
  outside :func:`source_files` (docs, notebooks, figures, the command line), leaves it
  unchanged; any other edit of a hashed file, a new file or a renamed one changes it. It
  depends on the files' contents only, so it is the same in every process and on every
  machine."""
  root = Path(PACKAGE_DIR if package_dir is None else package_dir)
  h = hashlib.sha256()
  for p in source_files(root):
    h.update(p.relative_to(root).as_posix().encode() + b"\0")
    h.update(code_text(p.read_text(encoding="utf-8")).encode() + b"\0")
  return h.hexdigest()[:12]


def git_commit(root) -> str | None:
  """The commit of the git checkout whose top level is ``root``, with ``-dirty`` appended when
  a tracked file differs from it; None when ``root`` is not the top of a checkout (an
  installed package inside another repository is not that repository's code) or git is
  absent."""
  root = Path(root).resolve()

  def git(*args: str) -> str | None:
    r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    return r.stdout.strip() if r.returncode == 0 else None

  try:
    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
      return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
      return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def code_identity(package_dir=None, *, refresh: bool = False) -> dict:
  """``{"package_version", "git_commit", "source"}`` of the package at ``package_dir``
  (default :data:`PACKAGE_DIR`): see the module's docstring. Computed once per process and
  directory, unless ``refresh``; the checkout is the package directory's parent."""
  root = Path(PACKAGE_DIR if package_dir is None else package_dir).resolve()
  if refresh or root not in _CACHE:
    _CACHE[root] = {
      "package_version": sideways_lab.__version__,
      "git_commit": git_commit(root.parent),
      "source": source_hash(root),
    }
  return dict(_CACHE[root])
