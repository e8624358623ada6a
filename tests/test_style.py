"""One style: ruff is configured in pyproject.toml and CI runs it before the tests."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_configured_for_the_house_style():
  ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
  assert ruff["indent-width"] == 2 and ruff["line-length"] == 100
  assert {
    "sideways_lab/**/*.py",
    "tests/**/*.py",
    "benchmarks/**/*.py",
    "notebooks/*.ipynb",
  } <= set(ruff["include"])
  assert {"E", "F", "I", "UP"} <= set(ruff["lint"]["select"])


def test_ci_runs_ruff_and_the_browser_test():
  ci = (ROOT / ".ci" / "run").read_text()
  lines = [line.strip() for line in ci.splitlines() if not line.strip().startswith("#")]
  assert "ruff format --check" in lines and "ruff check" in lines
  assert lines.index("ruff check") < next(i for i, l in enumerate(lines) if "pytest" in l)
  assert re.search(r"apt-get install -y( -q)? chromium", ci)
  assert "SIDEWAYS_LAB_REQUIRE_BROWSER=1" in ci
