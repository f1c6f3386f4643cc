"""Models: the functional builder (``Input`` ... ``Model``) and Keras-like ``Sequential``.

A model is a traced DAG of layers plus a parameter store. ``model.graph(batch)`` emits the typed IR for any batch
size; ``model(x)`` runs it with the reference interpreter; weights save to and load from ``.npz`` and PyTorch state
dicts, checked by name and shape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cnncc.errors import GraphError, InputError
from cnncc.frontend.layers import Layer
from cnncc.frontend.trace import Emission, InputSpec, SymbolicTensor, Tracer
from cnncc.frontend.weights import check_against, from_state_dict, load_npz, save_npz
from cnncc.ir import DType, Graph, Layout


def Input(shape: Sequence[int], name: str = "input", layout: str | Layout = "NCHW", dtype: str = "float32",
          seed: int = 0, share: SymbolicTensor | None = None) -> SymbolicTensor:
    """A model input of per-sample ``shape`` (no batch axis), e.g. ``(3, 224, 224)`` NCHW or ``(28, 28, 1)`` NHWC.

    NHWC inputs (Keras ``channels_last``) are transposed to NCHW at the graph edge. ``seed`` seeds every parameter
    initialiser of the model; ``share`` adds a second input to an existing model's trace.
    """
    lay = Layout(layout) if isinstance(layout, str) else layout
    dims = tuple(int(d) for d in shape)
    if any(d <= 0 for d in dims):
        raise GraphError(f"input '{name}': every dimension must be positive, got shape {dims}")
    if lay is not Layout.NCHW and len(dims) != 3:
        raise GraphError(f"input '{name}': layout {lay.value} needs a 3-D per-sample shape, got {dims}")
    tracer = share.tracer if share is not None else Tracer(seed)
    spec = InputSpec(name, dims, DType.of(dtype), lay if len(dims) == 3 else Layout.PLAIN)
    return tracer.add(SymbolicTensor(tracer, None, spec=spec))


class Model:
    """A network from input tensors to output tensors (the functional style, for branches and residuals)."""

    def __init__(self, inputs: SymbolicTensor | Sequence[SymbolicTensor],
                 outputs: SymbolicTensor | Sequence[SymbolicTensor], name: str = "model") -> None:
        self.name = name
        self.inputs = [inputs] if isinstance(inputs, SymbolicTensor) else list(inputs)
        self.outputs = [outputs] if isinstance(outputs, SymbolicTensor) else list(outputs)
        if not self.inputs or not self.outputs:
            raise GraphError(f"model '{name}' needs at least one input and one output")
        self.tracer = self.inputs[0].tracer
        if any(t.tracer is not self.tracer for t in (*self.inputs, *self.outputs)):
            raise GraphError(f"model '{name}': inputs and outputs come from different traces")
        self._cache: dict[tuple[int, bool, str], Graph] = {}

    # -- graphs ---------------------------------------------------------------------------------------------
    def graph(self, batch: int = 1, training: bool = False, dtype: str = "float32") -> Graph:
        """The typed IR of this model at ``batch`` (inference unless ``training``)."""
        if not isinstance(batch, int) or batch <= 0:
            raise InputError(f"model '{self.name}': batch must be a positive integer, got {batch!r}")
        key = (batch, training, dtype)
        if key not in self._cache:
            em = Emission(self.tracer, batch, training, self.name, DType.of(dtype))
            for t in self.inputs:
                em.value(t)
            values = [em.value(t) for t in self.outputs]
            for i, v in enumerate(values):
                em.builder.output(v, "output" if len(values) == 1 else f"output{i}")
            self._cache[key] = em.builder.build()
        return self._cache[key]

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The model's parameters by name, in graph order (float32 arrays, shared with the model)."""
        return {p.name: self.tracer.store[p.name] for p in self.graph().params}

    def layers(self) -> list[Layer]:
        seen: dict[int, Layer] = {}
        for t in self.tracer.tensors:
            if t.layer is not None:
                seen.setdefault(id(t.layer), t.layer)
        return list(seen.values())

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.type.size for p in self.graph().params if p.trainable or not trainable_only)

    def macs(self, batch: int = 1) -> int:
        from cnncc.ops import get_op

        g = self.graph(batch)
        return sum(get_op(n.op).macs([v.type for v in n.inputs], [o.type for o in n.outputs], n.attrs)
                   for n in g.nodes)

    def summary(self, batch: int = 1, print_it: bool = True) -> str:
        """A table of layers, output shapes, parameters and MACs (like the seeds' architecture tables)."""
        from cnncc.frontend.summary import render_summary

        text = render_summary(self, batch)
        if print_it:
            print(text)
        return text

    # -- running ----------------------------------------------------------------------------------------------
    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray], dtype: str = "float32") -> Any:
        """Run the model with the reference interpreter; the batch is taken from the input."""
        from cnncc.runtime import interpret

        feeds = dict(x) if isinstance(x, Mapping) else {self.inputs[0].spec.name: x}  # type: ignore[union-attr]
        first = np.asarray(next(iter(feeds.values())))
        if first.ndim == 0:
            raise InputError(f"model '{self.name}': inputs need a batch axis, got a scalar")
        outs = interpret(self.graph(int(first.shape[0])), feeds, self.params, dtype=dtype)
        return outs["output"] if len(outs) == 1 else outs

    # -- weights ----------------------------------------------------------------------------------------------
    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: p.shape for p in self.graph().params}

    def set_weights(self, arrays: Mapping[str, np.ndarray], source: str = "weights") -> None:
        """Replace every parameter; all names and shapes are checked before anything changes."""
        check_against(self.expected_shapes(), arrays, source, self.name)
        for k in self.expected_shapes():
            self.tracer.store[k] = np.array(arrays[k], dtype=np.float32, order="C", copy=True)

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        save_npz(path, self.params)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        self.set_weights(load_npz(path), f"weights file '{path}'")

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        mapping: Mapping[str, str] | Callable[[str], str | None] | None = None) -> None:
        """Load PyTorch (or any name -> array) weights; see :func:`cnncc.frontend.weights.from_state_dict`."""
        self.set_weights(from_state_dict(state_dict, mapping), "state dict")

    def __repr__(self) -> str:
        return f"<cnncc Model '{self.name}': {len(self.layers())} layers, {self.num_params():,} parameters>"


class Sequential(Model):
    """Keras-like ``Sequential([...], input_shape=...)``; ``add(layer)`` appends and checks shapes at once."""

    def __init__(self, layers: Sequence[Layer] = (), input_shape: Sequence[int] | None = None,
                 layout: str = "NCHW", name: str = "sequential", seed: int = 0, input_name: str = "input") -> None:
        if input_shape is None:
            raise GraphError(f"Sequential '{name}': give input_shape, the per-sample shape such as (1, 28, 28)")
        x = Input(input_shape, name=input_name, layout=layout, seed=seed)
        self._last = x
        super().__init__(x, x, name)
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise GraphError(f"Sequential '{self.name}': add() takes a layer, got {type(layer).__name__}")
        self._last = layer(self._last)
        self.outputs = [self._last]
        self._cache.clear()
        return self
