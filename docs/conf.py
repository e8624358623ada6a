"""Sphinx configuration of the sideways_lab documentation site.

Build it with ``make -C docs html`` (or ``python -m sphinx -W --keep-going -b html docs
docs/_build/html``) and open ``docs/_build/html/index.html``. The build is offline: MathJax is
served from the ``jupyter-server-mathjax`` package, widgets are rendered as static figures, and
nothing is fetched at build or view time.

What the build generates before Sphinx reads the sources (all under git-ignored paths):

* ``tutorials/NN_*.ipynb`` -- copies of ``notebooks/``; myst-nb executes them in quick mode
  (``SIDEWAYS_LAB_QUICK=1``) and renders their outputs.
* ``api/_generated/*.rst`` -- one page per public module, an entry for every public name (its
  ``__all__``, or the functions, classes and UPPER_CASE constants it defines when it has none),
  grouped by layer; each function or class is documented once, where it is defined, and the
  other modules that export it link there (``_resolve_reexport`` makes ``sl.forward`` work).
* ``_generated/figures.md`` -- the figures with their captions from ``figures/manifest.json``;
  ``_generated/claims.md`` -- ``figures/claims.md``, or a note while it does not exist.

With ``-W`` a broken cross-reference (``nitpicky``), a public name without a docstring, a
public module that belongs to no layer, a notebook that raises, or a dead link fails the build.
"""

from __future__ import annotations

import ast
import dataclasses
import filecmp
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import sys
from pathlib import Path

import jupyter_server_mathjax
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import sideways_lab  # (after the path above: this tree's package)

logger = logging.getLogger("sideways_lab.docs")

# -- project ---------------------------------------------------------------------------------

project = "sideways_lab"
author = "the sideways_lab authors"
copyright = "the sideways_lab authors, Apache-2.0"
release = version = sideways_lab.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
# _generated/ and api/_generated/layers.md are only included by other pages
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_generated", "api/_generated/layers.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# -- the environment the notebooks run in ---------------------------------------------------
# Quick budgets, static figures instead of live widgets, inline PNGs, a cache inside the build
# folder, and this tree's package on the kernel's path. The kernel inherits os.environ.

BUILD_CACHE = DOCS / "_build" / "sideways_cache"
os.environ["SIDEWAYS_LAB_QUICK"] = "1"
os.environ["SIDEWAYS_LAB_STATIC"] = "1"
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
os.environ.setdefault("SIDEWAYS_LAB_CACHE", str(BUILD_CACHE))
# compiled XLA programs are shared between the notebooks (they build the same small models)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(DOCS / "_build" / "jax_cache"))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

NOTEBOOK_CELL_TIMEOUT_S = 600
nb_execution_mode = "cache"  # executes every notebook once; rebuilds reuse the cached outputs
nb_execution_cache_path = str(DOCS / "_build" / "jupyter_cache")
nb_execution_in_temp = True
nb_execution_timeout = NOTEBOOK_CELL_TIMEOUT_S
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# A widget view needs the widget JavaScript from the network; the explorers render static
# figures here (SIDEWAYS_LAB_STATIC), and any other widget falls back to its text form.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}  # and no widget manager script (it would come from a CDN)

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference ---------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: autodoc documents the members themselves

# Every public module in exactly one layer, in reading order (the architecture page explains
# the layers). A module that is in none fails the build: add it here.
API_LAYERS = {
    "Core: graph, engines, schedule": [
        "sideways_lab", "sideways_lab.graph", "sideways_lab.engine", "sideways_lab.pipeline",
        "sideways_lab.schedule", "sideways_lab.partition"],
    "Models and tasks": ["sideways_lab.models", "sideways_lab.tasks"],
    "Data": ["sideways_lab.data", "sideways_lab.data.synthetic", "sideways_lab.data.video",
             "sideways_lab.data.datasets"],
    "Training, experiments and checkpoints": ["sideways_lab.training",
                                              "sideways_lab.experiments",
                                              "sideways_lab.claims",
                                              "sideways_lab.checkpoint",
                                              "sideways_lab.provenance"],
    "Analysis": ["sideways_lab.analysis", "sideways_lab.analysis.alignment",
                 "sideways_lab.analysis.sweeps", "sideways_lab.analysis.latency",
                 "sideways_lab.analysis.schedules",
                 "sideways_lab.analysis.timing", "sideways_lab.analysis.memory",
                 "sideways_lab.analysis.cache"],
    "Multi-device": ["sideways_lab.parallel", "sideways_lab.launch"],
    "Figures and widgets": ["sideways_lab.plotting", "sideways_lab.plotting.style",
                            "sideways_lab.plotting.schedule_diagram",
                            "sideways_lab.plotting.plots", "sideways_lab.widgets",
                            "sideways_lab.figures"],
    "Command line": ["sideways_lab.cli"],
}

# References to other projects' names (no intersphinx: the build is offline) are not checked;
# every reference to a sideways_lab name is.
_EXTERNAL = (r"(builtins|typing|collections|abc|os|pathlib|argparse|dataclasses|enum|types|"
             r"functools|itertools|io|concurrent|threading|queue|json|numbers|contextlib|"
             r"jax|jaxlib|jnp|np|numpy|haiku|hk|optax|matplotlib|mpl|plt|pandas|pd|ipywidgets|"
             r"IPython|imageio|av|sklearn|tqdm|PIL)(\..+)?")
# Napoleon reads the shapes and prose of "Args:" entries ("video (B, T, H, W, C)") as types:
# a single capital letter or an all-lowercase word is never a class of this package. The rest
# are the typing and array names that annotations use.
_NOT_A_CLASS = (r"[A-Z]\d?|[a-z_][a-z0-9_-]*|Callable|Sequence|Mapping|Iterable|Iterator|Any|"
                r"Literal|Optional|Union|NamedTuple|Path|Array|ArrayLike|DTypeLike|Params|PRNGKey|"
                r"Figure|Axes|NoneType")
nitpicky = True
# Private names (a class's private base, a private type in an annotation) are not documented.
_PRIVATE = r"(sideways_lab(\.\w+)*\.)?_\w+"
nitpick_ignore_regex = [(r"py:.*", _EXTERNAL), (r"py:class", _NOT_A_CLASS), (r"py:class", _PRIVATE)]

# -- HTML ------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "sideways_lab"
html_theme_options = {
    "repository_url": "",
    "use_repository_button": False,
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path = ["_static"]
# The theme's math rules are written for MathJax 3; _static/sideways_lab.css sets them right for
# the MathJax 2 loaded here (no equation clipped, inline math on the baseline).
html_css_files = ["sideways_lab.css"]
# MathJax from the jupyter-server-mathjax package, copied into _static/mathjax (see setup).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# That package ships the STIX-Web fonts only (MathJax's default web font is TeX). Equations
# wider than the page are broken at their operators; what cannot be broken scrolls (the CSS).
mathjax2_config = {
    "tex2jax": {"processClass": "math|output_area", "ignoreClass": "document"},
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None, "linebreaks": {"automatic": True}},
    "CommonHTML": {"linebreaks": {"automatic": True}},
}


# -- generated sources -----------------------------------------------------------------------

def _copy_if_changed(src: Path, dst: Path) -> None:
  """Copies ``src`` to ``dst`` unless an identical file is there (keeps rebuilds incremental)."""
  if dst.exists() and filecmp.cmp(src, dst, shallow=False):
    return
  dst.parent.mkdir(parents=True, exist_ok=True)
  shutil.copy2(src, dst)


def copy_notebooks() -> list[str]:
  """Copies ``notebooks/*.ipynb`` into ``tutorials/``; returns their stems in reading order."""
  stems = []
  wanted = set()
  for src in sorted((ROOT / "notebooks").glob("*.ipynb")):
    _copy_if_changed(src, DOCS / "tutorials" / src.name)
    stems.append(src.stem)
    wanted.add(src.name)
  for stale in (DOCS / "tutorials").glob("*.ipynb"):
    if stale.name not in wanted:
      stale.unlink()
  return stems


def public_modules() -> list[str]:
  """Every importable module of the package whose dotted name has no ``_`` component."""
  names = ["sideways_lab"]
  for info in pkgutil.walk_packages(sideways_lab.__path__, "sideways_lab."):
    if not any(part.startswith("_") for part in info.name.split(".")):
      names.append(info.name)
  return names


def public_names(module) -> list[str]:
  """The module's ``__all__``; without one, the functions, classes and UPPER_CASE constants it
  defines (a constant counts when its name is not imported from elsewhere)."""
  if hasattr(module, "__all__"):
    return list(module.__all__)
  imported = _imported_names(module)
  names = []
  for name, obj in vars(module).items():
    if name.startswith("_") or name in imported:
      continue
    if callable(obj) and not inspect.ismodule(obj):  # functions (also lru_cache'd) and classes
      if getattr(obj, "__module__", None) == module.__name__:
        names.append(name)
    elif name.isupper() and not inspect.ismodule(obj):
      names.append(name)
  return names


def _imported_names(module) -> set[str]:
  """Names bound by ``import``/``from ... import`` statements at the top of the module."""
  try:
    source = inspect.getsource(module)
  except (OSError, TypeError):
    return set()
  names = set()
  for node in ast.parse(source).body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names.update((a.asname or a.name).split(".")[0] for a in node.names)
  return names


_AUTO_DOC = re.compile(r"^\w+\(.*\)$", re.DOTALL)


def has_docstring(obj) -> bool:
  """True when ``obj`` has a docstring of its own (not the one dataclasses/NamedTuple invent)."""
  doc = (obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)) or ""
  invented = (inspect.isclass(obj) and _AUTO_DOC.match(doc.strip()) is not None
              and doc.strip().startswith(obj.__name__ + "("))
  return bool(doc.strip()) and not invented


def _kind(obj) -> str:
  if inspect.ismodule(obj):
    return "module"
  if inspect.isclass(obj):
    return "class"
  if callable(obj):
    return "function"
  return "data"


def _heading(text: str, char: str) -> str:
  return f"{text}\n{char * len(text)}\n"


def _api_modules() -> list[str]:
  return [m for modules in API_LAYERS.values() for m in modules]


# id(object) -> the dotted name under which it is documented (functions and classes only).
CANONICAL: dict[int, str] = {}


def _assign_canonical(modules: dict[str, object]) -> None:
  """Each function or class is documented once, under the first public path (in
  ``API_LAYERS`` order) that exports it -- ``sideways_lab.forward`` rather than
  ``sideways_lab.engine.forward`` -- unless that path is also a module's name
  (``sideways_lab.analysis.alignment`` is a function and a module: the function is documented
  in its module)."""
  for modname, module in modules.items():
    for name in public_names(module):
      obj = getattr(module, name, None)
      full = f"{modname}.{name}"
      if _kind(obj) in ("class", "function") and id(obj) not in CANONICAL and full not in modules:
        CANONICAL[id(obj)] = full


MAX_VALUE_CHARS = 100  # a constant's value is shown when its repr is at most this long


def readable(value) -> str:
  """A value as a reader wants it on the page, the same at every build: functions and classes
  by name (a repr's memory address changes from build to build), a dataclass instance as its
  class and the data fields it sets, containers element by element."""
  if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
    return value.__qualname__
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    shown = []
    for f in dataclasses.fields(value):
      v = getattr(value, f.name)
      if (f.default is not dataclasses.MISSING and v == f.default) or inspect.isfunction(v):
        continue  # defaults, and the helper functions a field holds, are left out
      shown.append(readable(v))
    return f"{type(value).__name__}({', '.join(shown)})"
  if isinstance(value, tuple):
    inner = ", ".join(readable(v) for v in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"
  if isinstance(value, list):
    return "[" + ", ".join(readable(v) for v in value) + "]"
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k!r}: {readable(v)}" for k, v in value.items()) + "}"
  if callable(value) and hasattr(value, "__name__"):
    return value.__name__
  return repr(value)


def _data_entry(modname: str, name: str, value) -> list[str]:
  """A ``py:data`` entry: the value (or its type) and the ``#:`` comment above it, if any.

  (autodoc would show the docstring of the value's type, e.g. ``dict``'s, for a constant.) A
  short value is shown whole; a dict by its keys; a sequence one element per line.
  """
  shown = readable(value)
  head = [f".. py:data:: {name}"]
  if len(shown) <= MAX_VALUE_CHARS and "\n" not in shown:
    lines = head + [f"   :value: {shown}", ""]
  elif isinstance(value, dict):
    keys = ", ".join(f"``{k!r}``" for k in value)
    lines = head + [f"   :type: {type(value).__name__}", "", f"   Keys: {keys}."]
  elif isinstance(value, (tuple, list)):
    lines = head + [f"   :type: {type(value).__name__}", "", f"   {len(value)} entries:", ""]
    lines += [f"   * ``{readable(v)}``" for v in value]
  else:
    lines = head + [f"   :type: {type(value).__name__}", "",
                    f"   ``{shown[:MAX_VALUE_CHARS]} ...``"]
  try:
    comments = ModuleAnalyzer.for_module(modname).find_attr_docs()
  except PycodeError:
    comments = {}
  return lines + [""] + ["   " + line for line in comments.get(("", name), [])]


def write_api_pages() -> list[str]:
  """Writes ``api/_generated/<module>.rst`` for every public module; returns the problems."""
  problems = []
  found = public_modules()
  for name in found:
    if name not in _api_modules():
      problems.append(f"public module {name} is in no layer of API_LAYERS in docs/conf.py")
      module = importlib.import_module(name)
      problems += [f"public name {name}.{n} has no docstring" for n in public_names(module)
                   if _kind(getattr(module, n, None)) in ("class", "function")
                   and not has_docstring(getattr(module, n))]
  for name in _api_modules():
    if name not in found:
      problems.append(f"API_LAYERS in docs/conf.py names {name}, which is not a public module")
  modules = {m: importlib.import_module(m) for m in _api_modules() if m in found}
  _assign_canonical(modules)
  out = DOCS / "api" / "_generated"
  out.mkdir(parents=True, exist_ok=True)
  written = set()
  for modname, module in modules.items():
    lines = [f".. This page is generated by docs/conf.py from {modname}; do not edit.", "",
             _heading(f"``{modname}``", "="), f".. automodule:: {modname}", "   :no-members:",
             "", f".. currentmodule:: {modname}", ""]
    also = []  # names documented elsewhere, listed at the end of the page
    for name in public_names(module):
      if not hasattr(module, name):
        problems.append(f"{modname}.__all__ names {name!r}, which the module does not define")
        continue
      obj = getattr(module, name)
      kind = _kind(obj)
      if kind == "module":
        also.append(f"* ``{name}`` -- the submodule :mod:`{obj.__name__}`")
        continue
      here = f"{modname}.{name}"
      if kind != "data" and CANONICAL[id(obj)] != here:
        also.append(f"* ``{name}`` -- :py:obj:`{CANONICAL[id(obj)]}`")
        continue
      if kind == "data":
        lines += _data_entry(modname, name, obj) + [""]
        continue
      if not has_docstring(obj):
        problems.append(f"public name {here} has no docstring")
      lines.append(f".. auto{kind}:: {name}")
      if kind == "class":
        problems += [f"public member {here}.{m} has no docstring" for m in undocumented_members(obj)]
        lines += ["   :members:", "   :undoc-members:", "   :special-members: __call__"]
      lines.append("")
    if also:
      lines += [_heading("Also exported here", "-"), "Documented on the page linked.", ""]
      lines += also + [""]
    page = out / f"{modname}.rst"
    _write_if_changed(page, "\n".join(lines))
    written.add(page.name)
  index = ["% This file is generated by docs/conf.py; do not edit.", ""]
  for layer, names in API_LAYERS.items():
    names = [m for m in names if m in modules]
    index += [f"# {layer}", "", "```{toctree}", ":hidden:", ":maxdepth: 1", ""]
    index += [f"/api/_generated/{m}" for m in names]
    index += ["```", ""]
    index += [f"- {{py:mod}}`{m}` — {module_summary(modules[m])}" for m in names] + [""]
    for m in names:
      if not module_summary(modules[m]):
        problems.append(f"module {m} has no docstring (its first sentence is its summary)")
  _write_if_changed(out / "layers.md", "\n".join(index))
  for stale in out.glob("*.rst"):
    if stale.name not in written:
      stale.unlink()
  return problems


def module_summary(module) -> str:
  """The first sentence of a module's docstring, in MyST (the API index lists it)."""
  doc = (inspect.getdoc(module) or "").split("\n\n")[0]
  text = " ".join(doc.split())
  text = re.sub(r"^sideways_lab: ", "", text)
  text = re.sub(r"\s*\(docs/design\.md §[^)]*\)", "", text)
  return text.replace("``", "`")


def undocumented_members(cls) -> list[str]:
  """The public methods and properties that ``cls`` defines with no docstring of their own or
  of the member they override (autodoc would list them with no description)."""
  out = []
  for name, member in vars(cls).items():
    if name.startswith("_") and name != "__call__":
      continue
    if isinstance(member, property):
      docs = [getattr(base, name).__doc__ for base in cls.__mro__
              if isinstance(getattr(base, name, None), property)]
    elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
      docs = [inspect.getdoc(getattr(cls, name))]
    else:
      continue
    if not any((doc or "").strip() for doc in docs):
      out.append(name)
  return out


def _write_if_changed(path: Path, text: str) -> None:
  """Writes ``text`` unless the file already holds it (Sphinx then rereads only what changed)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def describe_device(manifest: dict) -> str:
  """The machine a figures run used, in words: the manifest's ``machine`` when it records one,
  else its ``device`` entry (``"cpu: cpu (x1)"``, ``"gpu: NVIDIA H200 (x1)"``) spelled out."""
  if manifest.get("machine"):
    return str(manifest["machine"])
  device = str(manifest.get("device", ""))
  m = re.match(r"(\w+): (.*?) \(x(\d+)\)$", device)
  if not m:
    return device or "an unrecorded machine"
  platform, kind, count = m.group(1), m.group(2), int(m.group(3))
  what = {"cpu": "CPU", "gpu": "GPU", "tpu": "TPU"}.get(platform.lower(), platform)
  if kind.lower() not in (platform.lower(), "cpu"):
    what = f"{what} ({kind})"
  return f"one {what}" if count == 1 else f"{count} {what} devices"


def describe_commit(commit: str | None) -> str:
  """``commit abc1234`` for a clean commit; a commit with uncommitted changes says so."""
  if not commit:
    return "an unrecorded commit"
  short = f"`{commit.removesuffix('-dirty')[:7]}`"
  return f"commit {short} with uncommitted changes" if commit.endswith("-dirty") else (
      f"commit {short}")


def provenance(manifest: dict) -> str:
  """One sentence: how, where and from what the committed figures were made."""
  minutes = sum(manifest.get("sweeps_train_time_s", {}).values()) / 60
  versions = manifest.get("versions", {})
  made = (f"These figures and results were made in **{manifest.get('mode', '?')} mode** by "
          f"`{manifest.get('command', 'sideways-lab figures')}` with sideways_lab "
          f"{manifest.get('package_version', '?')} ({describe_commit(manifest.get('git_commit'))})"
          f" on {describe_device(manifest)}")
  if versions:
    made += f", JAX {versions.get('jax', '?')} and Haiku {versions.get('haiku', '?')}"
  if minutes:
    made += f"; the sweeps trained for {minutes:.0f} min in all"
  runs_code = manifest.get("runs_code")
  if runs_code:  # manifests written before runs recorded their code have none
    codes = [r.get("code") or "unrecorded" for r in runs_code]
    made += (f"; their runs were trained by code `{codes[0]}`" if len(codes) == 1 else
             f"; their runs were trained by {len(codes)} versions of the code "
             f"({', '.join(f'`{c}`' for c in codes)})")
  return made + "."


def write_figures_page() -> None:
  """Writes ``_generated/figures.md`` (every figure of ``figures/manifest.json`` with its
  caption) and ``_generated/provenance.md`` (how they were made, in one sentence).

  Included by ``figures.md``, so image paths are relative to ``docs/``.
  """
  manifest = json.loads((ROOT / "figures" / "manifest.json").read_text())
  lines = ["% This file is generated by docs/conf.py from figures/manifest.json; do not edit.", ""]
  for name, fig in manifest["figures"].items():
    png = next(f for f in fig["files"] if f.endswith(".png"))
    lines += [f"# {name}", "", f"```{{figure}} ../figures/{png}", f":alt: {name}", "",
              fig["sentence"], "```", ""]
  _write_if_changed(DOCS / "_generated" / "figures.md", "\n".join(lines))
  _write_if_changed(DOCS / "_generated" / "provenance.md", provenance(manifest) + "\n")


_RELATIVE_IMAGE = re.compile(r"(!\[[^\]]*\]\()(?!https?:|/)([^)\s]+)")
VERDICTS = ("partly reproduced", "not reproduced", "reproduced", "inconclusive", "budget-limited")
_DIGEST_LINE = re.compile(r"^- \*\*(C\d+)\*\*\s+—\s+(" + "|".join(VERDICTS) + r"):\s*(.+)$")
_TABLE_CLAIM = re.compile(r"^\*\*(C\d+)\*\*\s*(.*)$")
_NO_REPORT = ("*The claims report (`figures/claims.md`, written by `sideways-lab figures`) is not "
              "in this tree yet.*\n")


def _table_rows(text: str) -> list[list[str]]:
  """The body rows of the markdown tables in ``text``, as lists of stripped cells."""
  rows = []
  for line in text.splitlines():
    if line.startswith("|") and not re.match(r"^\|[\s:|-]+\|$", line.strip()):
      rows.append([c.strip() for c in line.strip()[1:-1].split(" | ")])
  return rows


def _verdict(cell: str) -> str:
  word = cell.strip("* ").lower()
  return {"partly": "partly reproduced", "not": "not reproduced"}.get(word, word)


def claims_digest(text: str) -> list[tuple[str, str, str]]:
  """``[(claim id, verdict, sentence)]`` from the claims report: its ``## Digest`` section
  (``- **C1** — reproduced: one sentence.``), or, for a report without one, the verdict and
  the claim of each row of its table."""
  digest, in_digest = [], False
  for line in text.splitlines():
    if line.startswith("## "):
      in_digest = line.strip().lower() == "## digest"
      continue
    m = _DIGEST_LINE.match(line.strip()) if in_digest else None
    if m:
      digest.append(m.groups())
  if digest:
    return digest
  for row in _table_rows(text):
    m = _TABLE_CLAIM.match(row[0]) if row else None
    if m and len(row) >= 4:
      sentence = m.group(2).rstrip(".") + "."
      digest.append((m.group(1), _verdict(row[3]), sentence[0].upper() + sentence[1:]))
  return digest


def _verdict_span(verdict: str) -> str:
  return f'<span class="verdict verdict-{verdict.replace(" ", "-")}">{verdict}</span>'


def digest_markdown(digest: list[tuple[str, str, str]]) -> str:
  """The digest as a MyST bullet list, each verdict coloured by its kind."""
  if not digest:
    return _NO_REPORT
  lines = ["```{rst-class} claims-digest", "```", ""]
  lines += [f"- **{cid}** — {_verdict_span(verdict)}: {sentence}"
            for cid, verdict, sentence in digest]
  return "\n".join(lines) + "\n"


def _top_level_parts(text: str, sep: str = ";") -> list[str]:
  """``text`` split at the ``sep`` that are outside parentheses, stripped, empty parts left out."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if ch == sep and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [p.strip() for p in parts if p.strip()]


def claims_cards(text: str) -> str | None:
  """The claims table as one block per claim (the claim and its verdict as a heading, what was
  measured, the numbers one per line, why), or None when ``text`` has no such table."""
  rows = [r for r in _table_rows(text) if r and _TABLE_CLAIM.match(r[0]) and len(r) >= 4]
  if not rows:
    return None
  out = []
  for row in rows:
    cid, claim = _TABLE_CLAIM.match(row[0]).groups()
    out += [f"# {cid} · {claim}", "", _verdict_span(_verdict(row[3])), "",
            f"**Measured:** {row[1]}.", "",
            "**Numbers** (mean ± std over seeds; paired differences: mean [95 % interval]):", ""]
    out += [f"- {part}" for part in _top_level_parts(row[2])]
    out.append("")
    if len(row) > 4 and row[4] and row[4] != "—":
      out += [f"**Why:** {row[4][0].upper() + row[4][1:]}.", ""]
    if len(row) > 6 and row[6] and row[6] != "—":
      out += [f"**Budgets:** {row[6][0].upper() + row[6][1:]}.", ""]
    if len(row) > 7 and row[7] and row[7] != "—":
      out += [f"**Converged:** {row[7][0].upper() + row[7][1:]}.", ""]
  return "\n".join(out)


def write_claims_page() -> None:
  """Writes ``_generated/claims.md`` (the claims report of ``figures/claims.md`` with each claim
  as a block, image paths relative to ``docs/``) and ``_generated/digest.md`` (one line per
  claim: its verdict and one sentence; the landing page and the figures page include it)."""
  claims = ROOT / "figures" / "claims.md"
  text = claims.read_text(encoding="utf-8") if claims.exists() else ""
  _write_if_changed(DOCS / "_generated" / "digest.md", digest_markdown(claims_digest(text)))
  if not text:
    body = _NO_REPORT
  else:
    # the report without its title, its generated-by line and its digest (shown above it)
    body = re.sub(r"^# .*\n", "", text, count=1)
    body = re.sub(r"^Generated by .*\n", "", body, flags=re.M)
    body = re.sub(r"^## Digest\n(?:(?!## ).*\n)*", "", body, flags=re.M)
    body = re.sub(r"^## Evidence\n", "", body, flags=re.M)  # the page's own heading says it
    cards = claims_cards(body)
    if cards is not None:
      table = re.compile(r"^\|.*\|[ \t]*\n?", re.M)
      first = table.search(body)
      body = body[:first.start()] + cards + "\n" + table.sub("", body[first.start():])
    body = _RELATIVE_IMAGE.sub(r"\1../figures/\2", body)
  text = "% Made by docs/conf.py from figures/claims.md; do not edit.\n\n" + body
  _write_if_changed(DOCS / "_generated" / "claims.md", text)


copy_notebooks()
_API_PROBLEMS = write_api_pages()
write_figures_page()
write_claims_page()


# -- docstrings: the spec's sections as links, formulas as math ------------------------------

def spec_sections() -> dict[str, str]:
  """``{"5": "the-gradient-methods", ...}``: the HTML id of each numbered section ``## n. Title``
  of ``design.md`` (docutils' id of its title)."""
  from docutils.nodes import make_id

  out = {}
  for line in (DOCS / "design.md").read_text(encoding="utf-8").splitlines():
    m = re.match(r"##\s+(\d+)\.\s+(.+?)\s*$", line)
    if m:
      out[m.group(1)] = make_id(f"{m.group(1)}. {m.group(2)}")
  return out


SPEC_SECTIONS = spec_sections()
_SECTION = re.compile(r"§(\d+)")
_SPEC_PATH = re.compile(r"docs/design\.md(?=\s*§)")
_INLINE_LITERAL = re.compile(r"``(.+?)``")
# An inline literal is a formula when it uses a mathematical symbol, a one-letter (or short)
# name with a one-character subscript (``c_k``, ``out_L^t``, ``x_{t-d}``) or defines a set
# (``V = {t : ...}``), and reads as no code
# (no quotes, no ``sl.``, no arrow, no slice, no keyword argument).
_MATH_SIGN = re.compile(
    r"[Σ∈≥≤θ∂∇Ĝτ⟨⟩←μσ²δ·×−‖]|\b[A-Za-z]{1,3}_(?:[A-Za-z0-9]\b|\{)|^\w+ = \{\w+ : ")
_CODE_SIGN = re.compile(
    r"[\"'`]|\bsl\.|->|\[:|\.\.\.|\w=\w|^\w+$|\bfor\b.*\bin\b|\b[a-z_]+\.[a-z_]+\(")
_LATEX_SYMBOLS = {
    "Σ": r"\sum", "∈": r"\in", "≥": r"\geq", "≤": r"\leq", "θ": r"\theta", "∂": r"\partial",
    "∇": r"\nabla", "Ĝ": r"\hat{G}", "τ": r"\tau", "⟨": r"\langle", "⟩": r"\rangle",
    "←": r"\leftarrow", "μ": r"\mu", "σ": r"\sigma", "δ": r"\delta", "·": r"\cdot",
    "×": r"\times", "−": "-", "‖": r"\|", "²": "^2", "%": r"\%", "#": r"\#", "&": r"\&",
    "$": r"\$", "~": r"\sim", "∧": r"\wedge", "∨": r"\vee",
}
_OPERATORS = {"max": r"\max", "min": r"\min", "log": r"\log", "exp": r"\exp", "cos": r"\cos",
              "argmax": r"\operatorname{argmax}", "mean": r"\operatorname{mean}"}
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]{2,})*|\d+(?:\.\d+)?|>=|<=|!=|\s+|.")


def is_formula(text: str) -> bool:
  """Whether an inline literal of a docstring is a formula (see ``_MATH_SIGN``)."""
  return bool(_MATH_SIGN.search(text)) and not _CODE_SIGN.search(text)


def to_latex(text: str) -> str:
  """The LaTeX of a docstring formula in the package's plain-text notation: ``Σ_{t∈V}`` ->
  ``\\sum_{t\\in V}``, names of several letters upright (``loss_fn``, ``out_L``), words
  between them spaced, braces that are not a sub- or superscript's group shown as braces."""
  tokens = _TOKEN.findall(text)
  out, groups = [], []

  def word_kind(i):  # "name" (a function, array or symbol), "word" (prose), or None
    tok = tokens[i]
    if not re.match(r"[A-Za-z]", tok) or (len(tok) == 1):
      return None
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if tok in _OPERATORS or nxt[:1] in ("(", "[", "_", "^", "{"):
      return "name"
    return "word"

  for i, tok in enumerate(tokens):
    prev = tokens[i - 1] if i else ""
    if tok.isspace():
      near_word = (i > 0 and word_kind(i - 1) == "word") or (
          i + 1 < len(tokens) and word_kind(i + 1) == "word")
      out.append(r"\ " if near_word else " ")
    elif re.match(r"[A-Za-z]", tok) and len(tok) > 1:
      if tok in _OPERATORS:
        out.append(_OPERATORS[tok] + " ")
      else:
        name = tok.replace("_", r"\_")
        out.append(rf"\mathrm{{{name}}}" if word_kind(i) == "name" else rf"\text{{{tok}}}")
    elif tok == "{":
      groups.append(prev in ("_", "^"))
      out.append("{" if groups[-1] else r"\{")
    elif tok == "}":
      out.append("}" if (groups.pop() if groups else False) else r"\}")
    elif tok in (">=", "<=", "!="):
      out.append({">=": r"\geq ", "<=": r"\leq ", "!=": r"\neq "}[tok])
    elif tok in _LATEX_SYMBOLS:
      sym = _LATEX_SYMBOLS[tok]
      out.append(sym + (" " if sym[-1].isalpha() else ""))
    else:
      out.append(tok)
  return "".join(out).strip()


def _spec_link(match: re.Match, depth: int) -> str:
  number = match.group(1)
  anchor = SPEC_SECTIONS.get(number)
  if anchor is None:
    logger.warning(f"a docstring cites design.md §{number}, which has no such section",
                   type="sideways_lab", subtype="spec")
    return match.group(0)
  return f"`§{number} <{'../' * depth}design.html#{anchor}>`__"


def _rewrite_prose(text: str, depth: int) -> str:
  """Outside inline literals: ``docs/design.md §5`` -> a link to that section of the spec."""
  text = _SPEC_PATH.sub("the specification", text)
  return _SECTION.sub(lambda m: _spec_link(m, depth), text)


def _rewrite_docstring(app, what, name, obj, options, lines) -> None:
  """``autodoc-process-docstring``: links to the spec's sections; formulas rendered as math.

  A docstring's ``docs/design.md §n`` (or a bare ``§n``) becomes a link to section n of the
  specification page; an inline literal that is a formula (:func:`is_formula`) becomes
  ``:math:`` in LaTeX (:func:`to_latex`). Literal blocks (after ``::``) are left as written.
  """
  depth = 2  # the API pages are api/_generated/<module>.html
  in_block, block_indent = False, 0
  for i, line in enumerate(lines):
    stripped = line.strip()
    indent = len(line) - len(line.lstrip())
    if in_block:
      if stripped and indent <= block_indent:
        in_block = False
      else:
        continue
    parts = _INLINE_LITERAL.split(line)  # even: prose, odd: literal contents
    for j in range(len(parts)):
      if j % 2 == 0:
        parts[j] = _rewrite_prose(parts[j], depth)
      elif is_formula(parts[j]):
        parts[j] = f":math:`{to_latex(parts[j])}`"
      else:
        parts[j] = f"``{parts[j]}``"
    lines[i] = "".join(parts)
    if stripped.endswith("::") and not stripped.startswith(".."):
      in_block, block_indent = True, indent


# -- hooks -----------------------------------------------------------------------------------

def _report_api_problems(app) -> None:
  for problem in _API_PROBLEMS:
    logger.warning(problem, type="sideways_lab", subtype="api")


def _lookup(dotted: str):
  """The object a dotted name denotes (``sideways_lab.forward``, ``pkg.Class.method``), or None."""
  parts = dotted.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    try:
      for attr in parts[i:]:
        obj = getattr(obj, attr)
    except AttributeError:
      return None
    return obj
  return None


def _canonical_name(target: str) -> str | None:
  """Where ``target`` (possibly a re-export, possibly ``Class.member``) is documented."""
  head, _, member = target.rpartition(".")
  obj = _lookup(target)
  if obj is not None and id(obj) in CANONICAL:
    return CANONICAL[id(obj)]
  owner = _lookup(head) if head else None
  if owner is not None and inspect.isclass(owner) and id(owner) in CANONICAL:
    return f"{CANONICAL[id(owner)]}.{member}"
  return None


ALIAS = "sl."  # the docs write `sl.forward` for `import sideways_lab as sl`


def _resolve_reexport(app, env, node, contnode):
  """Resolves a reference by another public path of a documented name.

  Each function and class is documented once (see ``_assign_canonical``); a reference by any
  other path it has (``sl.forward``, ``sideways_lab.engine.forward``, or ``alignment`` inside
  ``sideways_lab.analysis``) lands there. A bare name that a docstring means relative to the
  module defining it (``FIELDS`` in ``compiled_memory``, documented under
  ``sideways_lab.analysis``) resolves when exactly one documented object has that name; two
  or more give Sphinx's "more than one target" warning, none the usual one.
  """
  if node.get("refdomain") != "py":
    return None
  py = env.get_domain("py")
  target = node["reftarget"].lstrip("~.")
  if target.startswith(ALIAS):
    target = "sideways_lab." + target[len(ALIAS):]
  module = node.get("py:module") or ""
  cls = node.get("py:class") or ""
  candidates = [target]
  if module:
    candidates = [f"{module}.{cls}.{target}" if cls else None, f"{module}.{target}", target]
  for candidate in filter(None, candidates):
    name = _canonical_name(candidate) or candidate
    found = py.resolve_xref(env, node["refdoc"], app.builder, "obj", name, node, contnode)
    if found is not None:
      return found
  if "." not in target:
    fuzzy = node.deepcopy()
    fuzzy["refspecific"] = True
    return py.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target, fuzzy,
                           contnode)
  return None


_LOCAL_REF = re.compile(r'(?:href|src)="([^"#?:]+)(?:[#?][^"]*)?"')
_REMOTE_ASSET = re.compile(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(https?:)?//',
                           re.IGNORECASE)


_SPEC_REF = re.compile(r'href="([^"#?:]*design\.html)#([^"]+)"')
_ID = re.compile(r'\sid="([^"]+)"')


def _ids(page: Path) -> set[str]:
  return set(_ID.findall(page.read_text(encoding="utf-8")))


def _check_html(app, exception) -> None:
  """Every local link and asset of the built pages exists, and no page loads anything remote."""
  if exception is not None or app.builder.format != "html":
    return
  outdir = Path(app.outdir)
  for page in outdir.rglob("*.html"):
    if "_static" in page.parts or "_modules" in page.parts:
      continue
    html = page.read_text(encoding="utf-8")
    rel = page.relative_to(outdir)
    for url in sorted(set(_LOCAL_REF.findall(html))):
      if not (page.parent / url).exists():
        logger.warning(f"{rel}: dead internal link or asset {url!r}", type="sideways_lab",
                       subtype="links")
    for url, anchor in sorted(set(_SPEC_REF.findall(html))):
      target = (page.parent / url).resolve()
      if target.exists() and anchor not in _ids(target):
        logger.warning(f"{rel}: link to a missing section {url}#{anchor}", type="sideways_lab",
                       subtype="links")
    for match in _REMOTE_ASSET.finditer(html):
      logger.warning(f"{rel}: loads a resource from the network: {match.group(0)[:120]!r}",
                     type="sideways_lab", subtype="offline")


def _copy_mathjax(app, exception) -> None:
  """MathJax from the jupyter-server-mathjax package, so that math renders offline."""
  if exception is not None or app.builder.format != "html":
    return
  src = Path(jupyter_server_mathjax.__file__).parent / "static"
  dst = Path(app.outdir) / "_static" / "mathjax"
  if not dst.exists():
    shutil.copytree(src, dst)


def setup(app):
  app.connect("builder-inited", _report_api_problems)
  app.connect("missing-reference", _resolve_reexport)
  app.connect("autodoc-process-docstring", _rewrite_docstring)
  app.connect("build-finished", _copy_mathjax)
  app.connect("build-finished", _check_html)
