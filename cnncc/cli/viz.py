"""``cnncc viz MODEL``: draw the graph after a pass of the CPU inference pipeline (DOT, SVG or HTML)."""

from __future__ import annotations

import argparse
import sys

from cnncc.cli.common import Subparsers, add_model


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "viz", help="draw a model's graph (DOT, SVG or HTML)",
        description="Draw the graph after a pass of the CPU inference pipeline: per node the layer, "
                    "op (fused ops with their epilogue), output shape, convolution algorithm, "
                    "physical layout and arena offset. .svg needs Graphviz's `dot`; .html is one "
                    "self-contained page (with the drawing when `dot` is installed).")
    add_model(p)
    p.add_argument("--after", default="all", metavar="PASS",
                   help="none (the DSL graph), a pass of the CPU inference pipeline, or all (default)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the drawn graph (default 1)")
    p.add_argument("-o", "--output", metavar="FILE", help="graph.dot, graph.svg or graph.html "
                                                          "(default: DOT text on stdout)")
    return p


def run(args: argparse.Namespace) -> int:
    from cnncc.viz import visualize

    text = visualize(args.model, args.output, after=args.after, batch=args.batch)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}")
    return 0
