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

from cnncc.codegen.emit import F32, I32, I64, Emitter, f32, i64
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
    src, index, dst = env.ptr(p.src), env.ptr(p.index), env.ptr(p.dst)
    items = -(-p.count // CHUNK)
    lo, hi = em.thread_range(items)

    def item(it: ir.Value) -> None:
        start = b.mul(it, i64(CHUNK))
        end = b.add(start, i64(CHUNK))
        end = b.select(b.icmp_signed("<", end, i64(p.count)), end, i64(p.count))

        def one(i: ir.Value) -> None:
            k = b.sext(em.load(index, i, I32), I64)
            valid = b.icmp_signed(">", k, i64(0))
            safe = b.select(valid, b.sub(k, i64(1)), i64(0))
            v = em.load(src, safe, F32)
            em.store(b.select(valid, v, f32(0.0)), dst, i)

        em.each(start, end, one, name="elem")

    em.each(lo, hi, item, name="chunk")
