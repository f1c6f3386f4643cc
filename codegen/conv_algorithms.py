"""The CPU backend's convolution algorithms: one record per algorithm in the registry of :mod:`cnncc.convalgo`,
with this backend's hooks, and the ``conv2d`` lowering that dispatches on the record the IR names.

Each record carries what only this backend knows: precision (float32 throughout), training support (forward
convolutions with weights that change at every call: direct and im2col pack them with a gather, Winograd transforms
them with a run-time kernel, the FFT's complex filter transform is compiled for compile-time weights only;
backward-data convolutions: the baselines, and Winograd F(4x4, 3x3) -- the one measured for it, with its filters
read flipped and transposed in place), and :class:`CpuHooks`. Importing this module registers the records (like op
registration, the only import-time effect); :mod:`cnncc.codegen.kernels` and :mod:`cnncc.codegen.select` import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from cnncc.codegen import costmodel as cm
from cnncc.codegen.kernels.activation import Act
from cnncc.codegen.kernels.conv import ConvSchedule, choose_schedule, lower_direct, split_epilogue
from cnncc.codegen.kernels.depthwise import lower_depthwise
from cnncc.codegen.kernels.im2col import lower_im2col
from cnncc.codegen.kernels.transform_conv import ConvOperands, lower_transform_conv
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.lower import Lowering, lowering
from cnncc.codegen.transforms import TransformConv, fft, winograd
from cnncc.convalgo import ConvImpl, ConvShape, register, resolve, standard
from cnncc.ir import Node, Value

TARGET = "cpu"  # this backend's key in the registry (the target="cpu" of compile)

Estimate = Callable[[ConvShape, "cm.MachineModel", int, "float | None"], float]
Lower = Callable[[Lowering, Node, tuple[Act, ...], "Value | None", tuple[Act, ...]], None]
Transform = Callable[[int, int, int, int], TransformConv]  # (r, s, sh, sw) -> the transform


def _no_variants(cs: ConvShape, width: int) -> list[ConvImpl]:
    return []


@dataclass(frozen=True)
class CpuHooks:
    """The CPU backend's side of a record: ``lower`` (node and its fused epilogue -> kernel calls), ``estimate``
    (seconds on one core, compile-time weights) and ``pack`` (added per call for run-time weights), ``error``
    (emulated float32 error on the layer's shape), ``describe`` (the schedule in words), ``variants`` (the schedule
    space tuning tries besides the default rule) and, for transform algorithms, ``transform``."""

    lower: Lower
    estimate: Estimate
    pack: Estimate
    error: Callable[[ConvShape, int], float]
    describe: Callable[[ConvShape, ConvImpl, int], str]
    variants: Callable[[ConvShape, int], list[ConvImpl]] = field(default=_no_variants)
    transform: Transform | None = None


def _direct_variants(cs: ConvShape, width: int) -> list[ConvImpl]:
    """Direct-kernel register tiles worth trying besides the default rule (fewer/more pixels, 1/2/4 blocks)."""
    if cs.groups > 1:
        return []
    kb = padded_channels(cs.k, width) // width
    base: ConvSchedule = choose_schedule(width, kb, cs.ow, cs.r * cs.s)
    out = []
    for ur, ocb in ((14, 1), (4, 4), (12, 2), (6, 2)):
        if kb % ocb == 0 and (ur, ocb) != (base.ur_w, base.ocb) and ur <= cs.ow:
            out.append(ConvImpl("direct", ur, ocb))
    return out[:2]


def _lower_depthwise(lw: Lowering, node: Node, pre: tuple[Act, ...], residual: Value | None,
                     post: tuple[Act, ...]) -> None:
    from cnncc.codegen.lower import Unsupported

    if residual is not None or post:
        raise Unsupported(f"layer '{node.layer}': residual adds are not fused into depthwise convolutions")
    lower_depthwise(lw, node, pre)


def _transform_hooks(transform: Transform) -> CpuHooks:
    """Winograd / FFT: the same lowering, cost model and emulation around a different transform."""
    def tc_of(cs: ConvShape) -> TransformConv:
        return transform(cs.r, cs.s, cs.stride[0], cs.stride[1])

    def lower(lw: Lowering, node: Node, pre: tuple[Act, ...], residual: Value | None, post: tuple[Act, ...]) -> None:
        ops = ConvOperands.of(node)
        k, c, r, s = ops.weight_shape
        tc = transform(r, s, ops.stride[0], ops.stride[1])
        wv = node.inputs[1]
        # compile-time weights are transformed at compile time, in float64; training state by a run-time kernel
        w = lw.param(wv, node.layer) if lw.is_constant(wv) else None
        lower_transform_conv(lw, ops, tc, w, pre, residual, post)

    return CpuHooks(
        lower=lower,
        estimate=lambda cs, m, width, wws: cm.estimate_transform(tc_of(cs), cs, m, width, wws),
        pack=lambda cs, m, width, wws: cm.pack_transform(tc_of(cs), cs, m, width, wws),
        error=lambda cs, seed: cm.error_transform(tc_of(cs), cs, seed),
        describe=lambda cs, impl, width: cm.describe_transform(tc_of(cs), cs, width),
        transform=transform)


def _winograd(m: int) -> Transform:
    return cache(lambda r, s, sh, sw: winograd(m, r, s))  # built once per kernel size: the cost model asks often


def _fft(t: int) -> Transform:
    return cache(lambda r, s, sh, sw: fft(t, r, s, sh, sw))


RECORDS = tuple(register(r) for r in (
    standard("direct", TARGET, runtime_weights=True, backward_data=True, hooks=CpuHooks(
        lower_direct, cm.estimate_direct, cm.pack_direct, cm.error_float32, cm.describe_direct, _direct_variants)),
    standard("depthwise", TARGET, runtime_weights=True, backward_data=True, hooks=CpuHooks(
        _lower_depthwise, cm.estimate_direct, cm.pack_direct, cm.error_float32, cm.describe_depthwise)),
    standard("im2col", TARGET, runtime_weights=True, hooks=CpuHooks(
        lower_im2col, cm.estimate_im2col, cm.pack_direct, cm.error_float32, cm.describe_im2col)),
    standard("winograd2", TARGET, runtime_weights=True, hooks=_transform_hooks(_winograd(2))),
    standard("winograd4", TARGET, runtime_weights=True, backward_data=True, hooks=_transform_hooks(_winograd(4))),
    standard("winograd6", TARGET, runtime_weights=True, hooks=_transform_hooks(_winograd(6))),
    standard("fft8", TARGET, hooks=_transform_hooks(_fft(8))),
    standard("fft16", TARGET, hooks=_transform_hooks(_fft(16))),
))


@lowering("conv2d", "fused_conv2d")
def lower_conv2d(lw: Lowering, node: Node) -> None:
    """Emit the algorithm the IR names (:class:`cnncc.errors.AlgorithmError` if it does not apply) and record it in
    ``program.algorithms``: what ran, which the compiled model reports."""
    rec = resolve(node, TARGET, runtime_weights=not lw.is_constant(node.inputs[1]))
    lw.program.algorithms[node.layer] = rec.name
    rec.hooks.lower(lw, node, *split_epilogue(node))
