"""The reference interpreter: runs any graph with each op's numpy reference, in float32 or float64.

It is the oracle every backend is tested against, so it stays slow and obvious: nodes in order, one numpy call each.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cnncc.errors import InputError, WeightsError
from cnncc.ir import DType, Graph, Value
from cnncc.ops import get_op


def _cast(a: np.ndarray, want: DType, float_dtype: np.dtype) -> np.ndarray:
    return np.asarray(a, dtype=float_dtype if want.is_float else want.numpy)


def check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> None:
    """Names and shapes of run-time inputs against the graph, with clear errors."""
    names = {v.name for v in graph.inputs}
    extra = sorted(set(inputs) - names)
    if extra:
        raise InputError(f"graph '{graph.name}': unknown input(s) {extra}; inputs are {sorted(names)}")
    for v in graph.inputs:
        if v.name not in inputs:
            raise InputError(f"graph '{graph.name}': input '{v.name}' ({v.type}) is missing")
        a = np.asarray(inputs[v.name])
        if a.shape != v.shape:
            raise InputError(f"graph '{graph.name}': input '{v.name}' has shape {a.shape}, expected {v.shape}")
        if v.dtype.is_float and not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"graph '{graph.name}': input '{v.name}' has dtype {a.dtype}, expected a float array")
        if not v.dtype.is_float and not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"graph '{graph.name}': input '{v.name}' has dtype {a.dtype}, expected integer class "
                             "labels (int64)")


def check_params(graph: Graph, params: Mapping[str, np.ndarray]) -> None:
    missing = [p.name for p in graph.params if p.name not in params]
    if missing:
        raise WeightsError(f"graph '{graph.name}': no weights bound for parameter(s) {missing}")
    for p in graph.params:
        shape = np.shape(params[p.name])
        if tuple(shape) != p.shape:
            raise WeightsError(f"graph '{graph.name}': parameter '{p.name}' has shape {tuple(shape)}, "
                               f"expected {p.shape}")


def interpret(graph: Graph, inputs: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray] | None = None,
              dtype: str | np.dtype = "float32") -> dict[str, np.ndarray]:
    """Run ``graph``; every float input, weight and intermediate is computed in ``dtype`` (float32 or float64).

    Returns the outputs by name, in graph order.
    """
    float_dtype = np.dtype(dtype)
    if float_dtype not in (np.float32, np.float64):
        raise InputError(f"interpret: dtype must be float32 or float64, got {float_dtype}")
    params = params or {}
    check_inputs(graph, inputs)
    check_params(graph, params)
    env: dict[Value, np.ndarray] = {}
    for v in graph.inputs:
        env[v] = _cast(inputs[v.name], v.dtype, float_dtype)
    for p in graph.params:
        env[p] = _cast(params[p.name], p.dtype, float_dtype)
    for n in graph.nodes:
        outs = get_op(n.op).run_reference([env[v] for v in n.inputs], n.attrs)
        for o, a in zip(n.outputs, outs, strict=True):
            env[o] = a
    return {name: env[v] for name, v in zip(graph.output_names, graph.outputs, strict=True)}
