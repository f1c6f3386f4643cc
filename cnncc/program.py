"""The program level of the IR: below the graph, buffers are explicit and work is an ordered list of kernel calls.

A backend lowers a graph to a :class:`Program`; memory planning gives every arena buffer a byte offset; the code
generator turns each call into a kernel function. Sizes are for the compiled (maximum) batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# A graph output named "state:<p>" is the new value of training-state parameter p: the program writes it over p in
# the weights blob at the end of a call (the training step's parameters and optimiser slots).
STATE_PREFIX = "state:"


class Space(enum.Enum):
    """Where a buffer lives at run time."""

    ARENA = "arena"  # one aligned block per call, planned by liveness
    WEIGHTS = "weights"  # the bound weights blob (packed at compile time)
    INPUT = "input"  # a caller's input array
    OUTPUT = "output"  # a caller's output array


@dataclass(eq=False)
class Buffer:
    """A region of memory; ``offset`` (bytes) is set by planning (arena) or packing (weights)."""

    name: str
    nbytes: int
    space: Space
    index: int = 0
    offset: int = -1

    def __repr__(self) -> str:
        where = f"+{self.offset}" if self.offset >= 0 else f"#{self.index}"
        return f"Buffer({self.name}: {self.nbytes} B {self.space.value}{where})"


@dataclass(frozen=True, eq=False)
class KernelCall:
    """One kernel invocation: the template's name, its parameters (geometry and schedule), and its buffers."""

    kernel: str
    params: Any
    reads: tuple[Buffer, ...]
    writes: tuple[Buffer, ...]
    layer: str
    parallel: bool = True
    macs: int = 0


@dataclass
class Program:
    name: str
    batch: int
    calls: list[KernelCall] = field(default_factory=list)
    inputs: list[Buffer] = field(default_factory=list)
    outputs: list[Buffer] = field(default_factory=list)
    batched_outputs: list[bool] = field(default_factory=list)  # per output: one per image (else one for the call)
    weights: bytes = b""
    arena_bytes: int = 0
    # layer -> the convolution algorithm its lowering emitted ("direct", "depthwise", "im2col", "winograd4", ...):
    # what actually ran, which the compiled model reports and every algorithm test asserts
    algorithms: dict[str, str] = field(default_factory=dict)
    label_ranges: dict[str, int] = field(default_factory=dict)  # int64 class-label input -> number of classes
    state: dict[str, Buffer] = field(default_factory=dict)  # training-state parameter -> its buffer in the blob
    placed: dict[Any, Any] = field(default_factory=dict)  # graph value -> its placement (the backend's: buffer, layout)
    vector_width: int = 1  # the channel block of the backend's blocked layouts

    def arena_buffers(self) -> list[Buffer]:
        seen: dict[int, Buffer] = {}
        for c in self.calls:
            for buf in (*c.reads, *c.writes):
                if buf.space is Space.ARENA:
                    seen.setdefault(id(buf), buf)
        return list(seen.values())

    def live_ranges(self) -> dict[Buffer, tuple[int, int]]:
        """First and last call index touching each arena buffer."""
        ranges: dict[Buffer, tuple[int, int]] = {}
        for i, c in enumerate(self.calls):
            for buf in (*c.reads, *c.writes):
                if buf.space is Space.ARENA:
                    lo, _ = ranges.get(buf, (i, i))
                    ranges[buf] = (lo, i)
        return ranges
