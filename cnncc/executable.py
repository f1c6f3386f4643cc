"""What a target's build step hands the runtime: an :class:`Executable` (native entry points, the program it was
built from, the weights blob, the arena size), and the tensor specs both the runtime and the bundle writer read.

This is the contract between the compiler (the driver and a backend) and the runtime, so it lives in the core: the
runtime receives an executable and never imports a backend; a backend builds one and never imports the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncc.ir import Graph
from cnncc.program import STATE_PREFIX, Buffer, Program


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype and shape (the first axis is the batch, at its compiled maximum,
    unless the tensor is a scalar or ``batched`` is False)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    batched: bool = True


@dataclass
class CompileStats:
    """Where compile time and memory went: lowering and planning, native code generation, the arena plan."""

    lower_s: float = 0.0
    llvm_s: float = 0.0
    cached: bool = False
    arena_bytes: int = 0
    lower_bound: int = 0
    naive_bytes: int = 0
    weights_bytes: int = 0
    inplace_merges: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Executable:
    """A built model. ``entry``/``profiled_entry`` are the addresses of the C-ABI functions

        int32_t forward(void **inputs, void **outputs, void *arena, const void *weights, int64_t batch,
                        int32_t nthreads [, int64_t *nanoseconds_per_call]);

    ``native`` keeps the code alive (the target's handle: for the LLVM CPU target, the JIT-compiled module, from
    which the bundle writer also emits the object file); ``prepare_threads(n)`` is the target's set-up before a call
    on ``n`` threads (pinning worker threads); ``description`` names the target for messages."""

    graph: Graph
    program: Program
    target: Any
    native: Any
    entry: int
    profiled_entry: int
    threads: int
    stats: CompileStats
    prepare_threads: Callable[[int], None]
    description: str

    @property
    def max_batch(self) -> int:
        return self.program.batch

    @property
    def output_names(self) -> list[str]:
        """The outputs a call returns (training state outputs are written in place, not returned)."""
        return [n for n in self.graph.output_names if not n.startswith(STATE_PREFIX)]

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(v.name, v.dtype.numpy, tuple(v.shape), bool(v.shape)) for v in self.graph.inputs]

    def output_specs(self) -> list[TensorSpec]:
        values = dict(zip(self.graph.output_names, self.graph.outputs, strict=True))
        return [TensorSpec(n, values[n].dtype.numpy, tuple(values[n].shape), bool(batched and values[n].shape))
                for n, batched in zip(self.output_names, self.program.batched_outputs, strict=True)]

    def state_buffers(self) -> dict[str, tuple[Buffer, tuple[int, ...]]]:
        """Training state: parameter name -> (its buffer in the weights blob, its shape)."""
        return {name: (buf, tuple(self.graph.param(name).shape)) for name, buf in self.program.state.items()}
