"""The machine's FP32 FMA peak, measured with a kernel from this backend: 12 independent vector FMA chains in a loop
(enough to cover the FMA latency on two pipes), timed on one thread. Benchmarks divide by it in the same run.
"""

from __future__ import annotations

import ctypes
import time

from llvmlite import ir

from cnncc.codegen.emit import I64, VOID, Emitter
from cnncc.codegen.jit import jit
from cnncc.codegen.target import Target

CHAINS = 12


def _module(width: int) -> str:
    module = ir.Module(name="peak")
    fn = ir.Function(module, ir.FunctionType(VOID, [ir.PointerType(), I64]), name="fma_loop")
    em = Emitter(module, fn, width)
    out, iters = fn.args
    a, b = em.vconst(1.0000001), em.vconst(0.9999999)
    accs = [em.vconst(float(k)) for k in range(CHAINS)]
    accs = em.loop(0, iters, lambda i, acc: [em.fma(x, a, b) for x in acc], accs, name="it")
    total = accs[0]
    for v in accs[1:]:
        total = em.b.fadd(total, v)
    em.store_vec(total, out, 0)
    em.b.ret_void()
    return str(module)


def measure_peak_gflops(target: Target | None = None, seconds: float = 0.5, repeats: int = 15) -> float:
    """Best single-thread GFLOP/s of the FMA loop (2 flops per lane per FMA)."""
    tgt = target or Target.host()
    mod = jit(_module(tgt.vector_width), tgt.machine())
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(mod.address("fma_loop"))
    buf = (ctypes.c_float * tgt.vector_width)()
    iters = 1_000_000
    fn(buf, iters)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(buf, iters)
        dt = time.perf_counter() - t0
        best = max(best, 2 * tgt.vector_width * CHAINS * iters / dt / 1e9)
        if dt < seconds / repeats:
            iters = int(iters * 2)
    del mod  # the engine (and the code fn points into) lives until here
    return best
