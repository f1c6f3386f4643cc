"""Graph verifier: def-before-use, unique names, and every type re-inferred by its op's rule."""

from __future__ import annotations

from cnncc.errors import GraphError
from cnncc.ir.graph import Graph, ValueKind


def verify(g: Graph) -> None:
    """Raise :class:`GraphError` if ``g`` is malformed; the pass manager runs this after every pass in tests."""
    from cnncc.ops.registry import get_op

    defined: set[int] = set()
    names: set[str] = set()
    for v in (*g.inputs, *g.params):
        if v.kind not in (ValueKind.INPUT, ValueKind.PARAM):
            raise GraphError(f"graph '{g.name}': {v!r} is listed as an input/parameter but is a {v.kind.value}")
        if v.name in names:
            raise GraphError(f"graph '{g.name}': the name '{v.name}' is used twice")
        names.add(v.name)
        defined.add(id(v))
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if id(v) not in defined:
                raise GraphError(f"graph '{g.name}': node {i} ({n.op} of layer '{n.layer}') uses {v!r} "
                                 "before it is defined")
        types = get_op(n.op).infer_types([v.type for v in n.inputs], n.attrs, n.layer)
        got = tuple(o.type for o in n.outputs)
        if tuple(types) != got:
            raise GraphError(f"graph '{g.name}': node {i} ({n.op} of layer '{n.layer}') has output types "
                             f"{[str(t) for t in got]} but its rule infers {[str(t) for t in types]}")
        for o in n.outputs:
            if o.node is not n:
                raise GraphError(f"graph '{g.name}': node {i} ({n.op}) output {o!r} belongs to another node")
            defined.add(id(o))
    for name, v in zip(g.output_names, g.outputs, strict=True):
        if id(v) not in defined:
            raise GraphError(f"graph '{g.name}': output '{name}' is not defined in the graph")
