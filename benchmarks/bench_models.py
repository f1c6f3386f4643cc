"""Side-by-side inference benchmark: cnncc vs ONNX Runtime vs PyTorch eager, in one run, on this machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_models.py [--quick] [--models resnet18,...]

For each model/batch/thread count: min, median and max latency over repeated calls for each engine (cnncc with its
algorithm selection, and with direct convolution only), the ratios cnncc/ONNX Runtime and cnncc/PyTorch, and cnncc's
compile time. ONNX Runtime runs the model exported from the same
PyTorch twin (``cnncc.testing.twins``) that holds cnncc's weights. Then a per-layer table of ResNet-18's
convolutions from
cnncc's profiled entry point: GFLOP/s and % of the single-core FMA peak measured in the same run with cnncc's own
backend, on one and two threads: each convolution compiled on its own (hot caches, the kernel's own speed) and
inside the whole network (where ResNet-18's 46 MB of weights stream from DRAM every inference).
Results go to ``benchmarks/results/<date>-models.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CASES = [("lenet5", 1), ("lenet5", 64), ("resnet18", 1), ("resnet18", 8), ("alexnet", 1), ("vgg11", 1)]


def timings(fn: Callable[[], object], min_seconds: float = 1.0, min_runs: int = 10) -> dict[str, float]:
    """Latency statistics in milliseconds after two warm-up calls."""
    fn()
    fn()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
        if len(runs) >= 2000:
            break
    return {"min_ms": min(runs), "median_ms": statistics.median(runs), "max_ms": max(runs), "runs": len(runs)}


def onnx_session(twin: object, x: np.ndarray, threads: int):  # noqa: ANN201
    import onnxruntime as ort
    import torch

    buf = io.BytesIO()
    torch.onnx.export(twin, torch.from_numpy(x), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def bench_case(name: str, batch: int, threads_list: list[int], min_seconds: float) -> list[dict[str, object]]:
    import torch

    import cnncc
    from cnncc.frontend.models import get_model
    from cnncc.testing import randomize, rel_error
    from cnncc.testing.twins import TWINS

    model = get_model(name)
    randomize(model, 0)
    twin = TWINS[name]().eval()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()}, strict=True)
    x = np.random.default_rng(0).standard_normal((batch, *model.graph().inputs[0].shape[1:])).astype(np.float32)
    t0 = time.perf_counter()
    compiled = cnncc.compile(model, batch=batch)
    compile_s = time.perf_counter() - t0
    direct = cnncc.compile(model, batch=batch, algorithms="direct")
    algos: dict[str, int] = {}
    for choice in compiled.choices.values():
        algos[choice.impl.algorithm] = algos.get(choice.impl.algorithm, 0) + 1
    rows = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        sess = onnx_session(twin, x, threads)
        with torch.no_grad():
            want = twin(torch.from_numpy(x)).numpy()
            err = rel_error(compiled(x, threads=threads), want)
            res = {"cnncc": timings(lambda t=threads: compiled(x, threads=t), min_seconds),
                   "onnxruntime": timings(lambda s=sess: s.run(None, {"x": x}), min_seconds),
                   "cnncc_direct": timings(lambda t=threads: direct(x, threads=t), min_seconds),
                   "pytorch": timings(lambda: twin(torch.from_numpy(x)), min_seconds)}
        row = {"model": name, "batch": batch, "threads": threads, "compile_s": compile_s, "max_rel_error": err,
               "algorithms": algos,
               **{f"{k}_{s}": v[s] for k, v in res.items() for s in ("min_ms", "median_ms", "max_ms")},
               "ratio_vs_onnxruntime": res["cnncc"]["min_ms"] / res["onnxruntime"]["min_ms"],
               "ratio_direct_vs_onnxruntime": res["cnncc_direct"]["min_ms"] / res["onnxruntime"]["min_ms"],
               "ratio_vs_pytorch": res["cnncc"]["min_ms"] / res["pytorch"]["min_ms"]}
        rows.append(row)
        print(f"{name:9s} b{batch:<3d} t{threads}  cnncc {row['cnncc_min_ms']:8.3f}"
              f"  ort {row['onnxruntime_min_ms']:8.3f}  torch {row['pytorch_min_ms']:8.3f}  ms (min)"
              f"   cnncc/ort {row['ratio_vs_onnxruntime']:.2f} (direct only {row['ratio_direct_vs_onnxruntime']:.2f})"
              f"  cnncc/torch {row['ratio_vs_pytorch']:.2f}  compile {compile_s:.2f}s  err {err:.1e}  {algos}",
              flush=True)
    return rows


def _best(compiled: object, x: np.ndarray, threads: int, repeats: int) -> list[float]:
    best: list[float] = []
    for _ in range(3):
        secs = [p.seconds for p in compiled.profile(x, repeats=repeats, threads=threads)]  # type: ignore[attr-defined]
        best = secs if not best else [min(a, b) for a, b in zip(best, secs, strict=True)]
    return best


def _isolated(node: object, params: dict[str, np.ndarray], repeats: int) -> tuple[float, float]:
    """Kernel time of one convolution compiled on its own (hot caches, as kernel benchmarks measure)."""
    import cnncc
    from cnncc.ir import GraphBuilder

    b = GraphBuilder("layer")
    x = b.input("x", node.inputs[0].shape)  # type: ignore[attr-defined]
    w = b.param("w", node.inputs[1].shape)  # type: ignore[attr-defined]
    b.output(b.apply("conv2d", [x, w], node.attrs, layer="conv"))  # type: ignore[attr-defined]
    graph = b.build()
    compiled = cnncc.compile(graph, params={"w": params[node.inputs[1].name]},  # type: ignore[attr-defined]
                             algorithms="direct")
    xin = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
    index = next(i for i, c in enumerate(compiled.program.calls) if c.kernel == "conv_direct")
    return _best(compiled, xin, 1, repeats)[index], _best(compiled, xin, 2, repeats)[index]


def conv_layers(peak: float, repeats: int = 20) -> list[dict[str, object]]:
    """ResNet-18's convolutions: each compiled on its own, and inside the compiled network (profiled entry point)."""
    import cnncc
    from cnncc.frontend.models import get_model

    model = get_model("resnet18")
    compiled = cnncc.compile(model, algorithms="direct")  # the direct kernel's own efficiency
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    net = {t: _best(compiled, x, t, repeats) for t in (1, 2)}
    nodes = {n.layer: n for n in model.graph().nodes if n.op == "conv2d"}
    rows = []
    for i, call in enumerate(compiled.program.calls):
        if call.kernel != "conv_direct" or call.layer not in nodes:
            continue
        p = call.params
        flops = 2 * call.macs
        one, two = _isolated(nodes[call.layer], model.params, repeats)
        rows.append({"layer": call.layer, "kernel": f"{p.r}x{p.s}/{p.sh}", "macs": call.macs,
                     "schedule": {"ur_w": p.sched.ur_w, "ocb": p.sched.ocb, "unroll": p.sched.unroll,
                                  "split_rows": p.sched.split_rows},
                     "ms_1t": one * 1e3, "ms_2t": two * 1e3, "gflops_1t": flops / one / 1e9,
                     "pct_peak_1t": 100 * flops / one / 1e9 / peak, "speedup_2t": one / two,
                     "in_network_ms_1t": net[1][i] * 1e3, "in_network_ms_2t": net[2][i] * 1e3,
                     "in_network_pct_peak_1t": 100 * flops / net[1][i] / 1e9 / peak,
                     "in_network_speedup_2t": net[1][i] / net[2][i]})
    print(f"\nResNet-18 convolutions (single-core FMA peak measured now: {peak:.1f} GFLOP/s)")
    print(f"{'':32s}{'--- kernel on its own ---':>34s}   {'--- inside the network ---':>26s}")
    print(f"{'layer':24s} {'kernel':7s} {'1t ms':>8s} {'GFLOP/s':>8s} {'% peak':>7s} {'2t x':>6s}   "
          f"{'1t ms':>8s} {'% peak':>7s} {'2t x':>6s}")
    for r in rows:
        print(f"{r['layer']:24s} {r['kernel']:7s} {r['ms_1t']:8.3f} {r['gflops_1t']:8.1f} {r['pct_peak_1t']:7.1f} "
              f"{r['speedup_2t']:6.2f}   {r['in_network_ms_1t']:8.3f} {r['in_network_pct_peak_1t']:7.1f} "
              f"{r['in_network_speedup_2t']:6.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated zoo names (default: the issue's set)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="0.3 s per measurement instead of 1 s")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from cnncc.codegen.peak import measure_peak_gflops
    from cnncc.codegen.target import Target

    cases = CASES if not args.models else [(m, b) for m, b in CASES if m in args.models.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    peak = measure_peak_gflops()
    print(f"host {Target.host().cpu}, {os.cpu_count()} CPUs; single-core FMA peak {peak:.1f} GFLOP/s")
    rows = []
    for name, batch in cases:
        rows += bench_case(name, batch, threads, 0.3 if args.quick else 1.0)
    layers = conv_layers(peak)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host_cpu": Target.host().cpu,
              "platform": platform.platform(), "cpus": os.cpu_count(), "peak_gflops_1core": peak,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "models": rows, "resnet18_convs": layers}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-models.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
