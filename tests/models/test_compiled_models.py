"""Every zoo model compiled by the LLVM CPU backend at batch 4 and run at batch 4, 2 and 1 (dynamic batch: any batch
up to the compiled one), against the reference interpreter in float32.

The BN statistics, BN affine parameters and every bias get random non-trivial values first (the zoo initialises
them to 0/1), as in tests/frontend/test_zoo.py, so BN folding and bias handling are exercised. One compiled module
per model (module-scoped fixture); the interpreter runs on the batch-4 and the batch-1 graphs, and batch 2 is
compared with the batch-4 reference's first rows (the interpreter is batch-independent: tests/frontend/test_dsl.py
checks it).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnncc
from cnncc.convalgo import ConvShape
from cnncc.frontend.model import Model
from cnncc.frontend.models import ZOO, get_model
from cnncc.testing import build_c_example, randomize, rel_error, repo_root, run_c_example

# A whole network in float32: the backend sums every conv/linear in another order than the interpreter's BLAS
# (blocked FMA tiles), folds BN into one FMA and calls libm's expf/logf for softmax heads; the per-layer ~1e-6
# differences compound over up to ~50 layers (ResNet-50) and stay below 1e-4 of the output scale (test_zoo.py's
# cnncc-vs-PyTorch bound, cnncc.testing.TOL_F32_MODEL, for the same reason).
TOL_COMPILED_MODEL = 1e-4

COMPILED_BATCH = 4
RUN_BATCHES = (4, 2, 1)
MODELS = list(ZOO)


@dataclass
class Compiled:
    name: str
    model: Model
    cm: Any
    x: np.ndarray  # (COMPILED_BATCH, ...) input
    want: np.ndarray  # the interpreter's output on x


@pytest.fixture(scope="module", params=MODELS)
def compiled(request: pytest.FixtureRequest) -> Iterator[Compiled]:
    name = request.param
    model = get_model(name, seed=0)
    randomize(model, zlib.crc32(name.encode()))
    cm = cnncc.compile(model, batch=COMPILED_BATCH)
    shape = model.inputs[0].spec.shape
    x = np.random.default_rng(zlib.crc32(name.encode()) + 1).standard_normal((COMPILED_BATCH, *shape))
    x = x.astype(np.float32)
    yield Compiled(name, model, cm, x, model(x))


def test_every_zoo_model_is_compiled() -> None:
    assert MODELS == list(ZOO) and len(MODELS) == 11


@pytest.mark.parametrize("batch", RUN_BATCHES)
def test_compiled_matches_interpreter(compiled: Compiled, batch: int) -> None:
    c = compiled
    assert c.cm.max_batch == COMPILED_BATCH
    x = np.ascontiguousarray(c.x[:batch])
    got = c.cm(x)
    # Batch 1 runs the interpreter on the batch-1 graph itself; batch 2 reuses the batch-4 reference's rows.
    want = c.model(x) if batch == 1 else c.want[:batch]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.isfinite(got).all()
    err = rel_error(got, want)
    print(f"{c.name} batch {batch}: rel error {err:.3g}, max |out| {np.abs(want).max():.3g}")
    assert err <= TOL_COMPILED_MODEL, f"{c.name} at batch {batch}: rel error {err:.3g}"
    if batch > 1:  # the samples differ, so a batch-indexing mix-up would show
        assert not np.allclose(want[0], want[1])


def test_every_conv_runs_the_kernel_chosen_for_it(compiled: Compiled) -> None:
    """The compiled model reports, per conv layer, the algorithm its lowering emitted: the selection pass's choice
    (no fallback), depthwise layers on the depthwise kernel."""
    c = compiled
    ran = c.cm.layer_algorithms
    assert ran and ran == {layer: choice.impl.algorithm for layer, choice in c.cm.choices.items()}
    depthwise = {n.layer for n in c.cm.graph.nodes if n.op in ("conv2d", "fused_conv2d")
                 and ConvShape.of(n).depthwise}
    assert {layer for layer, a in ran.items() if a == "depthwise"} == depthwise


def test_batch_elements_are_independent(compiled: Compiled) -> None:
    """Image i of a batch-4 call equals the same image run alone (batch 1) and at another position."""
    c = compiled
    full = c.cm(c.x)
    alone = c.cm(np.ascontiguousarray(c.x[2:3]))
    assert rel_error(alone[0], full[2]) <= TOL_COMPILED_MODEL
    swapped = c.cm(np.ascontiguousarray(c.x[::-1]))
    assert rel_error(swapped[::-1], full) <= TOL_COMPILED_MODEL


def test_compiled_repr_and_stats(compiled: Compiled) -> None:
    c = compiled
    s = c.cm.stats
    assert s.arena_bytes >= s.lower_bound > 0 and s.naive_bytes >= s.arena_bytes
    assert s.weights_bytes > 0
    assert f"'{c.model.graph(COMPILED_BATCH).name}'" in repr(c.cm) and f"batch <= {COMPILED_BATCH}" in repr(c.cm)


def test_c_example_equals_in_process_bit_for_bit(compiled: Compiled, tmp_path: Path) -> None:
    """The deployment bundle of the same module, run by examples/c/classify.c (no Python in the process), gives the
    in-process outputs bit for bit, at batch 1 and at a batch between 1 and the compiled maximum."""
    from cnncc.driver import write_bundle

    c = compiled
    files = write_bundle(c.cm, tmp_path / "bundle")
    assert files.warnings == []
    exe = build_c_example(repo_root(__file__) / "examples" / "c" / "classify.c", files.directory,
                          tmp_path / "classify")
    for batch in (1, 3):
        x = np.ascontiguousarray(c.x[:batch])
        np.save(tmp_path / "x.npy", x)
        r = run_c_example(exe, "-w", str(files.weights), "-o", str(tmp_path / "y.bin"), str(tmp_path / "x.npy"))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "y.bin").read_bytes() == c.cm(x).tobytes(), f"{c.name} at batch {batch}"
