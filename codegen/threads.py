"""Thread placement for libgomp's worker threads.

Measured here (2-core EPYC): without placement the scheduler swaps threads between cores from one parallel region
to the next, so the kernel after a 2-thread convolution reads half its input from the other core's L2 and runs up to
10x slower. ``OMP_PROC_BIND`` would fix it but also binds the calling (Python main) thread, and every thread it later
creates (PyTorch's, ONNX Runtime's pools). So cnncc pins only the *worker* threads (thread 1..n-1 of a team) to
distinct CPUs of the process's affinity set, once per team size; the caller's thread is left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

from llvmlite import ir

from cnncc.codegen.emit import I32, I64, PTR, VOID, Emitter, i64

CPU_SET_BYTES = 128


def _module() -> str:
    module = ir.Module(name="pin")
    body = ir.Function(module, ir.FunctionType(VOID, [PTR]), name="pin_body")
    em = Emitter(module, body, 1)
    b = em.b
    cpus = body.args[0]
    tid = b.sext(b.call(em.intrinsic("omp_get_thread_num", I32, []), []), I64)

    def pin() -> None:
        cpu = em.load(cpus, tid, I64)
        mask = ir.instructions.CastInstr(b.block, "bitcast", b.alloca(ir.ArrayType(I64, CPU_SET_BYTES // 8)), PTR)
        b._insert(mask)  # an opaque pointer: llvmlite types allocas and checks stores against them
        for k in range(CPU_SET_BYTES // 8):
            em.store(i64(0), mask, k)
        em.store(b.shl(i64(1), b.urem(cpu, i64(64))), mask, b.udiv(cpu, i64(64)))
        setaff = em.intrinsic("sched_setaffinity", I32, [I32, I64, PTR])
        b.call(setaff, [ir.Constant(I32, 0), i64(CPU_SET_BYTES), mask])

    em.if_then(b.icmp_signed(">", tid, i64(0)), pin)
    b.ret_void()
    entry = ir.Function(module, ir.FunctionType(VOID, [PTR, I32]), name="pin_workers")
    eb = ir.IRBuilder(entry.append_basic_block())
    gomp = ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, I32, I32]), name="GOMP_parallel")
    eb.call(gomp, [body, entry.args[0], entry.args[1], ir.Constant(I32, 0)])
    eb.ret_void()
    return str(module)


@functools.lru_cache(maxsize=1)
def _pinner():  # noqa: ANN202
    from cnncc.codegen.jit import jit
    from cnncc.codegen.target import Target

    mod = jit(_module(), Target.host().machine())
    return mod, ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32)(mod.address("pin_workers"))


_PINNED: set[tuple[int, int]] = set()
_LOCK = threading.Lock()


def pin_workers(nthreads: int) -> None:
    """Pin workers 1..n-1 of an ``nthreads`` team to distinct CPUs, once per (calling thread, team size): libgomp
    keeps one worker pool per thread that starts parallel regions. Thread-safe. (A thread id reused by a new
    Python thread may skip pinning: that costs speed only.)"""
    key = (threading.get_ident(), nthreads)
    if nthreads <= 1 or key in _PINNED:
        return
    with _LOCK:
        if key in _PINNED:
            return
        allowed = sorted(os.sched_getaffinity(0))
        cpus = (ctypes.c_int64 * nthreads)(*[allowed[k % len(allowed)] for k in range(nthreads)])
        module, fn = _pinner()
        fn(cpus, nthreads)
        _PINNED.add(key)
        del module
