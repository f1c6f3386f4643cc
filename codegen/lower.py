"""Graph -> program: choose each value's physical placement, pack weights, and emit kernel calls.

Placement rule (the layout pass of the passes issue will refine it): rank-4 float values produced by image ops are
blocked NCHW{W}c with channels padded to the vector width W; everything else is plain and contiguous. Conversions are
inserted only where a consumer needs another placement: at graph inputs, before flatten/reshape, for the spatial
halo a padded convolution reads, and into the caller's output arrays. Padded channel lanes hold finite values that
no real output depends on (their weights are packed as zeros).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cnncc.codegen.layout import Addr, Placed, blocked_addr, dims4, plain_addr
from cnncc.codegen.target import Target
from cnncc.errors import CnnccError
from cnncc.ir import Graph, Node, Value, ValueKind
from cnncc.program import Buffer, KernelCall, Program, Space

LowerFn = Callable[["Lowering", Node], None]
LOWERINGS: dict[str, LowerFn] = {}


def lowering(*ops: str) -> Callable[[LowerFn], LowerFn]:
    """Register the decorated function as the CPU lowering of ``ops``."""

    def deco(fn: LowerFn) -> LowerFn:
        for op in ops:
            LOWERINGS[op] = fn
        return fn

    return deco


class Unsupported(CnnccError):
    """A graph uses an op or attribute the CPU backend does not compile yet."""


class Lowering:
    """State of one lowering: placements of values, the weights blob under construction, the calls emitted."""

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray], target: Target) -> None:
        self.graph, self.params, self.target = graph, params, target
        self.width = target.vector_width
        self.batch = next((v.shape[0] for v in graph.inputs if v.shape), 1)  # scalar inputs have no batch axis
        self.program = Program(graph.name, self.batch)
        self.placed: dict[Value, Placed] = {}
        self._blob: list[bytes] = []
        self._blob_size = 0
        self._memo: dict[tuple[Any, ...], Placed] = {}
        self._count = 0
        self.label_ranges: dict[str, int] = {}  # integer input -> number of classes (checked before each call)

    # -- buffers ------------------------------------------------------------------------------------------------
    def arena(self, floats_per_image: int, name: str, per_image: bool = True, itemsize: int = 4) -> Buffer:
        n = self.batch if per_image else 1
        self._count += 1
        return Buffer(f"{name}#{self._count}", max(floats_per_image * n * itemsize, itemsize), Space.ARENA)

    def weights(self, array: np.ndarray, name: str) -> Buffer:
        """Append a packed constant to the weights blob (64-byte aligned); float32 unless given otherwise."""
        data = np.ascontiguousarray(array)
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        pad = (-self._blob_size) % 64
        self._blob.append(b"\0" * pad)
        self._blob_size += pad
        buf = Buffer(name, data.nbytes, Space.WEIGHTS, offset=self._blob_size)
        self._blob.append(data.tobytes())
        self._blob_size += data.nbytes
        return buf

    def param(self, v: Value, layer: str) -> np.ndarray:
        if v.kind is not ValueKind.PARAM:
            raise Unsupported(f"layer '{layer}': the CPU backend needs this operand to be a parameter (weights are "
                              f"packed at compile time), got a computed value {v!r}")
        return np.asarray(self.params[v.name], dtype=np.float64)

    def call(self, kernel: str, params: Any, reads: tuple[Buffer, ...], writes: tuple[Buffer, ...], layer: str,
             parallel: bool = True, macs: int = 0) -> None:
        self.program.calls.append(KernelCall(kernel, params, reads, writes, layer, parallel, macs))

    # -- placements ---------------------------------------------------------------------------------------------
    def new_blocked(self, dims: tuple[int, int, int, int], name: str,
                    halo: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Placed:
        _, c, h, w = dims
        addr = blocked_addr(c, h, w, self.width, halo)
        return Placed(self.arena(addr.img, name), dims, addr, True, halo)

    def new_plain(self, dims: tuple[int, int, int, int], name: str,
                  halo: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Placed:
        _, c, h, w = dims
        addr = plain_addr(c, h, w, halo)
        return Placed(self.arena(addr.img, name), dims, addr, False, halo)

    def get(self, v: Value, layer: str = "") -> Placed:
        if v not in self.placed:
            if v.kind is ValueKind.PARAM:
                raise Unsupported(f"layer '{layer or '?'}': parameter '{v.name}' is used as a computed operand; the "
                                  "CPU backend takes parameters as weights, biases and per-channel operands only")
            raise CnnccError(f"internal: value {v!r} has no placement")
        return self.placed[v]

    def relayout(self, src: Placed, dst: Placed, layer: str, pad_value: float = 0.0, c_off: int = 0) -> None:
        from cnncc.codegen.kernels.relayout import relayout_call

        relayout_call(self, src, dst, layer, pad_value, c_off)

    def blocked(self, v: Value, layer: str, halo: tuple[int, int, int, int] = (0, 0, 0, 0),
                pad_value: float = 0.0) -> Placed:
        """``v`` in blocked layout with the given zero (or ``pad_value``) halo, converting once if needed."""
        p = self.get(v, layer)
        if p.blocked and p.halo == halo:
            return p
        key = ("blocked", id(v), halo, pad_value)
        if key not in self._memo:
            dst = self.new_blocked(p.dims, f"{layer}.in", halo)
            self.relayout(p, dst, layer, pad_value)
            self._memo[key] = dst
        return self._memo[key]

    def plain(self, v: Value, layer: str, halo: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Placed:
        """``v`` as a contiguous plain tensor (with an optional halo), converting once if needed."""
        p = self.get(v, layer)
        if halo == (0, 0, 0, 0) and p.contiguous_plain:
            return p
        key = ("plain", id(v), halo)
        if key not in self._memo:
            dst = self.new_plain(p.dims, f"{layer}.in", halo)
            self.relayout(p, dst, layer)
            self._memo[key] = dst
        return self._memo[key]

    # -- driver -------------------------------------------------------------------------------------------------
    def run(self) -> Program:
        import cnncc.codegen.kernels  # noqa: F401  (registers the lowerings)

        for i, v in enumerate(self.graph.inputs):
            buf = Buffer(v.name, v.type.nbytes, Space.INPUT, index=i)
            self.program.inputs.append(buf)
            dims = dims4(v.shape)  # NHWC inputs are plain in their own (N, H, W, C) order
            addr = plain_addr(*dims[1:])
            self.placed[v] = Placed(buf, dims, addr, False)
        for node in self.graph.nodes:
            fn = LOWERINGS.get(node.op)
            if fn is None:
                raise Unsupported(f"layer '{node.layer}': op '{node.op}' has no CPU lowering yet")
            fn(self, node)
        for i, (name, v) in enumerate(zip(self.graph.output_names, self.graph.outputs, strict=True)):
            buf = Buffer(name, v.type.nbytes, Space.OUTPUT, index=i)
            self.program.outputs.append(buf)
            src = self.get(v)
            _, c, h, w = src.dims
            dst = Placed(buf, src.dims, plain_addr(c, h, w), False, batched=src.batched)
            self.relayout(src, dst, f"output.{name}")
        self.program.weights = b"".join(self._blob)
        return self.program


def lower(graph: Graph, params: Mapping[str, np.ndarray], target: Target) -> Program:
    return Lowering(graph, params, target).run()


__all__ = ["Addr", "LOWERINGS", "Lowering", "Unsupported", "lower", "lowering"]
