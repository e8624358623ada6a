"""The schedule diagram: units (rows) × ticks (columns) in the papers' visual language.

Every cell is coloured by the frame its activation derives from, the gradient strip below it
in the colours of the frames its loss came from, gradient messages as arrows; blocked BP units
are grey. The content is :func:`sideways_lab.schedule.schedule_data` (plain NumPy, computed
once); drawing only indexes it, so the tick-slider widget is cheap.
"""

from __future__ import annotations

from matplotlib.patches import FancyArrowPatch, Rectangle

from sideways_lab.plotting.style import (
  BLOCKED_COLOR,
  EMPTY_COLOR,
  SCHEME_COLORS,
  frame_color,
  frame_line_color,
  scheme_color,
  scheme_label,
)
from sideways_lab.schedule import ScheduleData


def _stripes(ax, x, y, w, h, frames, alpha=1.0, hatch=None, z=1):
  n = max(len(frames), 1)
  for i, f in enumerate(frames):
    ax.add_patch(
      Rectangle(
        (x + i * w / n, y),
        w / n,
        h,
        facecolor=frame_color(f),
        edgecolor="none",
        alpha=alpha,
        hatch=hatch,
        zorder=z,
      )
    )


# The cell of a (unit, tick) on the 1 x 1 grid, and the activation's share of its height (the
# rest is the gradient strip).
CELL_W, CELL_H = 0.92, 0.84
ACT_SHARE = 0.56


def draw_schedule(
  ax,
  data: ScheduleData,
  tick: int | None = None,
  *,
  title: str | None = None,
  show_messages: bool = True,
  show_forward: bool = True,
  labels: bool = True,
):
  """Draws the schedule diagram of :func:`sideways_lab.schedule.schedule_data` on ``ax``.

  Rows are the incoming frame (bottom) and units 1..L (upwards), columns are ticks. The
  upper part of a cell is coloured by the frame(s) the unit's activation derives from (one
  stripe per frame a unit integrates, numbered), the lower strip by the origin frame(s) of the
  gradient it uses at that tick; arrows between lower strips are gradient messages, drawn in
  the colours of the frames they mix. Grey hatched cells are blocked BP units; hatched frames
  are dropped by BP.

  Args:
    ax: a matplotlib Axes.
    data: from :func:`sideways_lab.schedule.schedule_data`.
    tick: the current tick (a slider); ticks after it are faded and the inputs that feed the
      units at ``tick`` are drawn as grey arrows. ``None`` draws everything at full strength.
    title: the axes title (default: the scheme's display name and L).
  """
  L, T = data.num_units, data.num_ticks
  if tick is not None and not 0 <= int(tick) < T:
    raise ValueError(f"tick must be in [0, {T - 1}], got {tick!r}")
  ax.set_xlim(-0.6, T - 0.4)
  ax.set_ylim(-0.6, L + 0.6)
  ax.set_aspect("auto")
  ax.grid(False)
  for sp in ax.spines.values():
    sp.set_visible(False)

  def fade(t):
    return 1.0 if tick is None or t <= tick else 0.18

  for t in range(T):
    _draw_frame_cell(ax, data, t, fade(t), labels)
  for k in range(1, L + 1):
    for t in range(T):
      _draw_unit_cell(ax, data, k, t, fade(t), labels)
  if show_messages:
    _draw_messages(ax, data, fade)
  if tick is not None:
    _draw_current_tick(ax, data, int(tick), show_forward)
  _label_axes(ax, data, title)
  return ax


def _draw_frame_cell(ax, data: ScheduleData, t: int, alpha: float, labels: bool) -> None:
  """Row 0 at tick t: the incoming frame x_t (hatched when BP drops it)."""
  x0, y0 = t - CELL_W / 2, -CELL_H / 2
  if data.dropped[t]:
    ax.add_patch(
      Rectangle(
        (x0, y0),
        CELL_W,
        CELL_H,
        facecolor=EMPTY_COLOR,
        edgecolor="none",
        hatch="////",
        hatchcolor="#AAAAAA",
        lw=0,
        alpha=alpha,
        zorder=1,
      )
    )
  else:
    _stripes(ax, x0, y0, CELL_W, CELL_H, data.act_frames[0][t], alpha=alpha)
  if labels:
    ax.text(
      t,
      0,
      f"x{t}",
      ha="center",
      va="center",
      fontsize=7.5,
      alpha=alpha,
      color="#666666" if data.dropped[t] else "black",
      zorder=3,
    )


def _draw_unit_cell(ax, data: ScheduleData, k: int, t: int, alpha: float, labels: bool) -> None:
  """Unit k at tick t: blocked, empty, or its activation's frames over its gradient's."""
  x0, y0 = t - CELL_W / 2, k - CELL_H / 2
  frames = data.act_frames[k][t]
  if data.blocked[k, t]:
    ax.add_patch(
      Rectangle(
        (x0, y0),
        CELL_W,
        CELL_H,
        facecolor=BLOCKED_COLOR,
        edgecolor="none",
        hatch="xx",
        hatchcolor="#8A8A8A",
        alpha=0.6 * alpha,
        lw=0,
        zorder=1,
      )
    )
    return
  if not frames:
    ax.add_patch(
      Rectangle(
        (x0, y0), CELL_W, CELL_H, facecolor=EMPTY_COLOR, edgecolor="none", alpha=alpha, zorder=1
      )
    )
    return
  ya = y0 + CELL_H * (1 - ACT_SHARE)
  _stripes(ax, x0, ya, CELL_W, CELL_H * ACT_SHARE, frames, alpha=alpha)
  gf = data.grad_frames[k][t]
  if gf:
    strip_h = CELL_H * (1 - ACT_SHARE) - 0.1
    _stripes(ax, x0 + 0.08, y0 + 0.04, CELL_W - 0.16, strip_h, gf, alpha=alpha, z=2)
  if labels:
    txt = ",".join(str(f) for f in frames) if len(frames) <= 3 else f"{frames[0]}..{frames[-1]}"
    ax.text(
      t,
      ya + CELL_H * ACT_SHARE / 2,
      txt,
      ha="center",
      va="center",
      alpha=alpha,
      fontsize=7.5 if len(frames) == 1 else 6.2,
      zorder=3,
    )
  ax.add_patch(
    Rectangle(
      (x0, y0), CELL_W, CELL_H, facecolor="none", edgecolor="#555555", lw=0.4, alpha=alpha, zorder=3
    )
  )
  if k == data.num_units and data.loss_ticks[t]:
    ax.plot(
      [t],
      [k + CELL_H / 2 + 0.1],
      marker="v",
      ms=4.5,
      color="#222222",
      alpha=alpha,
      zorder=5,
      clip_on=False,
    )


def _draw_messages(ax, data: ScheduleData, fade) -> None:
  """Gradient messages: an arrow per frame a message mixes, between gradient strips."""
  gy = -CELL_H / 2 + 0.04 + (CELL_H * (1 - ACT_SHARE) - 0.1) / 2  # strip centre, rel. to row
  for m, t, j, frames in data.messages:
    if t + 1 >= data.num_ticks:
      continue
    n = len(frames)
    for i, f in enumerate(frames):
      off = (i - (n - 1) / 2) * 0.07
      arrow = FancyArrowPatch(
        (t + 0.12, m + gy + off),
        (t + 1 - 0.12, j + gy + off),
        arrowstyle="-|>",
        mutation_scale=7,
        lw=1.3,
        color=frame_line_color(f),
        alpha=fade(t + 1),
        zorder=4,
        shrinkA=0,
        shrinkB=0,
      )
      ax.add_patch(arrow)


def _draw_current_tick(ax, data: ScheduleData, t: int, show_forward: bool) -> None:
  """A frame around tick t and, for a pipeline, grey arrows from the inputs of each unit."""
  L = data.num_units
  ax.add_patch(
    Rectangle((t - 0.5, -0.55), 1.0, L + 1.1, facecolor="none", edgecolor="black", lw=1.6, zorder=5)
  )
  if not show_forward or data.scheme == "backprop":
    return
  ay = CELL_H / 2 - CELL_H * ACT_SHARE / 2  # centre of the activation part
  for k in range(1, L + 1):
    if not data.act_frames[k][t]:
      continue
    for j, d in data.edges[k]:
      src_t = t - d if j == 0 else t - 1 - d
      if src_t < 0:
        continue
      arrow = FancyArrowPatch(
        (src_t + 0.3, j + (0 if j == 0 else ay)),
        (t - 0.3, k + ay),
        arrowstyle="-|>",
        mutation_scale=7,
        lw=0.9,
        color="#444444",
        alpha=0.8,
        zorder=4,
        connectionstyle="arc3,rad=0.0",
        shrinkA=0,
        shrinkB=0,
      )
      ax.add_patch(arrow)


def _label_axes(ax, data: ScheduleData, title: str | None) -> None:
  L, T = data.num_units, data.num_ticks
  ax.set_xticks(range(T))
  ax.set_xticklabels([str(t) for t in range(T)])
  ax.set_yticks(range(L + 1))
  ax.set_yticklabels(["frame"] + [f"unit {k}" for k in range(1, L + 1)])
  ax.tick_params(length=0)
  ax.set_xlabel("tick")
  if title is None:
    title = f"{scheme_label(data.scheme)} (L = {L})"
  ax.set_title(title, color=scheme_color(data.scheme) if data.scheme in SCHEME_COLORS else "black")


def schedule_caption(data: ScheduleData, tick: int) -> str:
  """One line per unit describing what it works on at ``tick`` (used under the widget)."""
  lines = [
    f"tick {tick}: frame x{tick} arrives" + (" (dropped: BP is busy)" if data.dropped[tick] else "")
  ]
  for k in range(1, data.num_units + 1):
    if data.blocked[k, tick]:
      lines.append(f"unit {k}: blocked (waiting for BP)")
      continue
    a, g = data.act_frames[k][tick], data.grad_frames[k][tick]
    if not a:
      lines.append(f"unit {k}: pipeline not yet filled")
      continue
    s = f"unit {k}: activation of frame(s) {', '.join(map(str, a))}"
    if g:
      mm = data.mismatch(k, tick)
      s += (
        f"; gradient of the loss on frame(s) {', '.join(map(str, g))}"
        f" (mismatch {', '.join(map(str, mm))} frames)"
      )
    else:
      s += "; no gradient yet"
    lines.append(s)
  return "\n".join(lines)
