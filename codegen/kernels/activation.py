"""Activation functions as vector IR, shared by the elementwise kernel and the fused epilogues."""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from cnncc.codegen.emit import F32, I32, Emitter


@dataclass(frozen=True)
class Act:
    """An activation with its constants: ``kind`` is an op name (relu, relu6, leaky_relu, elu, sigmoid, tanh,
    softplus, hardtanh) or ``none``."""

    kind: str = "none"
    a: float = 0.0
    b: float = 0.0


def act_from_node(op: str, attrs: object) -> Act:
    if op == "leaky_relu":
        return Act(op, attrs.negative_slope)  # type: ignore[attr-defined]
    if op == "elu":
        return Act(op, attrs.alpha)  # type: ignore[attr-defined]
    if op == "softplus":
        return Act(op, attrs.beta, attrs.threshold)  # type: ignore[attr-defined]
    if op == "hardtanh":
        return Act(op, attrs.min_val, attrs.max_val)  # type: ignore[attr-defined]
    return Act(op)


ACTIVATION_OPS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "hardtanh")


def _clamp(em: Emitter, v: ir.Value, lo: float, hi: float) -> ir.Value:
    """min(max(v, lo), hi) with NaN propagating (x < lo is false for NaN, so NaN passes through)."""
    b = em.b
    v = b.select(b.fcmp_ordered("<", v, em.vconst(lo)), em.vconst(lo), v)
    return b.select(b.fcmp_ordered(">", v, em.vconst(hi)), em.vconst(hi), v)


def lanewise(em: Emitter, v: ir.Value, fn: str) -> ir.Value:
    """Apply the libm function ``fn`` (float -> float) to every lane: exact where no vector formula is.

    Used for tanh, expm1 and log1p, whose closed forms through exp cancel near 0 (tanh(1e-8) came out 0).
    """
    b = em.b
    f = em.intrinsic(fn, F32, [F32])
    out = v
    for lane in range(em.width):
        idx = ir.Constant(I32, lane)
        out = b.insert_element(out, b.call(f, [b.extract_element(v, idx)]), idx)
    return out


def apply_act(em: Emitter, v: ir.Value, act: Act) -> ir.Value:
    """``act`` applied to vector ``v`` with the reference's semantics (NaN propagates like numpy)."""
    b, k = em.b, act.kind
    if k == "none":
        return v
    zero = em.vconst(0.0)
    if k == "relu":
        return b.select(b.fcmp_ordered("<", v, zero), zero, v)
    if k == "relu6":
        return _clamp(em, v, 0.0, 6.0)
    if k == "hardtanh":
        return _clamp(em, v, act.a, act.b)
    if k == "leaky_relu":
        return b.select(b.fcmp_ordered("<", v, zero), b.fmul(v, em.vconst(act.a)), v)
    if k == "elu":
        return b.select(b.fcmp_ordered("<", v, zero), b.fmul(lanewise(em, v, "expm1f"), em.vconst(act.a)), v)
    if k == "sigmoid":  # 1 / (1 + exp(-x)): exp overflow gives inf -> 0, the correct limit
        return b.fdiv(em.vconst(1.0), b.fadd(em.vconst(1.0), em.vcall("exp", b.fneg(v))))
    if k == "tanh":
        return lanewise(em, v, "tanhf")
    if k == "softplus":  # x if beta*x > threshold else log1p(exp(beta*x))/beta, stably: max(z,0)+log1p(exp(-|z|))
        z = b.fmul(v, em.vconst(act.a))
        absz = em.vcall("fabs", z)
        soft = b.fadd(b.select(b.fcmp_ordered(">", z, zero), z, zero),
                      lanewise(em, em.vcall("exp", b.fneg(absz)), "log1pf"))
        return b.select(b.fcmp_ordered(">", z, em.vconst(act.b)), v, b.fdiv(soft, em.vconst(act.a)))
    raise ValueError(f"unknown activation {k}")


def _indicator(em: Emitter, cond: ir.Value) -> ir.Value:
    """1.0 where ``cond`` holds, else 0.0 (a NaN input fails every ordered compare, so it gets 0 like numpy)."""
    return em.b.select(cond, em.vconst(1.0), em.vconst(0.0))


def _stable_sigmoid(em: Emitter, v: ir.Value) -> ir.Value:
    """The references' sigmoid: with e = exp(-|v|), 1/(1+e) for v >= 0 and e/(1+e) otherwise (NaN propagates)."""
    b = em.b
    e = em.vcall("exp", b.fneg(em.vcall("fabs", v)))
    den = b.fadd(em.vconst(1.0), e)
    return b.select(b.fcmp_ordered(">=", v, em.vconst(0.0)), b.fdiv(em.vconst(1.0), den), b.fdiv(e, den))


def act_derivative(em: Emitter, v: ir.Value, act: Act) -> ir.Value:
    """``f'(v)`` of activation ``act`` as each op module's ``derivative`` computes it, kinks and NaN included:
    relu'(0) = 0; relu6/hardtanh 0 at both clip points; leaky_relu'(0) = slope; elu'(0) = alpha; NaN gives 0 for
    relu/relu6/hardtanh, the slope for leaky_relu, and NaN for the smooth ones."""
    b, k = em.b, act.kind
    zero, one = em.vconst(0.0), em.vconst(1.0)
    pos = b.fcmp_ordered(">", v, zero)
    if k == "relu":
        return _indicator(em, pos)
    if k in ("relu6", "hardtanh"):
        lo, hi = (0.0, 6.0) if k == "relu6" else (act.a, act.b)
        inside = b.and_(b.fcmp_ordered(">", v, em.vconst(lo)), b.fcmp_ordered("<", v, em.vconst(hi)))
        return _indicator(em, inside)
    if k == "leaky_relu":
        return b.select(pos, one, em.vconst(act.a))
    if k == "elu":  # alpha * exp(min(x, 0)) off the positive side: exp(x) there (NaN stays NaN)
        return b.select(pos, one, b.fmul(em.vconst(act.a), em.vcall("exp", v)))
    if k == "sigmoid":
        s = _stable_sigmoid(em, v)
        return b.fmul(s, b.fsub(one, s))
    if k == "tanh":
        t = lanewise(em, v, "tanhf")
        return b.fsub(one, b.fmul(t, t))
    if k == "softplus":  # sigmoid(beta x), or 1 past the threshold
        z = b.fmul(em.vconst(act.a), v)
        return b.select(b.fcmp_ordered(">", z, em.vconst(act.b)), one, _stable_sigmoid(em, z))
    raise ValueError(f"unknown activation {k}")
