"""Convolution algorithms layer by layer, in one run on this machine (1 thread unless --threads):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_algorithms.py [--quick]

1. Winograd vs direct on the 3x3 stride-1 layers of VGG-11 and ResNet-18 with C, K >= 64: time, speed-up, error.
2. FFT (and im2col) vs direct on AlexNet's 5x5 and 11x11 layers.
3. Each algorithm's max error against float64, as a ratio to direct's error on the same layer.
4. Selection quality on every distinct conv layer of the zoo: every applicable candidate is measured twice (runs A
   and B, each timing the candidates round-robin); the cost model's choice (no tuning data) and the tuned choice
   (the best of run A, what `cnncc tune` stores) are each compared with the best of run B (an independent
   measurement, so noise is not hidden).

Each layer is compiled on its own (see cnncc.tuner: the layer's own kernels, best of repeated profiled
runs). % of peak divides by the single-core FMA peak measured at the start of the run. Results go to
``benchmarks/results/<date>-algorithms.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cnncc
from cnncc.codegen.peak import measure_peak_gflops
from cnncc.codegen.select import DEFAULT_ALGORITHMS, CpuConvChooser, MachineModel
from cnncc.codegen.target import Target
from cnncc.convalgo import ConvShape, lookup
from cnncc.frontend.models import ZOO
from cnncc.ops.conv2d import ConvImpl
from cnncc.tuner import measure_many, model_convs
from cnncc.tuning import TuningDB


def zoo_shapes(names: list[str]) -> dict[ConvShape, list[str]]:
    out: dict[ConvShape, list[str]] = {}
    for name in names:
        m = ZOO[name]()
        graph, _, _ = cnncc.api.optimize(m.graph(1), m.params)
        for cs, layers in model_convs(graph).items():
            out.setdefault(cs, []).extend(f"{name}.{ly}" for ly in layers)
    return out


def run(cs: ConvShape, algos: list[str], threads: int, repeats: int, peak: float) -> list[dict[str, object]]:
    ms = measure_many(cs, [ConvImpl(a) for a in algos], threads=threads, repeats=repeats)
    return [{"algorithm": a, "ms": m.seconds * 1e3, "gflops": m.gflops, "pct_peak": 100 * m.gflops / peak,
             "error": m.error} for a, m in zip(algos, ms, strict=True)]


def table(title: str, rows: list[dict[str, object]]) -> None:
    print(f"\n{title}")
    print(f"{'layer':30s} {'algorithm':10s} {'ms':>8s} {'GFLOP/s':>8s} {'%peak':>6s} {'vs direct':>9s} {'error':>8s}")
    for r in rows:
        print(f"{r['layer'][:30]:30s} {r['algorithm']:10s} {r['ms']:8.3f} {r['gflops']:8.1f} {r['pct_peak']:6.0f} "
              f"{r['speedup']:8.2f}x {r['error']:8.1e}")


def per_layer(shapes: dict[ConvShape, list[str]], algos: list[str], threads: int, repeats: int,
              peak: float) -> list[dict[str, object]]:
    rows = []
    for cs, layers in shapes.items():
        got = run(cs, [a for a in algos if lookup(a, "cpu").why_not(cs) is None], threads, repeats, peak)
        direct = next(g for g in got if g["algorithm"] == "direct")
        for g in got:
            rows.append({"layer": layers[0], "layers": layers, "signature": cs.signature(), **g,
                         "speedup": direct["ms"] / g["ms"], "error_vs_direct": g["error"] / direct["error"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 profiled run per round instead of 4")
    ap.add_argument("--skip-selection", action="store_true", help="sections 1-3 only")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    repeats = 1 if args.quick else 4  # per round; candidates are timed in 3 round-robin rounds
    target = Target.host()
    peak = measure_peak_gflops(target) * args.threads
    machine = MachineModel.measure(target)
    print(f"host {target.cpu}; FMA peak {peak:.1f} GFLOP/s ({args.threads} thread(s)); cost model machine {machine}")
    result: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": target.cpu,
                                 "threads": args.threads, "peak_gflops": peak, "machine": vars(machine)}

    wide = {cs: ls for cs, ls in zoo_shapes(["vgg11", "resnet18"]).items()
            if (cs.r, cs.s, cs.stride) == (3, 3, (1, 1)) and cs.c >= 64 and cs.k >= 64}
    rows = per_layer(wide, ["direct", "winograd2", "winograd4", "winograd6"], args.threads, repeats, peak)
    table("1. Winograd vs direct, VGG-11 and ResNet-18 3x3 stride-1 layers with C, K >= 64", rows)
    w4 = [r["speedup"] for r in rows if r["algorithm"] == "winograd4"]
    print(f"winograd4 speed-up over direct: min {min(w4):.2f}x, median {statistics.median(w4):.2f}x, "
          f"max {max(w4):.2f}x over {len(w4)} layer shapes")
    result["winograd_vs_direct"] = rows

    alex = {cs: ls for cs, ls in zoo_shapes(["alexnet"]).items() if cs.r in (5, 11)}
    rows2 = per_layer(alex, ["direct", "im2col", "fft8", "fft16"], args.threads, repeats, peak)
    table("2. FFT vs direct, AlexNet's 5x5 and 11x11 layers", rows2)
    result["fft_vs_direct"] = rows2

    ratios: dict[str, list[float]] = {}
    for r in rows + rows2:
        ratios.setdefault(str(r["algorithm"]), []).append(float(r["error_vs_direct"]))
    print("\n3. max error / direct's max error on the same layer")
    for algo, rs in ratios.items():
        print(f"  {algo:10s} min {min(rs):7.2f}  median {statistics.median(rs):7.2f}  max {max(rs):7.2f}  "
              f"({len(rs)} layers)")
    result["error_ratio_vs_direct"] = {a: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                                       for a, v in ratios.items()}

    if not args.skip_selection:
        result["selection"] = selection(target, machine, args.threads, repeats, peak)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-algorithms.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path}")


def selection(target: Target, machine: MachineModel, threads: int, repeats: int, peak: float) -> dict[str, object]:
    shapes = zoo_shapes(list(ZOO))
    db = TuningDB(Path(tempfile.mkdtemp()) / "db.json")  # empty: the model alone decides
    chooser = CpuConvChooser(target, db=db, threads=threads, machine=machine)
    rows = []
    print(f"\n4. selection on the zoo's {len(shapes)} distinct conv layer shapes (each candidate measured twice)")
    for i, (cs, layers) in enumerate(shapes.items()):
        choice = chooser.choose_shape(cs, layers[0])
        allowed = [c.impl.algorithm for c in choice.candidates if not c.excluded]
        algos = [a for a in DEFAULT_ALGORITHMS if lookup(a, "cpu").why_not(cs) is None and a in allowed]
        a = {x: m.seconds for x, m in zip(algos, measure_many(cs, [ConvImpl(x) for x in algos], threads=threads,
                                                                 repeats=repeats), strict=True)}
        b = {x: m.seconds for x, m in zip(algos, measure_many(cs, [ConvImpl(x) for x in algos], threads=threads,
                                                                 repeats=repeats), strict=True)}
        best_b = min(b.values())
        model_pick, tuned_pick = choice.impl.algorithm, min(a, key=a.__getitem__)
        row = {"layers": layers, "signature": cs.signature(), "run_a_ms": {k: v * 1e3 for k, v in a.items()},
               "run_b_ms": {k: v * 1e3 for k, v in b.items()}, "best_b": min(b, key=b.__getitem__),
               "model_pick": model_pick, "model_vs_best": b[model_pick] / best_b, "tuned_pick": tuned_pick,
               "tuned_vs_best": b[tuned_pick] / best_b}
        rows.append(row)
        print(f"  [{i + 1:3d}/{len(shapes)}] {layers[0][:34]:34s} best {row['best_b']:9s} model {model_pick:9s} "
              f"{row['model_vs_best']:5.2f}x  tuned {tuned_pick:9s} {row['tuned_vs_best']:5.2f}x", flush=True)
    for who in ("model", "tuned"):
        r = [x[f"{who}_vs_best"] for x in rows]
        over = [x for x in rows if x[f"{who}_vs_best"] > 1.10]
        print(f"{who} selection: within 10% of the best on {len(rows) - len(over)}/{len(rows)} shapes; worst "
              f"{max(r):.2f}x; median {statistics.median(r):.3f}x; total time {sum(r) / len(r):.3f}x of the best")
        for x in over:
            print(f"   {x['layers'][0]}: {x[f'{who}_pick']} {x[f'{who}_vs_best']:.2f}x (best {x['best_b']}; "
                  f"B: {', '.join(f'{k} {v:.3f}' for k, v in x['run_b_ms'].items())} ms)")
    return {"rows": rows}


if __name__ == "__main__":
    main()
