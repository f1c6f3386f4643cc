"""Targets: what a backend provides the compiler driver, and the table of known targets.

A target is an object (the LLVM CPU target is :class:`cnncc.codegen.target.Target`, the TVM CUDA target
:class:`cnncc.codegen.cuda.target.CudaTarget`) that the
driver asks for everything backend-specific; the driver owns the order of the pipeline. The table maps a target's
name to the function that makes it, as a string: the core never imports a backend, the driver resolves it lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from cnncc.errors import CnnccError
from cnncc.executable import CompileStats, Executable
from cnncc.ir import Graph
from cnncc.program import Program


class Target(Protocol):
    """The interface of a backend, as the driver uses it."""

    kind: str  # "cpu", "cuda": cnncc.compile(target=...) and the algorithm registry's key
    precisions: tuple[str, ...]  # arithmetic the target's kernels can run ("fp32", later "bf16", "int8")

    @property
    def key(self) -> str:
        """Stable text naming the machine code this target generates (cache and tuning keys)."""

    @property
    def vector_width(self) -> int:
        """float32 lanes of the target's vectors (its channel block)."""

    @property
    def lowerings(self) -> Mapping[str, Any]:
        """op -> lowering (graph node -> kernel calls)."""

    @property
    def kernels(self) -> Mapping[str, Any]:
        """kernel template -> code emitter."""

    def lower(self, graph: Graph, params: Mapping[str, np.ndarray], state: Collection[str] = ()) -> Program:
        """The graph as a program of kernel calls over explicit buffers."""

    def chooser(self, max_error: float, algorithms: str | Sequence[str] | Mapping[str, str] | None, db: Any,
                threads: int = 1, runtime_weights: bool = False) -> Any:
        """The convolution chooser of the select-algorithms pass (the target's cost model); ``algorithms``: the
        candidate names, or a mapping layer -> algorithm."""

    def build(self, graph: Graph, program: Program, threads: int, stats: CompileStats) -> Executable:
        """Native code for a planned program, as an executable for the runtime."""


# target name -> "module:function(machine: str) -> Target"
TARGETS: dict[str, str] = {
    "cpu": "cnncc.codegen.target:cpu_target",
    "cuda": "cnncc.codegen.cuda.target:cuda_target",
}


def make_target(name: str, machine: str = "host") -> Target:
    """The target called ``name``; ``machine`` names what it compiles for: the LLVM CPU name for ``"cpu"``
    (``"host"``: this machine), the GPU architecture for ``"cuda"`` (``"sm_90"``; ``"host"``: the default)."""
    if name not in TARGETS:
        raise CnnccError(f"unknown target '{name}': cnncc compiles for {', '.join(repr(t) for t in TARGETS)}")
    module, _, function = TARGETS[name].partition(":")
    target: Target = getattr(importlib.import_module(module), function)(machine)
    return target
