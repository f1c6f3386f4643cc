"""The graph level of the IR: immutable SSA values, nodes and graphs, and the builder that creates them.

A value is created only by applying an op through :class:`GraphBuilder`, and that runs the op's shape rule at once,
so a wrong network fails where it is written, with the layer's name in the message.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from cnncc.errors import GraphError
from cnncc.ir.types import DType, Layout, TensorType, image_type


class ValueKind(enum.Enum):
    INPUT = "input"
    PARAM = "param"
    RESULT = "result"


class Value:
    """An SSA value. Immutable after construction; identity is the object itself."""

    __slots__ = ("type", "kind", "name", "node", "index", "trainable")
    # Declared for type checkers (annotations only: no class attributes, so they do not clash with __slots__);
    # __init__ sets them with object.__setattr__ since __setattr__ refuses every write.
    type: TensorType
    kind: ValueKind
    name: str
    node: Node | None  # the node whose output this is (RESULT values), else None
    index: int  # which output of that node
    trainable: bool

    def __init__(self, type_: TensorType, kind: ValueKind, name: str = "", node: Node | None = None,
                 index: int = 0, trainable: bool = False) -> None:
        object.__setattr__(self, "type", type_)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "trainable", trainable)

    def __setattr__(self, key: str, value: Any) -> None:
        raise GraphError("IR values are immutable; build a new graph instead")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        label = self.name or (f"{self.node.op}#{self.index}" if self.node else "?")
        return f"Value({label}: {self.type})"


class Node:
    """One op application: ``outputs = op[attrs](inputs)``, tagged with the layer that wrote it."""

    __slots__ = ("op", "attrs", "inputs", "outputs", "layer")
    op: str
    attrs: Any  # the op's frozen attribute dataclass (its type depends on the op)
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    layer: str

    def __init__(self, op: str, attrs: Any, inputs: tuple[Value, ...], out_types: Sequence[TensorType],
                 layer: str) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "layer", layer)
        outs = tuple(Value(t, ValueKind.RESULT, node=self, index=i) for i, t in enumerate(out_types))
        object.__setattr__(self, "outputs", outs)

    def __setattr__(self, key: str, value: Any) -> None:
        raise GraphError("IR nodes are immutable; build a new graph instead")

    def __repr__(self) -> str:
        return f"Node({self.op} @ {self.layer})"


class Graph:
    """An immutable graph: named inputs, named parameters, nodes in a topological order, named outputs.

    Weights are not part of the graph: they are bound by name at run time (the interpreter, the compiled model).
    """

    def __init__(self, name: str, inputs: Sequence[Value], params: Sequence[Value], nodes: Sequence[Node],
                 outputs: Sequence[Value], output_names: Sequence[str]) -> None:
        self.name = name
        self.inputs = tuple(inputs)
        self.params = tuple(params)
        self.nodes = tuple(nodes)
        self.outputs = tuple(outputs)
        self.output_names = tuple(output_names)

    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.name == name:
                return v
        raise GraphError(f"graph '{self.name}' has no input '{name}'; inputs are {[v.name for v in self.inputs]}")

    def param(self, name: str) -> Value:
        for v in self.params:
            if v.name == name:
                return v
        raise GraphError(f"graph '{self.name}' has no parameter '{name}'")

    def users(self) -> dict[Value, list[Node]]:
        """Map every value to the nodes that read it (in node order)."""
        table: dict[Value, list[Node]] = {v: [] for v in (*self.inputs, *self.params)}
        for n in self.nodes:
            for o in n.outputs:
                table[o] = []
            for v in n.inputs:
                table.setdefault(v, []).append(n)
        return table

    def text(self) -> str:
        from cnncc.ir.printer import print_graph

        return print_graph(self)

    def __str__(self) -> str:
        return self.text()

    def hash(self) -> str:
        """A stable content hash of the graph's structure, types and attributes (not its weights)."""
        import hashlib

        return hashlib.sha256(self.text().encode()).hexdigest()

    def verify(self) -> None:
        from cnncc.ir.verify import verify

        verify(self)


class GraphBuilder:
    """Builds a :class:`Graph` one value at a time; the only way to create values."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._inputs: list[Value] = []
        self._params: list[Value] = []
        self._nodes: list[Node] = []
        self._outputs: list[tuple[str, Value]] = []
        self._known: set[int] = set()
        self._names: set[str] = set()

    def _claim(self, name: str) -> None:
        if not name:
            raise GraphError(f"graph '{self.name}': inputs and parameters need a non-empty name")
        if name in self._names:
            raise GraphError(f"graph '{self.name}': the name '{name}' is used twice")
        self._names.add(name)

    def input(self, name: str, shape: Sequence[int], dtype: DType | str = DType.FLOAT32,
              layout: Layout | None = None) -> Value:
        self._claim(name)
        dt = DType.of(dtype)
        t = image_type(tuple(int(d) for d in shape), dt) if layout is None else TensorType(tuple(shape), dt, layout)
        v = Value(t, ValueKind.INPUT, name=name)
        self._inputs.append(v)
        self._known.add(id(v))
        return v

    def param(self, name: str, shape: Sequence[int], dtype: DType | str = DType.FLOAT32,
              trainable: bool = True) -> Value:
        self._claim(name)
        v = Value(TensorType(tuple(int(d) for d in shape), DType.of(dtype)), ValueKind.PARAM, name=name,
                  trainable=trainable)
        self._params.append(v)
        self._known.add(id(v))
        return v

    def apply(self, op: str, inputs: Sequence[Value], attrs: Any = None, layer: str = "") -> Value:
        """Apply a single-output op; see :meth:`apply_multi`."""
        outs = self.apply_multi(op, inputs, attrs, layer)
        if len(outs) != 1:
            raise GraphError(f"op '{op}' has {len(outs)} outputs; use apply_multi")
        return outs[0]

    def apply_multi(self, op: str, inputs: Sequence[Value], attrs: Any = None, layer: str = "") -> tuple[Value, ...]:
        from cnncc.ops.registry import get_op

        opdef = get_op(op)
        for v in inputs:
            if not isinstance(v, Value) or id(v) not in self._known:
                raise GraphError(f"layer '{layer or op}' ({op}): input {v!r} does not belong to graph '{self.name}'")
        attrs = opdef.default_attrs() if attrs is None else attrs
        out_types = opdef.infer_types([v.type for v in inputs], attrs, layer or op)
        node = Node(op, attrs, tuple(inputs), out_types, layer or op)
        self._nodes.append(node)
        for o in node.outputs:
            self._known.add(id(o))
        return node.outputs

    def copy_inputs(self, graph: Graph) -> dict[Value, Value]:
        """Declare ``graph``'s inputs and parameters in this graph (same names, types, layouts, trainability);
        returns the map from ``graph``'s values to the new ones."""
        m: dict[Value, Value] = {v: self.input(v.name, v.shape, v.dtype, v.type.layout) for v in graph.inputs}
        m.update({p: self.param(p.name, p.shape, p.dtype, trainable=p.trainable) for p in graph.params})
        return m

    def copy_nodes(self, graph: Graph, mapping: dict[Value, Value]) -> dict[Value, Value]:
        """Apply every node of ``graph`` again here, reading ``mapping``'s values; adds their outputs to it."""
        for n in graph.nodes:
            outs = self.apply_multi(n.op, [mapping[v] for v in n.inputs], n.attrs, layer=n.layer)
            mapping.update(zip(n.outputs, outs, strict=True))
        return mapping

    def output(self, value: Value, name: str | None = None) -> None:
        if id(value) not in self._known:
            raise GraphError(f"graph '{self.name}': output {value!r} does not belong to this graph")
        self._outputs.append((name or f"output{len(self._outputs)}", value))

    def build(self) -> Graph:
        if not self._outputs:
            raise GraphError(f"graph '{self.name}' has no outputs")
        return Graph(self.name, self._inputs, self._params, self._nodes, [v for _, v in self._outputs],
                     [n for n, _ in self._outputs])
