"""The packaging files agree with each other and with the README."""

import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
  return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
  return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_names_the_same_dependencies_as_pyproject():
  project = _pyproject()["project"]
  extras = project["optional-dependencies"]
  wanted = {_name(r): r for r in project["dependencies"] + extras["test"] + extras["docs"]}
  lines = (ROOT / "environment.yml").read_text().splitlines()
  start = lines.index("dependencies:")
  conda = {}
  for line in lines[start + 1 :]:
    m = re.match(r"^  - ([^:]+)$", line)
    if m and not m.group(1).startswith(("python", "pip")):
      conda[_name(m.group(1))] = m.group(1).strip()
  assert set(conda) == set(wanted)
  for name, spec in conda.items():  # the same version ranges too
    assert spec.replace(" ", "") == re.sub(r"\[.*?\]", "", wanted[name]).replace(" ", ""), name
  assert any('-e ".[test]"' in line for line in lines), "the pip section installs the package"


def test_readme_quickstart_has_exactly_two_commands_and_ci_runs_the_second():
  readme = (ROOT / "README.md").read_text()
  section = re.search(r"^## Quickstart\n(.*?)(?=^## )", readme, re.S | re.M).group(1)
  cmds = [
    l
    for b in re.findall(r"```[a-z]*\n(.*?)```", section, re.S)
    for l in b.splitlines()
    if l.strip() and not l.strip().startswith("#")
  ]
  assert len(cmds) == 2
  assert cmds[1] in (ROOT / ".ci" / "run").read_text()
  assert "pytest" in cmds[1] and "sideways-lab" in cmds[0]


def test_console_script_is_declared_and_importable():
  assert _pyproject()["project"]["scripts"]["sideways-lab"] == "sideways_lab.cli:main"
  out = subprocess.run(
    [sys.executable, "-c", "import sideways_lab.cli as c; print(callable(c.main))"],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert out.stdout.strip() == "True", out.stderr
