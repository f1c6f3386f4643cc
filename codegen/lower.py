"""Graph -> program: choose each value's physical placement, pack weights, and emit kernel calls.

Placement rule (the layout pass of the passes issue will refine it): rank-4 float values produced by image ops are
blocked NCHW{W}c with channels padded to the vector width W; everything else is plain and contiguous. Conversions are
inserted only where a consumer needs another placement: at graph inputs, before flatten/reshape, for the spatial
halo a padded convolution reads, and into the caller's output arrays. Padded channel lanes hold finite values that
no real output depends on (their weights are packed as zeros).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from cnncc.codegen.layout import Addr, Placed, blocked_addr, dims4, plain_addr
from cnncc.codegen.target import Target
from cnncc.errors import CnnccError
from cnncc.ir import Graph, Node, Value, ValueKind
from cnncc.program import STATE_PREFIX, Buffer, KernelCall, Program, Space

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

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray], target: Target,
                 state: Collection[str] = ()) -> None:
        self.graph, self.params, self.target = graph, params, target
        self.state = frozenset(state)  # parameters updated at run time (training): read from the blob, never folded
        unknown = sorted(self.state - {p.name for p in graph.params})
        if unknown:
            raise CnnccError(f"graph '{graph.name}': state {unknown} names no parameter of the graph")
        self.state_buffers: dict[str, Buffer] = {}
        self._state_outputs: dict[Value, str] | None = None
        self._position: dict[int, int] = {}
        self.width = target.vector_width
        self.batch = next((v.shape[0] for v in graph.inputs if v.shape), 1)  # scalar inputs have no batch axis
        self.program = Program(graph.name, self.batch)
        self.placed: dict[Value, Placed] = {}
        self._blob: list[bytes] = []
        self._blob_size = 0
        self._memo: dict[tuple[Any, ...], Placed] = {}
        self.shared: dict[tuple[Any, ...], Any] = {}  # results a kernel lowering shares with a later one
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

    def is_constant(self, v: Value) -> bool:
        """Whether ``v``'s value is known at compile time: a parameter that is not training state."""
        return v.kind is ValueKind.PARAM and v.name not in self.state

    def param(self, v: Value, layer: str) -> np.ndarray:
        if v.kind is not ValueKind.PARAM:
            raise Unsupported(f"layer '{layer}': the CPU backend needs this operand to be a parameter (weights are "
                              f"packed at compile time), got a computed value {v!r}")
        if v.name in self.state:
            raise Unsupported(f"layer '{layer}': parameter '{v.name}' is training state (updated at run time), but "
                              "this kernel needs its values at compile time")
        return np.asarray(self.params[v.name], dtype=np.float64)

    def packed(self, v: Value, pack: Callable[[np.ndarray], np.ndarray], name: str, layer: str = "") -> Buffer:
        """A buffer holding ``pack(value of v)``, for any ``v``.

        A compile-time parameter is packed once into the weights blob. Training state or a computed value is
        gathered at run time: ``pack`` applied to the indices 1..size (float64) gives, for each packed element, the
        element of ``v`` it copies (0: a zero pad), so ``pack`` must only move and zero-pad elements -- transposes,
        reshapes, flips and pads compose; arithmetic does not (it is refused). Computed values are gathered at the
        compiled batch.
        """
        if self.is_constant(v):
            return self.weights(pack(self.param(v, layer)), name)
        size = math.prod(v.shape)
        index = pack(np.arange(1, size + 1, dtype=np.float64).reshape(v.shape))
        if index.dtype != np.float64 or not np.array_equal(index, np.rint(index)) or index.min() < 0 or \
                index.max() > size:
            raise CnnccError(f"layer '{layer}': the packing of '{v.name}' is not a pure gather (it computes, or "
                             "loses float64), so it cannot run on values known only at run time")
        from cnncc.codegen.kernels.gather import GatherParams

        src = self.tensor(v, layer) if v.kind is ValueKind.PARAM else self.plain(v, layer)
        table = self.weights(index.astype(np.int32), f"{name}.gather")
        dst = self.arena(index.size, name, per_image=False)
        self.call("gather", GatherParams(src.buffer, table, dst, index.size), (src.buffer, table), (dst,), layer,
                  parallel=index.size >= 1 << 16)
        return dst

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
        """The placement of a computed value or graph input. Parameters are refused here (a kernel that walks
        per-image data must not mistake one for it): read them with :meth:`tensor` or :meth:`packed`."""
        if v not in self.placed:
            if v.kind is ValueKind.PARAM:
                raise Unsupported(f"layer '{layer or '?'}': parameter '{v.name}' is used as a computed operand; the "
                                  "CPU backend takes parameters as weights, biases and per-channel operands only")
            raise CnnccError(f"internal: value {v!r} has no placement")
        return self.placed[v]

    def tensor(self, v: Value, layer: str = "") -> Placed:
        """Any value as a tensor; a parameter is one plain image of its floats in the blob, ``(1, size, 1, 1)``,
        not per image (``batched=False``). Training state is that same buffer, updated in place each step."""
        if v.kind is ValueKind.PARAM and v not in self.placed:
            size = math.prod(v.shape)
            buf = self.weights(np.asarray(self.params[v.name], np.float32).reshape(-1), f"param.{v.name}")
            self.placed[v] = Placed(buf, (1, size, 1, 1), plain_addr(size, 1, 1), False, batched=False)
            if v.name in self.state:
                self.state_buffers[v.name] = buf
        return self.get(v, layer)

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
        for p in self.graph.params:  # state lives in the blob even where no kernel reads it as a tensor
            if p.name in self.state:
                self.tensor(p)
        outputs = [(n, v) for n, v in zip(self.graph.output_names, self.graph.outputs, strict=True)
                   if not n.startswith(STATE_PREFIX)]
        for name, v in zip(self.graph.output_names, self.graph.outputs, strict=True):
            if name.startswith(STATE_PREFIX):
                self._write_state(name[len(STATE_PREFIX):], v)
        for i, (name, v) in enumerate(outputs):
            buf = Buffer(name, v.type.nbytes, Space.OUTPUT, index=i)
            self.program.outputs.append(buf)
            src = self.tensor(v)
            self.program.batched_outputs.append(src.batched)
            _, c, h, w = src.dims
            dst = Placed(buf, src.dims, plain_addr(c, h, w), False, batched=src.batched)
            self.relayout(src, dst, f"output.{name}")
        self.program.weights = b"".join(self._blob)
        self.program.label_ranges = dict(self.label_ranges)
        self.program.state = dict(self.state_buffers)
        self.program.placed = self.placed
        self.program.vector_width = self.width
        return self.program


    def in_place_state(self, out: Value, old: Value, node: Node) -> Placed | None:
        """The placement of state parameter ``old`` if ``node``'s output ``out`` is its new value (the graph output
        ``state:<old>``) and no later node reads ``old``: an elementwise kernel may then write the new value over
        the old one (each element read and written by the same thread, in one iteration), and the copy at the end
        of the call disappears."""
        if not self.is_state(old):
            return None
        if self._state_outputs is None:
            self._state_outputs = {v: n[len(STATE_PREFIX):] for n, v in
                                   zip(self.graph.output_names, self.graph.outputs, strict=True)
                                   if n.startswith(STATE_PREFIX)}
            self._position = {id(n): i for i, n in enumerate(self.graph.nodes)}
        if self._state_outputs.get(out) != old.name:
            return None
        here = self._position[id(node)]
        if any(old in n.inputs for n in self.graph.nodes[here + 1:]):
            return None
        return self.tensor(old, node.layer)

    def is_state(self, v: Value) -> bool:
        return v.kind is ValueKind.PARAM and v.name in self.state

    def _write_state(self, name: str, v: Value) -> None:
        """Copy the new value of state parameter ``name`` over its old one in the blob (after every other call)."""
        p = next((p for p in self.graph.params if p.name == name), None)
        if p is None or name not in self.state:
            raise CnnccError(f"graph '{self.graph.name}': output '{STATE_PREFIX}{name}' updates no state parameter "
                             f"(state: {sorted(self.state)})")
        if v.shape != p.shape or v.dtype != p.dtype:
            raise CnnccError(f"graph '{self.graph.name}': the new value of '{name}' has type {v.type}, the parameter "
                             f"{p.type}")
        dst = self.tensor(p)
        src = self.tensor(v)
        if src.buffer is dst.buffer:
            return
        if src.batched:
            raise CnnccError(f"internal: the new value of state '{name}' is placed per image")
        self.relayout(self.plain(v, f"state.{name}"), dst, f"state.{name}")


def lower(graph: Graph, params: Mapping[str, np.ndarray], target: Target) -> Program:
    return Lowering(graph, params, target).run()


__all__ = ["STATE_PREFIX", "Addr", "LOWERINGS", "Lowering", "Unsupported", "lower", "lowering"]
