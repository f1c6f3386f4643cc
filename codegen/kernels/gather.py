"""gather: ``dst[i] = src[index[i] - 1]`` (``0`` where ``index[i] == 0``), the run-time form of a weight packing.

:meth:`cnncc.codegen.lower.Lowering.packed` builds ``index`` by running a packing function (a transpose, flip,
reshape or zero-pad in numpy) on the numbers 1..size, so one kernel packs, at run time, anything the compile-time
packers produce: training-state weights before a convolution, flipped and transposed weights for the backward
data pass, a gradient laid out as the weights of the backward weight pass. The table is int32 in the weights blob.
Work items are chunks of ``CHUNK`` elements, split over the threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from cnncc.codegen.emit import F32, I1, I32, I64, PTR, Emitter, f32, i64
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.program import Buffer

CHUNK = 8192


@dataclass(frozen=True, eq=False)
class GatherParams:
    src: Buffer
    index: Buffer
    dst: Buffer
    count: int


@kernel("gather")
def emit_gather(em: Emitter, env: KernelEnv, p: GatherParams) -> None:
    b = em.b
    width = em.width
    src, index, dst = env.ptr(p.src), env.ptr(p.index), env.ptr(p.dst)
    ivec = ir.VectorType(I32, width)
    lvec = ir.VectorType(I64, width)
    pvec = ir.VectorType(PTR, width)
    mvec = ir.VectorType(I1, width)
    gather = em.intrinsic(f"llvm.masked.gather.v{width}f32.v{width}p0", em.vec, [pvec, I32, mvec, em.vec])
    zero_i = ir.Constant(ivec, [ir.Constant(I32, 0)] * width)
    one_l = ir.Constant(lvec, [ir.Constant(I64, 1)] * width)

    def vec(off: ir.Value) -> None:  # 16 indices, one masked gather (index 0: a zero pad, not loaded)
        idx = b.load(em.at(index, off, I32), typ=ivec, align=4)
        valid = b.icmp_signed(">", idx, zero_i)
        ptrs = b.gep(src, [b.sub(b.sext(idx, lvec), one_l)], source_etype=F32)
        ptrs.type = pvec  # a GEP with a vector index gives a vector of pointers (llvmlite types it scalar)
        em.store_vec(b.call(gather, [ptrs, ir.Constant(I32, 4), valid, em.vconst(0.0)]), dst, off)

    def one(i: ir.Value) -> None:
        k = b.sext(em.load(index, i, I32), I64)
        valid = b.icmp_signed(">", k, i64(0))
        safe = b.select(valid, b.sub(k, i64(1)), i64(0))
        em.store(b.select(valid, em.load(src, safe, F32), f32(0.0)), dst, i)

    em.chunks(p.count, CHUNK, vec, one)
