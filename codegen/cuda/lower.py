"""Graph -> program for the CUDA target: every value in plain row-major layout (NCHW for images), weights packed at
compile time for the kernel that reads them, one kernel call per layer (two for a split linear layer, three for
Winograd). Reshapes, flattens and inference dropout are aliases (no kernel); a graph output is written by its
producer straight into the output slot.

The CUDA target compiles inference graphs with compile-time weights; anything else is refused with the layer, the
op and the rule (:class:`CudaUnsupported`), never lowered approximately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from cnncc.codegen.cuda.families import KernelSpec, get_family
from cnncc.codegen.cuda.kernels.eltwise import unary
from cnncc.codegen.cuda.kernels.linear import linear_slices
from cnncc.convalgo import resolve
from cnncc.errors import CnnccError
from cnncc.ir import Graph, Node, Value, ValueKind
from cnncc.ops.epilogue import EpilogueStep
from cnncc.program import Buffer, KernelCall, Program, Space

TARGET = "cuda"
ALIGN = 256  # device allocations and every weight/arena buffer start on 256 bytes (coalesced, vector loads)

LowerFn = Callable[["CudaLowering", Node], None]
LOWERINGS: dict[str, LowerFn] = {}


class CudaUnsupported(CnnccError):
    """A graph uses an op, attribute or value kind the CUDA backend does not compile."""


def lowering(*ops: str) -> Callable[[LowerFn], LowerFn]:
    def deco(fn: LowerFn) -> LowerFn:
        for op in ops:
            LOWERINGS[op] = fn
        return fn

    return deco


class CudaLowering:
    """State of one lowering: each value's buffer, the weights blob, the calls."""

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray], target: Any, state: Collection[str] = ()):
        if state:
            raise CudaUnsupported(f"graph '{graph.name}': the CUDA target compiles inference only (training state "
                                  f"{sorted(state)[:3]}...); train with target='cpu'")
        self.graph, self.params, self.target = graph, params, target
        self.batch = next((v.shape[0] for v in graph.inputs if v.shape), 1)
        self.program = Program(graph.name, self.batch)
        self.buffers: dict[Value, Buffer] = {}
        self._blob: list[bytes] = []
        self._size = 0
        self._count = 0
        self._outputs = {v: i for i, v in enumerate(graph.outputs)}

    # -- buffers --------------------------------------------------------------------------------------------------
    def weights(self, array: np.ndarray, name: str) -> Buffer:
        data = np.ascontiguousarray(array, dtype=np.float32)
        pad = (-self._size) % ALIGN
        self._blob.append(b"\0" * pad)
        self._size += pad
        buf = Buffer(name, data.nbytes, Space.WEIGHTS, offset=self._size)
        self._blob.append(data.tobytes())
        self._size += data.nbytes
        return buf

    def param(self, v: Value, layer: str) -> np.ndarray:
        if v.kind is not ValueKind.PARAM:
            raise CudaUnsupported(f"layer '{layer}': the CUDA target needs this operand to be a parameter (weights "
                                  f"are packed at compile time), got the computed value {v!r}")
        return np.asarray(self.params[v.name], dtype=np.float64)

    def get(self, v: Value, layer: str) -> Buffer:
        """The buffer of an input, a computed value, or a parameter used as a tensor (packed as it is)."""
        if v not in self.buffers:
            if v.kind is not ValueKind.PARAM:
                raise CnnccError(f"internal: layer '{layer}': value {v!r} has no buffer")
            self.buffers[v] = self.weights(self.param(v, layer), f"param.{v.name}")
        return self.buffers[v]

    def out(self, v: Value) -> Buffer:
        """A new buffer for computed value ``v``: its output slot if it is a graph output, else the arena."""
        if v.dtype.numpy != np.float32:
            raise CudaUnsupported(f"value '{v.name}' has dtype {v.dtype}: the CUDA target computes float32 only")
        if v in self._outputs:
            i = self._outputs[v]
            buf = Buffer(self.graph.output_names[i], v.type.nbytes, Space.OUTPUT, index=i)
        else:
            self._count += 1
            buf = Buffer(f"{v.name}#{self._count}", v.type.nbytes, Space.ARENA)
        self.buffers[v] = buf
        return buf

    def scratch(self, nbytes: int, name: str) -> Buffer:
        self._count += 1
        return Buffer(f"{name}#{self._count}", nbytes, Space.ARENA)

    def call(self, spec: KernelSpec, reads: tuple[Buffer, ...], writes: tuple[Buffer, ...], layer: str) -> None:
        flops = get_family(spec.family).flops(spec)
        self.program.calls.append(KernelCall(spec.family, spec, reads, writes, layer, True, flops // 2))

    def alias(self, node: Node) -> None:
        """``node``'s output is its input's memory (a reshape); a graph output gets a copy into its slot."""
        src, v = node.inputs[0], node.outputs[0]
        if v in self._outputs:
            self.call(unary(v.shape), (self.get(src, node.layer),), (self.out(v),), node.layer)
        else:
            self.buffers[v] = self.get(src, node.layer)

    # -- driver ---------------------------------------------------------------------------------------------------
    def run(self) -> Program:
        import cnncc.codegen.cuda.algorithms  # noqa: F401  (registers the conv algorithms and their lowerings)

        for i, v in enumerate(self.graph.inputs):
            if v.dtype.numpy != np.float32:
                raise CudaUnsupported(f"input '{v.name}' has dtype {v.dtype}: the CUDA target takes float32 inputs")
            buf = Buffer(v.name, v.type.nbytes, Space.INPUT, index=i)
            self.program.inputs.append(buf)
            self.buffers[v] = buf
        for node in self.graph.nodes:
            fn = LOWERINGS.get(node.op)
            if fn is None:
                raise CudaUnsupported(f"layer '{node.layer}': op '{node.op}' has no CUDA lowering (CUDA compiles "
                                      f"{', '.join(sorted(LOWERINGS))})")
            fn(self, node)
        for i, (name, v) in enumerate(zip(self.graph.output_names, self.graph.outputs, strict=True)):
            buf = self.buffers[v]
            if buf.space is not Space.OUTPUT or buf.index != i:  # an input, a parameter or another output
                dst = Buffer(name, v.type.nbytes, Space.OUTPUT, index=i)
                self.call(unary(v.shape), (buf,), (dst,), f"output.{name}")
                buf = dst
            self.program.outputs.append(buf)
            self.program.batched_outputs.append(bool(v.shape))
        self.program.weights = b"".join(self._blob)
        self.program.vector_width = 1
        return self.program


# -- convolutions: the algorithm the IR names ---------------------------------------------------------------------


@lowering("conv2d", "fused_conv2d")
def lower_conv(lw: CudaLowering, node: Node) -> None:
    rec = resolve(node, TARGET, runtime_weights=False)
    if node.inputs[1].kind is not ValueKind.PARAM:
        raise CudaUnsupported(f"layer '{node.layer}': convolution weights must be parameters on the CUDA target")
    lw.program.algorithms[node.layer] = rec.name
    rec.hooks.lower(lw, node)


def conv_operands(lw: CudaLowering, node: Node) -> tuple[np.ndarray, np.ndarray, tuple[EpilogueStep, ...],
                                                         list[Buffer]]:
    """Weights (K, Cg, R, S), bias (K,) -- zeros when the layer has none --, epilogue steps and residual buffers."""
    w = lw.param(node.inputs[1], node.layer)
    k = w.shape[0]
    has_bias = node.op == "fused_conv2d" or len(node.inputs) > 2
    bias = lw.param(node.inputs[2], node.layer) if has_bias else np.zeros(k)
    steps = tuple(node.attrs.epilogue) if node.op == "fused_conv2d" else ()
    residuals = [lw.get(v, node.layer) for v in node.inputs[3:]]
    return w, bias, steps, residuals


# -- pooling -------------------------------------------------------------------------------------------------------


@lowering("max_pool2d")
def lower_max_pool(lw: CudaLowering, node: Node) -> None:
    a = node.attrs
    n, c, h, w = node.inputs[0].shape
    oh, ow = node.outputs[0].shape[2:]
    geo = (n, c, h, w, *a.kernel, *a.stride, a.padding[0], a.padding[2], *a.dilation, oh, ow)
    lw.call(KernelSpec("max_pool", geo), (lw.get(node.inputs[0], node.layer),), (lw.out(node.outputs[0]),),
            node.layer)


@lowering("avg_pool2d")
def lower_avg_pool(lw: CudaLowering, node: Node) -> None:
    a = node.attrs
    n, c, h, w = node.inputs[0].shape
    oh, ow = node.outputs[0].shape[2:]
    geo = (n, c, h, w, *a.kernel, *a.stride, *a.padding, bool(a.count_include_pad), oh, ow)
    lw.call(KernelSpec("avg_pool", geo), (lw.get(node.inputs[0], node.layer),), (lw.out(node.outputs[0]),),
            node.layer)


@lowering("global_avg_pool")
def lower_global_avg_pool(lw: CudaLowering, node: Node) -> None:
    lw.call(KernelSpec("global_avg_pool", tuple(node.inputs[0].shape)), (lw.get(node.inputs[0], node.layer),),
            (lw.out(node.outputs[0]),), node.layer)


# -- linear layers and heads ---------------------------------------------------------------------------------------


@lowering("linear", "fused_linear")
def lower_linear(lw: CudaLowering, node: Node) -> None:
    x, layer = node.inputs[0], node.layer
    if len(x.shape) != 2:
        raise CudaUnsupported(f"layer '{layer}': linear on a rank-{len(x.shape)} input; the CUDA target takes (batch, "
                              "features) (flatten first)")
    w = lw.param(node.inputs[1], layer)
    o, i = w.shape
    n = x.shape[0]
    bias = lw.param(node.inputs[2], layer) if len(node.inputs) > 2 else np.zeros(o)
    steps = tuple(node.attrs.epilogue) if node.op == "fused_linear" else ()
    s = linear_slices(i, o)
    part = lw.scratch(4 * s * n * o, f"{layer}.partial")
    lw.call(KernelSpec("linear_partial", (n, i, o, s)), (lw.get(x, layer), lw.weights(w.T, f"{layer}.weight")),
            (part,), layer)
    residuals = tuple(lw.get(v, layer) for v in node.inputs[3:])
    lw.call(KernelSpec("linear_reduce", (n, o, s), steps), (part, lw.weights(bias, f"{layer}.bias"), *residuals),
            (lw.out(node.outputs[0]),), layer)


@lowering("softmax", "log_softmax")
def lower_softmax(lw: CudaLowering, node: Node) -> None:
    x = node.inputs[0]
    if len(x.shape) != 2 or node.attrs.axis not in (1, -1):
        raise CudaUnsupported(f"layer '{node.layer}': {node.op} over axis {node.attrs.axis} of a rank-{len(x.shape)} "
                              "tensor; the CUDA target computes it over the last axis of (batch, classes)")
    spec = KernelSpec("softmax", (*x.shape, int(node.op == "log_softmax")))
    lw.call(spec, (lw.get(x, node.layer),), (lw.out(node.outputs[0]),), node.layer)


# -- element-wise and data movement --------------------------------------------------------------------------------

ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "hardtanh")


@lowering(*ACTIVATIONS)
def lower_activation(lw: CudaLowering, node: Node) -> None:
    v = node.outputs[0]
    lw.call(unary(v.shape, (EpilogueStep(node.op, node.attrs),)), (lw.get(node.inputs[0], node.layer),),
            (lw.out(v),), node.layer)


@lowering("add", "multiply")
def lower_binary(lw: CudaLowering, node: Node) -> None:
    a, b = node.inputs
    spec = KernelSpec("map", ("binary", node.op, tuple(node.outputs[0].shape), tuple(a.shape), tuple(b.shape)))
    lw.call(spec, (lw.get(a, node.layer), lw.get(b, node.layer)), (lw.out(node.outputs[0]),), node.layer)


@lowering("batch_norm")
def lower_batch_norm(lw: CudaLowering, node: Node) -> None:
    if node.attrs.training:
        raise CudaUnsupported(f"layer '{node.layer}': batch_norm in training mode; the CUDA target compiles "
                              "inference (running statistics)")
    x, gamma, beta, mean, var = node.inputs
    g, bt, m, vr = (lw.param(p, node.layer) for p in (gamma, beta, mean, var))
    scale = g / np.sqrt(vr + node.attrs.eps)
    spec = KernelSpec("map", ("channel", "affine", tuple(x.shape), 0))
    lw.call(spec, (lw.get(x, node.layer), lw.weights(scale, f"{node.layer}.scale"),
                   lw.weights(bt - m * scale, f"{node.layer}.shift")), (lw.out(node.outputs[0]),), node.layer)


@lowering("prelu")
def lower_prelu(lw: CudaLowering, node: Node) -> None:
    x, alpha = node.inputs
    spec = KernelSpec("map", ("channel", "prelu", tuple(x.shape), math.prod(alpha.shape)))
    lw.call(spec, (lw.get(x, node.layer), lw.get(alpha, node.layer)), (lw.out(node.outputs[0]),), node.layer)


@lowering("flatten", "reshape")
def lower_reshape(lw: CudaLowering, node: Node) -> None:
    lw.alias(node)


@lowering("dropout")
def lower_dropout(lw: CudaLowering, node: Node) -> None:
    if node.attrs.training and node.attrs.p > 0:
        raise CudaUnsupported(f"layer '{node.layer}': dropout in training mode; the CUDA target compiles inference")
    lw.alias(node)


@lowering("concat")
def lower_concat(lw: CudaLowering, node: Node) -> None:
    out = node.outputs[0]
    axis = node.attrs.axis % len(out.shape)
    spec = KernelSpec("map", ("concat", axis, tuple(out.shape), tuple(tuple(v.shape) for v in node.inputs)))
    lw.call(spec, tuple(lw.get(v, node.layer) for v in node.inputs), (lw.out(out),), node.layer)


@lowering("slice")
def lower_slice(lw: CudaLowering, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    axis = node.attrs.axis % len(x.shape)
    spec = KernelSpec("map", ("slice", axis, node.attrs.start, tuple(x.shape), tuple(out.shape)))
    lw.call(spec, (lw.get(x, node.layer),), (lw.out(out),), node.layer)


@lowering("transpose")
def lower_transpose(lw: CudaLowering, node: Node) -> None:
    x = node.inputs[0]
    spec = KernelSpec("map", ("transpose", tuple(node.attrs.perm), tuple(x.shape)))
    lw.call(spec, (lw.get(x, node.layer),), (lw.out(node.outputs[0]),), node.layer)
