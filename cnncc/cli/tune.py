"""``cnncc tune MODEL``: measure each distinct conv layer shape's best algorithm into the tuning database."""

from __future__ import annotations

import argparse

from cnncc.cli.algorithms import add_common, conv_shapes, progress_bar, setup
from cnncc.cli.common import Subparsers
from cnncc.errors import InputError


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "tune", help="measure each conv layer's best algorithm into the tuning database",
        description="For every distinct conv layer shape, time the cost model's top candidates "
                    "within the error budget plus direct convolution and two of its register "
                    "tiles, and store the times in the tuning database, layer by layer (an "
                    "interrupted run resumes; shapes already tuned are skipped). `cnncc compile`, "
                    "`run` and `explain` then choose by the measured times.")
    add_common(p, per_layer=False)
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--top", type=int, default=3, help="model candidates measured per layer (default 3)")
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.tuner import tune_shapes

    if args.budget is not None and args.budget <= 0:
        raise InputError(f"--budget must be a positive number of seconds, got {args.budget}")
    model, graph, chooser, _ = setup(args)
    shapes = conv_shapes(graph, None)
    with progress_bar() as progress:
        task = progress.add_task("tuning", total=len(shapes))

        def report(layer: str, done: int, total: int) -> None:
            progress.update(task, completed=done, description=f"tuning {layer}" if layer else "done")

        results = tune_shapes(shapes, chooser, args.cpu, args.top, args.budget, args.repeats, report)
    table = Table(title=f"{model.name}: tuned on {chooser.target.cpu}, {chooser.threads} thread(s) -> "
                        f"{chooser.db.path}")
    for col in ("layer(s)", "best", "ms", "candidates (ms)"):
        table.add_column(col)
    for r in results:
        names = r.layers[0] + (f" (+{len(r.layers) - 1})" if len(r.layers) > 1 else "")
        if r.skipped:
            table.add_row(names, r.best, "", "already in the database")
        else:
            others = ", ".join(f"{k} {m.seconds * 1e3:.3f}" for k, m in sorted(r.measured.items(),
                                                                               key=lambda kv: kv[1].seconds))
            table.add_row(names, r.best, f"{r.measured[r.best].seconds * 1e3:.3f}", others)
    Console(width=160).print(table)
    left = len(shapes) - len(results)
    if left:
        print(f"budget of {args.budget:g} s used up: {left} layer shape(s) left; run `cnncc tune` again to resume")
    return 0
