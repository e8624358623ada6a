"""References to the specification point at sections that exist; links stay in the repository."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
THIS = Path(__file__).resolve()  # cites bad references on purpose
# "docs/design.md §3", "design.md §3–§5", "docs/design.md §3–5", "design.md §1, §5"
REF = re.compile(r"design\.md\s*((?:§\s*\d+(?:\s*[–-]\s*§?\s*\d+)?(?:\s*,\s*)?)+)")
# Markdown links and images: [text](target) and ![alt](target)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".toml", ".yml", ".yaml", ".txt", ".cfg"}
SKIP_DIRS = {".git", ".venv", "node_modules", "build", "dist", "_build", "__pycache__"}


def _files():
  for p in sorted(ROOT.rglob("*")):
    parts = set(p.relative_to(ROOT).parts)
    if p.is_file() and p.suffix in TEXT_SUFFIXES and not SKIP_DIRS & parts and p != THIS:
      yield p


def _text(path: Path) -> str:
  """The text a reader sees: for a notebook, the source of its cells."""
  if path.suffix == ".ipynb":
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
  return path.read_text(errors="replace")


def design_sections(text: str | None = None) -> set[int]:
  """Numbers n of the "## n. Title" headings of docs/design.md."""
  text = DESIGN.read_text() if text is None else text
  return {int(m) for m in re.findall(r"^## (\d+)\.\s", text, flags=re.M)}


def section_refs(text: str) -> list[int]:
  """Every section number cited as ``design.md §n`` (ranges ``§a–§b`` expand)."""
  out = []
  for m in REF.finditer(text):
    for part in re.split(r"\s*,\s*", m.group(1).strip().rstrip(",")):
      nums = [int(n) for n in re.findall(r"\d+", part)]
      out += list(range(nums[0], nums[-1] + 1))
  return out


def bad_links(path: Path, text: str) -> list[str]:
  """Relative links of ``text`` (in ``path``) that leave the repository or point nowhere."""
  bad = []
  for target in LINK.findall(text):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
      continue  # a URL (http:, mailto:, attachment:) or an anchor on the same page
    file = (path.parent / target.split("#")[0]).resolve()
    if not file.is_relative_to(ROOT) or not file.exists():
      bad.append(target)
  return bad


def test_design_has_the_sections():
  assert design_sections() == set(range(1, 10))


def test_the_old_location_is_gone():
  stale = [
    str(p.relative_to(ROOT)) for p in _files() if "DESIGN.md" in _text(p) or "../shared" in _text(p)
  ]
  assert not stale


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_section_references_exist(path):
  sections = design_sections()
  missing = [n for n in section_refs(_text(path)) if n not in sections]
  assert not missing, f"{path.name} cites design.md sections that do not exist: {missing}"


@pytest.mark.parametrize(
  "path",
  [p for p in _files() if p.suffix in (".md", ".ipynb")],
  ids=lambda p: str(p.relative_to(ROOT)),
)
def test_links_stay_in_the_repository(path):
  assert not bad_links(path, _text(path))


def test_the_checks_can_fail(tmp_path):
  assert section_refs("see docs/design.md §3–§5 and design.md §1, §12") == [3, 4, 5, 1, 12]
  assert section_refs("docs/design.md §2–3") == [2, 3]
  assert 12 not in design_sections()
  page = ROOT / "README.md"
  assert bad_links(
    page,
    "[spec](../shared/DESIGN.md) [ok](docs/design.md) "
    "[web](https://example.org) [gone](docs/nothing.md)",
  ) == ["../shared/DESIGN.md", "docs/nothing.md"]
