"""``cnncc compile MODEL -o DIR``: write a deployment bundle (shared library, C header, weights file, manifest).

The model is compiled exactly as ``cnncc.compile`` (or, with ``--training``, ``cnncc.compile_training``) compiles
it in-process, and that module is written out: the bundle computes bit for bit what the in-process runtime does.
See :mod:`cnncc.codegen.bundle` for the files and ``examples/c/classify.c`` for a C program that runs one.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from cnncc.cli.common import Subparsers, add_model, add_target
from cnncc.errors import CnnccError


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "compile", help="write a deployment bundle: lib<name>.so, <name>.h, weights, manifest.json",
        description="Compile a model for a CPU (or with --target cuda for an NVIDIA GPU: fat binary, launch plan and "
                    "a C runtime on the CUDA driver API) and write it as a bundle that runs without Python: a shared "
                    "library (and optionally a static archive) with a documented C API, its header, the weights file "
                    "(magic, version, graph hash, CRC-32) and manifest.json. A call may pass any batch from 1 to "
                    "--max-batch. Load it from Python with cnncc.load(DIR).",
        epilog="Example: `cnncc compile resnet18 -o build/resnet18 --max-batch 8 --cpu x86-64-v3`, then "
               "`cc app.c -I build/resnet18 -L build/resnet18 -lresnet18 -Wl,-rpath,build/resnet18`.")
    add_model(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the bundle directory (created)")
    p.add_argument("--max-batch", type=int, default=1, help="largest batch a call may pass (default 1)")
    p.add_argument("--threads", type=int, default=None, help="default threads of the bundle (default: all cores)")
    p.add_argument("--cpu", default="host",
                   help="LLVM CPU: host (default; runs only on CPUs with this one's features) or x86-64-v3 / "
                        "x86-64-v4 for any AVX2 / AVX-512 machine")
    add_target(p)
    p.add_argument("--name", default=None, help="C name prefix of the API (default: the model's name)")
    p.add_argument("--weights", metavar="FILE.npz", help="weights saved with model.save_weights() (default: the "
                                                         "model's seeded initial weights)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    p.add_argument("--embed-weights", action="store_true", help="put the weights inside the library")
    p.add_argument("--static", action="store_true", help="also write a static archive lib<name>.a")
    p.add_argument("--algorithms", metavar="A[,B]", help="convolution algorithms to choose from (default: all)")
    p.add_argument("--training", action="store_true",
                   help="export the training step (forward, loss, backward, optimiser update) instead of inference: "
                        "inputs are the images, labels, lr (and step/seed where the optimiser/dropout need them); "
                        "the weights blob holds the parameters and optimiser state, updated in place")
    from cnncc.cli.train import OPTIMIZERS

    p.add_argument("--optimizer", default="momentum", choices=OPTIMIZERS, help="--training: default momentum")
    p.add_argument("--weight-decay", type=float, default=0.0, help="--training: L2 weight decay")
    p.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "nll", "mse"),
                   help="--training: default cross_entropy")
    return p


def run(args: argparse.Namespace) -> int:
    import cnncc
    from cnncc.driver import write_bundle
    from cnncc.loader import load_model

    for flag, value in (("--max-batch", args.max_batch), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise CnnccError(f"{flag} must be a positive integer, got {value}")
    model = load_model(args.model, seed=args.seed)
    if args.weights:
        model.load_weights(args.weights)
    t0 = time.perf_counter()
    algorithms = args.algorithms.split(",") if args.algorithms else None
    if args.target == "cuda":
        return _run_cuda(args, model, algorithms, t0)
    if args.training:
        from cnncc.cli.train import make_optimizer

        trainer = cnncc.compile_training(model, loss=args.loss, optimizer=make_optimizer(args.optimizer, None,
                                                                                        args.weight_decay),
                                         batch=args.max_batch, threads=args.threads, cpu=args.cpu,
                                         algorithms=algorithms)
        compiled = trainer.compiled
        compiled.choices = trainer.choices  # the forward convolutions' algorithms, into the manifest
        extra = {"training": {"loss": args.loss, "optimizer": args.optimizer, "weight_decay": args.weight_decay,
                              "slots": sorted(trainer.train.slots)}}
    else:
        compiled = cnncc.compile(model, batch=args.max_batch, threads=args.threads, cpu=args.cpu,
                                 algorithms=algorithms)
        extra = {}
    compile_s = time.perf_counter() - t0
    files = write_bundle(compiled, args.output, args.name or model.name, embed_weights=args.embed_weights,
                         static=args.static, kind="training" if args.training else "inference", extra=extra)
    print(f"{model.name}: compiled for {compiled.target.cpu} in {compile_s:.2f} s, bundle written in "
          f"{files.seconds:.2f} s to {files.directory}/")
    written = [files.library, files.static_library, files.header, files.directory / "cnncc_bundle.h", files.weights,
               files.manifest]
    for path in written:
        if path is not None:
            print(f"  {path.name:<28} {path.stat().st_size:>14,} B")
    print(f"  batch 1..{compiled.max_batch}, {compiled.threads} threads by default, arena "
          f"{compiled.program.arena_bytes:,} B")
    d = files.directory
    print(f"C:      cc app.c -I {d} -L {d} -l{files.name} -Wl,-rpath,{d}   (API in {files.header.name})")
    print(f"Python: cnncc.load('{d}')")
    for w in files.warnings:
        print(f"warning from the C toolchain: {w}")
    return 0


def _run_cuda(args: argparse.Namespace, model: Any, algorithms: list[str] | None, t0: float) -> int:
    """``--target cuda``: compile through TVM and nvcc, write the CUDA bundle (see :mod:`cnncc.codegen.cuda.bundle`)."""
    import cnncc
    from cnncc.driver import write_bundle

    for flag, on in (("--training", args.training), ("--embed-weights", args.embed_weights),
                     ("--static", args.static)):
        if on:
            raise CnnccError(f"{flag} is not available with --target cuda (CUDA bundles are inference bundles with "
                             "a weights file and a shared library)")
    compiled = cnncc.compile(model, target="cuda", cuda_arch=args.cuda_arch, batch=args.max_batch,
                             algorithms=algorithms)
    compile_s = time.perf_counter() - t0
    files = write_bundle(compiled, args.output, args.name or model.name)
    code = compiled.executable.native
    print(f"{model.name}: compiled for CUDA {code.arch} in {compile_s:.2f} s ({len(code.kernels)} kernels, "
          f"{len(code.launches)} launches), bundle written in {files.seconds:.2f} s to {files.directory}/")
    for path in (files.library, files.fatbin, files.header, files.plan, files.runtime, files.weights, files.manifest):
        if path is not None:
            print(f"  {path.name:<28} {path.stat().st_size:>14,} B")
    worst = max(code.ptxas.values(), key=lambda r: r["registers"])
    spills = sum(r["spill_stores"] + r["spill_loads"] for r in code.ptxas.values())
    print(f"  batch {compiled.max_batch} (smaller batches copy fewer images), device arena {code.arena_bytes:,} B, "
          f"weights {len(code.weights):,} B; ptxas: at most {worst['registers']} registers, {spills} B spilled")
    d = files.directory
    if files.library is None:
        print(f"C:      build lib{files.name}.so where <cuda.h> is: {' '.join(files.build_command)}")
    else:
        print(f"C:      cc app.c -I {d} -L {d} -l{files.name} -lcuda -Wl,-rpath,{d}   (API in {files.header.name})")
    print(f"Python: cnncc.load('{d}')   (on a machine with an NVIDIA GPU)")
    for w in files.warnings:
        print(f"warning: {w}")
    return 0
