"""What ``cnncc bench``, ``cnncc tune`` and ``cnncc explain`` share: their arguments, and the model, optimized graph,
convolution chooser and target they set up from them."""

from __future__ import annotations

import argparse
from typing import Any

from cnncc.cli.common import add_model
from cnncc.errors import InputError


def add_common(p: argparse.ArgumentParser, per_layer: bool = True, repeats: bool = True) -> None:
    """The arguments bench, tune and explain share: the model, the target, the error budget, the tuning database,
    and (``per_layer``) the layer and algorithm subset, (``repeats``) the profiled runs per candidate."""
    add_model(p)
    p.add_argument("--threads", type=int, default=None, help="threads the layers run on (default 1)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--cpu", default="host", help="LLVM CPU: host (default) or e.g. x86-64-v3")
    p.add_argument("--max-error", type=float, default=None,
                   help="error budget: max |y - ref| / max |ref| of a layer against float64 (default 1e-4)")
    p.add_argument("--db", metavar="PATH", default=None,
                   help="tuning database (default $CNNCC_TUNING_DB or ~/.cache/cnncc/tuning.json)")
    if per_layer:
        p.add_argument("--layer", help="only this layer")
        p.add_argument("--algorithms", metavar="A[,B]", help="comma-separated subset (default: all)")
    if repeats:
        p.add_argument("--repeats", type=int, default=10, help="profiled runs per candidate, in 3 round-robin "
                                                               "rounds over the candidates (the best is kept)")


def setup(args: argparse.Namespace, all_errors: bool = False) -> tuple[Any, Any, Any, Any]:
    """(model, optimized graph, chooser, target) for a command's model and options."""
    from cnncc.api import conv_selection, optimize
    from cnncc.loader import load_model

    if args.batch < 1 or (args.threads is not None and args.threads < 1):
        raise InputError(f"--batch and --threads must be positive, got {args.batch} and {args.threads}")
    model = load_model(args.model)
    graph, _, _ = optimize(model.graph(args.batch), model.params)
    algorithms = args.algorithms.split(",") if getattr(args, "algorithms", None) else None
    chooser = conv_selection(args.cpu, args.threads or 1, algorithms, args.max_error, args.db).chooser
    chooser.all_errors = all_errors
    return model, graph, chooser, chooser.target


def conv_shapes(graph: Any, layer: str | None) -> dict[Any, list[str]]:
    """The conv layer shapes of ``graph`` with the layers of each (only ``layer`` when given)."""
    from cnncc.tuner import model_convs

    shapes = model_convs(graph)
    if layer is None:
        return shapes
    picked = {cs: [ly for ly in layers if ly == layer] for cs, layers in shapes.items()}
    picked = {cs: ls for cs, ls in picked.items() if ls}
    if not picked:
        names = [ly for layers in shapes.values() for ly in layers]
        raise InputError(f"no conv layer named '{layer}'; the conv layers are: {', '.join(names)}")
    return picked


def progress_bar() -> Any:
    """A transient rich progress bar over the layers."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), transient=True)
