"""The notebooks' live training cells (the code cells that call ``sweep``, ``compare`` or
``train``) and a notebook that runs one of them at the full budget's code path with tiny runs,
for the progress-bar tests (tests/test_progress.py in a kernel, tests/test_browser.py in
JupyterLab)."""

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TRAINS = re.compile(r"\b(?:sweep|compare|train)\(")
_PREAMBLE = """\
import os
import tempfile

import numpy as np

import sideways_lab as sl
from sideways_lab import experiments, training
from sideways_lab import experiments as ex

QUICK = experiments.is_quick()
print("quick mode" if QUICK else "full budget", "| pytest:", "PYTEST_CURRENT_TEST" in os.environ)
for d in training.TASK_DEFAULTS.values():  # the step override: tiny runs, full-budget code path
  for k, v in dict(training.QUICK, steps={steps}).items():
    d[k] = dict(d[k], **v) if isinstance(v, dict) else v
"""


def live_cells() -> list[tuple[str, str]]:
  """(notebook stem, source) of every code cell that trains."""
  return [
    (path.stem, cell.source)
    for path in NOTEBOOKS
    for cell in nbformat.read(path, as_version=4).cells
    if cell.cell_type == "code" and TRAINS.search(cell.source)
  ]


def tiny_notebook(source: str, *more: str, steps: int = 3):
  """A notebook of the preamble (the imports the live cells use, ``QUICK`` from the
  environment, every task's full budget cut to quick mode's model, data and batch with
  ``steps`` steps), then ``source``, then ``more`` cells."""
  preamble = _PREAMBLE.format(steps=steps)
  cells = [nbformat.v4.new_code_cell(s) for s in (preamble, source, *more)]
  kernel = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
  return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernel})
