"""Fused vs unfused, same kernels, in one run: ResNet-18 and ResNet-50 compiled with the CPU inference pipeline
(batch-norm folding, epilogue fusion, ...) and without it (``optimize_graph=False``).

    python benchmarks/bench_fusion.py [--quick]

Reports min/median latency per thread count, the end-to-end gain, kernel counts and arena sizes; writes
``benchmarks/results/<date>-fusion.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def interleaved(fns: dict[str, object], rounds: int, calls: int) -> dict[str, list[float]]:
    """Alternate the variants round by round (so clock drift and neighbours hit both alike); times in ms."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # type: ignore[operator]
    for _ in range(rounds):
        for k, f in fns.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                f()  # type: ignore[operator]
                times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="resnet18,resnet50")
    args = ap.parse_args()
    import cnncc
    from cnncc.frontend.models import get_model
    from cnncc.testing import randomize, rel_error

    rows = []
    for name in args.models.split(","):
        model = get_model(name)
        randomize(model, 0)
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        fused = cnncc.compile(model)
        plain = cnncc.compile(model, optimize_graph=False)
        err = rel_error(fused(x), plain(x))
        for threads in (1, 2):
            runs = interleaved({"unfused": lambda f=plain, t=threads, x=x: f(x, threads=t),
                                "fused": lambda f=fused, t=threads, x=x: f(x, threads=t)},
                               rounds=4 if args.quick else 12, calls=3)
            a = {"min_ms": min(runs["unfused"]), "median_ms": float(np.median(runs["unfused"]))}
            b = {"min_ms": min(runs["fused"]), "median_ms": float(np.median(runs["fused"]))}
            row = {"model": name, "threads": threads, "unfused_min_ms": a["min_ms"], "fused_min_ms": b["min_ms"],
                   "unfused_median_ms": a["median_ms"], "fused_median_ms": b["median_ms"],
                   "gain_pct": 100 * (1 - b["min_ms"] / a["min_ms"]),
                   "gain_median_pct": 100 * (1 - b["median_ms"] / a["median_ms"]),
                   "kernels_unfused": len(plain.program.calls), "kernels_fused": len(fused.program.calls),
                   "arena_unfused": plain.stats.arena_bytes, "arena_fused": fused.stats.arena_bytes,
                   "max_rel_error": err}
            rows.append(row)
            print(f"{name:9s} t{threads}: unfused {a['min_ms']:8.2f} ms  fused {b['min_ms']:8.2f} ms (min)  "
                  f"gain {row['gain_pct']:5.1f}% (min) {row['gain_median_pct']:5.1f}% (median)"
                  f"  kernels {row['kernels_unfused']} -> {row['kernels_fused']}  "
                  f"arena {row['arena_unfused'] / 1e6:.1f} -> {row['arena_fused'] / 1e6:.1f} MB  err {err:.1e}",
                  flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-fusion.json"
    path.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
