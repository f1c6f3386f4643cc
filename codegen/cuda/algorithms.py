"""The CUDA backend's convolution algorithms (records in :mod:`cnncc.convalgo` with ``target="cuda"``), the GPU cost
model that ranks them, and the chooser of the select-algorithms pass for this target.

Records: ``direct`` (implicit GEMM, every dense or grouped layer: the baseline), ``depthwise`` (the baseline of
depthwise layers) and ``winograd2`` (F(2x2, 3x3) for 3x3 stride-1 layers: input transform, 16 batched GEMMs, output
transform with the epilogue). Errors are the catalogue's float32 emulations (the arithmetic is the CPU's: same
transforms, same float32 sums), so the error budget means the same on both targets.

Cost model (:class:`GpuModel`): no GPU is needed to compile, so the model is analytic -- a kernel takes the longer of
its arithmetic at a fraction of the SM's float32 peak (the fraction falls when the grid leaves multiprocessors idle)
and its memory traffic at the DRAM bandwidth, plus a launch gap. The peaks are the datasheet's for the architecture
(``sm_90``: H100/H200 class); they rank algorithms, they do not predict milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnncc.codegen.cuda.families import KernelSpec
from cnncc.codegen.cuda.kernels.conv import conv_schedule
from cnncc.codegen.cuda.kernels.winograd import gemm_tiles
from cnncc.codegen.cuda.lower import TARGET, CudaLowering, conv_operands
from cnncc.codegen.select import CpuConvChooser
from cnncc.codegen.transforms import winograd
from cnncc.convalgo import ConvImpl, ConvShape, register, standard
from cnncc.ir import Node
from cnncc.tuning import TuningKey


@dataclass(frozen=True)
class GpuModel:
    """Nominal figures of a GPU architecture: float32 FMA peak (FLOP/s), DRAM bandwidth (B/s), multiprocessors, and
    the gap between two kernels of a captured graph (s)."""

    name: str
    flops: float
    bandwidth: float
    sms: int
    launch_s: float = 2.5e-6

    @staticmethod
    def of(arch: str) -> GpuModel:
        return GPUS.get(arch, GPUS["sm_90"])

    def seconds(self, flops: float, nbytes: float, blocks: int, efficiency: float = 0.5) -> float:
        """One kernel: arithmetic at ``efficiency`` of peak scaled by how much of the GPU the grid fills, or memory."""
        fill = min(1.0, blocks / (2 * self.sms))
        return max(flops / (self.flops * efficiency * fill), nbytes / self.bandwidth) + self.launch_s


GPUS = {
    "sm_90": GpuModel("H100/H200 (sm_90)", 60e12, 3.3e12, 132),
    "sm_89": GpuModel("Ada (sm_89)", 80e12, 0.9e12, 128),
    "sm_86": GpuModel("Ampere GA10x (sm_86)", 35e12, 0.9e12, 82),
    "sm_80": GpuModel("A100 (sm_80)", 19.5e12, 1.9e12, 108),
}


def _bytes(cs: ConvShape) -> float:
    return 4.0 * (cs.n * cs.c * cs.h * cs.w + cs.k * (cs.c // cs.groups) * cs.r * cs.s + cs.n * cs.k * cs.oh * cs.ow)


def estimate_direct(cs: ConvShape, gpu: GpuModel) -> float:
    kg, p = cs.k // cs.groups, cs.oh * cs.ow
    tiles = dict(conv_schedule(cs.n, cs.groups, kg, p, gpu.sms))
    blocks = cs.n * cs.groups * math.ceil(kg / tiles["tk"]) * math.ceil(p / tiles["tp"])
    # small tiles reuse each shared-memory load less: 64x64 reaches about half of peak, 16x16 a quarter of that
    efficiency = 0.5 * min(1.0, (tiles["tk"] * tiles["tp"] / 4096) ** 0.5)
    return gpu.seconds(2.0 * cs.macs, _bytes(cs), blocks, efficiency)


def estimate_depthwise(cs: ConvShape, gpu: GpuModel) -> float:
    return gpu.seconds(2.0 * cs.macs, _bytes(cs), cs.n * cs.k * cs.oh * cs.ow // 256, 0.25)


def estimate_winograd(m: int) -> Callable[[ConvShape, GpuModel], float]:
    def estimate(cs: ConvShape, gpu: GpuModel) -> float:
        a = m + 2
        tiles = cs.n * math.ceil(cs.oh / m) * math.ceil(cs.ow / m)
        v_bytes = 4.0 * a * a * cs.c * tiles  # the transformed input, written then read
        m_bytes = 4.0 * a * a * cs.k * tiles  # the products, written then read
        gemm_flops = 2.0 * a * a * cs.c * cs.k * tiles
        blocks = a * a * math.ceil(cs.k / 64) * math.ceil(tiles / 64)
        return (gpu.seconds(0.0, 4.0 * cs.n * cs.c * cs.h * cs.w + v_bytes, tiles)
                + gpu.seconds(gemm_flops, v_bytes + m_bytes + 4.0 * a * a * cs.c * cs.k, blocks, 0.5)
                + gpu.seconds(0.0, m_bytes + 4.0 * cs.n * cs.k * cs.oh * cs.ow, tiles))

    return estimate


def error_float32(cs: ConvShape, seed: int) -> float:
    """The float32 emulation of plain summation (the CPU cost model's; imported late: it loads the CPU kernels)."""
    from cnncc.codegen import costmodel

    return float(costmodel.error_float32(cs, seed))


def error_transform(m: int) -> Callable[[ConvShape, int], float]:
    def error(cs: ConvShape, seed: int) -> float:
        from cnncc.codegen import costmodel

        return float(costmodel.error_transform(winograd(m, 3, 3), cs, seed))

    return error


@dataclass(frozen=True)
class CudaHooks:
    """The CUDA backend's side of a record: its lowering, cost estimate, emulated error and schedule description."""

    lower: Callable[[CudaLowering, Node], None]
    estimate: Callable[[ConvShape, GpuModel], float]
    error: Callable[[ConvShape, int], float]
    describe: Callable[[ConvShape], str]


# -- lowerings -----------------------------------------------------------------------------------------------------


def lower_direct(lw: CudaLowering, node: Node) -> None:
    cs = ConvShape.of(node)
    w, bias, steps, residuals = conv_operands(lw, node)
    g, kg, cg = cs.groups, cs.k // cs.groups, cs.c // cs.groups
    packed = w.reshape(g, kg, cg * cs.r * cs.s).transpose(0, 2, 1)  # (G, Cg*R*S, Kg): k contiguous
    geo = (cs.n, g, cg, cs.h, cs.w, kg, cs.r, cs.s, *cs.stride, cs.padding[0], cs.padding[2], *cs.dilation,
           cs.oh, cs.ow)
    spec = KernelSpec("conv", geo, steps, conv_schedule(cs.n, g, kg, cs.oh * cs.ow))
    reads = (lw.get(node.inputs[0], node.layer), lw.weights(packed, f"{node.layer}.weight"),
             lw.weights(bias, f"{node.layer}.bias"), *residuals)
    lw.call(spec, reads, (lw.out(node.outputs[0]),), node.layer)


def lower_depthwise(lw: CudaLowering, node: Node) -> None:
    cs = ConvShape.of(node)
    w, bias, steps, residuals = conv_operands(lw, node)
    geo = (cs.n, cs.c, cs.h, cs.w, cs.r, cs.s, *cs.stride, cs.padding[0], cs.padding[2], *cs.dilation, cs.oh, cs.ow)
    reads = (lw.get(node.inputs[0], node.layer), lw.weights(w.reshape(cs.c, cs.r, cs.s), f"{node.layer}.weight"),
             lw.weights(bias, f"{node.layer}.bias"), *residuals)
    lw.call(KernelSpec("depthwise", geo, steps), reads, (lw.out(node.outputs[0]),), node.layer)


def lower_winograd(m: int) -> Callable[[CudaLowering, Node], None]:
    """F(m x m, 3x3): input transform, alpha^2 batched GEMMs over the filters transformed here (float64), output
    transform with bias and the epilogue (:mod:`cnncc.codegen.cuda.kernels.winograd`)."""
    def lower(lw: CudaLowering, node: Node) -> None:
        cs = ConvShape.of(node)
        w, bias, steps, residuals = conv_operands(lw, node)
        a = m + 2
        th, tw = -(-cs.oh // m), -(-cs.ow // m)
        tiles = cs.n * th * tw
        u = winograd(m, 3, 3).filter_transform(w).transpose(0, 2, 1)  # (alpha^2, C, K)
        v_buf = lw.scratch(4 * a * a * cs.c * tiles, f"{node.layer}.V")
        m_buf = lw.scratch(4 * a * a * cs.k * tiles, f"{node.layer}.M")
        layer = node.layer
        lw.call(KernelSpec("wino_input", (m, cs.n, cs.c, cs.h, cs.w, cs.padding[0], cs.padding[2], th, tw)),
                (lw.get(node.inputs[0], layer),), (v_buf,), layer)
        lw.call(KernelSpec("wino_gemm", (a * a, cs.c, cs.k, tiles), (), gemm_tiles(a * a, cs.k, tiles)),
                (v_buf, lw.weights(u, f"{layer}.U")), (m_buf,), layer)
        lw.call(KernelSpec("wino_output", (m, cs.n, cs.k, cs.oh, cs.ow, th, tw), steps),
                (m_buf, lw.weights(bias, f"{layer}.bias"), *residuals), (lw.out(node.outputs[0]),), layer)

    return lower


def describe_winograd(m: int) -> Callable[[ConvShape], str]:
    text = (f"Winograd F({m}x{m},3x3): input transform, {(m + 2) ** 2} batched GEMMs, output transform with the "
            "epilogue")
    return lambda cs: text


def describe_direct(cs: ConvShape) -> str:
    t = dict(conv_schedule(cs.n, cs.groups, cs.k // cs.groups, cs.oh * cs.ow))
    return (f"implicit GEMM, block tile {t['tk']} channels x {t['tp']} pixels, {t['rk']}-deep shared-memory "
            "stages, register tile per thread, epilogue fused")


RECORDS = [
    register(standard("direct", TARGET, hooks=CudaHooks(lower_direct, estimate_direct, error_float32,
                                                         describe_direct))),
    register(standard("depthwise", TARGET, hooks=CudaHooks(
        lower_depthwise, estimate_depthwise, error_float32, lambda cs: "one output per thread, window unrolled"))),
    *(register(standard(f"winograd{m}", TARGET, hooks=CudaHooks(
        lower_winograd(m), estimate_winograd(m), error_transform(m), describe_winograd(m)))) for m in (2, 4)),
]


class CudaConvChooser(CpuConvChooser):
    """The select-algorithms pass's chooser for the CUDA target: the CPU chooser's rules (candidates, forcing,
    the error budget, tuned times when present) over this target's records, ranked by :class:`GpuModel`."""

    kind = TARGET

    def __init__(self, target: Any, max_error: float, algorithms: str | Sequence[str] | Mapping[str, str] | None,
                 db: Any, threads: int = 1, runtime_weights: bool = False) -> None:
        super().__init__(target, max_error, algorithms, db, threads, runtime_weights=runtime_weights)
        self.arch: str = target.arch
        self.gpu = GpuModel.of(self.arch)

    def key(self, cs: ConvShape) -> TuningKey:
        return TuningKey.for_target(f"{cs.signature()} cuda", self.arch, "")

    def _estimate(self, rec: Any, cs: ConvShape, wws: float | None, runtime: bool) -> float:
        return float(rec.hooks.estimate(cs, self.gpu))

    def schedule_variants(self, cs: ConvShape) -> list[ConvImpl]:
        return []
