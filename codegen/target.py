"""The LLVM CPU target: the CPU a module is compiled for (LLVM CPU name, feature string, and the vector width that
follows from them) and what this backend provides the compiler driver -- its lowering table, kernel emitters,
convolution chooser (cost model), build step and capabilities (:class:`cnncc.targets.Target` is the protocol).

The vector width is the channel block of cnncc's blocked layouts (NCHW16c with AVX-512, NCHW8c with AVX2): the same
code generator serves both, so code compiled for ``x86-64-v3`` runs on any AVX2 machine.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.executable import CompileStats, Executable
from cnncc.ir import Graph
from cnncc.program import Program

# x86-64 micro-architecture levels: the features each one requires (what a bundle checks on the host).
LEVEL_FEATURES: dict[str, tuple[str, ...]] = {
    "x86-64": ("sse2",),
    "x86-64-v2": ("sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"),
    "x86-64-v3": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe"),
    "x86-64-v4": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe", "avx512f",
                  "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}


@dataclass(frozen=True)
class Target:
    """``cpu`` as LLVM names it; ``features`` an LLVM feature string ("+avx2,+fma,..."), empty for the CPU's own."""

    cpu: str
    features: str = ""
    kind = "cpu"  # the target's name (compile's target="cpu") and its key in the algorithm registry
    precisions = ("fp32",)

    @staticmethod
    def host() -> Target:
        from cnncc.codegen.jit import initialize, llvm

        initialize()
        return Target(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())

    @staticmethod
    def named(cpu: str) -> Target:
        """A target by LLVM CPU name (``x86-64-v3``, ``znver4``, ``skylake-avx512``) or ``"host"``."""
        if cpu in ("host", "native", ""):
            return Target.host()
        if cpu in LEVEL_FEATURES:
            return Target(cpu, ",".join(f"+{f}" for f in LEVEL_FEATURES[cpu]))
        host = Target.host()
        if cpu == host.cpu:
            return host
        raise CnnccError(f"unknown target CPU '{cpu}': use 'host' or one of {', '.join(LEVEL_FEATURES)} "
                         f"(this host is '{host.cpu}')")

    def enabled(self) -> set[str]:
        return {f[1:] for f in self.features.split(",") if f.startswith("+")}

    @property
    def vector_width(self) -> int:
        """float32 lanes per vector register: 16 with AVX-512F, 8 with AVX, else 4."""
        feats = self.enabled()
        if "avx512f" in feats:
            return 16
        if "avx" in feats:
            return 8
        return 4

    @property
    def key(self) -> str:
        return f"{self.cpu}:{self.features}"

    def machine(self):  # noqa: ANN201 - llvmlite TargetMachine
        """A new TargetMachine: an MCJIT engine takes ownership of (and frees) the one it is given."""
        return _machine(self.cpu, self.features)

    # -- what the backend provides the driver --------------------------------------------------------------------
    @property
    def lowerings(self) -> Mapping[str, Any]:
        """op -> its lowering to kernel calls (``codegen/kernels/``)."""
        import cnncc.codegen.kernels  # noqa: F401  (registers the lowerings and emitters)
        from cnncc.codegen.lower import LOWERINGS

        return LOWERINGS

    @property
    def kernels(self) -> Mapping[str, Any]:
        """kernel template -> its LLVM IR emitter."""
        import cnncc.codegen.kernels  # noqa: F401
        from cnncc.codegen.module import KERNELS

        return KERNELS

    def lower(self, graph: Graph, params: Mapping[str, np.ndarray], state: Collection[str] = ()) -> Program:
        """The graph as a program of kernel calls over explicit buffers (arena offsets not yet planned)."""
        from cnncc.codegen.lower import Lowering

        return Lowering(graph, params, self, state).run()

    def chooser(self, max_error: float, algorithms: str | Sequence[str] | Mapping[str, str] | None, db: Any,
                threads: int = 1, runtime_weights: bool = False) -> Any:
        """The convolution chooser (cost model, measured errors, tuned times) of the select-algorithms pass."""
        from cnncc.codegen.select import CpuConvChooser

        return CpuConvChooser(self, max_error, algorithms, db, threads, runtime_weights=runtime_weights)

    def build(self, graph: Graph, program: Program, threads: int, stats: CompileStats) -> Executable:
        """One LLVM module for the planned ``program``, JIT-compiled (or reused: modules are cached in-process by
        graph hash, target and every kernel's parameters and buffers), as an executable for the runtime."""
        from cnncc.codegen.jit import jit
        from cnncc.codegen.module import ENTRY, PROFILED_ENTRY, build_module
        from cnncc.codegen.threads import pin_workers

        t0 = time.perf_counter()
        key = (graph.hash(), self.key, program_signature(program))
        stats.cached = key in _MODULES
        if not stats.cached:
            _MODULES[key] = jit(build_module(program, self), self.machine())
        stats.llvm_s = time.perf_counter() - t0
        native = _MODULES[key]
        return Executable(graph, program, self, native, native.address(ENTRY), native.address(PROFILED_ENTRY),
                          threads, stats, pin_workers, f"{self.cpu} ({self.vector_width}-lane vectors)")


_MODULES: dict[tuple[str, str, str], Any] = {}


def program_signature(program: Program) -> str:
    """What the generated code depends on besides the graph: every kernel's template, geometry and schedule, and
    the buffer placement the entry point bakes in (so a re-tuned schedule never reuses a stale module)."""
    from cnncc.codegen.module import call_buffers, kernel_key

    parts = [repr(kernel_key(c)) + repr([(b.space.value, b.offset, b.index) for b in call_buffers(c)])
             for c in program.calls]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _machine(cpu: str, features: str):  # noqa: ANN202
    from cnncc.codegen.jit import initialize, llvm

    initialize()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default",
                                        jit=False)


def cpu_target(cpu: str = "host") -> Target:
    """The LLVM CPU target for ``cpu`` (the entry of ``cnncc.targets.TARGETS``)."""
    return Target.named(cpu)
