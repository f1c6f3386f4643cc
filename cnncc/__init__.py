"""cnncc: a compiler for convolutional neural networks.

A network written in the DSL (``cnncc.frontend``) becomes a typed graph (``cnncc.ir``) of ops (``cnncc.ops``);
passes rewrite it (``cnncc.passes``), a backend compiles it (``cnncc.codegen``) and the runtime runs it
(``cnncc.runtime``). The numpy reference interpreter (``cnncc.runtime.interpret``) is the oracle for every backend.
"""

from __future__ import annotations

import cnncc.ops  # noqa: F401  (registers every op)
from cnncc.api import compile  # noqa: A004
from cnncc.errors import (
    CnnccError,
    GraphError,
    InputError,
    ModelError,
    OpAttributeError,
    ShapeError,
    WeightsError,
)
from cnncc.ir import DType, Graph, GraphBuilder, Layout, TensorType
from cnncc.version import __version__

__all__ = ["CnnccError", "DType", "Graph", "GraphBuilder", "GraphError", "InputError", "Layout", "ModelError",
           "OpAttributeError", "ShapeError", "TensorType", "WeightsError", "__version__", "compile",
           "compile_training", "interpret", "load"]


def interpret(graph: Graph, inputs: dict, params: dict | None = None, dtype: str = "float32") -> dict:
    """Run ``graph`` with the numpy reference interpreter (see :func:`cnncc.runtime.interpret`)."""
    from cnncc.runtime import interpret as run

    return run(graph, inputs, params, dtype)


def compile_training(model, loss: str = "cross_entropy", optimizer=None, batch: int = 32,  # noqa: ANN001, ANN201
                     threads: int | None = None, cpu: str = "host", recompute: bool = False, algorithms=None):
    """Compile ``model``'s training step (forward in training mode, ``loss``, backward, ``optimizer`` update) to one
    native entry point; returns a :class:`cnncc.training.Trainer` with ``step(x, y) -> loss``, ``evaluate``,
    ``predict`` and ``export`` (see :func:`cnncc.training.compile_training`)."""
    from cnncc.training import compile_training as build

    return build(model, loss, optimizer, batch, threads, cpu, recompute, algorithms)


def load(directory, threads: int | None = None):  # noqa: ANN001, ANN201
    """Load a deployment bundle written by ``cnncc compile`` (see :class:`cnncc.runtime.bundle.Bundle`): call it like
    a compiled model. Needs only numpy and the bundle's shared library."""
    from cnncc.runtime.bundle import load as load_bundle

    return load_bundle(directory, threads)
