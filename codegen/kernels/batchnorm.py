"""Training-mode batch normalisation: the forward with batch statistics, its gradient (batch_norm_grad) and the
running-statistics update (batch_norm_stats); plus the bias gradient's per-channel sum of a blocked value.

Three kernels, in this order for every op:

* ``bn_sums`` (parallel over channel blocks, W channels per vector): per channel, in float64, the mean of x over
  the m = N·H·W values (N the run-time batch), then -- second pass -- the sum of squared deviations and, for the
  gradient, Σ dy and Σ dy·(x − mean). Float64 vectors in one fixed order: the results are independent of the thread
  count and within a few float32 ulps of the references (which accumulate pairwise in float32 or in float64).
* ``bn_finalize`` (serial, one scalar per channel): the per-channel outputs (dgamma, dbeta, new running statistics)
  and the coefficients of the elementwise pass, from the sums and the per-channel operands -- parameters read from
  the weights blob (compile-time constants or training state updated in place), or computed values: whatever
  holds C contiguous floats.
* ``bn_apply`` (parallel over images and channel blocks): ``out = A·(x − M) + C [+ D·dy]`` with per-channel
  vectors M, A, C, D; the forward is ``γ·invstd·(x − μ) + β``, the gradient
  ``dx = γ·invstd·dy − γ·invstd²·dγ/m·(x − μ) − γ·invstd·dβ/m``.

Padded channel lanes get coefficients 0 (so they hold 0). Rank-2 inputs (N, C) are placed blocked as (N, C, 1, 1).
Per-channel results that are not per image are unbatched plain placements ``(1, C, 1, 1)`` (see grad.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from cnncc.codegen.emit import F32, F64, Emitter, f32, i64
from cnncc.codegen.kernels.grad import _unbatched
from cnncc.codegen.layout import Placed, padded_channels
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import Node, Value
from cnncc.program import Buffer

# Slots of the float64 statistics buffer and of the float32 coefficient buffer, each ``padded C`` long.
MEAN, M2, SDY, SDYXC = range(4)
COEF_M, COEF_A, COEF_C, COEF_D = range(4)


@dataclass(frozen=True, eq=False)
class Stream:
    """A blocked tensor: vector (n, cb, px) at base + n*img + cb*cblk + px*W."""

    buf: Buffer
    base: int
    img: int
    cblk: int


def _stream(p: Placed) -> Stream:
    return Stream(p.buffer, p.addr.base, p.addr.img, p.addr.cblk)


@dataclass(frozen=True, eq=False)
class SumsParams:
    x: Stream
    dy: Stream | None
    stats: Buffer  # float64 [4][cpad]
    c_blocks: int
    pixels: int
    only_sum: bool = False  # just Σ x (bias gradient): stored in the MEAN slot, not divided


@dataclass(frozen=True, eq=False)
class FinalizeParams:
    mode: str  # "train", "grad", "stats", "sum", "infer" (running statistics read from operands 2 and 3)
    stats: Buffer | None
    coef: Buffer | None  # float32 [4][cpad]
    operands: tuple[tuple[Buffer, int], ...]  # (buffer, float offset) of the C-vectors read
    outputs: tuple[Buffer, ...]  # C floats each
    channels: int
    cpad: int
    pixels: int
    eps: float = 0.0
    momentum: float = 0.0


@dataclass(frozen=True, eq=False)
class ApplyParams:
    x: Stream
    dy: Stream | None
    out: Stream
    coef: Buffer
    c_blocks: int
    pixels: int
    cpad: int


def _blocked_x(lw: Lowering, v: Value, layer: str, op: str) -> Placed:
    if len(v.shape) not in (2, 4):
        raise Unsupported(f"layer '{layer}': {op} on rank-{len(v.shape)} input is not compiled for the CPU yet "
                          "(ranks 2 and 4 are)")
    p = lw.get(v, layer)
    if not p.batched:
        raise Unsupported(f"layer '{layer}': {op} of a value that is not per image ('{v.name}') is not compiled")
    return p if p.blocked and p.halo == (0, 0, 0, 0) else lw.blocked(v, layer)


def channel_vector(lw: Lowering, v: Value, layer: str) -> tuple[Buffer, int]:
    """Where the C floats of per-channel operand ``v`` live: a parameter (constant or training state) in the weights
    blob, or a computed value made contiguous."""
    p = lw.tensor(v, layer)
    if not p.contiguous_plain:
        p = lw.plain(v, layer)
    return p.buffer, p.addr.base


def _sums(lw: Lowering, x: Placed, dy: Placed | None, layer: str, only_sum: bool = False) -> tuple[Buffer, int]:
    n, c, h, w = x.dims
    cpad = padded_channels(c, lw.width)
    stats = lw.arena(4 * cpad, f"{layer}.stats", per_image=False, itemsize=8)
    p = SumsParams(_stream(x), _stream(dy) if dy is not None else None, stats, cpad // lw.width, h * w, only_sum)
    reads = (x.buffer,) + ((dy.buffer,) if dy is not None else ())
    lw.call("bn_sums", p, reads, (stats,), layer, parallel=n * c * h * w > 50_000)
    return stats, cpad


def _apply(lw: Lowering, node: Node, x: Placed, dy: Placed | None, coef: Buffer, cpad: int) -> Placed:
    n, c, h, w = x.dims
    out = lw.new_blocked(x.dims, node.layer)
    p = ApplyParams(_stream(x), _stream(dy) if dy is not None else None, _stream(out), coef, cpad // lw.width, h * w,
                    cpad)
    reads = (x.buffer, coef) + ((dy.buffer,) if dy is not None else ())
    lw.call("bn_apply", p, reads, (out.buffer,), node.layer, parallel=n * c * h * w > 50_000)
    return out


def lower_batch_norm_training(lw: Lowering, node: Node) -> None:
    x = _blocked_x(lw, node.inputs[0], node.layer, "batch_norm")
    stats, cpad = _sums(lw, x, None, node.layer)
    lw.shared[("bn_sums", id(node.inputs[0]))] = (stats, cpad)  # the same batch's running statistics reuse them
    coef = lw.arena(4 * cpad, f"{node.layer}.coef", per_image=False)
    ops = tuple(channel_vector(lw, v, node.layer) for v in node.inputs[1:3])
    p = FinalizeParams("train", stats, coef, ops, (), x.dims[1], cpad, x.dims[2] * x.dims[3], eps=node.attrs.eps)
    lw.call("bn_finalize", p, (stats, *(b for b, _ in ops)), (coef,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = _apply(lw, node, x, None, coef, cpad)  # rank 2 stays blocked (N, C, 1, 1)


def lower_batch_norm_running(lw: Lowering, node: Node) -> None:
    """Inference-mode batch_norm whose per-channel operands are not compile-time constants (running statistics
    that are training state, computed values): the affine map's coefficients computed at run time."""
    x = _blocked_x(lw, node.inputs[0], node.layer, "batch_norm")
    cpad = padded_channels(x.dims[1], lw.width)
    coef = lw.arena(4 * cpad, f"{node.layer}.coef", per_image=False)
    ops = tuple(channel_vector(lw, v, node.layer) for v in node.inputs[1:5])
    p = FinalizeParams("infer", None, coef, ops, (), x.dims[1], cpad, x.dims[2] * x.dims[3], eps=node.attrs.eps)
    lw.call("bn_finalize", p, tuple(b for b, _ in ops), (coef,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = _apply(lw, node, x, None, coef, cpad)


@lowering("batch_norm_grad")
def lower_batch_norm_grad(lw: Lowering, node: Node) -> None:
    x = _blocked_x(lw, node.inputs[0], node.layer, "batch_norm_grad")
    dyv = node.inputs[2]
    dy = lw.get(dyv, node.layer)
    if not (dy.blocked and dy.halo == (0, 0, 0, 0)):
        dy = lw.blocked(dyv, node.layer)
    stats, cpad = _sums(lw, x, dy, node.layer)
    coef = lw.arena(4 * cpad, f"{node.layer}.coef", per_image=False)
    c = x.dims[1]
    dgamma, dbeta = _unbatched(lw, c, f"{node.layer}.dgamma"), _unbatched(lw, c, f"{node.layer}.dbeta")
    ops = (channel_vector(lw, node.inputs[1], node.layer),)
    p = FinalizeParams("grad", stats, coef, ops, (dgamma.buffer, dbeta.buffer), c, cpad, x.dims[2] * x.dims[3],
                       eps=node.attrs.eps)
    lw.call("bn_finalize", p, (stats, *(b for b, _ in ops)), (coef, dgamma.buffer, dbeta.buffer), node.layer,
            parallel=False)
    lw.placed[node.outputs[0]] = _apply(lw, node, x, dy, coef, cpad)
    lw.placed[node.outputs[1]] = dgamma
    lw.placed[node.outputs[2]] = dbeta


@lowering("batch_norm_stats")
def lower_batch_norm_stats(lw: Lowering, node: Node) -> None:
    x = _blocked_x(lw, node.inputs[0], node.layer, "batch_norm_stats")
    # The forward batch_norm of the same value already summed it (same kernel, same order: the same bits).
    stats, cpad = lw.shared.get(("bn_sums", id(node.inputs[0]))) or _sums(lw, x, None, node.layer)
    c = x.dims[1]
    new_mean, new_var = _unbatched(lw, c, f"{node.layer}.mean"), _unbatched(lw, c, f"{node.layer}.var")
    ops = tuple(channel_vector(lw, v, node.layer) for v in node.inputs[1:3])
    p = FinalizeParams("stats", stats, None, ops, (new_mean.buffer, new_var.buffer), c, cpad, x.dims[2] * x.dims[3],
                       momentum=node.attrs.momentum)
    lw.call("bn_finalize", p, (stats, *(b for b, _ in ops)), (new_mean.buffer, new_var.buffer), node.layer,
            parallel=False)
    lw.placed[node.outputs[0]] = new_mean
    lw.placed[node.outputs[1]] = new_var


def channel_sum(lw: Lowering, node: Node) -> Placed:
    """Σ over (N, H, W) of a rank-4 value (sum_to to (1, C, 1, 1): the bias gradient), unbatched (1, C, 1, 1)."""
    x = lw.get(node.inputs[0], node.layer)
    if not (x.blocked and x.halo == (0, 0, 0, 0)):
        x = lw.blocked(node.inputs[0], node.layer)
    stats, cpad = _sums(lw, x, None, node.layer, only_sum=True)
    c = x.dims[1]
    out = _unbatched(lw, c, node.layer)
    p = FinalizeParams("sum", stats, None, (), (out.buffer,), c, cpad, x.dims[2] * x.dims[3])
    lw.call("bn_finalize", p, (stats,), (out.buffer,), node.layer, parallel=False)
    return out


# -- kernels ----------------------------------------------------------------------------------------------------


def _vec64(em: Emitter) -> ir.VectorType:
    return ir.VectorType(F64, em.width)


def _load64(em: Emitter, ptr: ir.Value, off: ir.Value) -> ir.Value:
    return em.b.load(em.at(ptr, off, F64), typ=_vec64(em), align=8)


def _store64(em: Emitter, v: ir.Value, ptr: ir.Value, off: ir.Value | int) -> None:
    em.b.store(v, em.at(ptr, off, F64), align=8)


@kernel("bn_sums")
def emit_bn_sums(em: Emitter, env: KernelEnv, p: SumsParams) -> None:
    b, width = em.b, em.width
    x = env.ptr(p.x.buf)
    dy = env.ptr(p.dy.buf) if p.dy is not None else None
    stats = env.ptr(p.stats)
    cpad = p.c_blocks * width
    v64 = _vec64(em)
    zero = ir.Constant(v64, [ir.Constant(F64, -0.0)] * width)  # -0.0 + v is v (a sum of -0.0s stays -0.0)
    lo, hi = em.thread_range(i64(p.c_blocks))
    count = b.sitofp(b.mul(env.batch, i64(p.pixels)), F64)

    def off(s: Stream, n: ir.Value, cb: ir.Value, px: ir.Value) -> ir.Value:
        return b.add(b.add(i64(s.base), b.mul(n, i64(s.img))), b.add(b.mul(cb, i64(s.cblk)), b.mul(px, i64(width))))

    def ext(v: ir.Value) -> ir.Value:
        return b.fpext(v, v64)

    def over_all(cb: ir.Value, body: object, init: list[ir.Value]) -> list[ir.Value]:
        def image(n: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            return em.loop(0, p.pixels, lambda px, a: body(n, px, a), accs, name="px")  # type: ignore[operator]

        return em.loop(0, env.batch, image, init, name="n")

    def item(cb: ir.Value) -> None:
        slot = b.mul(cb, i64(width))
        total = over_all(cb, lambda n, px, a: [b.fadd(a[0], ext(em.load_vec(x, off(p.x, n, cb, px))))], [zero])[0]
        if p.only_sum:
            _store64(em, total, stats, b.add(slot, i64(MEAN * cpad)))
            return
        mean = b.fdiv(total, _splat64(em, count))
        _store64(em, mean, stats, b.add(slot, i64(MEAN * cpad)))

        def second(n: ir.Value, px: ir.Value, a: list[ir.Value]) -> list[ir.Value]:
            d = b.fsub(ext(em.load_vec(x, off(p.x, n, cb, px))), mean)
            out = [b.fadd(a[0], b.fmul(d, d))]
            if dy is not None:
                g = ext(em.load_vec(dy, off(p.dy, n, cb, px)))  # type: ignore[arg-type]
                out += [b.fadd(a[1], g), b.fadd(a[2], b.fmul(g, d))]
            return out

        accs = over_all(cb, second, [zero] * (3 if dy is not None else 1))
        _store64(em, accs[0], stats, b.add(slot, i64(M2 * cpad)))
        if dy is not None:
            _store64(em, accs[1], stats, b.add(slot, i64(SDY * cpad)))
            _store64(em, accs[2], stats, b.add(slot, i64(SDYXC * cpad)))

    em.each(lo, hi, item, name="cb")


def _splat64(em: Emitter, s: ir.Value) -> ir.Value:
    v64 = _vec64(em)
    i32 = ir.IntType(32)
    v = em.b.insert_element(ir.Constant(v64, ir.Undefined), s, ir.Constant(i32, 0))
    return em.b.shuffle_vector(v, ir.Constant(v64, ir.Undefined),
                               ir.Constant(ir.VectorType(i32, em.width), [ir.Constant(i32, 0)] * em.width))


@kernel("bn_finalize")
def emit_bn_finalize(em: Emitter, env: KernelEnv, p: FinalizeParams) -> None:
    b = em.b
    stats = env.ptr(p.stats) if p.stats is not None else None
    coef = env.ptr(p.coef) if p.coef is not None else None
    ops = [(env.ptr(buf), base) for buf, base in p.operands]
    outs = [env.ptr(buf) for buf in p.outputs]
    m = b.sitofp(b.mul(env.batch, i64(p.pixels)), F64)

    def d(x: float) -> ir.Constant:
        return ir.Constant(F64, x)

    def stat(slot: int, c: ir.Value) -> ir.Value:
        return em.load(stats, b.add(c, i64(slot * p.cpad)), F64)

    def operand(k: int, c: ir.Value) -> ir.Value:
        ptr, base = ops[k]
        return b.fpext(em.load(ptr, b.add(c, i64(base))), F64)

    def put_coef(slot: int, c: ir.Value, v: ir.Value) -> None:
        em.store(b.fptrunc(v, F32) if v.type == F64 else v, coef, b.add(c, i64(slot * p.cpad)))

    def channel(c: ir.Value) -> None:
        if p.mode == "sum":
            em.store(b.fptrunc(stat(MEAN, c), F32), outs[0], c)
            return
        if p.mode == "infer":
            mean, var = operand(2, c), operand(3, c)
        else:
            mean = stat(MEAN, c)
            var = b.fdiv(stat(M2, c), m)
        if p.mode == "stats":
            keep, mom = d(1.0 - p.momentum), d(p.momentum)
            unbiased = b.fdiv(stat(M2, c), b.fsub(m, d(1.0)))
            em.store(b.fptrunc(b.fadd(b.fmul(keep, operand(0, c)), b.fmul(mom, mean)), F32), outs[0], c)
            em.store(b.fptrunc(b.fadd(b.fmul(keep, operand(1, c)), b.fmul(mom, unbiased)), F32), outs[1], c)
            return
        invstd = b.fdiv(d(1.0), _sqrt64(em, b.fadd(var, d(p.eps))))
        gamma = operand(0, c)
        k = b.fmul(gamma, invstd)
        put_coef(COEF_M, c, mean)
        if p.mode in ("train", "infer"):
            put_coef(COEF_A, c, k)
            put_coef(COEF_C, c, operand(1, c))
            put_coef(COEF_D, c, f32(0.0))
        else:  # grad
            dbeta = stat(SDY, c)
            dgamma = b.fmul(stat(SDYXC, c), invstd)
            em.store(b.fptrunc(dgamma, F32), outs[0], c)
            em.store(b.fptrunc(dbeta, F32), outs[1], c)
            put_coef(COEF_A, c, b.fdiv(b.fneg(b.fmul(b.fmul(k, invstd), dgamma)), m))
            put_coef(COEF_C, c, b.fdiv(b.fneg(b.fmul(k, dbeta)), m))
            put_coef(COEF_D, c, k)

    em.each(0, p.channels, channel, name="c")
    if coef is not None:  # padded lanes: every coefficient 0, so the padded outputs are 0
        def pad(c: ir.Value) -> None:
            for slot in range(4):
                put_coef(slot, c, f32(0.0))

        em.each(p.channels, p.cpad, pad, name="pad")


def _sqrt64(em: Emitter, v: ir.Value) -> ir.Value:
    fn = em.intrinsic("llvm.sqrt.f64", F64, [F64])
    return em.b.call(fn, [v])


@kernel("bn_apply")
def emit_bn_apply(em: Emitter, env: KernelEnv, p: ApplyParams) -> None:
    b, width = em.b, em.width
    x, out, coef = env.ptr(p.x.buf), env.ptr(p.out.buf), env.ptr(p.coef)
    dy = env.ptr(p.dy.buf) if p.dy is not None else None
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks)))

    def off(s: Stream, n: ir.Value, cb: ir.Value, px: ir.Value) -> ir.Value:
        return b.add(b.add(i64(s.base), b.mul(n, i64(s.img))), b.add(b.mul(cb, i64(s.cblk)), b.mul(px, i64(width))))

    def item(it: ir.Value) -> None:
        n, cb = b.udiv(it, i64(p.c_blocks)), b.urem(it, i64(p.c_blocks))
        cv = [em.load_vec(coef, b.add(b.mul(cb, i64(width)), i64(slot * p.cpad))) for slot in range(4)]

        def pixel(px: ir.Value) -> None:
            v = em.fma(cv[COEF_A], b.fsub(em.load_vec(x, off(p.x, n, cb, px)), cv[COEF_M]), cv[COEF_C])
            if dy is not None:
                v = em.fma(cv[COEF_D], em.load_vec(dy, off(p.dy, n, cb, px)), v)  # type: ignore[arg-type]
            em.store_vec(v, out, off(p.out, n, cb, px))

        em.each(0, p.pixels, pixel, name="px")

    em.each(lo, hi, item, name="item")


__all__ = ["channel_sum", "channel_vector", "lower_batch_norm_grad", "lower_batch_norm_stats",
           "lower_batch_norm_training"]
