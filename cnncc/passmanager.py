"""The pass protocol and the pass manager (the passes themselves live in ``cnncc.passes``).

A pass is a small named object with its options as fields and ``run(graph, ctx) -> graph``. The context carries
the weights (passes that fold constants write new parameters into it), per-pass timings, what each pass did, and
the debugging switches of ``cnncc opt``: verify after every pass, print or dump the IR after a pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cnncc.ir import Graph, verify


class Pass(Protocol):
    @property
    def name(self) -> str: ...  # read-only: passes spell it as a class constant (a ClassVar or Final)

    def run(self, graph: Graph, ctx: PassContext) -> Graph: ...


@dataclass
class PassContext:
    """State shared by the passes of one pipeline run."""

    params: dict[str, np.ndarray]
    verify: bool = False
    print_after: frozenset[str] = frozenset()
    dump_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    choices: dict[str, Any] = field(default_factory=dict)  # layer -> the backend's algorithm choice and its reasons

    def note(self, pass_name: str, message: str) -> None:
        """Record what a pass did (``cnncc opt`` and ``explain`` show it)."""
        self.log.append(f"{pass_name}: {message}")


def run_passes(graph: Graph, passes: Sequence[Pass], ctx: PassContext) -> Graph:
    """Run ``passes`` in order; verify, time, print and dump as ``ctx`` asks."""
    if ctx.dump_dir is not None:
        ctx.dump_dir.mkdir(parents=True, exist_ok=True)
        (ctx.dump_dir / "00-input.txt").write_text(graph.text() + "\n")
    for i, p in enumerate(passes, start=1):
        t0 = time.perf_counter()
        graph = p.run(graph, ctx)
        ctx.timings[p.name] = ctx.timings.get(p.name, 0.0) + time.perf_counter() - t0
        if ctx.verify:
            verify(graph)
        if p.name in ctx.print_after:
            print(f"// ----- IR after {p.name} -----")
            print(graph.text())
        if ctx.dump_dir is not None:
            (ctx.dump_dir / f"{i:02d}-{p.name}.txt").write_text(graph.text() + "\n")
    return graph
