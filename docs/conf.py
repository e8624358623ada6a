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
        "sideways_lab", "sideways_lab.graph", "sideways_lab.engine", "sideways_lab.schedule",
        "sideways_lab.partition"],
    "Models and tasks": ["sideways_lab.models", "sideways_lab.tasks"],
    "Data": ["sideways_lab.data", "sideways_lab.data.synthetic", "sideways_lab.data.video",
             "sideways_lab.data.datasets"],
    "Training, experiments and checkpoints": ["sideways_lab.training",
                                              "sideways_lab.experiments",
                                              "sideways_lab.checkpoint"],
    "Analysis": ["sideways_lab.analysis", "sideways_lab.analysis.alignment",
                 "sideways_lab.analysis.sweeps", "sideways_lab.analysis.latency",
                 "sideways_lab.analysis.timing", "sideways_lab.analysis.memory",
                 "sideways_lab.analysis.cache"],
    "Multi-device": ["sideways_lab.parallel", "sideways_lab.launch"],
    "Figures and widgets": ["sideways_lab.plotting", "sideways_lab.widgets",
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
html_static_path = []
# MathJax from the jupyter-server-mathjax package, copied into _static/mathjax (see setup).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# That package ships the STIX-Web fonts only (MathJax's default web font is TeX).
mathjax2_config = {
    "tex2jax": {"processClass": "math|output_area", "ignoreClass": "document"},
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None},
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


def _data_entry(modname: str, name: str, value) -> list[str]:
  """A ``py:data`` entry: the value (or its type) and the ``#:`` comment above it, if any.

  (autodoc would show the docstring of the value's type, e.g. ``dict``'s, for a constant.)
  """
  shown = repr(value)
  if len(shown) <= MAX_VALUE_CHARS and "\n" not in shown:
    lines = [f".. py:data:: {name}", f"   :value: {shown}", ""]
  elif isinstance(value, dict):
    keys = ", ".join(f"``{k!r}``" for k in value)
    lines = [f".. py:data:: {name}", f"   :type: {type(value).__name__}", "", f"   Keys: {keys}."]
  else:
    lines = [f".. py:data:: {name}", f"   :type: {type(value).__name__}", "",
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
    index += [f"# {layer}", "", "```{toctree}", ":maxdepth: 1", ""]
    index += [f"/api/_generated/{m}" for m in names if m in modules]
    index += ["```", ""]
  _write_if_changed(out / "layers.md", "\n".join(index))
  for stale in out.glob("*.rst"):
    if stale.name not in written:
      stale.unlink()
  return problems


def _write_if_changed(path: Path, text: str) -> None:
  """Writes ``text`` unless the file already holds it (Sphinx then rereads only what changed)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def write_figures_page() -> None:
  """Writes ``_generated/figures.md``: every figure of ``figures/manifest.json`` with its caption.

  Included by ``figures.md``, so image paths are relative to ``docs/``.
  """
  manifest = json.loads((ROOT / "figures" / "manifest.json").read_text())
  made = (f"This set was made in **{manifest.get('mode', '?')} mode** with sideways_lab "
          f"{manifest.get('package_version', '?')} on {manifest.get('device', '?')}.")
  lines = ["% This file is generated by docs/conf.py from figures/manifest.json; do not edit.", "",
           made, ""]
  for name, fig in manifest["figures"].items():
    png = next(f for f in fig["files"] if f.endswith(".png"))
    lines += [f"# {name}", "", f"```{{figure}} ../figures/{png}", f":alt: {name}", "",
              fig["sentence"], "```", ""]
  _write_if_changed(DOCS / "_generated" / "figures.md", "\n".join(lines))


_RELATIVE_IMAGE = re.compile(r"(!\[[^\]]*\]\()(?!https?:|/)([^)\s]+)")


def write_claims_page() -> None:
  """Writes ``_generated/claims.md``: a copy of ``figures/claims.md`` whose image paths are
  made relative to ``docs/`` (where ``figures.md`` includes it), or a note that it is absent."""
  claims = ROOT / "figures" / "claims.md"
  if claims.exists():
    text = _RELATIVE_IMAGE.sub(r"\1../figures/\2", claims.read_text(encoding="utf-8"))
    text = "% A copy of figures/claims.md made by docs/conf.py; do not edit.\n\n" + text
  else:
    text = ("*The claims report (`figures/claims.md`, written by `sideways-lab figures`) is "
            "not in this tree yet.*\n")
  _write_if_changed(DOCS / "_generated" / "claims.md", text)


copy_notebooks()
_API_PROBLEMS = write_api_pages()
write_figures_page()
write_claims_page()


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
  app.connect("build-finished", _copy_mathjax)
  app.connect("build-finished", _check_html)
