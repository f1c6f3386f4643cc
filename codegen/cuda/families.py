"""Kernel families of the CUDA backend: a :class:`KernelSpec` names one kernel (family, geometry, fused epilogue,
schedule parameters); its family turns it into a TE compute (``te.create_prim_func``) and schedules it with its own
``s_tir.Schedule``. One spec, one CUDA kernel.

Every kernel takes its buffers as pointer arguments named ``a0, a1, ...`` in the order of the program's call (reads,
then writes). The family records the extents it binds to ``blockIdx``/``threadIdx`` (:class:`Launch` dims) while it
schedules, so the launch plan never has to parse TVM's host code.

TVM is imported lazily (only when a kernel is built), as everywhere in the CUDA backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cnncc.errors import CnnccError
from cnncc.ops.epilogue import EpilogueStep


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: ``family`` (a key of :data:`FAMILIES`), ``geometry`` (the family's shape tuple), the fused
    ``epilogue`` (activations; ``add`` reads the next residual operand) and the ``schedule`` (the family's tile
    sizes, as named pairs)."""

    family: str
    geometry: tuple[Any, ...]
    epilogue: tuple[EpilogueStep, ...] = ()
    schedule: tuple[tuple[str, int], ...] = ()

    def tile(self, name: str, default: int = 0) -> int:
        return dict(self.schedule).get(name, default)

    def __str__(self) -> str:
        sched = ",".join(f"{k}={v}" for k, v in self.schedule)
        epi = "+".join(str(s) for s in self.epilogue)
        return f"{self.family}{list(self.geometry)}" + (f"[{sched}]" if sched else "") + (f"+{epi}" if epi else "")


@dataclass
class Dims:
    """The launch extents a schedule binds, filled while it schedules."""

    grid: list[int] = field(default_factory=lambda: [1, 1, 1])
    block: list[int] = field(default_factory=lambda: [1, 1, 1])

    def bind(self, sch: Any, loop: Any, tag: str) -> None:
        """``sch.bind(loop, tag)`` and remember the extent (threads bound twice, for cooperative loads, must agree)."""
        extent = int(sch.get(loop).extent)
        sch.bind(loop, tag)
        if tag.startswith("vthread"):
            return
        kind, axis = tag.split(".")
        dims = self.grid if kind == "blockIdx" else self.block
        i = "xyz".index(axis)
        if dims[i] not in (1, extent):
            raise CnnccError(f"internal: {tag} bound to extents {dims[i]} and {extent}")
        dims[i] = extent


Compute = Callable[[KernelSpec], list[Any]]  # spec -> TE tensors: the arguments a0.. in call order
Schedule = Callable[[Any, KernelSpec, Dims], None]  # (s_tir.Schedule, spec, dims) -> None


@dataclass(frozen=True)
class Family:
    """A kernel family: its TE compute and its schedule, and the work a spec does (floating-point operations)."""

    name: str
    compute: Compute
    schedule: Schedule
    flops: Callable[[KernelSpec], int] = field(default=lambda spec: 0)
    doc: str = ""


FAMILIES: dict[str, Family] = {}


def family(f: Family) -> Family:
    if f.name in FAMILIES and FAMILIES[f.name] != f:
        raise CnnccError(f"internal: CUDA kernel family '{f.name}' registered twice")
    FAMILIES[f.name] = f
    return f


def get_family(name: str) -> Family:
    import cnncc.codegen.cuda.kernels  # noqa: F401  (registers the families)

    if name not in FAMILIES:
        raise CnnccError(f"internal: no CUDA kernel family '{name}' (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]


def prim_func(spec: KernelSpec) -> tuple[Any, Dims]:
    """The scheduled PrimFunc of ``spec`` and its launch extents."""
    from tvm import s_tir, te

    fam = get_family(spec.family)
    args = fam.compute(spec)
    sch = s_tir.Schedule(te.create_prim_func(args))
    dims = Dims()
    fam.schedule(sch, spec, dims)
    return sch.mod["main"], dims


def unscheduled(spec: KernelSpec) -> Any:
    """The TE compute of ``spec`` as an unscheduled PrimFunc (what the tests build for TVM's LLVM CPU target)."""
    from tvm import te

    return te.create_prim_func(get_family(spec.family).compute(spec))


# -- shared helpers for computes and schedules ----------------------------------------------------------------------


def placeholders(shapes: Sequence[Sequence[int]], first: int = 0) -> list[Any]:
    """float32 inputs named a<first>, a<first+1>, ..."""
    from tvm import te

    return [te.placeholder(tuple(s), "float32", name=f"a{first + i}") for i, s in enumerate(shapes)]


def f32(value: float) -> Any:
    from tvm import tirx

    return tirx.const(float(value), "float32")


def activation(step: EpilogueStep, v: Any) -> Any:
    """The TE expression of activation ``step`` applied to ``v`` (the formulas of the ops' numpy references)."""
    from tvm import tirx

    op, a = step.op, step.attrs
    if op == "relu":
        return tirx.max(v, f32(0))
    if op == "relu6":
        return tirx.min(tirx.max(v, f32(0)), f32(6))
    if op == "hardtanh":
        return tirx.min(tirx.max(v, f32(a.min_val)), f32(a.max_val))
    if op == "leaky_relu":
        return tirx.if_then_else(v >= f32(0), v, v * f32(a.negative_slope))
    if op == "elu":
        return tirx.if_then_else(v > f32(0), v, f32(a.alpha) * (tirx.exp(tirx.min(v, f32(0))) - f32(1)))
    if op == "sigmoid":  # the stable form of the reference: exp of a non-positive number only
        e = tirx.exp(f32(0) - tirx.abs(v))
        return tirx.if_then_else(v >= f32(0), f32(1) / (f32(1) + e), e / (f32(1) + e))
    if op == "tanh":
        return tirx.tanh(v)
    if op == "softplus":
        bv = v * f32(a.beta)
        smooth = (tirx.max(bv, f32(0)) + tirx.log1p(tirx.exp(f32(0) - tirx.abs(bv)))) / f32(a.beta)
        return tirx.if_then_else(bv > f32(a.threshold), v, smooth)
    raise CnnccError(f"internal: activation '{op}' has no CUDA expression")


def reader(tensor: Any, *index: Any) -> Callable[[], Any]:
    """A thunk reading ``tensor[index]`` (a residual operand for :func:`apply_epilogue`)."""
    return lambda: tensor[index]


def apply_epilogue(v: Any, steps: Sequence[EpilogueStep], residuals: Sequence[Callable[[], Any]]) -> Any:
    """``v`` through ``steps``; ``add`` adds the next residual (a thunk giving the value at the same index)."""
    k = 0
    for s in steps:
        if s.op == "add":
            v = v + residuals[k]()
            k += 1
        else:
            v = activation(s, v)
    return v


def flat_threads(sch: Any, block: Any, dims: Dims, threads: int = 256) -> Any:
    """The simplest schedule: every loop of ``block`` fused, one output per thread, ``threads`` per block; returns
    the thread loop."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = int(sch.get(fused).extent)
    tx = min(threads, extent)
    bx, tx_loop = sch.split(fused, [None, tx])
    dims.bind(sch, bx, "blockIdx.x")
    dims.bind(sch, tx_loop, "threadIdx.x")
    return tx_loop


def reduce_per_thread(sch: Any, dims: Dims, threads: int = 256, unroll: int = 0) -> None:
    """One output of block ``y`` per thread, its reduction ``acc`` in a register under the thread loop (the last
    ``unroll`` reduction loops unrolled): pooling, depthwise convolution, the sums of split linear layers."""
    acc = sch.get_sblock("acc")
    tx = flat_threads(sch, sch.get_sblock("y"), dims, threads)
    sch.compute_at(acc, tx)
    sch.set_scope(acc, 0, "local")
    if unroll:
        for loop in sch.get_loops(acc)[-unroll:]:
            sch.unroll(loop)
