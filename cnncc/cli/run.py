"""``cnncc run MODEL``: compile a model for this CPU and run it on an input (.npy) or on seeded random data."""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from cnncc.cli.common import Subparsers, add_model, add_target
from cnncc.errors import InputError


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="compile a model for this CPU, run it and print its outputs",
        description="Compile a model to native code for this CPU (LLVM) and run it on an input "
                    "(.npy) or on seeded random data; --interpret runs the numpy reference "
                    "interpreter instead (the oracle every backend is tested against).")
    add_model(p)
    p.add_argument("--input", metavar="FILE.npy", help="input array; its first axis is the batch "
                                                       "(a single sample without batch axis is accepted)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    p.add_argument("--weights", metavar="FILE.npz", help="load weights saved with model.save_weights()")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and random input (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="compute precision (float64 runs the interpreter: compiled code is float32)")
    p.add_argument("--interpret", action="store_true", help="use the numpy reference interpreter")
    p.add_argument("--threads", type=int, default=None, help="threads for compiled code (default: all cores)")
    p.add_argument("--cpu", default="host", help="LLVM CPU to compile for: host (default) or e.g. x86-64-v3")
    add_target(p)
    p.add_argument("--algorithms", metavar="A[,B]", help="convolution algorithms to choose from (default: all of "
                                                          "direct, im2col, winograd2/4/6, fft8/16; `cnncc explain`)")
    p.add_argument("--max-error", type=float, default=None,
                   help="error budget of a conv layer: max |y - ref| / max |ref| against float64 (default 1e-4)")
    p.add_argument("-o", "--output", metavar="FILE.npy", help="save the output array")
    return p


def _input_array(args: argparse.Namespace, model: Any) -> np.ndarray:
    graph = model.graph(1)
    sample = graph.inputs[0].shape[1:]
    if args.input is None:
        rng = np.random.default_rng(args.seed)
        return rng.standard_normal((args.batch, *sample)).astype(np.float32)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read input file '{args.input}': {e}") from e
    if x.shape == sample:
        x = x[None]
    if x.shape[1:] != sample:
        raise InputError(f"input file '{args.input}' holds shape {x.shape}; model '{graph.name}' expects "
                         f"(batch, {', '.join(map(str, sample))})")
    return x


def run(args: argparse.Namespace) -> int:
    from cnncc.loader import load_model

    model = load_model(args.model, seed=args.seed)
    if args.weights:
        model.load_weights(args.weights)
    x = _input_array(args, model)
    if not np.all(np.isfinite(x)):
        raise InputError(f"input holds {int(np.size(x) - np.isfinite(x).sum())} NaN/Inf values")
    if args.interpret or args.dtype == "float64":
        t0 = time.perf_counter()
        y = model(x, dtype=args.dtype)
        dt, how = time.perf_counter() - t0, f"reference interpreter, {args.dtype}"
    else:
        import cnncc

        t0 = time.perf_counter()
        compiled = cnncc.compile(model, target=args.target, cuda_arch=args.cuda_arch, batch=x.shape[0],
                                 threads=args.threads, cpu=args.cpu,
                                 algorithms=args.algorithms.split(",") if args.algorithms else None,
                                 max_error=args.max_error)
        tc = time.perf_counter() - t0
        compiled(x)
        t0 = time.perf_counter()
        y = compiled(x)
        dt = time.perf_counter() - t0
        how = (f"compiled for {compiled.executable.description} in {tc:.2f} s, {compiled.threads} threads; "
               f"{compiled.stats.arena_bytes / 1e6:.1f} MB arena")
    _report(model.name, x, y, dt, how)
    if args.output:
        outs = y if isinstance(y, dict) else {"output": y}
        np.save(args.output, next(iter(outs.values())))
    return 0


def _report(name: str, x: np.ndarray, y: np.ndarray | dict[str, np.ndarray], dt: float, how: str) -> None:
    """One line with the shapes and the time, then per output its top-5 classes (or its range)."""
    outs = y if isinstance(y, dict) else {"output": y}
    print(f"{name}: input {x.shape} -> " + ", ".join(f"{k} {v.shape}" for k, v in outs.items())
          + f" in {dt * 1e3:.2f} ms ({how})")
    for key, out in outs.items():
        if out.ndim == 2 and out.shape[1] > 1:
            top = np.argsort(-out, axis=1)[:, :5]
            for i in range(min(out.shape[0], 8)):
                print(f"  {key}[{i}] top classes: " + ", ".join(f"{c} ({out[i, c]:.4g})" for c in top[i]))
        else:
            print(f"  {key}: min {out.min():.4g} max {out.max():.4g} mean {out.mean():.4g}")
