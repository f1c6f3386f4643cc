"""``cnncc explain MODEL``: the chosen algorithm of every conv layer, the candidates and why each lost."""

from __future__ import annotations

import argparse

from cnncc.cli.algorithms import add_common, conv_shapes, setup
from cnncc.cli.common import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "explain", help="the chosen algorithm of every conv layer, and why",
        description="For every conv layer: each candidate algorithm with the cost model's "
                    "estimate, the measured time (after `cnncc tune`), its error against "
                    "float64, and the verdict: chosen (by measurement or by the model), "
                    "excluded by the error budget, slower, or not applicable (and why).")
    add_common(p, repeats=False)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.codegen.select import describe_schedule

    model, graph, chooser, target = setup(args, all_errors=True)
    console = Console(width=150)
    console.print(f"{model.name}: convolution algorithms for {target.cpu}, {chooser.threads} thread(s), batch "
                  f"{args.batch}; error budget {chooser.max_error:.0e} (max |y - ref| / max |ref| per layer); "
                  f"machine: {chooser.machine.peak_gflops:.0f} GFLOP/s per core, "
                  f"{chooser.machine.cache_gbs:.0f} GB/s cache, {chooser.machine.dram_gbs:.0f} GB/s DRAM; "
                  f"tuning database {chooser.db.path}")
    for cs, layers in conv_shapes(graph, args.layer).items():
        choice = chooser.choose_shape(cs, layers[0], all_errors=True)
        console.print(f"\n[bold]{', '.join(layers)}[/bold]: {cs.signature()}, {cs.macs / 1e6:.1f} MMACs")
        table = Table()
        for col in ("algorithm", "model ms", "measured ms", "error", "verdict"):
            table.add_column(col, justify="left" if col in ("algorithm", "verdict") else "right")
        for c in sorted(choice.candidates, key=lambda c: c.seconds):
            verdict = ("CHOSEN (" + choice.basis + ")" if c.impl == choice.impl else
                       f"excluded: {c.excluded}" if c.excluded else "slower")
            table.add_row(c.label, f"{c.estimate_s * 1e3:.3f}",
                          "" if c.measured_s is None else f"{c.measured_s * 1e3:.3f}",
                          "" if c.error is None else f"{c.error:.1e}", verdict)
        for algo, why in choice.not_applicable.items():
            table.add_row(algo, "", "", "", f"not applicable: {why}")
        console.print(table)
        console.print(f"  schedule: {describe_schedule(cs, choice.impl, target.vector_width)}")
    return 0
