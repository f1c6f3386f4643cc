"""Deterministic text form of a graph: stable value numbering, so golden tests of passes compare text."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from cnncc.ir.graph import Graph, Value, ValueKind


def _shown(x: Any) -> list[dataclasses.Field[Any]]:
    """The fields printed: all but optional annotations left unset (``metadata={"optional": True}`` and None),
    so adding such an annotation to an op does not change the text or hash of graphs that do not set it."""
    return [f for f in dataclasses.fields(x) if not (f.metadata.get("optional") and getattr(x, f.name) is None)]


def format_attr(x: Any) -> str:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if type(x).__str__ is not object.__str__:
            return str(x)
        return "{" + ", ".join(f"{f.name}={format_attr(getattr(x, f.name))}" for f in _shown(x)) + "}"
    if isinstance(x, enum.Enum):
        return str(x.value)
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, tuple):
        return "(" + ",".join(format_attr(e) for e in x) + ")"
    return str(x)


def format_attrs(attrs: Any) -> str:
    if attrs is None or not dataclasses.is_dataclass(attrs):
        return ""
    parts = [f"{f.name}={format_attr(getattr(attrs, f.name))}" for f in _shown(attrs)]
    return "[" + ", ".join(parts) + "]" if parts else ""


def value_names(g: Graph) -> dict[Value, str]:
    names: dict[Value, str] = {}
    for v in g.inputs:
        names[v] = f"%{v.name}"
    for v in g.params:
        names[v] = f"@{v.name}"
    k = 0
    for n in g.nodes:
        for o in n.outputs:
            names[o] = f"%{k}"
            k += 1
    return names


def print_graph(g: Graph) -> str:
    names = value_names(g)
    lines = [f"graph {g.name}(" + ", ".join(f"{names[v]}: {v.type}" for v in g.inputs) + ") {"]
    for p in g.params:
        flag = "" if p.trainable else " frozen"
        lines.append(f"  param {names[p]}: {p.type}{flag}")
    for n in g.nodes:
        lhs = ", ".join(names[o] for o in n.outputs)
        args = ", ".join(names.get(v, "<undefined>") for v in n.inputs)
        types = ", ".join(str(o.type) for o in n.outputs)
        lines.append(f"  {lhs} = {n.op}{format_attrs(n.attrs)}({args}) : {types}  # {n.layer}")
    outs = ", ".join(f"{name}={names.get(v, '<undefined>')}" for name, v in zip(g.output_names, g.outputs, strict=True))
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines)


__all__ = ["print_graph", "format_attrs", "value_names", "ValueKind"]
