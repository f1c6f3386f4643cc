"""Graph-pass and memory-planner times on the zoo (what issue 13 item 8 asked to measure before and after a change).

For ResNet-18 and GoogLeNet (inference, batch 1) and the ResNet-18 training step (batch 8, SGD): the best of
``--repeat`` runs of each pass of the CPU inference pipeline (inference only), of ``plan_arena`` on the lowered
program (the 14 placements included), and of its interference sweep alone; plus a digest of the plan (arena bytes
and every buffer's offset) so a change of planner can be checked to give the very same plan.

    python benchmarks/bench_passes.py [--repeat 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _pass_times(graph: Any, params: dict[str, np.ndarray], repeat: int) -> dict[str, float]:
    from cnncc.passes import cpu_inference
    from cnncc.passmanager import PassContext

    best: dict[str, float] = {}
    for _ in range(repeat):
        ctx = PassContext(dict(params))
        g = graph
        for p in cpu_inference():
            t0 = time.perf_counter()
            g = p.run(g, ctx)
            dt = time.perf_counter() - t0
            best[p.name] = min(best.get(p.name, float("inf")), dt)
    return best


def _plan(graph: Any, params: dict[str, np.ndarray], repeat: int, state: tuple[str, ...] = ()) -> dict[str, Any]:
    from cnncc import driver
    from cnncc.codegen.lower import Lowering
    from cnncc.codegen.target import Target
    from cnncc.passes import memory_plan

    select = driver.conv_selection("host", 1, "direct", runtime_weights=bool(state))  # lowerings never choose
    graph, params, _ = driver.optimize(graph, params, [select])
    program = Lowering(graph, params, Target.host(), state).run()
    allocs, _ = memory_plan.allocations(program)
    report = memory_plan.plan_arena(program)
    offsets = [(b.name, b.offset) for b in program.live_ranges()]
    digest = hashlib.sha256(repr((report.arena_bytes, offsets)).encode()).hexdigest()[:16]
    return {"calls": len(program.calls), "allocations": len(allocs), "arena_bytes": report.arena_bytes,
            "strategy": report.strategy, "plan_digest": digest,
            "plan_arena_ms": 1e3 * _best(lambda: memory_plan.plan_arena(program), repeat),
            "conflicts_ms": 1e3 * _best(lambda: memory_plan._conflicts(allocs), repeat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from cnncc.api import optimize
    from cnncc.frontend.models import get_model
    from cnncc.training import training_graph

    out: dict[str, Any] = {}
    for name in ("resnet18", "googlenet"):
        model = get_model(name)
        graph, params = model.graph(1), dict(model.params)
        passes = _pass_times(graph, params, args.repeat)
        opt, opt_params, _ = optimize(graph, params)
        out[name] = {"passes_ms": {k: round(1e3 * v, 3) for k, v in passes.items()},
                     "passes_total_ms": round(1e3 * sum(passes.values()), 3), **_plan(opt, opt_params, args.repeat)}
    model = get_model("resnet18")
    t0 = time.perf_counter()
    train = training_graph(model.graph(8, training=True))
    build_s = time.perf_counter() - t0
    params = dict(model.params)
    params.update({n: np.zeros(s, np.float32) for n, s in train.slots.items()})
    out["resnet18-train-b8"] = {"training_graph_ms": round(1e3 * build_s, 1),
                                **_plan(train.graph, params, max(3, args.repeat // 4), train.state)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
