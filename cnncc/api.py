"""The public entry points: ``cnncc.compile`` (backends are imported lazily: the core never imports one)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.ir import Graph


def compile(model: Any, target: str = "cpu", threads: int | None = None, batch: int = 1,  # noqa: A001
            cpu: str = "host", params: Mapping[str, np.ndarray] | None = None) -> Any:
    """Compile a DSL model (or a graph with its ``params``) to native code.

    ``target="cpu"`` uses the LLVM backend for ``cpu`` (``"host"``, or an LLVM CPU name such as ``"x86-64-v3"``).
    ``batch`` is the largest batch a call may pass; ``threads`` the default thread count (all cores if None).
    """
    for name, value in (("threads", threads), ("batch", batch)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise CnnccError(f"compile: {name} must be a positive integer, got {value!r}")
    if target != "cpu":
        raise CnnccError(f"unknown target '{target}': cnncc compiles for 'cpu' (the CUDA backend comes later)")
    if isinstance(model, Graph):
        graph = model
        if params is None:
            raise CnnccError("compile(graph) needs params= (the weights by parameter name)")
    else:
        graph = model.graph(batch)
        params = model.params if params is None else params
    from cnncc.runtime.compiled import compile_graph

    return compile_graph(graph, params, cpu, threads)
