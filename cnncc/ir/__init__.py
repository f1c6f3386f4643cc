"""The typed graph IR: types, values, nodes, graphs, builder, printer, verifier."""

from cnncc.ir.graph import Graph, GraphBuilder, Node, Value, ValueKind
from cnncc.ir.printer import print_graph
from cnncc.ir.types import DType, Layout, TensorType, image_type
from cnncc.ir.verify import verify

__all__ = ["DType", "Graph", "GraphBuilder", "Layout", "Node", "TensorType", "Value", "ValueKind", "image_type",
           "print_graph", "verify"]
