"""Imports in sideways_lab/ go down the layers of docs/architecture.md, never up."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sideways_lab"

# The layers of docs/architecture.md, bottom (1) to top (8). A subpackage's modules share its
# layer. The package's __init__ (lazy re-exports) is outside the layering.
LAYERS = {
  "graph": 1,
  "data": 1,
  "checkpoint": 1,
  "partition": 2,
  "schedule": 2,
  "pipeline": 3,
  "engine": 3,
  "parallel": 3,
  "models": 4,
  "tasks": 4,
  "training": 5,
  "experiments": 5,
  "analysis": 6,
  "plotting": 7,
  "widgets": 7,
  "figures": 7,
  "cli": 8,
  "launch": 8,
}
# Upward imports that exist today (docs/architecture.md, "Known exceptions"): importer -> imported.
KNOWN_EXCEPTIONS = {
  ("sideways_lab.analysis.latency", "sideways_lab.plotting"),
}


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(module: str) -> str:
  """``sideways_lab.analysis.latency`` -> ``analysis``."""
  return module.split(".")[1]


def _imports(path: Path) -> set[str]:
  """Every ``sideways_lab`` module that ``path`` imports, anywhere in the file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from sideways_lab import engine` imports the submodule `sideways_lab.engine`
      found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
  modules = {p for p in found if p.startswith("sideways_lab.")}
  # keep only names that are modules or packages
  return {m for m in modules if _exists(m)}


def _exists(module: str) -> bool:
  path = ROOT.joinpath(*module.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _import_graph() -> dict[str, set[str]]:
  return {
    _module_name(p): _imports(p)
    for p in sorted(PACKAGE.rglob("*.py"))
    if p != PACKAGE / "__init__.py"
  }


def test_every_module_has_a_layer():
  missing = sorted({_top(m) for m in _import_graph()} - set(LAYERS))
  assert not missing, f"add these modules to docs/architecture.md and LAYERS: {missing}"


def test_architecture_page_lists_every_module():
  page = (ROOT / "docs" / "architecture.md").read_text()
  assert all(f"`{name}`" in page for name in LAYERS), "docs/architecture.md misses a module"


def _upward_imports() -> set[tuple[str, str]]:
  return {
    (src, dst)
    for src, dsts in _import_graph().items()
    for dst in dsts
    if LAYERS.get(_top(dst), 0) > LAYERS.get(_top(src), 0)
  }


def test_imports_go_down_the_layers():
  new = sorted(_upward_imports() - KNOWN_EXCEPTIONS)
  assert not new, "these imports go up a layer (docs/architecture.md): " + ", ".join(
    f"{a} -> {b}" for a, b in new
  )


def test_known_exceptions_still_exist():
  fixed = sorted(KNOWN_EXCEPTIONS - _upward_imports())
  assert not fixed, f"remove from KNOWN_EXCEPTIONS and docs/architecture.md: {fixed}"


@pytest.mark.parametrize(
  "src,dst,expected",
  [
    ("sideways_lab.engine", "sideways_lab.training", True),
    ("sideways_lab.training", "sideways_lab.engine", False),
    ("sideways_lab.data.video", "sideways_lab.graph", False),
  ],
)
def test_the_check_can_fail(src, dst, expected):
  up = LAYERS[_top(dst)] > LAYERS[_top(src)]
  assert up is expected
