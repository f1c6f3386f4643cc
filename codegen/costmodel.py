"""The CPU cost model of the convolution algorithms: seconds on one core from the machine's measured FMA peak and
memory bandwidths, each algorithm's float32 error emulated in numpy, and its schedule in words.

One function per algorithm family; the records of :mod:`cnncc.codegen.conv_algorithms` hold them as hooks, and
the chooser (:mod:`cnncc.codegen.select`) reaches them only through the records.

* **estimate**: GEMM flops at a fixed efficiency, transform operations at the vector rate, the transform buffers
  through the caches, and the weights from the cache level that holds the network's weights (DRAM for ResNet-18;
  the layer's own when it runs alone) overlapped with the arithmetic. With weights that change at every call (a
  training step) each call also packs (direct, im2col) or transforms (Winograd) them: :func:`pack_direct`,
  :func:`pack_transform`.
* **error**: the algorithm's arithmetic run by numpy in float32 on random data of the layer's shape (batch 1, fixed
  seed), max |y - ref| / max |ref| against the float64 reference. Direct and im2col sum the same products in
  float32 and share the float32 reference's error.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from cnncc.codegen.kernels.conv import choose_schedule, direct_schedule
from cnncc.codegen.kernels.im2col import patch_rows
from cnncc.codegen.kernels.transform_conv import gemm_schedule
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.target import Target
from cnncc.codegen.transforms import TransformConv, emulate
from cnncc.convalgo import ConvImpl, ConvShape
from cnncc.tuning import TuningDB, TuningKey

GEMM_EFFICIENCY = 0.9  # the 1x1 kernel measured 91-104% of peak on ResNet-18's 1x1 layers
DIRECT_EFFICIENCY = 0.95
# Calibration (least squares over the transform algorithms' times on the zoo's 126 conv shapes, 2026-11-22): the
# transforms run ~2 vector operations per cycle, and their buffers move at ~1.7x the 4 MiB copy bandwidth (they are
# written and read back while still in L2).
TRANSFORM_COST = 0.75  # cycles per vector add/FMA of a transform, loads and stores included
BUFFER_REUSE = 0.6
L2_BYTES, L3_BYTES = 1 << 20, 32 << 20  # per core; shared (AMD Zen 4 EPYC)


@dataclass(frozen=True)
class MachineModel:
    """What the cost model knows of the machine: one core's FMA peak and two measured copy bandwidths."""

    peak_gflops: float
    cache_gbs: float  # a 4 MiB working set (L3)
    dram_gbs: float  # a 256 MiB working set
    l2_gbs: float = 0.0  # a 256 KiB working set (L2); 0: as cache_gbs

    def bandwidth(self, nbytes: float) -> float:
        """Bytes per second for streaming a working set of ``nbytes`` through the level it fits in."""
        if nbytes <= L2_BYTES // 2 and self.l2_gbs:
            return self.l2_gbs * 1e9
        return (self.cache_gbs if nbytes <= L3_BYTES // 2 else self.dram_gbs) * 1e9

    @staticmethod
    def measure(target: Target) -> MachineModel:
        from cnncc.codegen.peak import measure_peak_gflops

        return MachineModel(measure_peak_gflops(target, seconds=0.2, repeats=5), _copy_gbs(4 << 20),
                            _copy_gbs(256 << 20, repeats=3), _copy_gbs(256 << 10, repeats=50))

    @staticmethod
    def cached(target: Target, db: TuningDB | None) -> MachineModel:
        key = TuningKey.for_target("machine model", target.cpu, target.features)
        rec = db.get(key) if db is not None else None
        fields = [f.name for f in dataclasses.fields(MachineModel)]
        if rec is not None and all(f in rec for f in fields):
            return MachineModel(**{f: rec[f] for f in fields})
        m = MachineModel.measure(target)
        if db is not None:
            db.put(key, dataclasses.asdict(m))
        return m


def _copy_gbs(nbytes: int, repeats: int = 7) -> float:
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9  # read + write


# -- estimates: seconds on one core ---------------------------------------------------------------------------------


def _weights_time(cs: ConvShape, m: MachineModel, wws: float | None) -> float:
    w_bytes = cs.k * (cs.c // cs.groups) * cs.r * cs.s * 4
    return w_bytes / m.bandwidth(wws or w_bytes)


def _act_bytes(cs: ConvShape, width: int) -> int:
    return 4 * cs.n * (padded_channels(cs.c, width) * cs.h * cs.w + padded_channels(cs.k, width) * cs.oh * cs.ow)


def estimate_direct(cs: ConvShape, m: MachineModel, width: int, wws: float | None) -> float:
    """The direct (and depthwise) kernel: the reduction over padded channel blocks at DIRECT_EFFICIENCY; a grouped
    layer whose groups are not whole vector blocks runs block-diagonal, groups times the work."""
    flops = m.peak_gflops * 1e9
    cp, kp = padded_channels(cs.c, width), padded_channels(cs.k, width)
    cg = cs.c // cs.groups
    red = (cs.c if cs.c < width else cp) if cs.groups == 1 else (cg if cs.depthwise else padded_channels(cg, width))
    compute = 2 * cs.n * kp * cs.oh * cs.ow * red * cs.r * cs.s / (flops * DIRECT_EFFICIENCY)
    if cs.groups > 1 and not cs.depthwise and (cg % width or (cs.k // cs.groups) % width):
        compute *= cs.groups  # block-diagonal fallback
    act_bytes = _act_bytes(cs, width)
    return max(compute, _weights_time(cs, m, wws)) + act_bytes / m.bandwidth(act_bytes)


def estimate_im2col(cs: ConvShape, m: MachineModel, width: int, wws: float | None) -> float:
    """The patch matrix written and read back, and the GEMM over it at GEMM_EFFICIENCY."""
    flops = m.peak_gflops * 1e9
    kp = padded_channels(cs.k, width)
    rows = patch_rows(cs.c, cs.r, cs.s, width)
    patches = 4 * cs.n * rows * cs.oh * cs.ow
    compute = 2 * cs.n * kp * cs.oh * cs.ow * rows / (flops * GEMM_EFFICIENCY)
    act_bytes = _act_bytes(cs, width)
    return max(compute, _weights_time(cs, m, wws)) + (2 * patches + act_bytes) / m.bandwidth(patches + act_bytes)


def estimate_transform(tc: TransformConv, cs: ConvShape, m: MachineModel, width: int, wws: float | None) -> float:
    """Winograd / FFT: the per-point GEMMs at the register tile's efficiency, the transforms at the vector rate,
    their buffers through the caches, and the transformed filters from the level that holds the weights."""
    flops = m.peak_gflops * 1e9
    vec_ops = flops / (2 * width) / TRANSFORM_COST
    cp, kp = padded_channels(cs.c, width), padded_channels(cs.k, width)
    th, tw = tc.tiles(cs.oh, cs.ow)
    tiles = cs.n * th * tw
    pc, pk = tc.pair * cp, tc.pair * kp
    sched = gemm_schedule(tc, cs.k, th * tw, width)
    gemm = 2 * tc.points * tiles * pc * pk / (flops * tile_efficiency(sched.ur_w, sched.ocb, th * tw))
    in_ops, out_ops = tc.transform_ops()
    transforms = tiles * (in_ops * cp + out_ops * kp) / width / vec_ops
    buffers = 2 * 4 * tc.points * tiles * (pc + pk)
    u_bytes = 4 * tc.points * pc * pk
    u_time = u_bytes / m.bandwidth(wws or u_bytes)
    act_bytes = _act_bytes(cs, width)
    return max(gemm, u_time) + transforms + (BUFFER_REUSE * buffers + act_bytes) / m.bandwidth(buffers / 2 + act_bytes)


def pack_direct(cs: ConvShape, m: MachineModel, width: int, wws: float | None) -> float:
    """Run-time weights, direct and im2col: a gather reading the weights and an int32 index per element."""
    wb = cs.k * (cs.c // cs.groups) * cs.r * cs.s * 4
    return 3 * wb / m.bandwidth(wws or wb)


def pack_transform(tc: TransformConv, cs: ConvShape, m: MachineModel, width: int, wws: float | None) -> float:
    """Run-time weights, Winograd: the transformed filters, (m+2)^2/9 times the weights, written and read back."""
    wb = cs.k * (cs.c // cs.groups) * cs.r * cs.s * 4
    ub = 4 * tc.points * padded_channels(cs.c, width) * padded_channels(cs.k, width)
    return (wb + ub) / m.bandwidth((wws or wb) * ub / wb)


def tile_efficiency(ur: int, ocb: int, pixels: int) -> float:
    """Fraction of the peak a 1x1/GEMM register tile of ``ur`` pixels x ``ocb`` blocks reaches: ~0.92 with 12 or
    more accumulators, falling with fewer (FMA latency and one broadcast per ``ocb`` FMAs are no longer hidden;
    measured on znver4: ur 7 x 2 92%, 4 x 2 ~65%, 3 x 2 ~45%), weighted over the row's full and rest tiles."""
    def eff(u: int) -> float:
        return GEMM_EFFICIENCY * min(1.0, u * ocb / 12) ** 0.7

    full, rest = divmod(pixels, ur)
    return pixels / (full * ur / eff(ur) + (rest / eff(rest) if rest else 0.0))



# -- schedules in words (``cnncc explain``) ------------------------------------------------------------------------


def describe_direct(cs: ConvShape, impl: ConvImpl, width: int) -> str:
    kp = padded_channels(cs.k, width)
    kb = kp // width if cs.groups == 1 else cs.k // cs.groups // width or 1
    weights_dominate = cs.k * cs.c // cs.groups * cs.r * cs.s > cs.n * (cs.c * cs.h * cs.w + cs.k * cs.oh * cs.ow)
    sched = direct_schedule(width, kb, cs.ow, cs.r * cs.s, impl, weights_dominate)
    split = "rows" if sched.split_rows else "output-channel groups"
    return (f"register tile {sched.ur_w} px x {sched.ocb}x{width} channels, {sched.unroll} channels "
            f"straight-line, threads split {split}")


def describe_depthwise(cs: ConvShape, impl: ConvImpl, width: int) -> str:
    return f"depthwise kernel, {width}-channel vectors"


def describe_im2col(cs: ConvShape, impl: ConvImpl, width: int) -> str:
    rows = patch_rows(cs.c, cs.r, cs.s, width)
    sched = choose_schedule(width, padded_channels(cs.k, width) // width, cs.ow, 1)
    return f"patch matrix {rows} x {cs.oh * cs.ow}, GEMM tile {sched.ur_w} px x {sched.ocb}x{width}"


def describe_transform(tc: TransformConv, cs: ConvShape, width: int) -> str:
    cp, kp = padded_channels(cs.c, width), padded_channels(cs.k, width)
    th, tw = tc.tiles(cs.oh, cs.ow)
    sched = gemm_schedule(tc, cs.k, th * tw, width)
    i, o = tc.transform_ops()
    return (f"{tc.tile}x{tc.tile} input tiles -> {tc.out_h}x{tc.out_w} outputs, {th}x{tw} tiles, {tc.points} "
            f"{'complex ' if tc.pair == 2 else ''}GEMMs of {th * tw} x {tc.pair * cp} x {tc.pair * kp} "
            f"(tile {sched.ur_w} px x {sched.ocb}x{width}), transforms {i}+{o} vector ops per tile and block")


# -- errors: the arithmetic emulated in numpy -----------------------------------------------------------------------


def _layer_data(cs: ConvShape, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random input and weights of the layer's shape (batch 1) and the float64 reference output."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, cs.c, cs.h, cs.w))
    w = rng.standard_normal((cs.k, cs.c // cs.groups, cs.r, cs.s)) / np.sqrt(cs.c // cs.groups * cs.r * cs.s)
    return x, w, _conv(x, w, cs, np.float64)


def _relative(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def error_float32(cs: ConvShape, seed: int = 0) -> float:
    """Direct, depthwise and im2col: the same products summed in float32."""
    x, w, ref = _layer_data(cs, seed)
    return _relative(_conv(x.astype(np.float32), w.astype(np.float32), cs, np.float32), ref)


def error_transform(tc: TransformConv, cs: ConvShape, seed: int = 0) -> float:
    """Winograd / FFT: the transforms and the per-point products in float32 (:func:`emulate`)."""
    x, w, ref = _layer_data(cs, seed)
    return _relative(emulate(x.astype(np.float32), w, tc, cs.padding, np.float32), ref)


def _conv(x: np.ndarray, w: np.ndarray, cs: ConvShape, dtype: type) -> np.ndarray:
    from cnncc.ops import conv2d

    a = conv2d.Conv2dAttrs(cs.stride, cs.padding, cs.dilation, cs.groups)
    return conv2d.OP.run_reference([x.astype(dtype), w.astype(dtype)], a)[0]
