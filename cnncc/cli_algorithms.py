"""``cnncc bench``, ``cnncc tune`` and ``cnncc explain``: the convolution algorithms of a model's layers, measured,
tuned and explained (the argument parsers live in :mod:`cnncc.cli`)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from cnncc.errors import InputError


def _setup(args: argparse.Namespace, all_errors: bool = False) -> tuple[Any, Any, Any, Any]:
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


def _shapes(graph: Any, layer: str | None) -> dict[Any, list[str]]:
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


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), transient=True)


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.tuner import applicable, measure_many
    from cnncc.codegen.peak import measure_peak_gflops

    model, graph, chooser, target = _setup(args)
    shapes = _shapes(graph, args.layer)
    threads = args.threads or 1
    peak = measure_peak_gflops(target) * threads
    rows: list[dict[str, Any]] = []
    total = sum(len(applicable(cs, chooser.algorithms)) for cs in shapes)
    with _progress() as progress:
        task = progress.add_task("measuring", total=total)
        for cs, layers in shapes.items():
            choice = chooser.choose_shape(cs, layers[0])
            cands = {c.impl.algorithm: c for c in choice.candidates}
            algos = applicable(cs, chooser.algorithms)
            progress.update(task, description=f"{layers[0]} ({', '.join(algos)})")
            for algo, m in zip(algos, measure_many(cs, [cands[a].impl for a in algos], args.cpu, threads,
                                                   max(1, args.repeats // 3)), strict=True):
                rows.append({"layers": layers, "signature": cs.signature(), "algorithm": algo,
                             "ms": m.seconds * 1e3, "gflops": m.gflops, "pct_peak": 100 * m.gflops / peak,
                             "error": m.error, "model_ms": cands[algo].estimate_s * 1e3 / threads,
                             "selected": algo == choice.impl.algorithm, "macs": cs.macs})
                progress.advance(task)
    for sig in {r["signature"] for r in rows}:
        mine = [r for r in rows if r["signature"] == sig]
        best = min(r["ms"] for r in mine)
        direct = next((r["ms"] for r in mine if r["algorithm"] == "direct"), math.nan)
        for r in mine:
            r["vs_best"] = r["ms"] / best
            r["speedup_vs_direct"] = direct / r["ms"]
    table = Table(title=f"{model.name}: convolution algorithms, {threads} thread(s), batch {args.batch}, "
                        f"peak {peak:.0f} GFLOP/s (measured now)")
    for col in ("layer(s)", "algorithm", "ms", "GFLOP/s", "% peak", "vs direct", "max error", "model ms", ""):
        table.add_column(col, justify="left" if col in ("layer(s)", "algorithm", "") else "right")
    for r in rows:
        names = r["layers"][0] + (f" (+{len(r['layers']) - 1})" if len(r["layers"]) > 1 else "")
        mark = ("selected" if r["selected"] else "") + (" best" if r["vs_best"] == 1.0 else "")
        table.add_row(names, r["algorithm"], f"{r['ms']:.3f}", f"{r['gflops']:.1f}", f"{r['pct_peak']:.0f}",
                      f"{r['speedup_vs_direct']:.2f}x", f"{r['error']:.1e}", f"{r['model_ms']:.3f}", mark.strip())
    Console(width=140).print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{model.name}"
    report = {"model": model.name, "threads": threads, "batch": args.batch, "cpu": target.cpu,
              "peak_gflops": peak, "max_error": chooser.max_error, "rows": rows}
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    _plot(rows, f"{model.name}, {threads} thread(s)", stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


def _plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sigs = list(dict.fromkeys(r["signature"] for r in rows))
    algos = list(dict.fromkeys(r["algorithm"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(sigs) * max(len(algos), 1) / 2), 4.5))
    width = 0.8 / max(len(algos), 1)
    for i, algo in enumerate(algos):
        xs, ys = [], []
        for j, sig in enumerate(sigs):
            r = next((r for r in rows if r["signature"] == sig and r["algorithm"] == algo), None)
            if r is not None:
                xs.append(j + i * width)
                ys.append(r["gflops"])
        ax.bar(xs, ys, width, label=algo)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sigs))])
    labels = [next(r for r in rows if r["signature"] == s)["layers"][0] for s in sigs]
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GFLOP/s (direct-convolution flops / time)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_tune(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.tuner import tune_shapes

    if args.budget is not None and args.budget <= 0:
        raise InputError(f"--budget must be a positive number of seconds, got {args.budget}")
    model, graph, chooser, _ = _setup(args)
    shapes = _shapes(graph, None)
    with _progress() as progress:
        task = progress.add_task("tuning", total=len(shapes))

        def report(layer: str, done: int, total: int) -> None:
            progress.update(task, completed=done, description=f"tuning {layer}" if layer else "done")

        results = tune_shapes(shapes, chooser, args.cpu, args.top, args.budget, args.repeats, report)
    table = Table(title=f"{model.name}: tuned on {chooser.target.cpu}, {chooser.threads} thread(s) -> "
                        f"{chooser.db.path}")
    for col in ("layer(s)", "best", "ms", "candidates (ms)"):
        table.add_column(col)
    for r in results:
        names = r.layers[0] + (f" (+{len(r.layers) - 1})" if len(r.layers) > 1 else "")
        if r.skipped:
            table.add_row(names, r.best, "", "already in the database")
        else:
            others = ", ".join(f"{k} {m.seconds * 1e3:.3f}" for k, m in sorted(r.measured.items(),
                                                                               key=lambda kv: kv[1].seconds))
            table.add_row(names, r.best, f"{r.measured[r.best].seconds * 1e3:.3f}", others)
    Console(width=160).print(table)
    left = len(shapes) - len(results)
    if left:
        print(f"budget of {args.budget:g} s used up: {left} layer shape(s) left; run `cnncc tune` again to resume")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.codegen.select import describe_schedule

    model, graph, chooser, target = _setup(args, all_errors=True)
    console = Console(width=150)
    console.print(f"{model.name}: convolution algorithms for {target.cpu}, {chooser.threads} thread(s), batch "
                  f"{args.batch}; error budget {chooser.max_error:.0e} (max |y - ref| / max |ref| per layer); "
                  f"machine: {chooser.machine.peak_gflops:.0f} GFLOP/s per core, "
                  f"{chooser.machine.cache_gbs:.0f} GB/s cache, {chooser.machine.dram_gbs:.0f} GB/s DRAM; "
                  f"tuning database {chooser.db.path}")
    for cs, layers in _shapes(graph, args.layer).items():
        choice = chooser.choose_shape(cs, layers[0], all_errors=True)
        console.print(f"\n[bold]{', '.join(layers)}[/bold]: {cs.signature()}, {cs.macs / 1e6:.1f} MMACs")
        table = Table()
        for col in ("algorithm", "model ms", "measured ms", "error", "verdict"):
            table.add_column(col, justify="left" if col in ("algorithm", "verdict") else "right")
        for c in sorted(choice.candidates, key=lambda c: c.seconds):
            verdict = ("CHOSEN (" + choice.basis + ")" if c.impl == choice.impl else
                       f"excluded: {c.excluded}" if c.excluded else "slower")
            table.add_row(c.label, f"{c.estimate_s * 1e3:.3f}",
                          "" if c.measured_s is None else f"{c.measured_s * 1e3:.3f}",
                          "" if c.error is None else f"{c.error:.1e}", verdict)
        for algo, why in choice.not_applicable.items():
            table.add_row(algo, "", "", "", f"not applicable: {why}")
        console.print(table)
        console.print(f"  schedule: {describe_schedule(cs, choice.impl, target.vector_width)}")
    return 0


def add_parsers(sub: Any, model_help: str) -> None:
    def common(p: argparse.ArgumentParser, per_layer: bool = True, repeats: bool = True) -> None:
        p.add_argument("model", help=model_help)
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

    bench = sub.add_parser("bench", help="time every conv layer with every applicable algorithm",
                           description="Compile each conv layer of a model on its own with each applicable "
                                       "algorithm and print time, GFLOP/s, %% of the FMA peak measured in the same "
                                       "run, speed-up over direct, max error against float64 and the cost model's "
                                       "estimate; writes bench-MODEL.json and bench-MODEL.png.")
    common(bench)
    bench.add_argument("--out", default=".", metavar="DIR", help="where the JSON and PNG go (default .)")
    tune = sub.add_parser("tune", help="measure each conv layer's best algorithm into the tuning database",
                          description="For every distinct conv layer shape, time the cost model's top candidates "
                                      "within the error budget plus direct convolution and two of its register "
                                      "tiles, and store the times in the tuning database, layer by layer (an "
                                      "interrupted run resumes; shapes already tuned are skipped). `cnncc compile`, "
                                      "`run` and `explain` then choose by the measured times.")
    common(tune, per_layer=False)
    tune.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="stop after this long")
    tune.add_argument("--top", type=int, default=3, help="model candidates measured per layer (default 3)")
    explain = sub.add_parser("explain", help="the chosen algorithm of every conv layer, and why",
                             description="For every conv layer: each candidate algorithm with the cost model's "
                                         "estimate, the measured time (after `cnncc tune`), its error against "
                                         "float64, and the verdict: chosen (by measurement or by the model), "
                                         "excluded by the error budget, slower, or not applicable (and why).")
    common(explain, repeats=False)


COMMANDS = {"bench": cmd_bench, "tune": cmd_tune, "explain": cmd_explain}

__all__ = ["COMMANDS", "add_parsers"]
