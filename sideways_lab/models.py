"""Model builders: the same Haiku units wired as a chain (BP, Sideways) or with skips.

A *scheme* is a pair (graph, gradient method) (docs/design.md §9); every approximate scheme has
an *exact twin* on the same graph::

  backprop         chain graph,  method "backprop"         (per-frame BP, synchronous)
  sideways         chain graph,  method "sideways"         (Sideways)
  sideways_exact   chain graph,  method "pipelined_exact"  (its exact twin: BP of the delayed chain)
  skip_sideways    skip graph,   method "sideways"         (Skip-Sideways)
  skip_exact       skip graph,   method "pipelined_exact"  (its exact twin)

Every scheme of a task uses the *same* unit functions and widths, so comparisons are fair.
A unit accepts a variable number of inputs: the main input ``inputs[0]`` (edge ``(k-1, 0)``)
goes through the unit's own layer; every extra input (a skip) is projected by its own
convolution (``skip_kernel`` × ``skip_kernel``, 1×1 by default) to the layer's width, resized
to the layer's spatial shape, and summed before the normalisation and non-linearity::

  h = norm( conv_k(inputs[0]) + Σ_{e ≥ 1} proj_{k,e}(resize(inputs[e])) );  out = relu(h)

The units are stateless (GroupNorm, never BatchNorm), as the engine requires.

* :func:`classifier_units` — conv units; per-frame features; the last unit is the head
  (global average pool then a linear layer to the logits, one linear per input).
* :func:`predictor_units` — encoder–decoder units; the last unit outputs a frame in [0, 1].
* :func:`build_graph` — the graph of a scheme for a :class:`ModelConfig`.
* :class:`RevCoupling`, :func:`reversible_unit` — a reversible conv unit (additive coupling,
  shapes kept) with an ``inverse``; :func:`reversible_classifier_units` and
  :func:`reversible_chain` — the classifier chain with its hidden units reversible (the
  carry-down gradient of docs/design.md §5 recovers their inputs instead of stashing them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from sideways_lab.graph import UnitGraph, chain_edges, dense_edges, skip_edges

TASKS = ("digits", "motion-classes", "next-frame")
CLASSIFICATION_TASKS = ("digits", "motion-classes")
SKIP_KINDS = ("span", "dense", "span_head")
#: How the classifier head pools a feature map (B, H, W, C) to (B, C).
READOUTS = ("mean", "max")
SCHEMES = {
  "backprop": ("chain", "backprop"),
  "sideways": ("chain", "sideways"),
  "sideways_exact": ("chain", "pipelined_exact"),
  "skip_sideways": ("skip", "sideways"),
  "skip_exact": ("skip", "pipelined_exact"),
}
#: The exact twin of each approximate scheme: the same graph, method "pipelined_exact".
EXACT_TWIN = {"sideways": "sideways_exact", "skip_sideways": "skip_exact"}


def check_scheme(scheme: Any) -> str:
  """Returns ``scheme`` or raises a ValueError naming the known schemes."""
  if scheme not in SCHEMES:
    raise ValueError(f"scheme must be one of {tuple(SCHEMES)}, got {scheme!r}")
  return scheme


def check_task(task: Any) -> str:
  """Returns ``task`` or raises a ValueError naming the known tasks."""
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
  return task


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture of a task's network (shared by every scheme).

  Attributes:
    task: "digits" or "motion-classes" (classification), or "next-frame" (frame prediction).
    num_units: L, the number of units (>= 2).
    width: channels of every hidden unit.
    num_classes: classes of the head (classification only).
    channels: channels of the predicted frame (prediction only).
    span: the skip span of the skip graph (>= 2, <= L).
    skips: "span" (unit k also reads unit k - span), "dense" (unit k reads every unit
      below it and the frame) or "span_head" (span skips, and the last unit also reads every
      unit 1..L-2): the skip graph of the schemes that use one. With "span_head" every unit
      feeds the classifier head through a global average pool (classification), so the
      head's message to it is spatially uniform and meets its newer activation without a
      spatial mismatch.
    skip_kernel: kernel size of the convolutions that project skip inputs (odd, >= 1). A 3×3
      projection lets one unit compare neighbouring pixels of two frames (a motion detector)
      at the cost of one more convolution per skip edge.
    groups: GroupNorm groups (must divide ``width``).
    readout: how the classifier head pools each input map over space before its linear layer:
      "mean" (global average pooling) or "max" (global max pooling). Average pooling spreads
      the head's gradient uniformly over the map; max pooling sends it to one position per
      channel, which a pipelined gradient meets at a newer frame (docs/design.md §9).
    downsample: 1-based units whose convolution has stride 2 (classification), or that
      halve the resolution in the encoder (prediction: unit 1 by default; the last unit
      upsamples by the same total factor).
    reversible: units 2..L-1 of the chain schemes are reversible couplings
      (:func:`reversible_chain`: a unit that can carry its input down, ``stash="carry"``);
      classification only, ``downsample`` may name unit 1 only, and the skip schemes refuse it
      (a unit with several inputs cannot be inverted from its one output).
  """

  task: str = "motion-classes"
  num_units: int = 4
  width: int = 16
  num_classes: int = 4
  channels: int = 1
  span: int = 2
  skips: str = "span"
  skip_kernel: int = 1
  groups: int = 4
  downsample: tuple = (1,)
  readout: str = "mean"
  reversible: bool = False

  def __post_init__(self):
    check_task(self.task)
    for name in ("num_units", "width", "num_classes", "channels", "span", "skip_kernel", "groups"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    if self.num_units < 2:
      raise ValueError(
        f"num_units must be >= 2 (a head and at least one unit), got {self.num_units}"
      )
    if not 2 <= self.span <= self.num_units:
      raise ValueError(f"span must be in 2..num_units={self.num_units}, got {self.span}")
    if self.skips not in SKIP_KINDS:
      raise ValueError(f"skips must be one of {SKIP_KINDS}, got {self.skips!r}")
    if self.skip_kernel % 2 == 0:
      raise ValueError(f"skip_kernel must be odd (SAME padding), got {self.skip_kernel}")
    if self.readout not in READOUTS:
      raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
    if self.width % self.groups:
      raise ValueError(f"groups={self.groups} must divide width={self.width}")
    ds = tuple(self.downsample)
    if any((not isinstance(k, int)) or not 1 <= k < self.num_units for k in ds):
      raise ValueError(f"downsample must list units in 1..{self.num_units - 1}, got {ds!r}")
    if self.task == "next-frame" and len(ds) == 0:
      raise ValueError("downsample must name at least one encoder unit for next-frame")
    object.__setattr__(self, "downsample", ds)
    self._check_reversible()

  def _check_reversible(self) -> None:
    if not isinstance(self.reversible, bool):
      raise ValueError(f"reversible must be True or False, got {self.reversible!r}")
    if not self.reversible:
      return
    if self.task not in CLASSIFICATION_TASKS:
      raise ValueError(
        f"reversible units exist for the classification tasks {CLASSIFICATION_TASKS}, "
        f"got task={self.task!r}"
      )
    if any(k != 1 for k in self.downsample):
      raise ValueError(
        f"reversible: downsample may name unit 1 only (units 2..L-1 keep their input's "
        f"shape), got {self.downsample!r}"
      )
    if self.width % 2 or (self.width // 2) % self.groups:
      raise ValueError(
        f"reversible: width={self.width} must be even with groups={self.groups} dividing "
        f"width/2 (each coupling half is normalised in groups)"
      )

  def to_dict(self) -> dict:
    """The config as JSON-ready plain values (tuples as lists). ``reversible`` is written only
    when True, so the configurations (and run keys) of ordinary networks are those they had
    before the field existed."""
    d = dataclasses.asdict(self)
    d["downsample"] = list(self.downsample)
    if not self.reversible:
      del d["reversible"]
    return d

  @classmethod
  def from_dict(cls, d: dict) -> ModelConfig:
    """The config that :meth:`to_dict` returned ``d`` for."""
    d = dict(d)
    if "downsample" in d:
      d["downsample"] = tuple(d["downsample"])
    return cls(**d)


# ---------------------------------------------------------------------------------------------
# Merging extra inputs
# ---------------------------------------------------------------------------------------------


def resize_to(x: jax.Array, hw: Sequence[int]) -> jax.Array:
  """Resizes (B, H, W, C) to (B, h, w, C): average pooling for integer down-factors,
  nearest repetition for integer up-factors, bilinear otherwise.

  Deliberately not ``jax.image.resize`` for the down-factors: it has no box filter (its
  antialiased linear filter halves with weights 1/8, 3/8, 3/8, 1/8, not the 1/2, 1/2 of the
  average pool the skip projections were measured with)."""
  B, H, W, C = x.shape
  h, w = int(hw[0]), int(hw[1])
  if (H, W) == (h, w):
    return x
  if H % h == 0 and W % w == 0:
    return x.reshape(B, h, H // h, w, W // w, C).mean(axis=(2, 4))
  if h % H == 0 and w % W == 0:
    return jnp.repeat(jnp.repeat(x, h // H, axis=1), w // W, axis=2)
  return jax.image.resize(x, (B, h, w, C), method="linear")


def merge_extras(
  h: jax.Array, extras: Sequence[jax.Array], name: str = "skip", kernel: int = 1
) -> jax.Array:
  """``h + Σ_e proj_e(resize(extras[e]))``: the projections a skip graph adds.

  ``proj_e`` is a ``kernel``×``kernel`` convolution to ``h``'s channels (a 1×1 convolution is
  an ``hk.Linear``); an extra input is resized to ``h``'s spatial shape first when the
  projection is wider than 1×1 (so the kernel sees the target resolution), after it otherwise
  (cheaper, and equal for the average-pool and repeat resizes).
  """
  for e, x in enumerate(extras):
    if kernel == 1:
      p = resize_to(hk.Linear(h.shape[-1], name=f"{name}_proj_{e + 1}")(x), h.shape[1:3])
    else:
      p = Conv(h.shape[-1], kernel, name=f"{name}_proj_{e + 1}")(resize_to(x, h.shape[1:3]))
    h = h + p
  return h


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1) -> jax.Array:
  """SAME 2-D convolution as one matmul over shifted slices (im2col).

  ``y[b, i, j] = Σ_{u, v, c} x_pad[b, s·i + u, s·j + v, c] w[u, v, c, :]``; x (B, H, W, C_in),
  w (kh, kw, C_in, C_out) -> (B, ceil(H/s), ceil(W/s), C_out). It equals ``lax.conv`` with
  SAME padding, and its gradients are slices, pads and matmuls, which XLA on CPU runs ~10×
  faster than convolution gradients inside the engine's ``lax.scan``.
  """
  kh, kw, _, cout = w.shape
  B, H, W, C = x.shape
  Ho, Wo = -(-H // stride), -(-W // stride)
  ph = max((Ho - 1) * stride + kh - H, 0)
  pw = max((Wo - 1) * stride + kw - W, 0)
  xp = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  cols = [
    xp[:, i : i + (Ho - 1) * stride + 1 : stride, j : j + (Wo - 1) * stride + 1 : stride, :]
    for i in range(kh)
    for j in range(kw)
  ]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  return patches @ w.reshape(kh * kw * C, cout)


class Conv(hk.Module):
  """A SAME convolution with bias (parameters ``w`` (k, k, C_in, C_out) and ``b``, initialised
  like ``hk.Conv2D``), computed by :func:`conv2d`."""

  def __init__(self, channels: int, kernel: int = 3, stride: int = 1, name: str | None = None):
    super().__init__(name=name)
    self.channels, self.kernel, self.stride = channels, kernel, stride

  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    fan_in = self.kernel * self.kernel * cin
    w = hk.get_parameter(
      "w",
      (self.kernel, self.kernel, cin, self.channels),
      x.dtype,
      init=hk.initializers.TruncatedNormal(1.0 / np.sqrt(fan_in)),
    )
    b = hk.get_parameter("b", (self.channels,), x.dtype, init=jnp.zeros)
    return conv2d(x, w, self.stride) + b


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
  """(B, H, W, f·f·C) -> (B, f·H, f·W, C) (pixel shuffle)."""
  B, H, W, D = x.shape
  C = D // (factor * factor)
  x = x.reshape(B, H, W, factor, factor, C).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(B, H * factor, W * factor, C)


def _norm_relu(h, groups, name):
  return jax.nn.relu(hk.GroupNorm(groups, name=name)(h))


def _conv_unit(
  k: int, width: int, groups: int, downsample: tuple, name: str, skip_kernel: int = 1
) -> Callable:
  """Unit k: ``relu(GroupNorm(conv3x3_s(inputs[0]) + merged extras))``, stride 2 if k in
  ``downsample``."""

  def unit(inputs):
    x, extras = inputs[0], list(inputs[1:])
    h = Conv(width, 3, stride=2 if k in downsample else 1, name="conv")(x)
    return _norm_relu(merge_extras(h, extras, kernel=skip_kernel), groups, "norm")

  unit.__name__ = f"{name}_{k}"
  return unit


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------


def classifier_units(
  num_units: int = 4,
  width: int = 16,
  num_classes: int = 4,
  groups: int = 4,
  downsample: Sequence[int] = (1,),
  skip_kernel: int = 1,
  readout: str = "mean",
) -> list[Callable]:
  """Conv units for classification; unit L is the head.

  Units 1..L-1: ``relu(GroupNorm(conv3x3_s(inputs[0]) + merged extras))`` with stride 2 on
  the units in ``downsample``. Unit L: ``Linear(pool_hw(inputs[0])) + Σ_e Linear_e(pool_hw(
  inputs[e]))`` → logits (B, num_classes), where ``pool_hw`` is the mean (``readout="mean"``)
  or the max (``"max"``) over the spatial axes. Frames (B, H, W, C) in, logits out.
  """
  downsample = tuple(downsample)
  if readout not in READOUTS:
    raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
  pool = jnp.mean if readout == "mean" else jnp.max

  def head(inputs):
    logits = hk.Linear(num_classes, name="head")(pool(inputs[0], axis=(1, 2)))
    for e, x in enumerate(inputs[1:]):
      logits = logits + hk.Linear(num_classes, name=f"skip_proj_{e + 1}")(pool(x, axis=(1, 2)))
    return logits

  return [
    _conv_unit(k, width, groups, downsample, "conv_unit", skip_kernel) for k in range(1, num_units)
  ] + [head]


def predictor_units(
  num_units: int = 4,
  width: int = 16,
  channels: int = 1,
  groups: int = 4,
  downsample: Sequence[int] = (1,),
  skip_kernel: int = 1,
) -> list[Callable]:
  """Encoder–decoder units for next-frame prediction; unit L outputs a frame.

  Units in ``downsample`` are stride-2 3×3 convolutions (the encoder), the others 3×3
  convolutions at their input's resolution; each is followed by GroupNorm and ReLU. Unit L
  (the decoder) is a 3×3 convolution to ``f·f·channels`` channels followed by a pixel shuffle
  that upsamples by ``f = 2**len(downsample)`` (a sub-pixel convolution), then a sigmoid:
  ``out_L ∈ [0, 1]^{B×H×W×C}``.
  """
  downsample = tuple(downsample)
  factor = 2 ** len(downsample)

  def decoder(inputs):
    x, extras = inputs[0], list(inputs[1:])
    h = depth_to_space(Conv(channels * factor * factor, 3, name="deconv")(x), factor)
    h = merge_extras(h, extras, kernel=skip_kernel)
    return jax.nn.sigmoid(h)

  return [
    _conv_unit(k, width, groups, downsample, "encoder_unit", skip_kernel)
    for k in range(1, num_units)
  ] + [decoder]


def units_for(config: ModelConfig) -> list[Callable]:
  """The unit functions of ``config`` (shared by every scheme)."""
  if config.task in CLASSIFICATION_TASKS:
    return classifier_units(
      config.num_units,
      config.width,
      config.num_classes,
      config.groups,
      config.downsample,
      config.skip_kernel,
      config.readout,
    )
  return predictor_units(
    config.num_units,
    config.width,
    config.channels,
    config.groups,
    config.downsample,
    config.skip_kernel,
  )


def build_graph(config: ModelConfig, scheme: str) -> UnitGraph:
  """The unit graph of ``scheme`` for ``config`` (its edges are :func:`edges_of`; with
  ``config.reversible`` the chain of :func:`reversible_chain`)."""
  scheme = check_scheme(scheme)
  if getattr(config, "reversible", False):
    if graph_of(scheme) != "chain":
      raise ValueError(
        f"model.reversible needs a chain scheme (backprop, sideways, sideways_exact), got "
        f"{scheme!r}: a unit that reads several inputs cannot be inverted from its one output"
      )
    return reversible_chain(config, name=scheme)
  return UnitGraph(units_for(config), edges_of(config, scheme), name=scheme)


def edges_of(config: ModelConfig, scheme: str) -> dict:
  """The edges of ``scheme``'s graph: a chain, skips of ``config.span`` (plus edges from
  every unit to the last one for ``skips="span_head"``), or dense skips."""
  scheme = check_scheme(scheme)
  if not isinstance(config, ModelConfig):
    raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
  L = config.num_units
  if SCHEMES[scheme][0] == "chain":
    return chain_edges(L)
  if config.skips == "dense":
    return dense_edges(L)
  edges = skip_edges(L, config.span)
  if config.skips == "span_head":
    edges[L] = edges[L] + [(j, 0) for j in range(L - 2, 0, -1) if (j, 0) not in edges[L]]
  return edges


def graph_of(scheme: str) -> str:
  """The graph kind of ``scheme``: "chain" or "skip"."""
  return SCHEMES[check_scheme(scheme)][0]


def method_of(scheme: str) -> str:
  """The gradient method of ``scheme`` ("backprop", "sideways" or "pipelined_exact")."""
  return SCHEMES[check_scheme(scheme)][1]


def mode_of(scheme: str) -> str:
  """The forward mode of ``scheme``: "synchronous" for backprop, else "pipelined"."""
  return "synchronous" if method_of(scheme) == "backprop" else "pipelined"


# ---------------------------------------------------------------------------------------------
# Reversible units
# ---------------------------------------------------------------------------------------------


class RevCoupling(hk.Module):
  """Additive coupling (RevNet), invertible for any residual functions F and G.

  With the channels split in halves, ``x = (x1, x2)`` (B, H, W, C) with C even::

    y1 = x1 + F(x2),  y2 = x2 + G(y1)           (forward, shape kept)
    x2 = y2 - G(y1),  x1 = y1 - F(x2)           (inverse)

  ``F, G(z) = relu(GroupNorm(conv3x3(z)))`` on C/2 channels (``groups`` must divide C/2).
  """

  def __init__(self, groups: int, name: str | None = None):
    super().__init__(name=name)
    self.groups = groups

  def _residual(self, which: str, z: jax.Array) -> jax.Array:
    h = Conv(z.shape[-1], 3, name=f"{which}_conv")(z)
    return _norm_relu(h, self.groups, f"{which}_norm")

  def _halves(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    C = x.shape[-1]
    if C % 2 or (C // 2) % self.groups:
      raise ValueError(
        f"a coupling unit needs an even number of channels whose half is divisible by "
        f"groups={self.groups}, got {C} channels"
      )
    return x[..., : C // 2], x[..., C // 2 :]

  def __call__(self, x: jax.Array) -> jax.Array:
    x1, x2 = self._halves(x)
    y1 = x1 + self._residual("f", x2)
    return jnp.concatenate([y1, x2 + self._residual("g", y1)], axis=-1)

  def inverse(self, y: jax.Array) -> jax.Array:
    """The input ``x`` whose output is ``y`` (the same parameters as ``__call__``)."""
    y1, y2 = self._halves(y)
    x2 = y2 - self._residual("g", y1)
    return jnp.concatenate([y1 - self._residual("f", x2), x2], axis=-1)


def reversible_unit(groups: int, name: str = "rev_unit") -> Callable:
  """A unit ``f(inputs) = RevCoupling(inputs[0])`` with ``f.inverse(out)`` its input.

  One input only (a unit with several inputs cannot be recovered from its one output); the
  output has the input's shape."""

  def unit(inputs):
    if len(inputs) != 1:
      raise ValueError(
        f"a reversible unit reads one input (it is recovered from its output), got {len(inputs)}"
      )
    return RevCoupling(groups, name="coupling")(inputs[0])

  def inverse(out):
    return RevCoupling(groups, name="coupling").inverse(out)

  unit.__name__ = name
  unit.inverse = inverse
  return unit


def reversible_classifier_units(
  num_units: int = 4,
  width: int = 16,
  num_classes: int = 4,
  groups: int = 4,
  downsample: Sequence[int] = (1,),
  readout: str = "mean",
) -> list[Callable]:
  """:func:`classifier_units` with the shape-keeping hidden units reversible.

  Unit 1 (frames to ``width`` channels, stride 2 if in ``downsample``) and the head (unit L)
  are the ordinary units; units 2..L-1 are :func:`reversible_unit` couplings on ``width``
  channels (``groups`` must divide ``width / 2``). ``downsample`` may name unit 1 only: a
  reversible unit keeps its input's shape."""
  downsample = tuple(downsample)
  if any(k != 1 for k in downsample):
    raise ValueError(
      f"downsample may name unit 1 only (units 2..L-1 are reversible and keep their input's "
      f"shape), got {downsample!r}"
    )
  if width % 2 or (width // 2) % groups:
    raise ValueError(f"width={width} must be even with groups={groups} dividing width/2")
  plain = classifier_units(num_units, width, num_classes, groups, downsample, 1, readout)
  rev = [reversible_unit(groups, f"rev_unit_{k}") for k in range(2, num_units)]
  return [plain[0], *rev, plain[-1]]


def reversible_chain(config: ModelConfig, name: str = "reversible_sideways") -> UnitGraph:
  """The chain of a classification ``config`` with :func:`reversible_classifier_units`:
  the same first unit and head as :func:`build_graph`'s chain, reversible units between."""
  if not isinstance(config, ModelConfig) or config.task not in CLASSIFICATION_TASKS:
    raise ValueError(
      f"config must be a ModelConfig of a classification task {CLASSIFICATION_TASKS}, "
      f"got {config!r}"
    )
  units = reversible_classifier_units(
    config.num_units,
    config.width,
    config.num_classes,
    config.groups,
    config.downsample,
    config.readout,
  )
  return UnitGraph(units, chain_edges(config.num_units), name=name)
