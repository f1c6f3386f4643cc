"""LLVM set-up, optimisation and in-process JIT: the one place (with its siblings in codegen/) that touches llvmlite.

LLVM 22 through llvmlite 0.50: ``initialize_native_target``/``asmprinter`` (``initialize()`` raises), the new pass
manager at O3, MCJIT. Two process-wide LLVM settings are made once, both measured (PERFORMANCE.md): the machine
scheduler is disabled (``-enable-misched=false``) because on znver4/5 it hoists every broadcast of a convolution's
register tile to the top of the loop body and spills; libgomp is loaded so compiled code can call ``GOMP_parallel``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm

from cnncc.errors import CnnccError


@functools.lru_cache(maxsize=1)
def initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.set_option("", "-enable-misched=false")
    path = ctypes.util.find_library("gomp") or "libgomp.so.1"
    try:
        llvm.load_library_permanently(path)
    except RuntimeError as e:
        raise CnnccError(f"cannot load the OpenMP runtime '{path}' (libgomp, from gcc): {e}") from e


@dataclass
class CompiledModule:
    """An optimised module held by an MCJIT engine; ``address(name)`` gives a function's entry point."""

    engine: llvm.ExecutionEngine
    module: llvm.ModuleRef
    seconds: dict[str, float] = field(default_factory=dict)

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CnnccError(f"compiled module has no function '{name}'")
        return addr


def optimize(ir_text: str, target_machine: llvm.TargetMachine) -> llvm.ModuleRef:
    """Parse and verify ``ir_text`` and run the O3 pipeline for ``target_machine``."""
    initialize()
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as e:
        raise CnnccError(f"internal error: generated LLVM IR is invalid: {e}") from e
    mod.triple = target_machine.triple
    mod.data_layout = str(target_machine.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    # Kernels are vectorised and unrolled by their templates; LLVM's own unrolling of the kh/kw loops makes it merge
    # broadcasts and spill (PERFORMANCE.md), and its vectorisers only grow the scalar edge loops. Off: smaller code,
    # faster compiles, same kernels.
    pto.loop_unrolling = False
    pto.loop_vectorization = False
    pto.slp_vectorization = False
    pb = llvm.create_pass_builder(target_machine, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def jit(ir_text: str, target_machine: llvm.TargetMachine) -> CompiledModule:
    t0 = time.perf_counter()
    mod = optimize(ir_text, target_machine)
    t1 = time.perf_counter()
    engine = llvm.create_mcjit_compiler(mod, target_machine)
    engine.finalize_object()
    t2 = time.perf_counter()
    return CompiledModule(engine, mod, {"optimize": t1 - t0, "codegen": t2 - t1})


def object_code(ir_text: str, target_machine: llvm.TargetMachine) -> bytes:
    """The same module as a relocatable object file (for shared-library bundles)."""
    return target_machine.emit_object(optimize(ir_text, target_machine))


def assembly(ir_text: str, target_machine: llvm.TargetMachine) -> str:
    return target_machine.emit_assembly(optimize(ir_text, target_machine))
