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


def add_target(p: argparse.ArgumentParser) -> None:
    """``--target`` (the backend) and ``--cuda-arch`` (the GPU architecture of the CUDA target)."""
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: LLVM native code for --cpu (default); cuda: CUDA kernels through Apache TVM and nvcc "
                        "for --cuda-arch (compiling needs no GPU; running needs one)")
    p.add_argument("--cuda-arch", default="sm_90", metavar="SM",
                   help="--target cuda: the GPU architecture of the cubin, e.g. sm_80, sm_90 (default); the PTX also "
                        "runs on newer GPUs")
