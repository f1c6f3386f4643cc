"""How DSL calls become graphs.

Calling a layer on symbolic tensors records a node of a small frontend DAG *and* emits it at once into a probe graph
at batch 1, so a wrong network fails on the line that wrote it, with the layer's name. ``Model.graph(batch)`` later
re-emits the same DAG into a fresh :class:`GraphBuilder` for any batch size. Parameters live in the tracer's store
and are created on first emission by the layer's seeded initialiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from cnncc.errors import GraphError, WeightsError
from cnncc.frontend.init import InitFn, fans, get_initializer, rng_for
from cnncc.ir import DType, GraphBuilder, Layout, Value

if TYPE_CHECKING:
    from cnncc.frontend.layers import Layer


@dataclass(frozen=True)
class InputSpec:
    """A graph input: per-sample shape (no batch axis), dtype and layout as the user gives the data."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    layout: Layout


class Tracer:
    """Owns one model's parameter store, its layer names and its probe emission."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.store: dict[str, np.ndarray] = {}
        self.trainable: dict[str, bool] = {}
        self.param_layer: dict[str, str] = {}
        self.tensors: list[SymbolicTensor] = []
        self._names: dict[str, object] = {}
        self._counts: dict[str, int] = {}
        self.probe = Emission(self, batch=1, training=False, name="probe")

    def name_layer(self, layer: Layer) -> str:
        """Give ``layer`` its name (the user's, or ``<kind>_<n>``), checking that names are unique."""
        if layer.name is None:
            while True:
                self._counts[layer.kind] = self._counts.get(layer.kind, 0) + 1
                candidate = f"{layer.kind}_{self._counts[layer.kind]}"
                if candidate not in self._names:
                    break
            layer.name = candidate
        owner = self._names.setdefault(layer.name, layer)
        if owner is not layer:
            raise GraphError(f"layer name '{layer.name}' is used by two different layers")
        return layer.name

    def add(self, t: SymbolicTensor) -> SymbolicTensor:
        self.tensors.append(t)
        t.index = len(self.tensors) - 1
        self.probe.value(t)
        return t

    def create_param(self, name: str, shape: tuple[int, ...], init: InitFn, groups: int, trainable: bool,
                     layer: str) -> None:
        if name in self.store:
            if self.store[name].shape != shape:
                raise WeightsError(f"layer '{layer}': parameter '{name}' exists with shape {self.store[name].shape}, "
                                   f"but this use needs {shape}")
            return
        fan_in, fan_out = fans(shape, groups)
        value = np.ascontiguousarray(init(shape, fan_in, fan_out, rng_for(self.seed, name)), dtype=np.float32)
        if value.shape != shape:
            raise WeightsError(f"layer '{layer}': initialiser for '{name}' returned shape {value.shape}, not {shape}")
        self.store[name] = value
        self.trainable[name] = trainable
        self.param_layer[name] = layer


@dataclass(eq=False)
class SymbolicTensor:
    """A value of the frontend DAG: an input, or output ``index`` of a layer applied to other tensors."""

    tracer: Tracer
    layer: Layer | None
    inputs: tuple[SymbolicTensor, ...] = ()
    spec: InputSpec | None = None
    index: int = -1

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape at batch 1 (from the probe graph)."""
        return self.tracer.probe.value(self).shape

    def __repr__(self) -> str:
        src = self.spec.name if self.spec else (self.layer.name if self.layer else "?")
        return f"SymbolicTensor({src}: {self.tracer.probe.value(self).type})"


@dataclass(eq=False)
class Emission:
    """One emission of a tracer's DAG into a graph builder at a given batch size and mode."""

    tracer: Tracer
    batch: int
    training: bool
    name: str
    dtype: DType = DType.FLOAT32
    builder: GraphBuilder = field(init=False)
    values: dict[int, Value] = field(default_factory=dict)
    params: dict[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.builder = GraphBuilder(self.name)

    def value(self, t: SymbolicTensor) -> Value:
        key = id(t)
        if key not in self.values:
            self.values[key] = self._emit(t)
        return self.values[key]

    def _emit(self, t: SymbolicTensor) -> Value:
        if t.spec is not None:
            return self._emit_input(t.spec)
        if t.layer is None:
            raise GraphError("internal: a symbolic tensor has neither an input spec nor a layer")
        ins = [self.value(i) for i in t.inputs]
        return t.layer.emit(LayerContext(self, t.layer), ins)

    def _emit_input(self, spec: InputSpec) -> Value:
        shape = (self.batch, *spec.shape)
        v = self.builder.input(spec.name, shape, spec.dtype, spec.layout if len(shape) == 4 else Layout.PLAIN)
        if spec.layout is Layout.NHWC:
            from cnncc.ops.transpose import TransposeAttrs

            v = self.builder.apply("transpose", [v], TransposeAttrs(perm=(0, 3, 1, 2)), layer=f"{spec.name}.to_nchw")
        return v


@dataclass(eq=False)
class LayerContext:
    """What a layer sees while it emits: the builder, the mode, and parameter creation under its name."""

    emission: Emission
    layer: Layer

    @property
    def training(self) -> bool:
        return self.emission.training

    def apply(self, op: str, inputs: Sequence[Value], attrs: object = None, suffix: str = "") -> Value:
        name = self.layer.name or "?"
        return self.emission.builder.apply(op, inputs, attrs, layer=f"{name}{suffix}")

    def param(self, local: str, shape: Sequence[int], init: str | InitFn, *, groups: int = 1,
              trainable: bool = True) -> Value:
        layer = self.layer.name or "?"
        full = f"{layer}.{local}"
        shape = tuple(int(d) for d in shape)
        em = self.emission
        em.tracer.create_param(full, shape, get_initializer(init, layer), groups, trainable, layer)
        if full not in em.params:
            em.params[full] = em.builder.param(full, shape, DType.FLOAT32, trainable=trainable)
        return em.params[full]
