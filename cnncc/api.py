"""The public entry points: ``cnncc.compile``, and ``optimize``/``conv_selection`` for tools. All of them are the
compiler driver's (:mod:`cnncc.driver`), which owns the pipeline; this module only names them for users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnncc.driver import conv_selection, optimize


def compile(model: Any, target: str = "cpu", threads: int | None = None, batch: int = 1,  # noqa: A001
            cpu: str = "host", params: Mapping[str, np.ndarray] | None = None, optimize_graph: bool = True,
            passes: Any = None, algorithms: str | Sequence[str] | Mapping[str, str] | None = None,
            max_error: float | None = None, tuning_db: Any = None, cuda_arch: str = "sm_90") -> Any:
    """Compile a DSL model (or a graph with its ``params``) to native code.

    ``target="cpu"`` uses the LLVM backend for ``cpu`` (``"host"``, or an LLVM CPU name such as ``"x86-64-v3"``);
    ``target="cuda"`` the TVM CUDA backend for the GPU architecture ``cuda_arch`` (kernels built with nvcc at
    compile time, so no GPU is needed to compile; running needs one).
    ``batch`` is the largest batch a call may pass; ``threads`` the default thread count (all cores if None).
    The graph first goes through the CPU inference pipeline (identity removal, constant folding, batch-norm folding,
    epilogue fusion, ...) unless ``optimize_graph=False``; ``passes`` replaces that pipeline.

    Convolution algorithms: each conv layer gets the fastest of ``algorithms`` (default: all of direct, im2col,
    winograd2/4/6, fft8/16 that apply) whose measured error stays within ``max_error`` (default
    ``cnncc.convalgo.DEFAULT_MAX_ERROR``), by the cost model or by times ``cnncc tune`` stored in the tuning
    database (``tuning_db``: a path or :class:`cnncc.tuning.TuningDB`; default ``$CNNCC_TUNING_DB`` or
    ``~/.cache/cnncc/tuning.json``). ``algorithms="direct"`` compiles every convolution directly (depthwise layers
    with the depthwise kernel: the baseline). A mapping layer -> algorithm forces those layers (the others are
    chosen); forcing one that does not apply raises :class:`cnncc.errors.AlgorithmError`, e.g. ``layer 'conv1':
    winograd4 does not apply: kernel 7x7: Winograd F(m, 3x3) needs a 3x3 kernel``. The result's ``choices`` say
    what was chosen and why, its ``layer_algorithms`` which kernel ran. With ``optimize_graph=False`` no algorithm
    is selected (the baseline, or an ``impl`` set in the graph) unless ``algorithms`` is given.
    """
    from cnncc.driver import compile_model

    return compile_model(model, target, threads, batch, cpu, params, optimize_graph, passes, algorithms, max_error,
                         tuning_db, cuda_arch)


__all__ = ["compile", "conv_selection", "optimize"]
