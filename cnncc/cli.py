"""The ``cnncc`` command line: inspect and run models.

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
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from cnncc.errors import CnnccError, InputError

MODEL_HELP = "a zoo name (see `cnncc zoo`) or path/to/file.py defining model() -> cnncc Model"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnncc", description="cnncc: a compiler for convolutional neural networks. Describe a network in the "
        "Python DSL (or pick one from the zoo), inspect its typed graph, and run it.",
        epilog="Examples: `cnncc show lenet5`, `cnncc run resnet18 --batch 2`, `cnncc run my_net.py --input x.npy`.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("zoo", help="list the built-in models with their parameter counts",
                   description="List the model zoo (the seeds' architectures).")
    show = sub.add_parser("show", help="print a model's summary table and its graph IR",
                          description="Print the layer table (output shapes, parameters, MACs) and the typed IR.")
    show.add_argument("model", help=MODEL_HELP)
    show.add_argument("--batch", type=int, default=1, help="batch size of the printed graph (default 1)")
    show.add_argument("--no-ir", action="store_true", help="print only the summary table")
    run = sub.add_parser("run", help="compile a model for this CPU, run it and print its outputs",
                         description="Compile a model to native code for this CPU (LLVM) and run it on an input "
                                     "(.npy) or on seeded random data; --interpret runs the numpy reference "
                                     "interpreter instead (the oracle every backend is tested against).")
    run.add_argument("model", help=MODEL_HELP)
    run.add_argument("--input", metavar="FILE.npy", help="input array; its first axis is the batch "
                                                         "(a single sample without batch axis is accepted)")
    run.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    run.add_argument("--weights", metavar="FILE.npz", help="load weights saved with model.save_weights()")
    run.add_argument("--seed", type=int, default=0, help="seed for weights and random input (default 0)")
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="compute precision (float64 runs the interpreter: compiled code is float32)")
    run.add_argument("--interpret", action="store_true", help="use the numpy reference interpreter")
    run.add_argument("--threads", type=int, default=None, help="threads for compiled code (default: all cores)")
    run.add_argument("--cpu", default="host", help="LLVM CPU to compile for: host (default) or e.g. x86-64-v3")
    run.add_argument("--algorithms", metavar="A[,B]", help="convolution algorithms to choose from (default: all of "
                                                            "direct, im2col, winograd2/4/6, fft8/16; `cnncc explain`)")
    run.add_argument("--max-error", type=float, default=None,
                     help="error budget of a conv layer: max |y - ref| / max |ref| against float64 (default 1e-4)")
    run.add_argument("-o", "--output", metavar="FILE.npy", help="save the output array")
    opt = sub.add_parser("opt", help="run graph passes and print the IR",
                         description="Run passes on a model's graph (default: the CPU inference pipeline) and print "
                                     "what each did, their times, and the IR after the passes you name.")
    opt.add_argument("model", help=MODEL_HELP)
    opt.add_argument("-p", "--passes", help="comma-separated pass names (default: the CPU inference pipeline)")
    opt.add_argument("--print-after", default="", metavar="PASS[,PASS]", help="print the IR after these passes")
    opt.add_argument("--dump-dir", metavar="DIR", help="write the IR before and after every pass into DIR")
    opt.add_argument("--batch", type=int, default=1)
    opt.add_argument("--training", action="store_true", help="the training graph (BN/dropout in training mode)")
    viz = sub.add_parser("viz", help="draw a model's graph (DOT, SVG or HTML)",
                         description="Draw the graph after a pass of the CPU inference pipeline: per node the layer, "
                                     "op (fused ops with their epilogue), output shape, convolution algorithm, "
                                     "physical layout and arena offset. .svg needs Graphviz's `dot`; .html is one "
                                     "self-contained page (with the drawing when `dot` is installed).")
    viz.add_argument("model", help=MODEL_HELP)
    viz.add_argument("--after", default="all", metavar="PASS",
                     help="none (the DSL graph), a pass of the CPU inference pipeline, or all (default)")
    viz.add_argument("--batch", type=int, default=1, help="batch size of the drawn graph (default 1)")
    viz.add_argument("-o", "--output", metavar="FILE", help="graph.dot, graph.svg or graph.html "
                                                            "(default: DOT text on stdout)")
    plan = sub.add_parser("plan", help="print a model's memory plan (arena buffers, offsets, live ranges)",
                          description="Lower a model for this CPU as `cnncc run` compiles it and print its arena plan: "
                                      "a table of the arena buffers (producer, size, offset, live range of calls), an "
                                      "ASCII timeline of their lifetimes, and the arena size against the lower bound "
                                      "(peak live bytes) and the naive sum, with the in-place merges and the weights "
                                      "blob size.")
    plan.add_argument("model", help=MODEL_HELP)
    plan.add_argument("--batch", type=int, default=1, help="the compiled batch (default 1)")
    plan.add_argument("--unoptimized", action="store_true", help="plan the graph as traced, without graph passes")
    from cnncc.cli_algorithms import add_parsers
    from cnncc.cli_compile import add_parser as add_compile_parser
    from cnncc.cli_train import add_parser as add_train_parser

    add_parsers(sub, MODEL_HELP)
    add_train_parser(sub, MODEL_HELP)
    add_compile_parser(sub, MODEL_HELP)
    return p


def cmd_viz(args: argparse.Namespace) -> int:
    from cnncc.viz import visualize

    text = visualize(args.model, args.output, after=args.after, batch=args.batch)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {args.output}")
    return 0


def cmd_opt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnncc.errors import CnnccError as Error
    from cnncc.loader import load_model
    from cnncc.passes import PASSES, cpu_inference
    from cnncc.passmanager import PassContext, run_passes

    model = load_model(args.model)
    if args.passes:
        unknown = [n for n in args.passes.split(",") if n not in PASSES]
        if unknown:
            raise Error(f"unknown pass(es) {unknown}; passes are {', '.join(PASSES)}")
        passes = [PASSES[n]() for n in args.passes.split(",")]
    else:
        passes = cpu_inference()
    graph = model.graph(args.batch, training=args.training)
    ctx = PassContext(dict(model.params), verify=True,
                      print_after=frozenset(n for n in args.print_after.split(",") if n),
                      dump_dir=Path(args.dump_dir) if args.dump_dir else None)
    out = run_passes(graph, passes, ctx)
    for line in ctx.log:
        print(f"// {line}")
    for name, secs in ctx.timings.items():
        print(f"// {name}: {secs * 1e3:.1f} ms")
    print(f"// {len(graph.nodes)} nodes -> {len(out.nodes)} nodes; {len(graph.params)} -> {len(out.params)} params")
    if not ctx.print_after:
        print(out.text())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from cnncc.loader import load_model
    from cnncc.plan_view import plan_model, print_plan

    if args.batch < 1:
        raise InputError(f"--batch must be a positive integer, got {args.batch}")
    model = load_model(args.model)
    program, report = plan_model(model, args.batch, optimize=not args.unoptimized)
    print_plan(program, report, f"{model.name} at batch {args.batch}")
    return 0


def cmd_zoo() -> int:
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


def cmd_show(args: argparse.Namespace) -> int:
    from cnncc.loader import load_model

    model = load_model(args.model)
    model.summary(batch=args.batch)
    if not args.no_ir:
        print()
        print(model.graph(args.batch).text())
    return 0


def _input_array(args: argparse.Namespace, model: object) -> np.ndarray:
    graph = model.graph(1)  # type: ignore[attr-defined]
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


def cmd_run(args: argparse.Namespace) -> int:
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
        compiled = cnncc.compile(model, batch=x.shape[0], threads=args.threads, cpu=args.cpu,
                                 algorithms=args.algorithms.split(",") if args.algorithms else None,
                                 max_error=args.max_error)
        tc = time.perf_counter() - t0
        compiled(x)
        t0 = time.perf_counter()
        y = compiled(x)
        dt = time.perf_counter() - t0
        how = (f"compiled for {compiled.target.cpu} in {tc:.2f} s, {compiled.threads} threads; "
               f"{compiled.stats.arena_bytes / 1e6:.1f} MB arena")
    outs = y if isinstance(y, dict) else {"output": y}
    print(f"{model.name}: input {x.shape} -> " + ", ".join(f"{k} {v.shape}" for k, v in outs.items())
          + f" in {dt * 1e3:.2f} ms ({how})")
    for name, out in outs.items():
        if out.ndim == 2 and out.shape[1] > 1:
            top = np.argsort(-out, axis=1)[:, :5]
            for i in range(min(out.shape[0], 8)):
                print(f"  {name}[{i}] top classes: " + ", ".join(f"{c} ({out[i, c]:.4g})" for c in top[i]))
        else:
            print(f"  {name}: min {out.min():.4g} max {out.max():.4g} mean {out.mean():.4g}")
    if args.output:
        np.save(args.output, next(iter(outs.values())))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "zoo":
            return cmd_zoo()
        if args.command == "show":
            return cmd_show(args)
        if args.command == "opt":
            return cmd_opt(args)
        if args.command == "viz":
            return cmd_viz(args)
        if args.command == "plan":
            return cmd_plan(args)
        if args.command == "train":
            from cnncc.cli_train import cmd_train

            return cmd_train(args)
        if args.command == "compile":
            from cnncc.cli_compile import cmd_compile

            return cmd_compile(args)
        if args.command in ("bench", "tune", "explain"):
            from cnncc.cli_algorithms import COMMANDS

            return COMMANDS[args.command](args)
        return cmd_run(args)
    except CnnccError as e:
        print(f"cnncc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
