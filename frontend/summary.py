"""``model.summary()``: one row per layer with output shape, parameters and multiply-accumulates."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from cnncc.ir import Node

if TYPE_CHECKING:
    from cnncc.frontend.model import Model


def _rows(model: Model, batch: int) -> list[tuple[str, str, str, int, int]]:
    from cnncc.ops import get_op

    g = model.graph(batch)
    rows: list[tuple[str, str, str, int, int]] = []
    groups: list[tuple[str, list[Node]]] = []
    for n in g.nodes:
        if groups and groups[-1][0] == n.layer:
            groups[-1][1].append(n)
        else:
            groups.append((n.layer, [n]))
    counted: set[str] = set()
    for layer, nodes in groups:
        params = 0
        for n in nodes:
            for v in n.inputs:
                if v.kind.value == "param" and v.trainable and v.name not in counted:
                    counted.add(v.name)
                    params += v.type.size
        macs = sum(get_op(n.op).macs([v.type for v in n.inputs], [o.type for o in n.outputs], n.attrs)
                   for n in nodes)
        ops = "+".join(n.op for n in nodes)
        rows.append((layer, ops, str(nodes[-1].outputs[0].shape), params, macs))
    return rows


def render_summary(model: Model, batch: int = 1) -> str:
    from rich.console import Console
    from rich.table import Table

    rows = _rows(model, batch)
    table = Table(title=f"{model.name} (batch {batch})", show_footer=True)
    total_p, total_m = sum(r[3] for r in rows), sum(r[4] for r in rows)
    frozen = model.num_params(trainable_only=False) - model.num_params()
    table.add_column("Layer", footer="Total")
    table.add_column("Ops")
    table.add_column("Output shape", footer=f"non-trainable: {frozen:,}")
    table.add_column("Params", justify="right", footer=f"{total_p:,}")
    table.add_column("MACs", justify="right", footer=f"{total_m:,}")
    for layer, ops, shape, p, m in rows:
        table.add_row(layer, ops, shape, f"{p:,}", f"{m:,}")
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None, force_terminal=False).print(table)
    return buf.getvalue().rstrip()
