"""Run a built CUDA program on the CPU: every call's TE compute (the same one the CUDA kernel was scheduled from),
built for TVM's LLVM CPU target, over a host copy of the two device regions at the launch plan's offsets.

This checks everything but the schedules -- the lowering (weight packing, epilogues, aliases), the memory plan (two
live buffers sharing bytes would corrupt the result) and the arena layout of the launch plan -- on a machine without
a GPU. The schedules' CUDA C is checked separately, on the CPU by :mod:`cnncc.testing.cuda_on_cpu` and on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cnncc.codegen.cuda.families import KernelSpec, get_family
from cnncc.launch_plan import CudaCode
from cnncc.program import Buffer, Program, Space

_BUILT: dict[KernelSpec, tuple[Any, list[tuple[int, ...]]]] = {}


def _kernel(spec: KernelSpec) -> tuple[Any, list[tuple[int, ...]]]:
    """The LLVM build of ``spec``'s compute and its arguments' shapes (cached per spec)."""
    if spec not in _BUILT:
        import tvm
        from tvm import te

        args = get_family(spec.family).compute(spec)
        shapes = [tuple(int(d) for d in a.shape) for a in args]
        _BUILT[spec] = (tvm.compile(te.create_prim_func(args), target="llvm"), shapes)
    return _BUILT[spec]


def emulate(code: CudaCode, program: Program, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The outputs of one forward pass at the compiled batch (``inputs`` in the graph's order)."""
    import tvm

    arena = np.zeros(code.arena_bytes, np.uint8)
    weights = np.frombuffer(code.weights, np.uint8).copy()
    for slot, x in zip(code.inputs, inputs, strict=True):
        data = np.ascontiguousarray(x, np.float32).view(np.uint8).reshape(-1)
        arena[slot.offset:slot.offset + data.size] = data

    def region(buf: Buffer) -> np.ndarray:
        return weights if buf.space is Space.WEIGHTS else arena

    for call in program.calls:
        func, shapes = _kernel(call.params)
        buffers = (*call.reads, *call.writes)
        tensors = []
        for buf, shape in zip(buffers, shapes, strict=True):
            count = int(np.prod(shape))
            view = region(buf)[buf.offset:buf.offset + 4 * count].view(np.float32).reshape(shape)
            tensors.append(tvm.runtime.tensor(np.ascontiguousarray(view)))
        func(*tensors)
        for buf, tensor in zip(call.writes, tensors[len(call.reads):], strict=True):
            data = tensor.numpy().view(np.uint8).reshape(-1)
            region(buf)[buf.offset:buf.offset + data.size] = data
    return [arena[s.offset:s.offset + s.nbytes].view(np.float32).copy() for s in code.outputs]
