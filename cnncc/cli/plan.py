"""``cnncc plan MODEL``: the arena plan (buffers, offsets, live ranges, timeline, lower bound)."""

from __future__ import annotations

import argparse

from cnncc.cli.common import Subparsers, add_model
from cnncc.errors import InputError


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "plan", help="print a model's memory plan (arena buffers, offsets, live ranges)",
        description="Lower a model for this CPU as `cnncc run` compiles it and print its arena plan: "
                    "a table of the arena buffers (producer, size, offset, live range of calls), an "
                    "ASCII timeline of their lifetimes, and the arena size against the lower bound "
                    "(peak live bytes) and the naive sum, with the in-place merges and the weights "
                    "blob size.")
    add_model(p)
    p.add_argument("--batch", type=int, default=1, help="the compiled batch (default 1)")
    p.add_argument("--unoptimized", action="store_true", help="plan the graph as traced, without graph passes")
    return p


def run(args: argparse.Namespace) -> int:
    from cnncc.loader import load_model
    from cnncc.plan_view import plan_model, print_plan

    if args.batch < 1:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    model = load_model(args.model)
    program, report = plan_model(model, args.batch, optimize=not args.unoptimized)
    print_plan(program, report, f"{model.name} at batch {args.batch}")
    return 0
