"""``cnncc bench MODEL``: every conv layer compiled on its own with every applicable algorithm: time, GFLOP/s, % of
the measured peak, speed-up over direct, error against float64; writes bench-MODEL.json and bench-MODEL.png."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from cnncc.cli.algorithms import add_common, conv_shapes, progress_bar, setup
from cnncc.cli.common import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="time every conv layer with every applicable algorithm",
        description="Compile each conv layer of a model on its own with each applicable "
                    "algorithm and print time, GFLOP/s, %% of the FMA peak measured in the same "
                    "run, speed-up over direct, max error against float64 and the cost model's "
                    "estimate; writes bench-MODEL.json and bench-MODEL.png.")
    add_common(p)
    p.add_argument("--out", default=".", metavar="DIR", help="where the JSON and PNG go (default .)")
    return p


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnncc.codegen.peak import measure_peak_gflops
    from cnncc.tuner import applicable, measure_many

    model, graph, chooser, target = setup(args)
    shapes = conv_shapes(graph, args.layer)
    threads = args.threads or 1
    peak = measure_peak_gflops(target) * threads
    rows: list[dict[str, Any]] = []
    total = sum(len(applicable(cs, chooser.algorithms)) for cs in shapes)
    with progress_bar() as progress:
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
