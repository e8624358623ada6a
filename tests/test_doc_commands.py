"""Every command the docs show works (issue 16).

* Each ``sideways-lab ...`` command in the README, the documentation pages (``docs/``, and
  ``benchmarks/README.md`` which the site includes) and the notebooks' markdown cells is parsed
  by the command line's own parser, ``sideways_lab.cli.build_parser()``; nothing is run.
* Each Python snippet of the README runs, in quick mode, in a fresh interpreter.

How a shown command is read: inline code spans and the lines of fenced code blocks are split at
``&&`` and ``;``; a part that starts with ``sideways-lab`` is a command. Documentation
shorthand is expanded the way a reader would: ``a|b`` inside a word gives one command per
alternative, brackets around an optional part (``[--quick]``) are dropped, a trailing ``...``
is dropped, and the placeholder ``N`` stands for a number. A bare ``sideways-lab NAME`` (no
arguments) names a subcommand in prose ("`sideways-lab train` and `sideways-lab evaluate`
(`--help` on each)"); it is checked as ``sideways-lab NAME --help``, so the subcommand must exist.
"""

import contextlib
import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sideways_lab import cli

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = "sideways-lab"
GENERATED_DOCS = ("_build", "_generated")  # build outputs under docs/, not written by hand
PLACEHOLDER_VALUES = {"N": "1"}  # what a reader types for a numeric placeholder
SNIPPET_TIMEOUT_S = 600  # a guard against a hang; ~20 s of CPU on an idle machine

_FENCE = re.compile(r"^(```+|~~~+)[^\n]*\n(.*?)^\1\s*$", re.MULTILINE | re.DOTALL)
_INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_PYTHON_FENCE = re.compile(r"^```(?:python|py)\s*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def doc_sources() -> list[tuple[str, str]]:
  """``(label, markdown text)`` of every place the docs show commands in."""
  sources = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
  for path in sorted((ROOT / "docs").rglob("*.md")):
    rel = path.relative_to(ROOT)
    if not any(part in GENERATED_DOCS for part in rel.parts):
      sources.append((str(rel), path.read_text(encoding="utf-8")))
  bench = ROOT / "benchmarks" / "README.md"
  if bench.exists():
    sources.append(("benchmarks/README.md", bench.read_text(encoding="utf-8")))
  for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
      if cell.cell_type == "markdown":
        sources.append((f"{path.relative_to(ROOT)} (cell {i})", cell.source))
  return sources


def code_texts(markdown: str) -> list[str]:
  """The code the markdown shows: each line of a fenced block, and each inline code span."""
  texts = []
  for match in _FENCE.finditer(markdown):
    block = re.sub(r"\s*\\\n\s*", " ", match.group(2))  # join continued lines
    texts += block.splitlines()
  for match in _INLINE.finditer(_FENCE.sub("", markdown)):
    texts.append(match.group(2).replace("\n", " "))
  return texts


def shown_commands(markdown: str) -> list[str]:
  """Every ``sideways-lab ...`` command in the code of ``markdown``, as written."""
  commands = []
  for text in code_texts(markdown):
    for part in re.split(r"&&|;", text):
      part = part.strip().removeprefix("$ ").strip()
      if part == PROGRAM or part.startswith(PROGRAM + " "):
        commands.append(part)
  return commands


def expand(command: str) -> list[list[str]]:
  """The argument lists a shown command stands for (without the program name)."""
  words = command.replace("[", " ").replace("]", " ").split()[1:]
  while words and words[-1] in ("...", "…"):
    words.pop()
  choices = [
    [PLACEHOLDER_VALUES.get(w, w) for w in word.split("|")]
    if "|" in word.strip("|")
    else [PLACEHOLDER_VALUES.get(word, word)]
    for word in words
  ]
  argvs = [list(argv) for argv in itertools.product(*choices)]
  return [argv + ["--help"] if len(argv) == 1 else argv for argv in argvs]


def parse_error(argv: list[str]) -> str | None:
  """None when the CLI's parser accepts ``argv`` (``--help`` included), else its message."""
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      cli.build_parser().parse_args(argv)
  except SystemExit as e:
    if e.code not in (0, None):
      return err.getvalue().strip() or f"exit status {e.code}"
  return None


ALL_COMMANDS = [
  (label, command) for label, text in doc_sources() for command in shown_commands(text)
]


def test_the_docs_show_commands():
  labels = {label.split(" ")[0] for label, _ in ALL_COMMANDS}
  assert "README.md" in labels
  assert "notebooks/00_quickstart.ipynb" in labels
  assert len(ALL_COMMANDS) >= 5, ALL_COMMANDS


def test_reading_of_shown_commands():
  text = (
    "Run `pip install -e . && sideways-lab figures --quick`, or\n\n```bash\n"
    "$ sideways-lab compare --task a|b \\\n    --out DIR [--quick]\n```\n"
    "and `sideways-lab figures --only NAME ...`."
  )
  commands = shown_commands(text)
  assert commands == [
    "sideways-lab compare --task a|b --out DIR [--quick]",
    "sideways-lab figures --quick",
    "sideways-lab figures --only NAME ...",
  ]
  assert expand(commands[0]) == [
    ["compare", "--task", "a", "--out", "DIR", "--quick"],
    ["compare", "--task", "b", "--out", "DIR", "--quick"],
  ]
  assert expand(commands[2]) == [["figures", "--only", "NAME"]]
  assert expand("sideways-lab train") == [["train", "--help"]]
  assert parse_error(["no-such-command", "--help"]) is not None


def test_the_parser_rejects_a_wrong_command():
  # the form notebook 00 once showed: the task is an option, not a positional argument
  message = parse_error(["compare", "next-frame", "--out", "runs/compare", "--quick"])
  assert message is not None and "--task" in message
  assert parse_error(["compare", "--task", "next-frame", "--out", "runs/compare"]) is None


@pytest.mark.parametrize(
  "label, command", ALL_COMMANDS, ids=[f"{label}: {command}" for label, command in ALL_COMMANDS]
)
def test_shown_command_parses(label, command):
  for argv in expand(command):
    message = parse_error(argv)
    assert message is None, (
      f"{label} shows `{command}`, which the sideways-lab parser rejects (argv {argv}):\n{message}"
    )


README_SNIPPETS = _PYTHON_FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_has_a_python_snippet():
  assert README_SNIPPETS


@pytest.mark.parametrize("index", range(len(README_SNIPPETS)))
def test_readme_python_snippet_runs(index, tmp_path):
  env = dict(
    os.environ,
    SIDEWAYS_LAB_QUICK="1",
    MPLBACKEND="Agg",
    SIDEWAYS_LAB_CACHE=str(tmp_path / "cache"),
    PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
  )
  done = subprocess.run(
    [sys.executable, "-c", README_SNIPPETS[index]],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=SNIPPET_TIMEOUT_S,
    check=False,
  )
  assert done.returncode == 0, (
    f"README.md Python snippet {index} fails:\n{README_SNIPPETS[index]}\n{done.stderr[-3000:]}"
  )
