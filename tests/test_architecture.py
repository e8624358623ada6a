"""The package's imports obey docs/architecture.md: down the layers, no cycle, no reach into
another module's private names, and an import inside a function only with a comment saying why.

Each rule is a function of ``{module name: source text}``, so the tests below run it on the
package and on small made-up packages that break it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sideways_lab"

# The layers of docs/architecture.md, bottom (1) to top (8). A subpackage's modules share its
# layer. The package's __init__ (the lazy front door) is outside the layering.
LAYERS = {
  "graph": 1,
  "data": 1,
  "checkpoint": 1,
  "provenance": 1,
  "partition": 2,
  "schedule": 2,
  "pipeline": 3,
  "engine": 3,
  "parallel": 3,
  "models": 4,
  "tasks": 4,
  "training": 5,
  "experiments": 5,
  "claims": 5,
  "analysis": 6,
  "plotting": 7,
  "widgets": 7,
  "figures": 7,
  "cli": 8,
  "launch": 8,
}

# Reaches into another module's private names that exist today (docs/architecture.md): none.
# The list may only shrink; an entry that is gone must be deleted here.
KNOWN_PRIVATE_REACHES: set[str] = set()


def _module_name(path: Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_sources() -> dict[str, str]:
  """``{"sideways_lab.engine": source, ...}`` for every module but the package's __init__."""
  return {
    _module_name(p): p.read_text()
    for p in sorted(PACKAGE.rglob("*.py"))
    if p != PACKAGE / "__init__.py"
  }


def _top(module: str) -> str:
  """``sideways_lab.analysis.latency`` -> ``analysis``."""
  return module.split(".")[1]


def _is_private(name: str) -> bool:
  return name.startswith("_") and not name.startswith("__")


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
  """``module -> the package modules it imports`` (at the top or inside a function)."""
  graph = {}
  for module, text in sources.items():
    found = set()
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.Import):
        found |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from sideways_lab.data import video` imports the submodule `sideways_lab.data.video`
        # (its package only runs first); `from sideways_lab.data import x` the package itself
        for a in node.names:
          full = f"{node.module}.{a.name}"
          found.add(full if full in sources else node.module)
    graph[module] = {m for m in found if m in sources and m != module}
  return graph


def upward_imports(sources: dict[str, str]) -> list[tuple[str, str]]:
  """``(importer, imported)`` pairs where the imported module's layer is above the importer's."""
  return sorted(
    (src, dst)
    for src, dsts in import_graph(sources).items()
    for dst in dsts
    if LAYERS.get(_top(dst), 0) > LAYERS.get(_top(src), 0)
  )


def import_cycles(sources: dict[str, str]) -> list[list[str]]:
  """The modules of every import cycle (strongly connected components of more than one)."""
  graph = import_graph(sources)
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):  # Tarjan's algorithm
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(cycles)


def private_reaches(sources: dict[str, str]) -> list[str]:
  """``"importer -> module._name"`` for every use of another module's private name.

  A private name starts with one underscore; modules of one subpackage (``data._checks``
  beside ``data.video``) may share them, other modules may not.
  """
  found = set()
  for module, text in sources.items():
    tree = ast.parse(text)
    aliases = {}  # local name -> package module it is bound to
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        for a in node.names:
          full = f"{node.module}.{a.name}"
          if full in sources:
            aliases[a.asname or a.name] = full
          elif node.module in sources and _is_private(a.name) and _top(node.module) != _top(module):
            found.add(f"{module} -> {full}")
      elif isinstance(node, ast.Import):
        aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in sources})
    for node in ast.walk(tree):
      if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and _is_private(node.attr)
        and _top(aliases[node.value.id]) != _top(module)
      ):
        found.add(f"{module} -> {aliases[node.value.id]}.{node.attr}")
  return sorted(found)


def unexplained_function_imports(sources: dict[str, str]) -> list[str]:
  """``"module:line: import ..."`` for every import inside a function without a comment (on
  its line or the line above) that says why it is not at the top."""
  found = []
  for module, text in sources.items():
    lines = text.splitlines()
    for fn in ast.walk(ast.parse(text)):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          here = lines[node.lineno - 2 : node.end_lineno]
          if not any("#" in line for line in here):
            found.append(f"{module}:{node.lineno}: {lines[node.lineno - 1].strip()}")
  return sorted(set(found))


# ---------------------------------------------------------------------------------------------
# The package obeys them
# ---------------------------------------------------------------------------------------------


# The optimisers of optax (optax.adam, optax.sgd, ...): the package builds them in one function.
OPTIMISERS = frozenset(
  """adabelief adadelta adafactor adagrad adam adamax adamaxw adamw adan amsgrad fromage lamb
  lars lbfgs lion nadam nadamw noisy_sgd novograd optimistic_adam optimistic_adam_v2
  optimistic_gradient_descent polyak_sgd radam rmsprop rprop sgd sign_sgd signum sm3
  yogi""".split()
)


def optimiser_constructions(sources: dict[str, str]) -> set[tuple[str, str]]:
  """``{(module, enclosing function), ...}`` of every call that builds an optax optimiser.

  Catches ``optax.adam(...)``, ``import optax as o; o.sgd(...)`` and ``from optax import adam``;
  a call at module level has the function ``"<module>"``.
  """
  found = set()
  for module, text in sources.items():
    tree = ast.parse(text)
    aliases, direct = set(), set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        aliases |= {a.asname or a.name for a in node.names if a.name == "optax"}
      elif isinstance(node, ast.ImportFrom) and node.module == "optax":
        direct |= {a.asname or a.name for a in node.names if a.name in OPTIMISERS}

    def visit(node, where):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        where = node.name
      if isinstance(node, ast.Call):
        f = node.func
        if (
          isinstance(f, ast.Attribute)
          and f.attr in OPTIMISERS
          and isinstance(f.value, ast.Name)
          and f.value.id in aliases
        ) or (isinstance(f, ast.Name) and f.id in direct):
          found.add((module, where))
      for child in ast.iter_child_nodes(node):
        visit(child, where)

    visit(tree, "<module>")
  return found


def test_every_module_has_a_layer():
  missing = sorted({_top(m) for m in package_sources()} - set(LAYERS))
  assert not missing, f"add these modules to docs/architecture.md and LAYERS: {missing}"


def test_architecture_page_lists_every_module():
  page = (ROOT / "docs" / "architecture.md").read_text()
  missing = [name for name in LAYERS if f"`{name}`" not in page]
  assert not missing, f"docs/architecture.md misses {missing}"


def test_imports_go_down_the_layers():
  up = upward_imports(package_sources())
  assert not up, "these imports go up a layer (docs/architecture.md): " + ", ".join(
    f"{a} -> {b}" for a, b in up
  )


def test_no_import_cycle():
  cycles = import_cycles(package_sources())
  assert not cycles, f"these modules import each other (move the shared part down): {cycles}"


def test_no_new_reach_into_another_module_private_names():
  reaches = set(private_reaches(package_sources()))
  new = sorted(reaches - KNOWN_PRIVATE_REACHES)
  assert not new, f"make these names public in a module made for sharing: {new}"
  gone = sorted(KNOWN_PRIVATE_REACHES - reaches)
  assert not gone, f"delete from KNOWN_PRIVATE_REACHES and docs/architecture.md: {gone}"


def test_imports_inside_functions_say_why():
  bare = unexplained_function_imports(package_sources())
  assert not bare, f"move to the top, or say in a comment why not: {bare}"


def test_optimisers_are_built_in_one_place():
  # every scheme, sweep and figure trains through training.train; a second optimiser drifts
  assert optimiser_constructions(package_sources()) == {("sideways_lab.training", "_optimizer")}


# ---------------------------------------------------------------------------------------------
# The rules catch what they are shown
# ---------------------------------------------------------------------------------------------

# A made-up package: `training` (5) imports `engine` (3) at the top, `engine` imports a
# private helper of `models` inside a function, and reads one through an alias.
FAKE = {
  "sideways_lab.engine": "import numpy as np\n\ndef f():\n  return np.zeros(1)\n",
  "sideways_lab.models": "def _helper():\n  return 1\n",
  "sideways_lab.training": "from sideways_lab import engine\n",
  "sideways_lab.data": "",
  "sideways_lab.data._checks": "def _check():\n  pass\n",
  "sideways_lab.data.video": "from sideways_lab.data._checks import _check\n",
}


def _with(**changes) -> dict[str, str]:
  return FAKE | {f"sideways_lab.{k.replace('__', '.')}": v for k, v in changes.items()}


def test_the_rules_pass_a_clean_package():
  assert not upward_imports(FAKE) and not import_cycles(FAKE)
  assert not private_reaches(FAKE) and not unexplained_function_imports(FAKE)


def test_an_upward_import_is_caught_at_the_top_or_in_a_function():
  top = _with(engine="from sideways_lab import training\n")
  assert upward_imports(top) == [("sideways_lab.engine", "sideways_lab.training")]
  inside = _with(engine="def f():\n  from sideways_lab import training  # lazy\n")
  assert upward_imports(inside) == [("sideways_lab.engine", "sideways_lab.training")]


@pytest.mark.parametrize(
  "engine",
  [
    "import sideways_lab.training\n",
    "from sideways_lab import training as t\n",
    "def f():\n  from sideways_lab.training import x  # a cycle\n",
  ],
)
def test_a_cycle_is_caught(engine):
  # training imports engine; engine importing training closes the loop, even within a layer
  assert import_cycles(_with(engine=engine)) == [["sideways_lab.engine", "sideways_lab.training"]]


def test_a_package_importing_its_submodules_is_no_cycle():
  assert not import_cycles(_with(data="from sideways_lab.data.video import x\n"))
  looped = _with(data__video="from sideways_lab.data import read_video\n")
  looped["sideways_lab.data"] = "from sideways_lab.data.video import read_video\n"
  assert import_cycles(looped) == [["sideways_lab.data", "sideways_lab.data.video"]]


def test_a_three_module_cycle_is_caught():
  fake = _with(
    models="from sideways_lab import training\n", engine="from sideways_lab import models\n"
  )
  assert import_cycles(fake) == [
    ["sideways_lab.engine", "sideways_lab.models", "sideways_lab.training"]
  ]


@pytest.mark.parametrize(
  "training",
  [
    "from sideways_lab.models import _helper\n",
    "from sideways_lab import models\nmodels._helper()\n",
    "from sideways_lab import models as M\n\ndef f():\n  return M._helper()\n",
    "import sideways_lab.models as M\nM._helper()\n",
  ],
)
def test_a_private_reach_is_caught(training):
  assert private_reaches(_with(training=training)) == [
    "sideways_lab.training -> sideways_lab.models._helper"
  ]


def test_a_subpackage_shares_its_private_names_and_dunders_are_public():
  fake = _with(training="from sideways_lab import models\nprint(models.__name__)\n")
  assert not private_reaches(fake)  # data.video uses data._checks._check: the same subpackage


def test_an_import_in_a_function_needs_a_comment():
  bare = _with(models="def g():\n  import json\n  return json\n")
  assert unexplained_function_imports(bare) == ["sideways_lab.models:2: import json"]
  explained = _with(models="def g():\n  import json  # 0.1 s, needed by one call\n  return json\n")
  assert not unexplained_function_imports(explained)
  above = _with(models="def g():\n  # optional dependency\n  import json\n  return json\n")
  assert not unexplained_function_imports(above)


def test_an_optimiser_built_anywhere_is_caught():
  assert not optimiser_constructions(FAKE)
  for text, where in [
    ("import optax\n\ndef f():\n  return optax.adam(1e-3)\n", "f"),
    ("import optax as ox\nopt = ox.sgd(0.1, momentum=0.9)\n", "<module>"),
    ("from optax import adam as a\n\nclass T:\n  def g(self):\n    return a(1.0)\n", "g"),
  ]:
    assert optimiser_constructions(_with(models=text)) == {("sideways_lab.models", where)}
  losses = _with(models="import optax\nloss = optax.squared_error\nopt = optax.chain()\n")
  assert not optimiser_constructions(losses)
