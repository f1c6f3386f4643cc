"""The ``cnncc`` command line: inspect, run, tune and deploy models.

    cnncc zoo                       list the built-in models
    cnncc show resnet18             summary table (layers, shapes, parameters, MACs) and the IR
    cnncc run lenet5 --batch 4      compile for this CPU and run on seeded random input (or --input x.npy)
    cnncc plan mobilenet_v2         the arena plan: buffers, offsets, live ranges, timeline, lower bound
    cnncc opt resnet18 --print-after fuse-epilogue    run graph passes, print the IR
    cnncc bench resnet18 --threads 2       every conv layer with every applicable algorithm: time, GFLOP/s, error
    cnncc tune resnet18 --budget 300       measure the best algorithm per layer into the tuning database
    cnncc explain resnet18                 the chosen algorithm of every conv layer, and why
    cnncc train lenet5 --dataset digits    compile the training step and train on real handwritten digits
    cnncc compile resnet18 -o DIR          a deployment bundle: lib<name>.so, <name>.h, weights, manifest.json

Every command is a module of this package with ``add_parser(subparsers)`` (its arguments and help) and
``run(args) -> int``; :data:`COMMANDS` is the one table of them, in the order ``cnncc --help`` lists them. A new
command is a new module and a line in the table. The modules import the compiler inside ``run``, so building the
parser — every call of ``cnncc``, ``--help`` included — loads only argparse, numpy and the error types.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import cast

from cnncc.cli.common import MODEL_HELP, Command
from cnncc.errors import CnnccError

#: command name -> module under ``cnncc.cli`` (that module's ``add_parser`` adds the sub-parser of that name).
COMMANDS: dict[str, str] = {
    "zoo": "zoo",
    "show": "show",
    "run": "run",
    "opt": "opt",
    "viz": "viz",
    "plan": "plan",
    "bench": "bench",
    "tune": "tune",
    "explain": "explain",
    "train": "train",
    "compile": "compile",
}


def command(name: str) -> Command:
    """The module of command ``name``."""
    return cast(Command, import_module(f"{__name__}.{COMMANDS[name]}"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnncc", description="cnncc: a compiler for convolutional neural networks. Describe a network in the "
        "Python DSL (or pick one from the zoo), inspect its typed graph, and run it.",
        epilog="Examples: `cnncc show lenet5`, `cnncc run resnet18 --batch 2`, `cnncc run my_net.py --input x.npy`.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        added = command(name).add_parser(sub)
        assert added.prog.endswith(f" {name}"), f"cnncc.cli.{COMMANDS[name]} adds {added.prog!r}, not {name!r}"
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; a :class:`CnnccError` becomes
    ``cnncc: error: ...`` on stderr and exit status 2 (argparse's status for a bad command line)."""
    args = _parser().parse_args(argv)
    try:
        return command(args.command).run(args)
    except CnnccError as e:
        print(f"cnncc: error: {e}", file=sys.stderr)
        return 2


__all__ = ["COMMANDS", "MODEL_HELP", "command", "main"]
