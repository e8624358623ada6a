"""Every notebook executes (quick mode, headless) and is committed without outputs."""

import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600


def test_there_are_nine_numbered_notebooks():
  names = [p.name for p in NOTEBOOKS]
  assert len(names) == 9
  assert [n[:2] for n in names] == [f"{i:02d}" for i in range(9)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [], f"{path.name}: a code cell has outputs"
      assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"
  # each notebook opens with what it teaches and ends with exercises or next steps
  assert nb.cells[0].cell_type == "markdown" and "learn" in nb.cells[0].source.lower()
  tail = nb.cells[-1].source.lower()
  assert "exercise" in tail or "next" in tail


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_quick_mode_and_exercises(path):
  """Quick mode comes from ``sl.experiments.is_quick()`` (one home for it); every exercise has
  its solution folded right under it."""
  nb = nbformat.read(path, as_version=4)
  code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
  text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
  reads_env = re.search(r"(environ|getenv)\W+.*SIDEWAYS_LAB_QUICK", code)
  assert not reads_env, f"{path.name} reads SIDEWAYS_LAB_QUICK itself"
  assert "experiments.is_quick()" in code
  exercises = re.findall(r"\*\*Exercise \d+\.\*\*(.*?)(?=\*\*Exercise \d+\.\*\*|\Z)", text, re.S)
  for body in exercises:
    assert '<details class="solution">' in body and "</details>" in body, (
      f"{path.name}: an exercise without a folded solution: {body[:80]!r}"
    )


#: Exercise solutions that need something only the student has, by (notebook, exercise); the
#: exercise's text says so. Every other solution runs after its notebook.
NEEDS_STUDENT = {
  ("06_real_video", 1): "a video file of the student's own",
}
SOLUTION = re.compile(r'<details class="solution">(.*?)</details>', re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def solution_blocks(nb) -> list[tuple[int, str]]:
  """``[(exercise number, code)]``: the Python blocks of every exercise's folded solution."""
  text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
  parts = re.split(r"\*\*Exercise (\d+)\.\*\*", text)
  out = []
  for number, body in zip(parts[1::2], parts[2::2]):
    for solution in SOLUTION.findall(body):
      out += [(int(number), code) for code in PYTHON_BLOCK.findall(solution)]
  return out


def test_solution_blocks_are_found():
  nb = nbformat.v4.new_notebook(
    cells=[
      nbformat.v4.new_markdown_cell(
        '**Exercise 1.** a\n<details class="solution">\n\n```python\nx = 1\n```\n'
        "then\n```python\ny = x\n```\n</details>\n\n**Exercise 2.** b\n"
        '<details class="solution">text only</details>'
      )
    ]
  )
  assert solution_blocks(nb) == [(1, "x = 1\n"), (1, "y = x\n")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solutions_that_need_the_students_data_say_so(path):
  nb = nbformat.read(path, as_version=4)
  text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
  for (stem, number), what in NEEDS_STUDENT.items():
    if stem == path.stem:
      assert any(n == number for n, _ in solution_blocks(nb)), (stem, number)
      assert "your own" in text, f"{stem}: exercise {number} must tell the student to supply {what}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
  """The notebook, then every exercise solution in the notebook's namespace (quick mode)."""
  from nbclient import NotebookClient

  monkeypatch.setenv("SIDEWAYS_LAB_QUICK", "1")
  # headless: the inline backend renders figures into the outputs (no display needed), so the
  # test can check that images were produced; Agg would draw nothing into the notebook
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  monkeypatch.setenv("SIDEWAYS_LAB_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv(
    "PYTHONPATH",
    os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
  )
  nb = nbformat.read(path, as_version=4)
  solutions = [(n, code) for n, code in solution_blocks(nb) if (path.stem, n) not in NEEDS_STUDENT]
  for n, code in solutions:
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["exercise"] = n
    nb.cells.append(cell)
  work = tmp_path / "notebooks"
  work.mkdir()
  client = NotebookClient(
    nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(work)}}
  )
  client.execute()
  errors = [
    (c.metadata.get("exercise"), o.get("ename"), o.get("evalue"))
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.outputs
    if o.output_type == "error"
  ]
  assert not errors, f"{path.name}: errors (exercise number or None, name, value): {errors}"
  # the notebook produced figures (images or widgets), not only text
  kinds = {
    k for c in nb.cells if c.cell_type == "code" for o in c.outputs for k in o.get("data", {})
  }
  assert kinds & {"image/png", "application/vnd.jupyter.widget-view+json"}, path.name
