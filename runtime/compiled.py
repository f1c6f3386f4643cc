"""A compiled model in this process: the JIT-compiled module, its bound weights, one aligned arena, and the input
checks that run before any native code.

Inputs must be C-contiguous arrays of the graph's dtype (float32; int64 for class labels), with the compiled shape
except for the batch axis, which may be anything from 1 to the compiled batch. NaN and Inf in inputs propagate
through the arithmetic as IEEE 754 says (as in the reference interpreter) unless ``check_finite=True``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncc.codegen.threads import pin_workers
from cnncc.errors import InputError
from cnncc.ir import Graph

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


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, numpy dtype and shape (the first axis is the batch, at its compiled maximum,
    unless the tensor is a scalar or ``batched`` is False)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    batched: bool = True


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


@dataclass
class CompileStats:
    lower_s: float = 0.0
    llvm_s: float = 0.0
    cached: bool = False
    arena_bytes: int = 0
    lower_bound: int = 0
    naive_bytes: int = 0
    weights_bytes: int = 0
    inplace_merges: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class CompiledModel:
    """Call it like the model: ``y = compiled(x)``; outputs are fresh numpy arrays."""

    def __init__(self, graph: Graph, program: Any, module: Any, target: Any, threads: int,
                 label_ranges: Mapping[str, int], stats: CompileStats) -> None:
        self.graph, self.program, self.module, self.target = graph, program, module, target
        self.threads = threads
        self.stats = stats
        self.max_batch = program.batch
        self.label_ranges = dict(label_ranges)  # int64 class-label input -> number of classes
        self._entry = ENTRY_TYPE(module.address("cnncc_forward"))
        self._profiled = PROFILED_TYPE(module.address("cnncc_forward_profiled"))
        self._weights = aligned_bytes(len(program.weights))
        self._weights[:] = np.frombuffer(program.weights, np.uint8)
        self._arena = aligned_bytes(max(program.arena_bytes, 64))
        self._lock = threading.Lock()
        self.pass_log: list[str] = []
        self.output_names = [n for n in graph.output_names if not n.startswith("state:")]
        self.state_buffers: dict[str, tuple[Any, tuple[int, ...]]] = {}  # training state: name -> (buffer, shape)
        self.choices: dict[str, Any] = {}  # layer -> algorithm choice (set by cnncc.compile)

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @functools.cached_property
    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(v.name, v.dtype.numpy, tuple(v.shape), bool(v.shape)) for v in self.graph.inputs]

    @functools.cached_property
    def output_specs(self) -> list[TensorSpec]:
        """The outputs a call returns (training state outputs are written in place, not returned)."""
        values = dict(zip(self.graph.output_names, self.graph.outputs, strict=True))
        return [TensorSpec(n, values[n].dtype.numpy, tuple(values[n].shape), bool(batched and values[n].shape))
                for n, batched in zip(self.output_names, self.program.batched_outputs, strict=True)]

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
        pin_workers(nthreads)
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
        return (f"<CompiledModel '{self.graph.name}' for {self.target.cpu} ({self.target.vector_width}-lane vectors),"
                f" batch <= {self.max_batch}, {self.threads} threads, arena {self.program.arena_bytes:,} B>")


_CACHE: dict[tuple[str, str, str], Any] = {}


def program_signature(program: Any) -> str:
    """What the generated code depends on besides the graph: every kernel's template, geometry and schedule, and
    the buffer placement the entry point bakes in (so a re-tuned schedule never reuses a stale module)."""
    import hashlib

    from cnncc.codegen.module import call_buffers, kernel_key

    parts = [repr(kernel_key(c)) + repr([(b.space.value, b.offset, b.index) for b in call_buffers(c)])
             for c in program.calls]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def compile_graph(graph: Graph, params: Mapping[str, np.ndarray], target: str = "host",
                  threads: int | None = None, state: Sequence[str] = ()) -> CompiledModel:
    """Lower, plan, generate and JIT-compile ``graph``; modules are cached by (graph hash, target).

    ``state``: parameters the program updates in place (training): they stay in the weights blob, are read at run
    time, and each graph output ``state:<name>`` is written over them at the end of a call."""
    from cnncc.codegen.jit import jit
    from cnncc.codegen.lower import Lowering
    from cnncc.codegen.module import build_module
    from cnncc.codegen.target import Target
    from cnncc.passes.memory_plan import plan_arena
    from cnncc.runtime.interpreter import check_params

    check_params(graph, params)
    tgt = Target.named(target)
    t0 = time.perf_counter()
    lw = Lowering(graph, params, tgt, state)
    program = lw.run()
    report = plan_arena(program)
    t1 = time.perf_counter()
    key = (graph.hash(), tgt.key, program_signature(program))
    cached = key in _CACHE
    if not cached:
        _CACHE[key] = jit(build_module(program, tgt), tgt.machine())
    t2 = time.perf_counter()
    stats = CompileStats(t1 - t0, t2 - t1, cached, report.arena_bytes, report.lower_bound, report.naive_bytes,
                         len(program.weights), report.inplace_merges)
    nthreads = threads if threads is not None else (os.cpu_count() or 1)
    model = CompiledModel(graph, program, _CACHE[key], tgt, nthreads, lw.label_ranges, stats)
    model.state_buffers = {name: (buf, tuple(graph.param(name).shape)) for name, buf in lw.state_buffers.items()}
    return model
