"""The house style: one colour per scheme, the rc parameters, figures, frame colours.

* :data:`SCHEME_COLORS` – one colour per scheme, used by *every* figure (Okabe–Ito palette,
  safe for colour-blind readers): BP blue, Sideways orange, Skip-Sideways green; an exact twin
  has its scheme's colour and a dashed line (a hatched bar); baselines are grey.
* :data:`STYLE` / :func:`style` / :func:`use_style` – the rc parameters (a context manager,
  or applied globally in a notebook).
* :func:`new_figure`, :func:`save_figure`, :func:`figure_to_png` – figures made without pyplot.
* :func:`frame_color` – the colour of a frame in the schedule diagram and the timelines.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

import cycler
import matplotlib as mpl
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

#: One colour per scheme, everywhere (Okabe–Ito); an exact twin has its scheme's colour and
#: a dashed line (a hatched bar); baselines are grey.
SCHEME_COLORS: dict[str, str] = {
  "backprop": "#0072B2",  # blue
  "sideways": "#E69F00",  # orange
  "sideways_exact": "#E69F00",  # the exact twin of Sideways: its colour, dashed
  "skip_sideways": "#009E73",  # bluish green
  "skip_exact": "#009E73",  # the exact twin of Skip-Sideways: its colour, dashed
  "copy_newest": "#6E6E6E",  # baselines: grey
  "mean_frame": "#A8A8A8",
}

#: Display names of the schemes.
SCHEME_LABELS: dict[str, str] = {
  "backprop": "BP",
  "sideways": "Sideways",
  "sideways_exact": "Sideways, exact twin",
  "skip_sideways": "Skip-Sideways",
  "skip_exact": "Skip-Sideways, exact twin",
  "copy_newest": "copy newest frame",
  "mean_frame": "mean frame",
}

#: Exact twins are dashed, baselines dotted; everything else solid.
SCHEME_LINESTYLES: dict[str, str] = {
  "sideways_exact": "--",
  "skip_exact": "--",
  "copy_newest": ":",
  "mean_frame": ":",
}

#: Markers per scheme (an exact twin shares its scheme's marker).
SCHEME_MARKERS: dict[str, str] = {
  "backprop": "o",
  "sideways": "s",
  "sideways_exact": "s",
  "skip_sideways": "^",
  "skip_exact": "^",
  "copy_newest": "",
  "mean_frame": "",
}

#: Exact twins (hatched bars, hollow markers).
EXACT_SCHEMES = ("sideways_exact", "skip_exact")
#: Baselines (grey reference lines).
BASELINE_SCHEMES = ("copy_newest", "mean_frame")

#: The order in which schemes appear in legends and panels.
SCHEME_ORDER: tuple[str, ...] = (
  "backprop",
  "sideways",
  "sideways_exact",
  "skip_sideways",
  "skip_exact",
  "copy_newest",
  "mean_frame",
)

#: Colour of blocked (idle) units in BP diagrams and of "nothing here" cells.
BLOCKED_COLOR = "#BDBDBD"
EMPTY_COLOR = "#F4F4F4"

#: The rc parameters of every figure.
STYLE: dict[str, object] = {
  "figure.dpi": 100,
  "savefig.dpi": 150,
  "savefig.bbox": "tight",
  "savefig.pad_inches": 0.05,
  "figure.facecolor": "white",
  "axes.facecolor": "white",
  "axes.edgecolor": "#333333",
  "axes.linewidth": 0.8,
  "axes.grid": True,
  "grid.color": "#E0E0E0",
  "grid.linewidth": 0.6,
  "axes.spines.top": False,
  "axes.spines.right": False,
  "axes.titlesize": 11,
  "axes.titleweight": "bold",
  "axes.labelsize": 10,
  "axes.prop_cycle": cycler.cycler(
    color=["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]
  ),
  "font.size": 9.5,
  "font.family": "DejaVu Sans",
  "legend.fontsize": 8.5,
  "legend.frameon": False,
  "lines.linewidth": 1.8,
  "lines.markersize": 5,
  "xtick.labelsize": 8.5,
  "ytick.labelsize": 8.5,
  "image.cmap": "gray",
  "image.interpolation": "nearest",
  "pdf.fonttype": 42,
  "svg.fonttype": "none",
}


@contextlib.contextmanager
def style():
  """Context manager that applies :data:`STYLE` (``with sl.plotting.style(): ...``)."""
  with mpl.rc_context(STYLE):
    yield


def use_style() -> None:
  """Applies :data:`STYLE` globally (for notebooks)."""
  mpl.rcParams.update(STYLE)


def scheme_color(scheme: str) -> str:
  """The colour of a scheme; unknown names get a neutral grey."""
  return SCHEME_COLORS.get(scheme, "#7F7F7F")


def scheme_label(scheme: str) -> str:
  """The legend label of a scheme (``"sideways"`` -> ``"Sideways"``); unknown names as given."""
  return SCHEME_LABELS.get(scheme, str(scheme))


def scheme_kwargs(scheme: str, marker: bool = False) -> dict:
  """``plot`` keyword arguments (colour, label, line style, marker) of a scheme."""
  kw = dict(
    color=scheme_color(scheme),
    label=scheme_label(scheme),
    linestyle=SCHEME_LINESTYLES.get(scheme, "-"),
  )
  if marker:
    kw["marker"] = SCHEME_MARKERS.get(scheme, "o")
    if scheme in EXACT_SCHEMES:
      kw["markerfacecolor"] = "white"
  return kw


def order_schemes(schemes) -> list[str]:
  """Sorts scheme names in :data:`SCHEME_ORDER` (unknown names last, in the given order)."""
  schemes = list(schemes)
  known = [s for s in SCHEME_ORDER if s in schemes]
  return known + [s for s in schemes if s not in SCHEME_ORDER]


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, *, mosaic=None, **kw):
  """A ``matplotlib.figure.Figure`` (not registered with pyplot) and its axes, in the style.

  Returns ``(fig, axes)``: an (nrows, ncols) array of axes, or, with ``mosaic`` (a layout for
  ``Figure.subplot_mosaic``, e.g. ``[["a", "b"], ["c", "c"]]``), a dict from label to axes.
  """
  with style():
    fig = Figure(figsize=figsize or (4.0 * ncols, 3.0 * nrows), layout="constrained")
    if mosaic is not None:
      return fig, fig.subplot_mosaic(mosaic, **kw)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
  return fig, axes


def save_figure(fig, path_stem, formats: Sequence[str] = ("png", "pdf")) -> list[str]:
  """Saves ``fig`` as ``<path_stem>.png`` and ``.pdf``; returns the paths written."""
  out = []
  with style():
    for fmt in formats:
      p = f"{os.fspath(path_stem)}.{fmt}"
      kw = (
        {"metadata": {"CreationDate": None}} if fmt == "pdf" else {"metadata": {"Software": None}}
      )
      fig.savefig(p, format=fmt, **kw)
      out.append(p)
  return out


def figure_to_png(fig, dpi: int = 90) -> bytes:
  """Renders a figure to PNG bytes (used by the widgets)."""
  buf = io.BytesIO()
  with style():
    fig.savefig(buf, format="png", dpi=dpi)
  return buf.getvalue()


# Frame colours (the schedule diagram's visual language)

# matplotlib's Set3 without its grey (grey means "blocked").
_FRAME_PALETTE = (
  "#8DD3C7",
  "#FFED6F",
  "#BEBADA",
  "#FB8072",
  "#80B1D3",
  "#FDB462",
  "#B3DE69",
  "#FCCDE5",
  "#BC80BD",
  "#CCEBC5",
  "#FFFFB3",
)


def frame_color(f: int) -> str:
  """The colour of frame ``f`` (cycled through an 11-colour palette)."""
  return _FRAME_PALETTE[int(f) % len(_FRAME_PALETTE)]


def _darken(color: str, factor: float = 0.62) -> tuple:
  r, g, b = to_rgb(color)
  return (r * factor, g * factor, b * factor)


def frame_line_color(f: int) -> tuple:
  """A darker shade of :func:`frame_color` for lines and arrows."""
  return _darken(frame_color(f))
