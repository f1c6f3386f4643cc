"""dropout: zero each element with probability ``p`` during training; the identity at inference.

``p`` is the probability of **dropping** a unit (PyTorch's and Keras's ``p``/``rate``). Seed 003 L500-543 is
ambiguous: its pmf gives ``P(X_i = 1) = p`` while its text says ``P(X_i = 0) = p`` and keeps units with
probability ``q``; here ``q = 1 − p`` is the keep probability. cnncc implements **inverted dropout** (seed 003
L535-543): training ``y = x · mask / (1 − p)``, inference ``y = x``, so inference needs no rescaling.

Operands: ``x`` and an optional ``seed``, a run-time int64 scalar (shape ``()``). The mask never depends on the
run dtype, on the memory layout or on how a backend splits the work.

**With the seed operand** (what a compiled training step uses: :mod:`cnncc.training` feeds a new ``seed`` every
step, so the mask changes per step without recompiling) the mask comes from the counter-based generator
Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC'11; Random123's ``philox4x32``), with

* key ``(k0, k1) = (s mod 2^32, (s >> 32) mod 2^32)``, ``s`` the run-time seed as a uint64 (two's complement);
* counter ``(c0, c1, c2, c3) = (i mod 2^32, i >> 32, t mod 2^32, t >> 32)``, ``i`` the element's row-major index
  in ``x`` (``((n·C + c)·H + h)·W + w`` for NCHW) and ``t`` the attribute ``seed``, the **per-layer salt**;
* ten rounds; a round maps the counter with ``(hi0, lo0) = M0·c0`` and ``(hi1, lo1) = M1·c2`` (32x32 -> 64-bit
  products) to ``(hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``, and the key is bumped by ``(W0, W1)`` (mod 2^32)
  before every round but the first; ``M0 = 0xD2511F53, M1 = 0xCD9E8D57, W0 = 0x9E3779B9, W1 = 0xBB67AE85``;
* ``bits`` = word 0 of the result; the uniform is ``u = (bits >> 8) · 2^-24`` (exact in float32 and float64) and
  the element is kept iff ``u >= p``, i.e. iff ``bits >> 8 >= ceil(p · 2^24)`` (an integer test: ``p · 2^24`` is
  exact in float64).

One Philox block per element (words 1-3 unused) keeps every element's draw a function of its own index, so a
blocked kernel, a plain kernel and any thread split draw the same mask. Distinct salts give distinct streams, so
the layers of one network need distinct ``seed`` attributes (:func:`cnncc.training.training_graph` derives one
per layer from its name).

**Without the seed operand** the attribute alone fixes the mask, as it did before the seed operand existed:
``mask = numpy.random.Generator(numpy.random.Philox(key=seed)).random(x.shape) >= p`` (numpy's Philox4x64
stream; uniforms in [0, 1), drawn in float64, in row-major order of ``x``). The same mask at every call; the
reference interpreter runs it, the CPU backend compiles only the seeded form.

VJP: the identity at inference; in training ``dx = dy · mask / (1 − p)``, which is ``dropout(dy)`` with the same
attributes and seed operand, since the mask depends only on the shape, ``p``, the salt and the run-time seed.
The seed gets no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.ir.types import DType, TensorType
from cnncc.ops.operands import require_float
from cnncc.ops.registry import Category, OpDef, OpTraits, Where, register

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10
UNIFORM_BITS = 24  # u = (bits >> (32 - UNIFORM_BITS)) * 2^-UNIFORM_BITS
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class DropoutAttrs:
    """``p``: drop probability, ``0 <= p < 1``; ``training``: apply the mask; ``seed``: the mask's seed without
    the seed operand, its per-layer salt with it (an int in [0, 2^63))."""

    p: float = 0.5
    training: bool = False
    seed: int = 0


def _infer(types: Sequence[TensorType], a: DropoutAttrs, where: Where) -> Sequence[TensorType]:
    require_float(types[0], "x", where)
    if len(types) > 1 and (types[1].dtype is not DType.INT64 or types[1].shape != ()):
        raise where.fail("seed operand", f"seed must be an int64 scalar (shape ()), got {types[1]}")
    if not 0.0 <= a.p < 1.0:
        raise where.fail("drop probability", f"p = {a.p} is the probability of dropping a unit and must "
                                             "satisfy 0 <= p < 1")
    if not isinstance(a.training, bool):
        raise where.fail("training", f"training must be a bool, got {a.training!r}")
    if isinstance(a.seed, bool) or not isinstance(a.seed, int) or a.seed < 0:
        raise where.fail("seed", f"seed must be an int >= 0, got {a.seed!r}")
    if a.seed >= 1 << 63:
        raise where.fail("seed", f"seed must be an int < 2**63, got {a.seed!r}")
    return (types[0],)


def philox4x32(counter: Sequence[Any], key: tuple[int, int], rounds: int = PHILOX_ROUNDS) -> tuple[np.ndarray, ...]:
    """Philox4x32-``rounds`` of ``counter`` (four arrays or ints of 32-bit words, broadcast together) under ``key``
    (two 32-bit ints): the four output words as uint32 arrays (Random123's ``philox4x32_R``)."""
    c = [np.asarray(w, np.uint64) & np.uint64(_MASK32) for w in counter]
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    m0, m1, lo = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1]), np.uint64(_MASK32)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & _MASK32, (k1 + PHILOX_W[1]) & _MASK32
        p0, p1 = c[0] * m0, c[2] * m1  # < 2^64: exact in uint64
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & lo, (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1),
             p0 & lo]
    return tuple(w.astype(np.uint32) for w in c)


def keep_threshold(p: float) -> int:
    """The smallest ``t`` with ``t · 2^-24 >= p``: an element is kept iff ``bits >> 8 >= t``."""
    return math.ceil(float(p) * (1 << UNIFORM_BITS))


def philox_bits(size: int, run_seed: int, salt: int) -> np.ndarray:
    """Word 0 of Philox4x32-10 for counters ``(i, salt)``, ``i = 0..size-1``, under key ``run_seed`` (uint32)."""
    s = int(run_seed) % (1 << 64)
    i = np.arange(size, dtype=np.uint64)
    counter = (i & np.uint64(_MASK32), i >> np.uint64(32), salt & _MASK32, (salt >> 32) & _MASK32)
    return philox4x32(counter, (s & _MASK32, s >> 32))[0]


def keep_mask(shape: tuple[int, ...], p: float, seed: int, run_seed: int | None = None) -> np.ndarray:
    """The boolean mask of kept elements. Without ``run_seed``: ``Philox(key=seed)`` uniforms ``>= p`` (numpy's
    stream). With it: the Philox4x32-10 definition of the module docstring, ``seed`` being the salt."""
    if run_seed is None:
        return np.random.Generator(np.random.Philox(key=seed)).random(shape) >= p
    bits = philox_bits(math.prod(shape), run_seed, seed)
    return (bits >> np.uint32(32 - UNIFORM_BITS) >= keep_threshold(p)).reshape(shape)


def _reference(arrays: Sequence[np.ndarray], a: DropoutAttrs) -> np.ndarray:
    x = arrays[0]
    if not a.training:
        return x.copy()
    run_seed = int(np.asarray(arrays[1]).reshape(())) if len(arrays) > 1 else None
    scale = x.dtype.type(1.0 / (1.0 - a.p))
    return np.where(keep_mask(x.shape, a.p, a.seed, run_seed), x * scale, x.dtype.type(0))


def _vjp(ctx: Any, node: Any, grads_out: Sequence[Any]) -> list[Any]:
    (dy,) = grads_out
    seed = [ctx.value(v) for v in node.inputs[1:]]
    dx = ctx.emit("dropout", [dy, *seed], node.attrs) if node.attrs.training else dy
    return [dx, *(None for _ in seed)]


def _flops(ins: Sequence[TensorType], outs: Sequence[TensorType], a: DropoutAttrs) -> int:
    return 2 * outs[0].size if a.training else 0


# Inference dropout is the identity; training dropout draws a mask (never merged or folded; a training step seeds it).
TRAITS = OpTraits(category=Category.NORM, recomputable=True, identity_when=lambda a, x, y: not a.training,
                  random_when=lambda a: a.training)

OP = register(OpDef(name="dropout", inputs=("x", "seed"), optional=1, infer=_infer, reference=_reference,
                    attrs=DropoutAttrs, flops=_flops, vjp=_vjp, traits=TRAITS, doc=__doc__ or ""))
