"""``cnncc show MODEL``: the layer table (output shapes, parameters, MACs) and the typed IR."""

from __future__ import annotations

import argparse

from cnncc.cli.common import Subparsers, add_model


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "show", help="print a model's summary table and its graph IR",
        description="Print the layer table (output shapes, parameters, MACs) and the typed IR.")
    add_model(p)
    p.add_argument("--batch", type=int, default=1, help="batch size of the printed graph (default 1)")
    p.add_argument("--no-ir", action="store_true", help="print only the summary table")
    return p


def run(args: argparse.Namespace) -> int:
    from cnncc.loader import load_model

    model = load_model(args.model)
    model.summary(batch=args.batch)
    if not args.no_ir:
        print()
        print(model.graph(args.batch).text())
    return 0
