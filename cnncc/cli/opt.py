"""``cnncc opt MODEL``: run graph passes, print what each did, their times and the IR."""

from __future__ import annotations

import argparse

from cnncc.cli.common import Subparsers, add_model


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "opt", help="run graph passes and print the IR",
        description="Run passes on a model's graph (default: the CPU inference pipeline) and print "
                    "what each did, their times, and the IR after the passes you name.")
    add_model(p)
    p.add_argument("-p", "--passes", help="comma-separated pass names (default: the CPU inference pipeline)")
    p.add_argument("--print-after", default="", metavar="PASS[,PASS]", help="print the IR after these passes")
    p.add_argument("--dump-dir", metavar="DIR", help="write the IR before and after every pass into DIR")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--training", action="store_true", help="the training graph (BN/dropout in training mode)")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnncc.errors import CnnccError as Error
    from cnncc.loader import load_model
    from cnncc.passes import PASSES, cpu_inference
    from cnncc.passmanager import PassContext, run_passes

    model = load_model(args.model)
    if args.passes:
        unknown = [n for n in args.passes.split(",") if n not in PASSES]
        if unknown:
            raise Error(f"unknown pass(es) {unknown}; passes are {', '.join(PASSES)}")
        passes = [PASSES[n]() for n in args.passes.split(",")]
    else:
        passes = cpu_inference()
    graph = model.graph(args.batch, training=args.training)
    ctx = PassContext(dict(model.params), verify=True,
                      print_after=frozenset(n for n in args.print_after.split(",") if n),
                      dump_dir=Path(args.dump_dir) if args.dump_dir else None)
    out = run_passes(graph, passes, ctx)
    for line in ctx.log:
        print(f"// {line}")
    for name, secs in ctx.timings.items():
        print(f"// {name}: {secs * 1e3:.1f} ms")
    print(f"// {len(graph.nodes)} nodes -> {len(out.nodes)} nodes; {len(graph.params)} -> {len(out.params)} params")
    if not ctx.print_after:
        print(out.text())
    return 0
