"""Program -> one LLVM module: one function per distinct kernel and one exported C-ABI entry point.

    int32_t cnncc_forward(void **inputs, void **outputs, void *arena, const void *weights,
                          int64_t batch, int32_t nthreads);

Each kernel function takes one pointer, to an argument block ``{batch, buffer pointers...}`` that the entry fills on
its stack; calls whose parameters differ only in their buffers share one function (ResNet repeats its layer shapes),
which keeps compile time proportional to the number of distinct layer shapes. Parallel kernels are started with
libgomp's ``GOMP_parallel(fn, args, nthreads, 0)`` and split their work with ``omp_get_thread_num``. The same module
is JIT-compiled in-process or emitted as an object file for a shared library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from llvmlite import ir

from cnncc.codegen.emit import I32, I64, PTR, VOID, Emitter, i64
from cnncc.codegen.target import Target
from cnncc.program import Buffer, KernelCall, Program, Space

ENTRY = "cnncc_forward"
PROFILED_ENTRY = "cnncc_forward_profiled"  # same, plus int64_t *nanoseconds: one slot per kernel call


def call_buffers(call: KernelCall) -> tuple[Buffer, ...]:
    """The distinct buffers of a call, in a fixed order (the kernel's argument positions)."""
    seen: dict[int, Buffer] = {}
    for buf in (*call.reads, *call.writes):
        seen.setdefault(id(buf), buf)
    return tuple(seen.values())


def kernel_key(call: KernelCall) -> tuple[Any, ...]:
    """What determines a kernel's code: its template and parameters, with buffers replaced by their positions."""
    pos = {id(b): i for i, b in enumerate(call_buffers(call))}

    def key(v: Any) -> Any:
        if isinstance(v, Buffer):
            return ("buffer", pos[id(v)])
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return (type(v).__name__, *(key(getattr(v, f.name)) for f in dataclasses.fields(v)))
        if isinstance(v, tuple):
            return tuple(key(e) for e in v)
        return v

    return (call.kernel, key(call.params))


class KernelEnv:
    """What a kernel body sees: its buffers' base pointers and the run-time batch size."""

    def __init__(self, em: Emitter, args: ir.Value, buffers: tuple[Buffer, ...]) -> None:
        self.em = em
        b = em.b
        self.batch = b.load(args, typ=I64)
        self._ptrs = {id(buf): b.load(b.gep(args, [i64(k + 1)], inbounds=True, source_etype=I64), typ=PTR)
                      for k, buf in enumerate(buffers)}

    def ptr(self, buf: Buffer) -> ir.Value:
        if id(buf) not in self._ptrs:
            raise KeyError(f"internal: kernel uses buffer {buf!r} that its call does not list")
        return self._ptrs[id(buf)]


KernelFn = Callable[[Emitter, KernelEnv, Any], None]
KERNELS: dict[str, KernelFn] = {}


def kernel(name: str) -> Callable[[KernelFn], KernelFn]:
    """Register the decorated function as the emitter of kernel template ``name``."""

    def deco(fn: KernelFn) -> KernelFn:
        KERNELS[name] = fn
        return fn

    return deco


def build_module(program: Program, target: Target) -> str:
    """The LLVM IR text of ``program`` for ``target``."""
    import cnncc.codegen.kernels  # noqa: F401  (registers the kernel emitters)

    module = ir.Module(name=program.name)
    kernel_ty = ir.FunctionType(VOID, [PTR])
    by_key: dict[tuple[Any, ...], ir.Function] = {}
    fns = []
    for call in program.calls:
        k = kernel_key(call)
        if k not in by_key:
            fn = ir.Function(module, kernel_ty, name=f"k{len(by_key)}_{call.kernel}")
            fn.linkage = "internal"
            fn.attributes.add("nounwind")
            em = Emitter(module, fn, target.vector_width)
            KERNELS[call.kernel](em, KernelEnv(em, fn.args[0], call_buffers(call)), call.params)
            em.b.ret_void()
            by_key[k] = fn
        fns.append(by_key[k])
    _entry(module, program, fns, profiled=False)
    _entry(module, program, fns, profiled=True)
    return str(module)


def _clock(module: ir.Module, b: ir.IRBuilder, ts: ir.Value) -> ir.Value:
    """CLOCK_MONOTONIC in nanoseconds (clock_gettime from libc)."""
    fn = module.globals.get("clock_gettime") or ir.Function(module, ir.FunctionType(I32, [I32, PTR]),
                                                            name="clock_gettime")
    b.call(fn, [ir.Constant(I32, 1), ts])
    sec = b.load(ts, typ=I64)
    nsec = b.load(b.gep(ts, [i64(1)], inbounds=True, source_etype=I64), typ=I64)
    return b.add(b.mul(sec, i64(1_000_000_000)), nsec)


def _opaque_alloca(b: ir.IRBuilder, ty: ir.Type) -> ir.Value:
    """An opaque pointer to a new stack slot (llvmlite types allocas as typed pointers and folds plain bitcasts)."""
    ptr = ir.instructions.CastInstr(b.block, "bitcast", b.alloca(ty), PTR)
    b._insert(ptr)
    return ptr


def _entry(module: ir.Module, program: Program, fns: list[ir.Function], profiled: bool) -> None:
    fty = ir.FunctionType(I32, [PTR, PTR, PTR, PTR, I64, I32] + ([PTR] if profiled else []))
    entry = ir.Function(module, fty, name=PROFILED_ENTRY if profiled else ENTRY)
    inputs, outputs, arena, weights, batch, nthreads = entry.args[:6]
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    ts = _opaque_alloca(b, ir.ArrayType(I64, 2)) if profiled else None
    i8 = ir.IntType(8)

    def pointer(buf: Buffer) -> ir.Value:
        if buf.space is Space.ARENA:
            return b.gep(arena, [i64(buf.offset)], inbounds=True, source_etype=i8)
        if buf.space is Space.WEIGHTS:
            return b.gep(weights, [i64(buf.offset)], inbounds=True, source_etype=i8)
        table = inputs if buf.space is Space.INPUT else outputs
        return b.load(b.gep(table, [i64(buf.index)], inbounds=True, source_etype=PTR), typ=PTR)

    gomp = module.globals.get("GOMP_parallel") or ir.Function(module, ir.FunctionType(VOID, [PTR, PTR, I32, I32]),
                                                               name="GOMP_parallel")
    multi = b.icmp_signed(">", nthreads, ir.Constant(I32, 1))
    width = max((len(call_buffers(c)) for c in program.calls), default=0) + 1
    block_ty = ir.ArrayType(I64, width)
    args = _opaque_alloca(b, block_ty)  # one argument block, reused by every call
    b.store(batch, args)
    for index, (call, fn) in enumerate(zip(program.calls, fns, strict=True)):
        for k, buf in enumerate(call_buffers(call)):
            b.store(pointer(buf), b.gep(args, [i64(k + 1)], inbounds=True, source_etype=I64))
        start = _clock(module, b, ts) if ts is not None else None
        if call.parallel:
            with b.if_else(multi) as (then, otherwise):
                with then:
                    b.call(gomp, [fn, args, nthreads, ir.Constant(I32, 0)])
                with otherwise:
                    b.call(fn, [args])
        else:
            b.call(fn, [args])
        if ts is not None:
            slot = b.gep(entry.args[6], [i64(index)], inbounds=True, source_etype=I64)
            b.store(b.sub(_clock(module, b, ts), start), slot)
    b.ret(ir.Constant(I32, 0))
