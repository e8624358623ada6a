"""The code identity of a run: which files are hashed, what changes the hash, across processes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sideways_lab import provenance

ROOT = Path(__file__).resolve().parents[1]


def copy_package(tmp_path: Path) -> Path:
  """A copy of the package inside a checkout-like folder with docs and notebooks beside it."""
  repo = tmp_path / "repo"
  package = repo / "sideways_lab"
  shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
  (repo / "docs").mkdir()
  (repo / "docs" / "design.md").write_text("# design\n")
  (repo / "notebooks").mkdir()
  (repo / "notebooks" / "00.ipynb").write_text("{}\n")
  return package


def edit(path: Path, old: str, new: str) -> None:
  text = path.read_text()
  assert text.count(old) == 1, old
  path.write_text(text.replace(old, new))


def test_hashed_files_are_the_training_sources():
  names = {p.relative_to(provenance.PACKAGE_DIR).as_posix() for p in provenance.source_files()}
  for hashed in ("training.py", "engine.py", "models.py", "tasks.py", "experiments.py"):
    assert hashed in names
  assert "data/synthetic.py" in names and "data/__init__.py" in names
  for unhashed in ("__init__.py", "cli.py", "figures.py", "claims.py", "widgets.py"):
    assert unhashed not in names
  assert not any(n.startswith(("plotting/", "analysis/")) for n in names)


def test_code_text_drops_comments_and_docstrings_only():
  src = (
    '"""Module ≈ docstring."""\n\n'
    "def f(x):  # a comment\n"
    '  """Docstring with ``x`` · y."""\n'
    '  s = "# not a comment"\n\n'
    "  return x + 1  # ≈\n"
  )
  assert provenance.code_text(src) == 'def f(x):\n  s = "# not a comment"\n  return x + 1'
  assert provenance.code_text("def (:\n") == "def (:\n"  # not Python: hashed as written


def test_a_code_change_changes_the_hash_and_docs_do_not(tmp_path):
  package = copy_package(tmp_path)
  h0 = provenance.source_hash(package)
  assert h0 == provenance.source_hash(provenance.PACKAGE_DIR) and len(h0) == 12
  # docs, notebooks, comments, docstrings, blank lines and unhashed modules: the same code
  (package.parent / "docs" / "design.md").write_text("# design, rewritten\n")
  (package.parent / "notebooks" / "00.ipynb").write_text('{"cells": []}\n')
  edit(package / "training.py", "import dataclasses\n", "import dataclasses  # why\n\n")
  edit(package / "training.py", "A config dict without", "A configuration dict without")
  edit(package / "figures.py", "import dataclasses\n", "import dataclasses\nX = 1\n")
  (package / "analysis" / "extra.py").write_text("Y = 2\n")
  assert provenance.source_hash(package) == h0
  # a change of what a run computes, in a module or a subpackage
  edit(package / "training.py", "import functools\n", "import functools\nX = 1\n")
  h1 = provenance.source_hash(package)
  assert h1 != h0
  edit(package / "data" / "synthetic.py", "import numpy as np\n", "import numpy as np\nZ = 0\n")
  assert provenance.source_hash(package) not in (h0, h1)


def test_identity_is_cached_per_process_until_refreshed(tmp_path, monkeypatch):
  package = copy_package(tmp_path)
  monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
  first = provenance.code_identity()
  assert first["git_commit"] is None  # the copy is no checkout
  edit(package / "engine.py", "import jax\n", "import jax\nW = 3\n")
  assert provenance.code_identity() == first  # the process still runs what it imported
  assert provenance.code_identity(refresh=True)["source"] != first["source"]


def test_identity_is_the_same_in_another_process():
  code = "from sideways_lab import provenance; print(provenance.code_identity())"
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
  ).stdout
  assert out.strip() == str(provenance.code_identity(refresh=True))


def test_git_commit_of_a_checkout_and_of_a_folder_inside_one(tmp_path):
  if shutil.which("git") is None:
    pytest.skip("git is not installed")
  repo = tmp_path / "repo"
  (repo / "sub").mkdir(parents=True)
  run = dict(cwd=repo, check=True, capture_output=True)
  subprocess.run(["git", "init", "-q"], **run)
  (repo / "a.py").write_text("A = 1\n")
  subprocess.run(["git", "add", "a.py"], **run)
  subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"], **run)
  head = subprocess.run(["git", "rev-parse", "HEAD"], text=True, **run).stdout.strip()
  assert provenance.git_commit(repo) == head
  (repo / "a.py").write_text("A = 2\n")
  assert provenance.git_commit(repo) == head + "-dirty"
  assert provenance.git_commit(repo / "sub") is None  # not the top of the checkout
  assert provenance.git_commit(tmp_path) is None


def test_source_files_checks_its_argument(tmp_path):
  with pytest.raises(NotADirectoryError, match="package_dir"):
    provenance.source_files(tmp_path / "nope")
