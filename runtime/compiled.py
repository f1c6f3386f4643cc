"""A compiled model in this process: the JIT-compiled module, its bound weights, one aligned arena, and the input
checks that run before any native code.

Inputs must be C-contiguous arrays of the graph's dtype (float32; int64 for class labels), with the compiled shape
except for the batch axis, which may be anything from 1 to the compiled batch. NaN and Inf in inputs propagate
through the arithmetic as IEEE 754 says (as in the reference interpreter) unless ``check_finite=True``.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncc.errors import InputError
from cnncc.executable import CompileStats, Executable, TensorSpec

ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int64, ctypes.c_int32)
PROFILED_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p)


@dataclass(frozen=True)
class KernelTiming:
    """One kernel call of a profiled run: its layer, template, work and best time over the repeats."""

    layer: str
    kernel: str
    macs: int
    seconds: float


def aligned_bytes(nbytes: int, align: int = 64) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` whose data pointer is ``align``-byte aligned."""
    raw = np.zeros(nbytes + align, np.uint8)
    shift = (-raw.ctypes.data) % align
    return raw[shift:shift + nbytes]


def check_feeds(model: str, specs: Sequence[TensorSpec], feeds: Mapping[str, Any], max_batch: int,
                label_ranges: Mapping[str, int], check_finite: bool) -> int:
    """Check named inputs against ``specs`` before any native code runs; returns the batch. Shared by the in-process
    compiled model and the bundle loader, so both refuse the same inputs with the same messages."""
    names = [s.name for s in specs]
    extra = sorted(set(feeds) - set(names))
    if extra:
        raise InputError(f"model '{model}': unknown input(s) {extra}; inputs are {names}")
    batch = None
    for v in specs:
        if v.name not in feeds:
            raise InputError(f"model '{model}': input '{v.name}' is missing")
        a = feeds[v.name]
        if not isinstance(a, np.ndarray):
            raise InputError(f"input '{v.name}': expected a numpy array, got {type(a).__name__}")
        want = v.dtype
        if a.dtype != want:
            raise InputError(f"input '{v.name}' has dtype {a.dtype}; the compiled model takes {want} "
                             f"(convert with x.astype(np.{want}))")
        if not v.shape:  # a scalar (a learning rate) has no batch axis
            if a.shape != ():
                raise InputError(f"input '{v.name}' has shape {a.shape}; the compiled model takes a scalar, "
                                 "shape ()")
        elif a.ndim != len(v.shape) or a.shape[1:] != v.shape[1:] or not 1 <= a.shape[0] <= max_batch:
            raise InputError(f"input '{v.name}' has shape {a.shape}; the compiled model takes "
                             f"(batch, {', '.join(map(str, v.shape[1:]))}) with 1 <= batch <= {max_batch}")
        if not a.flags.c_contiguous:
            raise InputError(f"input '{v.name}' is not C-contiguous; pass np.ascontiguousarray(x)")
        if v.shape and batch is not None and a.shape[0] != batch:
            raise InputError(f"inputs disagree on the batch size: {batch} and {a.shape[0]} ('{v.name}')")
        batch = a.shape[0] if v.shape else batch
        if v.name in label_ranges and a.size:
            lo, hi, classes = int(a.min()), int(a.max()), label_ranges[v.name]
            if lo < 0 or hi >= classes:
                raise InputError(f"input '{v.name}': class labels must lie in [0, {classes}), got values "
                                 f"from {lo} to {hi}")
        if check_finite and v.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"input '{v.name}' holds {int(a.size - np.isfinite(a).sum())} NaN/Inf values")
    return int(batch or 1)


class CompiledModel:
    """Call it like the model: ``y = compiled(x)``; outputs are fresh numpy arrays."""

    def __init__(self, executable: Executable) -> None:
        ex = self.executable = executable
        self.graph, self.program, self.module, self.target = ex.graph, ex.program, ex.native, ex.target
        self.threads = ex.threads
        self.stats: CompileStats = ex.stats
        self.max_batch = ex.max_batch
        self.label_ranges = dict(ex.program.label_ranges)  # int64 class-label input -> number of classes
        self.layer_algorithms = dict(ex.program.algorithms)  # layer -> the convolution algorithm that runs
        self._entry = ENTRY_TYPE(ex.entry)
        self._profiled = PROFILED_TYPE(ex.profiled_entry)
        self._weights = aligned_bytes(len(ex.program.weights))
        self._weights[:] = np.frombuffer(ex.program.weights, np.uint8)
        self._arena = aligned_bytes(max(ex.program.arena_bytes, 64))
        self._lock = threading.Lock()
        self.pass_log: list[str] = []
        self.output_names = ex.output_names
        self.state_buffers = ex.state_buffers()  # training state: name -> (buffer, shape)
        self.choices: dict[str, Any] = {}  # layer -> algorithm choice (set by the driver)

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @functools.cached_property
    def input_specs(self) -> list[TensorSpec]:
        return self.executable.input_specs()

    @functools.cached_property
    def output_specs(self) -> list[TensorSpec]:
        """The outputs a call returns (training state outputs are written in place, not returned)."""
        return self.executable.output_specs()

    def _check(self, feeds: Mapping[str, Any], check_finite: bool) -> int:
        return check_feeds(self.graph.name, self.input_specs, feeds, self.max_batch, self.label_ranges, check_finite)

    def run(self, feeds: Mapping[str, np.ndarray], threads: int | None = None, check_finite: bool = False,
            _times: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Run on named inputs; returns the outputs by name."""
        batch = self._check(feeds, check_finite)
        # A per-image output has the call's batch; others (a loss, a gradient) their own shape.
        outs = {s.name: np.empty((batch, *s.shape[1:]) if s.batched else s.shape, s.dtype) for s in self.output_specs}
        in_ptrs = (ctypes.c_void_p * max(len(feeds), 1))(*[feeds[n].ctypes.data for n in self.input_names])
        out_ptrs = (ctypes.c_void_p * max(len(outs), 1))(*[a.ctypes.data for a in outs.values()])
        nthreads = self.threads if threads is None else threads
        if not isinstance(nthreads, int) or isinstance(nthreads, bool) or nthreads < 1:
            raise InputError(f"threads must be a positive integer, got {nthreads!r}")
        self.executable.prepare_threads(nthreads)
        with self._lock:  # one arena: calls on one compiled model run one at a time
            args = (in_ptrs, out_ptrs, self._arena.ctypes.data, self._weights.ctypes.data, batch, nthreads)
            if _times is None:
                status = self._entry(*args)
            else:
                status = self._profiled(*args, _times.ctypes.data)
        if status != 0:
            raise InputError(f"model '{self.graph.name}': native code returned error {status}")
        return outs

    def state_shape(self, name: str) -> tuple[int, ...]:
        if name not in self.state_buffers:
            raise InputError(f"model '{self.graph.name}' has no training state '{name}'")
        return self.state_buffers[name][1]

    def state_array(self, name: str) -> np.ndarray:
        """A copy of training-state parameter ``name`` as it is now in the weights blob."""
        buf, shape = self.state_buffers[name] if name in self.state_buffers else (None, ())
        if buf is None:
            raise InputError(f"model '{self.graph.name}' has no training state '{name}'")
        data = self._weights[buf.offset:buf.offset + buf.nbytes].view(np.float32)
        return data[:int(np.prod(shape))].reshape(shape).copy()

    def set_state(self, name: str, value: np.ndarray) -> None:
        """Overwrite training-state parameter ``name`` (same shape)."""
        shape = self.state_shape(name)
        buf = self.state_buffers[name][0]
        a = np.asarray(value, np.float32)
        if a.shape != shape:
            raise InputError(f"state '{name}' has shape {shape}, got {a.shape}")
        self._weights[buf.offset:buf.offset + a.nbytes] = np.frombuffer(a.tobytes(), np.uint8)

    def profile(self, x: np.ndarray | Mapping[str, np.ndarray], repeats: int = 10,
                threads: int | None = None) -> list[KernelTiming]:
        """Time every kernel call (best of ``repeats`` runs), for per-layer tables."""
        feeds = dict(x) if isinstance(x, Mapping) else {self.input_names[0]: x}
        batch = self._check(feeds, False)
        times = np.zeros(len(self.program.calls), np.int64)
        best = np.full(len(self.program.calls), np.iinfo(np.int64).max)
        for _ in range(repeats + 1):
            self.run(feeds, threads, _times=times)
            best = np.minimum(best, times)
        # MACs were counted at the compiled batch; work scales with the batch actually run.
        return [KernelTiming(c.layer, c.kernel, c.macs * batch // self.max_batch, float(t) * 1e-9)
                for c, t in zip(self.program.calls, best, strict=True)]

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray], threads: int | None = None,
                 check_finite: bool = False) -> Any:
        feeds = dict(x) if isinstance(x, Mapping) else {self.input_names[0]: x}
        outs = self.run(feeds, threads, check_finite)
        return outs["output"] if len(outs) == 1 and "output" in outs else outs

    def __repr__(self) -> str:
        return (f"<CompiledModel '{self.graph.name}' for {self.executable.description}, batch <= {self.max_batch}, "
                f"{self.threads} threads, arena {self.program.arena_bytes:,} B>")


def runtime_model(executable: Executable) -> Any:
    """The runtime object for a built executable: :class:`CompiledModel` for native CPU code, the CUDA runtime's
    model for a CUDA executable (it opens the device on its first call, so compiling needs no GPU)."""
    if getattr(executable.target, "kind", "cpu") == "cuda":
        from cnncc.runtime.cuda import CudaModel

        return CudaModel(executable)
    return CompiledModel(executable)


__all__ = ["CompileStats", "CompiledModel", "KernelTiming", "TensorSpec", "aligned_bytes", "check_feeds",
           "runtime_model"]
