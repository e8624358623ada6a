"""``import sideways_lab as sl`` exposes every public module and name, each on first access."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import sideways_lab as sl

ROOT = Path(__file__).resolve().parents[1]

# For each public name: forget every sideways_lab module, import the package afresh and read
# the name, as a new interpreter would (one subprocess for all names: JAX loads once).
_PROBE = """
import json, sys
import sideways_lab
names = sideways_lab.__all__
failures = {}
for name in names:
  for m in [m for m in sys.modules if m == "sideways_lab" or m.startswith("sideways_lab.")]:
    del sys.modules[m]
  import sideways_lab as sl
  try:
    getattr(sl, name)
  except Exception as e:
    failures[name] = f"{type(e).__name__}: {e}"
print(json.dumps({"names": names, "failures": failures}))
"""


def _probe(code: str) -> dict:
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
  )
  return json.loads(out.stdout.splitlines()[-1])


def test_every_public_name_loads_in_a_fresh_interpreter():
  res = _probe(_PROBE)
  assert not res["failures"], res["failures"]
  modules = {p.stem for p in (ROOT / "sideways_lab").glob("*.py") if p.stem != "__init__"}
  modules |= {p.parent.name for p in (ROOT / "sideways_lab").glob("*/__init__.py")}
  assert modules <= set(res["names"]), f"not in sl.PUBLIC: {sorted(modules - set(res['names']))}"


def test_import_loads_nothing_until_asked():
  res = _probe(
    "import json, sys; import sideways_lab; "
    "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('jax', 'sideways_lab.')))))"
  )
  assert res == [], res


def test_a_name_is_its_module_attribute():
  assert sl.forward is sl.engine.forward and sl.UnitGraph is sl.graph.UnitGraph
  assert sl.schedule.__name__ == "sideways_lab.schedule"


def test_an_unknown_name_raises_attribute_error():
  with pytest.raises(AttributeError, match="demo"):
    sl.demo  # noqa: B018
