"""The TVM CUDA target: what this backend provides the compiler driver (:class:`cnncc.targets.Target` is the
protocol) -- its lowering table, kernel families, convolution chooser (the GPU cost model), build step (TVM + nvcc)
and capabilities. ``arch`` is the GPU architecture the fat binary's cubin is compiled for (``sm_90``: H100/H200);
its PTX also runs on newer GPUs through the driver's JIT.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.executable import CompileStats, Executable
from cnncc.ir import Graph
from cnncc.program import Program

DEFAULT_ARCH = "sm_90"


@dataclass(frozen=True)
class CudaTarget:
    arch: str = DEFAULT_ARCH
    kind = "cuda"
    precisions = ("fp32",)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"sm_\d{2,3}a?", self.arch) or int(re.sub(r"\D", "", self.arch)) < 70:
            raise CnnccError(f"CUDA architecture '{self.arch}': expected sm_70 or newer, like 'sm_80' or 'sm_90'")

    @property
    def key(self) -> str:
        return f"cuda:{self.arch}"

    @property
    def vector_width(self) -> int:
        return 1  # plain NCHW: no channel blocking on the GPU

    @property
    def lowerings(self) -> Mapping[str, Any]:
        import cnncc.codegen.cuda.algorithms  # noqa: F401  (registers the conv records)
        from cnncc.codegen.cuda.lower import LOWERINGS

        return LOWERINGS

    @property
    def kernels(self) -> Mapping[str, Any]:
        from cnncc.codegen.cuda.families import FAMILIES, get_family

        get_family("conv")  # registers the families
        return FAMILIES

    def lower(self, graph: Graph, params: Mapping[str, np.ndarray], state: Collection[str] = ()) -> Program:
        from cnncc.codegen.cuda.lower import CudaLowering

        return CudaLowering(graph, params, self, state).run()

    def chooser(self, max_error: float, algorithms: str | Sequence[str] | Mapping[str, str] | None, db: Any,
                threads: int = 1, runtime_weights: bool = False) -> Any:
        from cnncc.codegen.cuda.algorithms import CudaConvChooser

        if runtime_weights:
            raise CnnccError("the CUDA target compiles inference only: weights that change at run time (training) "
                             "need target='cpu'")
        return CudaConvChooser(self, max_error, algorithms, db, threads)

    def build(self, graph: Graph, program: Program, threads: int, stats: CompileStats) -> Executable:
        from cnncc.codegen.cuda.build import build_code

        t0 = time.perf_counter()
        code = build_code(program, self.arch)
        stats.llvm_s = time.perf_counter() - t0
        stats.extra["kernels"] = float(len(code.kernels))
        stats.extra["launches"] = float(len(code.launches))
        return Executable(graph, program, self, code, 0, 0, 1, stats, _no_threads,
                          f"CUDA {self.arch} ({len(code.kernels)} kernels, {len(code.launches)} launches)")


def _no_threads(n: int) -> None:
    """GPU kernels need no host thread set-up."""


def cuda_target(arch: str = DEFAULT_ARCH) -> CudaTarget:
    """The CUDA target for ``arch`` (the entry of ``cnncc.targets.TARGETS``; ``"host"`` means the default)."""
    return CudaTarget(DEFAULT_ARCH if arch in ("host", "", None) else arch)
