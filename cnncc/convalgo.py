"""The convolution algorithms: one registry of records, one per (algorithm, target), that the chooser, the lowering,
``cnncc explain``/``bench``/``tune``, the test tolerances and the defaults all read.

The target-neutral half lives here (the core imports no backend): a layer's :class:`ConvShape`, the algorithms'
arithmetic -- which layers each can compute (:data:`CATALOGUE`: the rule, in words with the values, when it cannot)
and how far its float32 result may stray (the test tolerance, with its reason) -- and the registry itself. A backend
registers one :class:`ConvAlgorithm` per algorithm it compiles, built with :func:`standard` from the catalogue plus
what only the backend knows: the precision, training support, and its hooks (schedule space and description, cost
estimate, error emulation, lowering; for the CPU see :mod:`cnncc.codegen.conv_algorithms`).

The selection pass writes each conv node's choice into the IR (``impl``); the lowering only reads it. An algorithm
that does not apply to a layer raises :class:`cnncc.errors.AlgorithmError` -- when a user forces it, and again in the
lowering for a hand-set ``impl`` -- never a silent fallback to direct convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cnncc.errors import AlgorithmError, CnnccError

if TYPE_CHECKING:
    from cnncc.ir import Node
    from cnncc.ops.conv2d import Conv2dAttrs

Rule = Callable[["ConvShape"], "str | None"]  # None: the algorithm computes the layer; else the rule it breaks


@dataclass(frozen=True)
class ConvImpl:
    """How a backend computes a convolution, set by the algorithm-selection pass (``cnncc explain`` says why).

    ``algorithm``: a registered algorithm's name (:data:`ALGORITHMS`). ``ur_w``/``ocb``: the direct kernel's
    register tile (pixels x channel blocks; 0 = the backend's rule)."""

    algorithm: str = "direct"
    ur_w: int = 0
    ocb: int = 0


@dataclass(frozen=True)
class ConvShape:
    """What decides a convolution's algorithms and cost: shapes and attributes, not weights or names. A
    backward-data convolution is described by the forward convolution it computes (dy -> dx, see
    :meth:`of_grad_input`)."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    oh: int
    ow: int

    @staticmethod
    def of(node: Node) -> ConvShape:
        """The shape of a ``conv2d`` / ``fused_conv2d`` node."""
        a = conv_attrs(node)
        n, c, h, w = node.inputs[0].shape
        k, _, r, s = node.inputs[1].shape
        _, _, oh, ow = node.outputs[0].shape
        (sh, sw), (dh, dw), (t, b, l, rp) = a.stride, a.dilation, a.padding
        return ConvShape(n, c, h, w, k, r, s, (sh, sw), (t, b, l, rp), (dh, dw), a.groups, oh, ow)

    @staticmethod
    def of_grad_input(node: Node) -> ConvShape:
        """A ``conv2d_grad_input`` node as the convolution it is at stride 1: dy (N, K, OH, OW) -> dx (N, C, H, W)
        with the flipped, transposed filters and padding ``(R-1)*dilation - p`` per side (negative when the forward
        padding exceeds the kernel's reach; no algorithm but the backend's own backward kernels applies then)."""
        a = node.attrs
        n, k, oh, ow = node.inputs[0].shape
        _, cg, r, s = node.inputs[1].shape
        (dh, dw), (t, b, l, rp) = a.dilation, a.padding
        pad = ((r - 1) * dh - t, (r - 1) * dh - b, (s - 1) * dw - l, (s - 1) * dw - rp)
        return ConvShape(n, k, oh, ow, cg * a.groups, r, s, (a.stride[0], a.stride[1]), pad, (dh, dw), a.groups,
                         a.size[0], a.size[1])

    @property
    def macs(self) -> int:
        return self.n * self.k * self.oh * self.ow * (self.c // self.groups) * self.r * self.s

    def signature(self) -> str:
        """Stable text key (the tuning database's). A fused epilogue is not part of it: it costs every algorithm
        the same few vector operations per output."""
        return (f"conv2d n{self.n} c{self.c} {self.h}x{self.w} k{self.k} {self.r}x{self.s} s{self.stride[0]}x"
                f"{self.stride[1]} p{'/'.join(map(str, self.padding))} d{self.dilation[0]}x{self.dilation[1]} "
                f"g{self.groups}")

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.c == self.groups and self.k == self.c


# The default error budget of one layer, max |y - ref| / max |ref| against float64 (target-neutral: what the user
# accepts, not what a backend does); Winograd F(4x4, 3x3) measures 5e-6..3e-5 on ResNet/VGG layers.
DEFAULT_MAX_ERROR = 1e-4

# The ops whose attributes carry a ConvImpl: forward convolutions (plain and with a fused epilogue) and
# backward-data convolutions. The select-algorithms pass visits exactly these; the lowering requires their impl.
FORWARD_CONV_OPS = ("conv2d", "fused_conv2d")
CONV_OPS = (*FORWARD_CONV_OPS, "conv2d_grad_input")


def conv_attrs(node: Node) -> Conv2dAttrs:
    """The convolution attributes of a ``conv2d`` or ``fused_conv2d`` node (the fused op wraps them)."""
    return node.attrs.conv if node.op == "fused_conv2d" else node.attrs


def impl_of(node: Node) -> ConvImpl | None:
    """The algorithm the selection pass wrote into a conv node (``conv2d``, ``fused_conv2d``, ``conv2d_grad_input``);
    None if no selection ran."""
    a = node.attrs if node.op == "conv2d_grad_input" else conv_attrs(node)
    impl: ConvImpl | None = a.impl
    return impl


def with_impl(node: Node, impl: ConvImpl) -> Any:
    """``node``'s attributes with ``impl`` set (what the selection pass writes into the IR)."""
    if node.op == "fused_conv2d":
        return replace(node.attrs, conv=replace(node.attrs.conv, impl=impl))
    return replace(node.attrs, impl=impl)


# -- the arithmetic: which layers each algorithm computes ----------------------------------------------------------


def _direct(cs: ConvShape) -> str | None:
    if cs.depthwise:
        return f"groups={cs.groups} = channels = filters: a depthwise layer runs on the depthwise kernel"
    return None


def _depthwise(cs: ConvShape) -> str | None:
    if not cs.depthwise:
        return (f"groups={cs.groups}, {cs.c} channels, {cs.k} filters: the depthwise kernel needs one filter per "
                "channel (groups = channels = filters)")
    return None


def _dense(cs: ConvShape) -> str | None:
    if cs.groups > 1:
        return f"groups={cs.groups}: only direct convolution runs grouped and depthwise layers"
    if cs.dilation != (1, 1):
        return f"dilation {cs.dilation}: needs dilation 1"
    return None


def _winograd(cs: ConvShape) -> str | None:
    why = _dense(cs)
    if why is None and (cs.r, cs.s) != (3, 3):
        why = f"kernel {cs.r}x{cs.s}: Winograd F(m, 3x3) needs a 3x3 kernel"
    if why is None and cs.stride != (1, 1):
        why = f"stride {cs.stride}: Winograd needs stride 1"
    if why is None and min(cs.padding) < 0:
        why = f"padding {cs.padding}: negative (a backward-data convolution whose forward padding exceeds the kernel)"
    return why


def _fft(tile: int) -> Rule:
    def rule(cs: ConvShape) -> str | None:
        why = _dense(cs)
        if why is None and max(cs.r, cs.s) < 3:
            why = f"kernel {cs.r}x{cs.s}: FFT needs a kernel of at least 3x3"
        if why is None and tile < max(cs.r, cs.s) + max(cs.stride):
            why = f"kernel {cs.r}x{cs.s} stride {cs.stride}: an FFT tile of {tile} leaves too few outputs per tile"
        return why

    return rule


@dataclass(frozen=True)
class Arithmetic:
    """The target-neutral facts of one algorithm: what it computes and how accurately (float32 output against the
    float64 reference, relative to the output scale)."""

    summary: str
    applies: Rule
    tolerance: float
    tolerance_reason: str
    baseline: bool = False  # runs every layer its rule admits, with the float32 error of plain summation


_SAME_SUMS = "sums the same products as float32 direct convolution"
# Winograd's transforms amplify rounding with the tile: measured max error vs direct about 1-2x for F(2x2,3x3),
# ~30x for F(4x4,3x3) with points {0,+-1,+-2} and ~70x for F(6x6,3x3) with {0,+-1,+-2,+-1/2} (PERFORMANCE.md;
# integer-only points would give ~5,000x).
CATALOGUE: dict[str, Arithmetic] = {
    "direct": Arithmetic("register-tiled direct convolution on channel-blocked layouts", _direct, 1e-5,
                         f"{_SAME_SUMS} (the baseline)", baseline=True),
    "depthwise": Arithmetic("one filter per channel, every vector lane its own channel", _depthwise, 1e-5,
                            f"{_SAME_SUMS} (the baseline of depthwise layers)", baseline=True),
    "im2col": Arithmetic("patch matrix + the GEMM kernel", _dense, 1e-5, _SAME_SUMS),
    "winograd2": Arithmetic("Winograd F(2x2, 3x3) (Lavin & Gray 2016)", _winograd, 1e-5,
                            "F(2x2,3x3) measures 1-2x direct's error"),
    "winograd4": Arithmetic("Winograd F(4x4, 3x3) (Lavin & Gray 2016)", _winograd, 1e-4,
                            "F(4x4,3x3) with points {0,+-1,+-2} measures ~30x direct's error"),
    "winograd6": Arithmetic("Winograd F(6x6, 3x3) (Lavin & Gray 2016)", _winograd, 2e-4,
                            "F(6x6,3x3) with points {0,+-1,+-2,+-1/2} measures ~70x direct's error"),
    "fft8": Arithmetic("FFT convolution on 8x8 tiles (overlap-save)", _fft(8), 1e-5,
                       "the FFT's transforms are unitary up to scale: direct's error level"),
    "fft16": Arithmetic("FFT convolution on 16x16 tiles (overlap-save)", _fft(16), 1e-5,
                        "the FFT's transforms are unitary up to scale: direct's error level"),
}
ALGORITHMS: tuple[str, ...] = tuple(CATALOGUE)  # every name an ``impl`` may carry


# -- the registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvAlgorithm:
    """One algorithm on one target: the record the chooser, the lowering, the tools and the tests read.

    ``runtime_weights``: the backend computes it with weights that change at every call (a training step's forward
    convolutions); ``backward_data``: the selection pass may choose it for backward-data convolutions
    (``conv2d_grad_input``, as the stride-1 convolution :meth:`ConvShape.of_grad_input` describes). ``hooks``: the
    backend's own object (for the CPU, :class:`cnncc.codegen.conv_algorithms.CpuHooks`)."""

    name: str
    target: str
    precision: str
    arithmetic: Arithmetic
    runtime_weights: bool = False
    backward_data: bool = False
    hooks: Any = None

    @property
    def tolerance(self) -> float:
        return self.arithmetic.tolerance

    @property
    def baseline(self) -> bool:
        return self.arithmetic.baseline

    def why_not(self, cs: ConvShape, runtime_weights: bool = False, backward_data: bool = False) -> str | None:
        """None if this algorithm computes the layer, else the rule it breaks (in words, with the values)."""
        why = self.arithmetic.applies(cs)
        if why is None and runtime_weights and not self.runtime_weights:
            why = (f"weights that change at run time (training): {self.name} transforms its filters at compile "
                   f"time only on {self.target}")
        if why is None and backward_data and not self.backward_data:
            why = f"backward-data convolution: {self.name} is not compiled for it on {self.target}"
        return why

    def check(self, layer: str, cs: ConvShape, runtime_weights: bool = False, backward_data: bool = False) -> None:
        """Raise :class:`AlgorithmError` (naming the layer, the algorithm and the rule) unless it applies."""
        why = self.why_not(cs, runtime_weights, backward_data)
        if why is not None:
            raise AlgorithmError(layer, self.name, why)


_REGISTRY: dict[tuple[str, str], ConvAlgorithm] = {}


def standard(name: str, target: str, precision: str = "fp32", **backend: Any) -> ConvAlgorithm:
    """A record for catalogued algorithm ``name`` on ``target`` with the backend's fields (training support,
    hooks)."""
    if name not in CATALOGUE:
        raise CnnccError(f"unknown convolution algorithm '{name}': the catalogue has {', '.join(ALGORITHMS)}")
    return replace(ConvAlgorithm(name, target, precision, CATALOGUE[name]), **backend)


def register(record: ConvAlgorithm) -> ConvAlgorithm:
    """Add a backend's record (once per (name, target); importing the backend's module registers its records)."""
    key = (record.name, record.target)
    if key in _REGISTRY and _REGISTRY[key] != record:
        raise CnnccError(f"convolution algorithm '{record.name}' is already registered for target '{record.target}'")
    _REGISTRY[key] = record
    return record


def records(target: str) -> tuple[ConvAlgorithm, ...]:
    """The algorithms registered for ``target``, in registration order (the backend's preference on ties)."""
    return tuple(r for (_, t), r in _REGISTRY.items() if t == target)


def lookup(name: str, target: str) -> ConvAlgorithm:
    rec = _REGISTRY.get((name, target))
    if rec is None:
        known = ", ".join(r.name for r in records(target)) or "none (is the backend loaded?)"
        raise CnnccError(f"unknown convolution algorithm '{name}' for target '{target}': registered: {known}")
    return rec


def baseline_for(cs: ConvShape, target: str) -> ConvAlgorithm:
    """The baseline record that computes ``cs`` (direct, or depthwise for a depthwise layer): what ``direct`` in a
    candidate list stands for."""
    for rec in records(target):
        if rec.baseline and rec.arithmetic.applies(cs) is None:
            return rec
    raise CnnccError(f"no baseline convolution algorithm for {cs.signature()} on target '{target}'")


def resolve(node: Node, target: str, runtime_weights: bool) -> ConvAlgorithm:
    """The record a lowering must emit for conv ``node``: its ``impl``, checked -- :class:`AlgorithmError` if it
    does not apply, never a fallback. Lowerings never choose: a node without an ``impl`` is an internal error (the
    driver runs the select-algorithms pass before every lowering)."""
    backward = node.op == "conv2d_grad_input"
    cs = ConvShape.of_grad_input(node) if backward else ConvShape.of(node)
    impl = impl_of(node)
    if impl is None:
        raise CnnccError(f"internal: layer '{node.layer}' ({node.op}) reached the lowering without an algorithm; the "
                         "driver's select-algorithms pass sets every convolution's impl")
    rec = lookup(impl.algorithm, target)
    rec.check(node.layer, cs, runtime_weights, backward and not rec.baseline)
    return rec
