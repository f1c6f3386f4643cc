"""``cnncc zoo``: the built-in models with their input shapes, parameter counts and MACs."""

from __future__ import annotations

import argparse

from cnncc.cli.common import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("zoo", help="list the built-in models with their parameter counts",
                                                description="List the model zoo (the seeds' architectures).")
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.frontend.models import ZOO

    table = Table(title="cnncc model zoo")
    for col in ("name", "input", "parameters", "MACs (batch 1)"):
        table.add_column(col, justify="right" if col != "name" else "left")
    for name, factory in ZOO.items():
        m = factory()
        table.add_row(name, str(m.graph().inputs[0].shape[1:]), f"{m.num_params():,}", f"{m.macs():,}")
    Console(width=100).print(table)
    return 0
