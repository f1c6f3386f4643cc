"""What the commands of :mod:`cnncc.cli` share: the model argument and the type of a command module."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

MODEL_HELP = "a zoo name (see `cnncc zoo`) or path/to/file.py defining model() -> cnncc Model"

#: ``parser.add_subparsers()``'s result (argparse's private class, so the type is spelled here once).
Subparsers = Any


class Command(Protocol):
    """A command module: it adds its sub-parser (named as in :data:`cnncc.cli.COMMANDS`) and runs a parsed call.

    ``run`` imports what it needs inside the function, so that building the parser (every call of ``cnncc``)
    stays cheap."""

    def add_parser(self, sub: Subparsers) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


def add_model(p: argparse.ArgumentParser) -> None:
    """The positional MODEL argument every command takes."""
    p.add_argument("model", help=MODEL_HELP)
