"""A thin layer over llvmlite's IRBuilder for writing kernels: typed pointers by GEP, vectors, FMA, loops with
loop-carried values (accumulators held as phi nodes), thread ranges.

llvmlite 0.50 / LLVM 22 facts encoded here: pointers are opaque (every load, store and GEP names its element type);
``IRBuilder.fma`` rejects vectors, so ``llvm.fma.v<N>f32`` is declared by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

F32 = ir.FloatType()
F64 = ir.DoubleType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

Body = Callable[[ir.Value, list[ir.Value]], Sequence[ir.Value]]


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def f32(v: float) -> ir.Constant:
    return ir.Constant(F32, float(v))


class Emitter:
    """Builds one function's body; shared module-level declarations come from ``module``."""

    def __init__(self, module: ir.Module, fn: ir.Function, width: int) -> None:
        self.module, self.fn, self.width = module, fn, width
        self.vec = ir.VectorType(F32, width)
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))

    # -- declarations -------------------------------------------------------------------------------------------
    def intrinsic(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, list(args)), name=name)
        return fn

    # -- addresses and memory -----------------------------------------------------------------------------------
    def at(self, base: ir.Value, offset: ir.Value | int, ty: ir.Type = F32) -> ir.Value:
        """``base + offset`` elements of type ``ty`` (GEP; offsets are i64 element counts)."""
        off = i64(offset) if isinstance(offset, int) else offset
        return self.b.gep(base, [off], inbounds=True, source_etype=ty)

    def load(self, base: ir.Value, offset: ir.Value | int = 0, ty: ir.Type = F32) -> ir.Value:
        return self.b.load(self.at(base, offset, ty), typ=ty)

    def store(self, value: ir.Value, base: ir.Value, offset: ir.Value | int = 0) -> None:
        self.b.store(value, self.at(base, offset, value.type))

    def load_vec(self, base: ir.Value, offset: ir.Value | int, align: int = 4) -> ir.Value:
        ptr = self.at(base, offset, F32)
        return self.b.load(ptr, typ=self.vec, align=align)

    def store_vec(self, value: ir.Value, base: ir.Value, offset: ir.Value | int, align: int = 4) -> None:
        self.b.store(value, self.at(base, offset, F32), align=align)

    def store_vec_nt(self, value: ir.Value, base: ir.Value, offset: ir.Value | int) -> None:
        """A non-temporal (streaming) store of a whole vector: it writes the cache line without reading it first and
        without keeping it in cache. The address must be aligned to the vector's size; after a thread's last one, call
        :meth:`store_fence` before other threads read the data."""
        st = self.b.store(value, self.at(base, offset, F32), align=self.width * 4)
        st.set_metadata("nontemporal", self.module.add_metadata([ir.Constant(I32, 1)]))

    def store_fence(self) -> None:
        """``sfence``: orders this thread's earlier non-temporal stores before its later stores."""
        self.b.call(self.intrinsic("llvm.x86.sse.sfence", VOID, []), [])

    def masked_store(self, value: ir.Value, base: ir.Value, offset: ir.Value | int, lanes: int) -> None:
        """Store the first ``lanes`` lanes of ``value`` (the tail of a channel dimension)."""
        mask_ty = ir.VectorType(I1, self.width)
        fn = self.intrinsic(f"llvm.masked.store.v{self.width}f32.p0", VOID, [self.vec, PTR, I32, mask_ty])
        mask = ir.Constant(mask_ty, [ir.Constant(I1, int(i < lanes)) for i in range(self.width)])
        self.b.call(fn, [value, self.at(base, offset, F32), ir.Constant(I32, 4), mask])

    # -- vector arithmetic --------------------------------------------------------------------------------------
    def splat(self, scalar: ir.Value) -> ir.Value:
        undef = ir.Constant(self.vec, ir.Undefined)
        v = self.b.insert_element(undef, scalar, ir.Constant(I32, 0))
        zero_mask = ir.Constant(ir.VectorType(I32, self.width), [ir.Constant(I32, 0)] * self.width)
        return self.b.shuffle_vector(v, undef, zero_mask)

    def splat64(self, scalar: ir.Value, ty: ir.VectorType) -> ir.Value:
        """An integer scalar broadcast to the vector type ``ty``."""
        undef = ir.Constant(ty, ir.Undefined)
        v = self.b.insert_element(undef, scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, ty.count), [ir.Constant(I32, 0)] *
                                                           ty.count))

    def splat_bool(self, flag: ir.Value, ty: ir.VectorType) -> ir.Value:
        """An i1 broadcast to a mask vector."""
        return self.splat64(flag, ty)

    def vconst(self, value: float) -> ir.Value:
        return ir.Constant(self.vec, [f32(value)] * self.width)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        """a*b + c, one rounding, on vectors or scalars."""
        ty = a.type
        name = f"llvm.fma.v{self.width}f32" if isinstance(ty, ir.VectorType) else "llvm.fma.f32"
        return self.b.call(self.intrinsic(name, ty, [ty, ty, ty]), [a, b, c])

    def vcall(self, base: str, *args: ir.Value) -> ir.Value:
        """A unary/binary float intrinsic (``maxnum``, ``exp``, ...) at the type of its first operand."""
        ty = args[0].type
        suffix = f"v{self.width}f32" if isinstance(ty, ir.VectorType) else "f32"
        fn = self.intrinsic(f"llvm.{base}.{suffix}", ty, [a.type for a in args])
        return self.b.call(fn, list(args))

    def vmax(self, a: ir.Value, b: ir.Value) -> ir.Value:
        """max that propagates NaN from ``a`` like numpy's maximum (select on ordered compare)."""
        ge = self.b.fcmp_ordered(">=", a, b)
        isnan = self.b.fcmp_unordered("uno", a, a)
        pick = self.b.or_(ge, isnan)
        return self.b.select(pick, a, b)

    # -- control flow -------------------------------------------------------------------------------------------
    def loop(self, start: ir.Value | int, stop: ir.Value | int, body: Body, carried: Sequence[ir.Value] = (),
             step: int = 1, name: str = "i") -> list[ir.Value]:
        """``for i in range(start, stop, step)`` with ``carried`` values threaded through as phi nodes.

        ``body(i, values)`` emits the loop body and returns the next values; the final values are returned.
        """
        b = self.b
        start_v = i64(start) if isinstance(start, int) else start
        stop_v = i64(stop) if isinstance(stop, int) else stop
        pre = b.block
        header = self.fn.append_basic_block(f"{name}.header")
        body_bb = self.fn.append_basic_block(f"{name}.body")
        exit_bb = self.fn.append_basic_block(f"{name}.exit")
        b.branch(header)
        b.position_at_end(header)
        idx = b.phi(I64, name=name)
        idx.add_incoming(start_v, pre)
        phis = []
        for k, v in enumerate(carried):
            p = b.phi(v.type, name=f"{name}.c{k}")
            p.add_incoming(v, pre)
            phis.append(p)
        b.cbranch(b.icmp_signed("<", idx, stop_v), body_bb, exit_bb)
        b.position_at_end(body_bb)
        new_values = list(body(idx, list(phis)))
        if len(new_values) != len(phis):
            raise ValueError("loop body must return one value per carried value")
        nxt = b.add(idx, i64(step), name=f"{name}.next")
        latch = b.block
        idx.add_incoming(nxt, latch)
        for p, v in zip(phis, new_values, strict=True):
            p.add_incoming(v, latch)
        b.branch(header)
        b.position_at_end(exit_bb)
        return list(phis)

    def each(self, start: ir.Value | int, stop: ir.Value | int, body: Callable[[ir.Value], None],
             name: str = "i") -> None:
        """A loop without carried values."""

        def step(i: ir.Value, _: list[ir.Value]) -> list[ir.Value]:
            body(i)
            return []

        self.loop(start, stop, step, (), name=name)

    def each_streaming(self, out: ir.Value, nontemporal: bool, start: ir.Value | int, stop: ir.Value | int,
                       body: Callable[[ir.Value, bool], None]) -> None:
        """The loop over work items [start, stop), ``body(i, streaming)``: with ``streaming`` True (the body's
        whole-vector stores to ``out`` non-temporal, see :meth:`store_vec_nt`; then a store fence) when
        ``nontemporal`` and ``out`` is aligned to the vector's size at run time (an arena allocated by another
        program may not be); with plain stores otherwise."""
        if not nontemporal:
            self.each(start, stop, lambda i: body(i, False), name="item")
            return
        b = self.b
        aligned = b.icmp_unsigned("==", b.and_(b.ptrtoint(out, I64), i64(self.width * 4 - 1)), i64(0))
        with b.if_else(aligned) as (stream, plain):
            with stream:
                self.each(start, stop, lambda i: body(i, True), name="item_nt")
                self.store_fence()
            with plain:
                self.each(start, stop, lambda i: body(i, False), name="item")

    def if_then(self, cond: ir.Value, then: Callable[[], None]) -> None:
        with self.b.if_then(cond):
            then()

    # -- threads ------------------------------------------------------------------------------------------------
    def thread_range(self, total: ir.Value | int) -> tuple[ir.Value, ir.Value]:
        """This OpenMP thread's contiguous share [lo, hi) of ``total`` work items (whole range when serial).

        Every item is computed by exactly one thread, in the same order whatever the thread count: results are
        bit-identical for any number of threads.
        """
        b = self.b
        tid = b.sext(b.call(self.intrinsic("omp_get_thread_num", I32, []), []), I64)
        nth = b.sext(b.call(self.intrinsic("omp_get_num_threads", I32, []), []), I64)
        tot = i64(total) if isinstance(total, int) else total
        lo = b.sdiv(b.mul(tot, tid), nth)
        hi = b.sdiv(b.mul(tot, b.add(tid, i64(1))), nth)
        return lo, hi

    def chunks(self, total: ir.Value | int, chunk: int, vec: Callable[[ir.Value], None],
               one: Callable[[ir.Value], None]) -> None:
        """Walk ``[0, total)`` flat elements in work items of ``chunk`` (a multiple of the vector width), this
        thread's share of them: ``vec(offset)`` for each whole vector, then ``one(offset)`` for the scalar tail of
        the last item."""
        b, width = self.b, self.width
        tot = i64(total) if isinstance(total, int) else total
        lo, hi = self.thread_range(b.udiv(b.add(tot, i64(chunk - 1)), i64(chunk)))

        def item(it: ir.Value) -> None:
            start = b.mul(it, i64(chunk))
            end = b.add(start, i64(chunk))
            end = b.select(b.icmp_signed("<", end, tot), end, tot)
            nvec = b.udiv(b.sub(end, start), i64(width))
            self.each(0, nvec, lambda k: vec(b.add(start, b.mul(k, i64(width)))), name="vec")
            self.each(b.add(start, b.mul(nvec, i64(width))), end, one, name="tail")

        self.each(lo, hi, item, name="chunk")

    def digits(self, index: ir.Value, radices: Sequence[int]) -> list[ir.Value]:
        """Mixed-radix digits of a flat work-item index, the fastest-varying radix last:
        ``digits(it, (C, H))`` is ``[n, c, h]`` for ``it = (n*C + c)*H + h``."""
        out = []
        for r in reversed(radices):
            out.append(self.b.urem(index, i64(r)))
            index = self.b.udiv(index, i64(r))
        return [index, *reversed(out)]

    def divmod(self, a: ir.Value, d: int) -> tuple[ir.Value, ir.Value]:
        return self.b.udiv(a, i64(d)), self.b.urem(a, i64(d))
