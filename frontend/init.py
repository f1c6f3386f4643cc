"""Seeded parameter initialisers, with the seeds' formulas.

* Xavier/Glorot normal: N(0, 2/(fan_in + fan_out)) (seed 003 L133-252); Xavier uniform: U(±sqrt(6/(fan_in+fan_out))).
* He normal: N(0, 2/fan_in) (seeds 000 and 003); He uniform: U(±sqrt(6/fan_in)).
* LeCun normal: randn/sqrt(fan_in) (seed 000 "randn/sqrt(n)"); ``small_normal``: 0.001·N(0, 1) (seed 000).
* zeros (biases), ones (batch-norm scale), constant.

Fan-in and fan-out of a convolution kernel (K, C/groups, R, S), which the seeds do not define: fan_in = (C/groups)·R·S
(the inputs one output sums over), fan_out = (K/groups)·R·S (the outputs one input feeds). For groups = 1 this is
PyTorch's definition; for grouped and depthwise kernels PyTorch uses K·R·S as fan_out, cnncc the connection count.

Each parameter's random stream is derived from (model seed, parameter name), so a parameter's initial value does not
depend on the order in which layers are created, and the same seed gives the same weights on every machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from cnncc.errors import OpAttributeError

InitFn = Callable[[tuple[int, ...], int, int, np.random.Generator], np.ndarray]


def fans(shape: tuple[int, ...], groups: int = 1) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight: linear (out, in), conv (K, C/groups, R, S); 1-D params use their length."""
    if len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) == 4:
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, (shape[0] // groups) * receptive
    n = int(np.prod(shape)) if shape else 1
    return n, n


def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _normal(std: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _uniform(bound: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return (rng.random(shape, dtype=np.float32) * np.float32(2 * bound) - np.float32(bound))


INITIALIZERS: dict[str, InitFn] = {
    "zeros": lambda s, fi, fo, r: np.zeros(s, np.float32),
    "ones": lambda s, fi, fo, r: np.ones(s, np.float32),
    "normal": lambda s, fi, fo, r: _normal(0.01, s, r),
    "small_normal": lambda s, fi, fo, r: _normal(0.001, s, r),
    "xavier_normal": lambda s, fi, fo, r: _normal(np.sqrt(2.0 / (fi + fo)), s, r),
    "xavier_uniform": lambda s, fi, fo, r: _uniform(np.sqrt(6.0 / (fi + fo)), s, r),
    "he_normal": lambda s, fi, fo, r: _normal(np.sqrt(2.0 / fi), s, r),
    "he_uniform": lambda s, fi, fo, r: _uniform(np.sqrt(6.0 / fi), s, r),
    "lecun_normal": lambda s, fi, fo, r: _normal(np.sqrt(1.0 / fi), s, r),
}
INITIALIZERS["glorot_normal"] = INITIALIZERS["xavier_normal"]
INITIALIZERS["glorot_uniform"] = INITIALIZERS["xavier_uniform"]


def constant(value: float) -> InitFn:
    """An initialiser that fills with ``value`` (PReLU's 0.25, say)."""
    return lambda s, fi, fo, r: np.full(s, value, np.float32)


def get_initializer(spec: str | InitFn, layer: str = "") -> InitFn:
    """Look an initialiser up by name, or pass a callable ``(shape, fan_in, fan_out, rng) -> array`` through."""
    if callable(spec):
        return spec
    if spec not in INITIALIZERS:
        import difflib

        near = difflib.get_close_matches(spec, INITIALIZERS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        where = f"layer '{layer}': " if layer else ""
        raise OpAttributeError(f"{where}unknown initialiser '{spec}'; known: {', '.join(sorted(INITIALIZERS))}{hint}")
    return INITIALIZERS[spec]
