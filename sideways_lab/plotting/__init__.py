"""One plotting style for every figure, notebook and widget of sideways_lab.

* :mod:`~sideways_lab.plotting.style` – one colour per scheme (BP blue, Sideways orange,
  Skip-Sideways green, each exact twin in its scheme's colour, dashed), the rc parameters,
  figures made without pyplot, frame colours.
* :mod:`~sideways_lab.plotting.schedule_diagram` – :func:`draw_schedule` and
  :func:`schedule_caption`, drawing :func:`sideways_lab.schedule.schedule_data`.
* :mod:`~sideways_lab.plotting.plots` – small pure plots (``plot_*``, :func:`show_frames`; a
  pipeline schedule's grid, :func:`plot_schedule_grid`) that
  take plain arrays or tidy DataFrames and an ``Axes``; the figures module and the notebooks
  compose them.

Everything draws on an ``Axes`` or ``Figure`` you pass in (no hidden pyplot state), so the
functions work headless (Agg) and inside widgets. Every public name of the three modules is
available as ``sl.plotting.<name>``.
"""

from sideways_lab.plotting.plots import (
  color_title,
  integer_axis,
  plot_bars,
  plot_curves,
  plot_grouped_bars,
  plot_ladder,
  plot_per_unit,
  plot_schedule_grid,
  plot_sweep,
  plot_timeline,
  schedule_grid_numbers,
  show_frames,
)
from sideways_lab.plotting.schedule_diagram import draw_schedule, schedule_caption
from sideways_lab.plotting.style import (
  BASELINE_SCHEMES,
  BLOCKED_COLOR,
  EMPTY_COLOR,
  EXACT_SCHEMES,
  SCHEME_COLORS,
  SCHEME_LABELS,
  SCHEME_LINESTYLES,
  SCHEME_MARKERS,
  SCHEME_ORDER,
  STYLE,
  figure_to_png,
  frame_color,
  frame_line_color,
  new_figure,
  order_schemes,
  save_figure,
  scheme_color,
  scheme_kwargs,
  scheme_label,
  style,
  use_style,
)

__all__ = [
  "BASELINE_SCHEMES",
  "BLOCKED_COLOR",
  "EMPTY_COLOR",
  "EXACT_SCHEMES",
  "SCHEME_COLORS",
  "SCHEME_LABELS",
  "SCHEME_LINESTYLES",
  "SCHEME_MARKERS",
  "SCHEME_ORDER",
  "STYLE",
  "color_title",
  "draw_schedule",
  "figure_to_png",
  "frame_color",
  "frame_line_color",
  "integer_axis",
  "new_figure",
  "order_schemes",
  "plot_bars",
  "plot_curves",
  "plot_grouped_bars",
  "plot_ladder",
  "plot_per_unit",
  "plot_schedule_grid",
  "plot_sweep",
  "plot_timeline",
  "save_figure",
  "schedule_caption",
  "schedule_grid_numbers",
  "scheme_color",
  "scheme_kwargs",
  "scheme_label",
  "show_frames",
  "style",
  "use_style",
]
