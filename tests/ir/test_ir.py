"""The graph IR: builder, immutability, deterministic printing, hashing and the verifier."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnncc.errors import GraphError, ShapeError
from cnncc.ir import DType, Graph, GraphBuilder, Layout, TensorType, verify
from cnncc.ops import get_op


def small_graph(batch: int = 2) -> Graph:
    b = GraphBuilder("small")
    x = b.input("x", (batch, 3, 8, 8))
    w = b.param("w", (4, 3, 3, 3))
    attrs = get_op("conv2d").attrs(stride=(1, 1), padding=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    y = b.apply("conv2d", [x, w], attrs, layer="conv")
    z = b.apply("relu", [y], layer="act")
    b.output(z, "out")
    return b.build()


GOLDEN = """graph small(%x: 2x3x8x8:f32,NCHW) {
  param @w: 4x3x3x3:f32
  %0 = conv2d[stride=(1,1), padding=(1,1,1,1), dilation=(1,1), groups=1](%x, @w) : 2x4x8x8:f32,NCHW  # conv
  %1 = relu(%0) : 2x4x8x8:f32,NCHW  # act
  return out=%1
}"""


def test_printer_is_deterministic_and_golden() -> None:
    assert small_graph().text() == GOLDEN
    assert small_graph().text() == small_graph().text()


def test_hash_is_stable_and_sensitive_to_types() -> None:
    assert small_graph().hash() == small_graph().hash()
    assert small_graph(2).hash() != small_graph(3).hash()
    assert re.fullmatch(r"[0-9a-f]{64}", small_graph().hash())


def test_values_and_nodes_are_immutable() -> None:
    g = small_graph()
    with pytest.raises(GraphError):
        g.nodes[0].op = "relu"  # type: ignore[misc]
    with pytest.raises(GraphError):
        g.inputs[0].type = TensorType((1,))  # type: ignore[misc]


def test_shape_rule_runs_at_apply_and_names_the_layer() -> None:
    b = GraphBuilder("bad")
    x = b.input("x", (1, 3, 8, 8))
    w = b.param("w", (4, 5, 3, 3))
    attrs = get_op("conv2d").attrs(stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
    with pytest.raises(ShapeError, match=r"^layer 'conv7' \(conv2d\): mismatched channels"):
        b.apply("conv2d", [x, w], attrs, layer="conv7")


def test_values_from_another_graph_are_rejected() -> None:
    other = GraphBuilder("other").input("x", (1, 4))
    b = GraphBuilder("g")
    with pytest.raises(GraphError, match="does not belong to graph 'g'"):
        b.apply("relu", [other], layer="r")


def test_duplicate_names_and_empty_graph_are_rejected() -> None:
    b = GraphBuilder("g")
    b.input("x", (1, 4))
    with pytest.raises(GraphError, match="the name 'x' is used twice"):
        b.param("x", (4,))
    with pytest.raises(GraphError, match="has no outputs"):
        b.build()


def test_verify_accepts_built_graphs_and_catches_use_before_def() -> None:
    g = small_graph()
    verify(g)
    swapped = Graph(g.name, g.inputs, g.params, tuple(reversed(g.nodes)), g.outputs, g.output_names)
    with pytest.raises(GraphError, match=r"node 0 \(relu of layer 'act'\) uses .* before it is defined"):
        verify(swapped)


def test_verify_catches_a_stale_type() -> None:
    g = small_graph()
    other = small_graph(batch=5)
    mixed = Graph(g.name, other.inputs, other.params, (other.nodes[0], g.nodes[1]), g.outputs, g.output_names)
    with pytest.raises(GraphError):
        verify(mixed)


def test_users_and_lookup() -> None:
    g = small_graph()
    assert [n.op for n in g.users()[g.input("x")]] == ["conv2d"]
    assert g.param("w").trainable
    with pytest.raises(GraphError, match="has no input 'y'"):
        g.input("y")


def test_types() -> None:
    t = TensorType((2, 3), DType.FLOAT64)
    assert (t.size, t.nbytes, t.rank, str(t)) == (6, 48, 2, "2x3:f64")
    assert DType.of(np.float32) is DType.FLOAT32
    assert DType.of("int64") is DType.INT64
    assert Layout("NHWC") is Layout.NHWC
