"""Pipelines are plain lists of passes, one per target and mode."""

from __future__ import annotations

from cnncc.passes.canonicalize import (
    CommonSubexpressions,
    ConstantFolding,
    DeadCodeElimination,
    FoldReshapes,
    RemoveIdentities,
)
from cnncc.passes.fusion import FoldBatchNorm, FuseEpilogue
from cnncc.passmanager import Pass


def cpu_inference() -> list[Pass]:
    """What ``cnncc.compile`` runs before lowering for the CPU."""
    return [RemoveIdentities(), FoldReshapes(), ConstantFolding(), CommonSubexpressions(), FoldBatchNorm(),
            FuseEpilogue(), DeadCodeElimination()]


PASSES: dict[str, type] = {
    "dce": DeadCodeElimination, "remove-identities": RemoveIdentities, "fold-reshapes": FoldReshapes,
    "cse": CommonSubexpressions, "constant-folding": ConstantFolding, "fold-batchnorm": FoldBatchNorm,
    "fuse-epilogue": FuseEpilogue,
}
