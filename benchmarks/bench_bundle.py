"""Deployment bundles: load + first-inference latency, and steady-state latency against the in-process runtime.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_bundle.py [--models resnet18]
        [--batch 1] [--threads 2] [--rounds 10] [--calls 10] [--cold 7]

Per model: compile once (``cnncc.compile``, host CPU) and write the bundle (``cnncc compile``'s code path), then

* **load + first inference**, each in a fresh process, ``--cold`` times (median, min, max):
  - the C example (examples/c/classify.c, built with ``cc -O2``): the time it prints from before ``<name>_create``
    (CPU check, weights file read and CRC-32 verified, arena allocated, worker threads started and pinned) to the
    end of the first ``<name>_run``; and the whole process's wall time (exec, dynamic loading, reading the input);
  - Python: ``cnncc.load(DIR)`` + the first call, timed inside the process after ``import cnncc``; the import is
    reported on its own;
* **steady state**, round-robin in one run (``--rounds`` rounds of ``--calls`` calls each, after a warm-up): the
  in-process ``CompiledModel``, the same model through ``cnncc.load`` (ctypes), and the C example's own loop
  (``-r``, one process per round, its mean per call). Ratios are against the in-process runtime.

Results go to ``benchmarks/results/<date>-bundle.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "c" / "classify.c"

COLD_PY = """
import sys, time
t0 = time.perf_counter()
import numpy as np, cnncc
t1 = time.perf_counter()
x = np.load(sys.argv[2])
t2 = time.perf_counter()
b = cnncc.load(sys.argv[1])
b(x)
t3 = time.perf_counter()
print(f"import {t1 - t0:.6f} load_first {t3 - t2:.6f}")
"""


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--cold", type=int, default=7)
    args = ap.parse_args()
    import cnncc
    from cnncc.driver import write_bundle
    from cnncc.frontend.models import get_model
    from cnncc.testing import build_c_example

    results = []
    work = Path(tempfile.mkdtemp(prefix="cnncc-bench-bundle-"))
    for name in args.models.split(","):
        model = get_model(name, seed=0)
        t0 = time.perf_counter()
        cm = cnncc.compile(model, batch=args.batch, threads=args.threads)
        compile_s = time.perf_counter() - t0
        files = write_bundle(cm, work / name)
        exe = build_c_example(EXAMPLE, files.directory, work / f"classify_{name}")
        x = np.random.default_rng(0).standard_normal((args.batch, *model.inputs[0].spec.shape)).astype(np.float32)
        x_path = work / f"x_{name}.npy"
        np.save(x_path, x)
        c_args = [str(exe), "-t", str(args.threads), "-w", str(files.weights)]

        c_first, c_wall, py_first, py_import = [], [], [], []
        for _ in range(args.cold):
            t0 = time.perf_counter()
            r = subprocess.run([*c_args, str(x_path)], capture_output=True, text=True, check=True)
            c_wall.append((time.perf_counter() - t0) * 1e3)
            c_first.append(float(re.search(r"load \+ first run ([0-9.]+) ms", r.stdout).group(1)))
            r = subprocess.run([sys.executable, "-c", COLD_PY, str(files.directory), str(x_path)], capture_output=True,
                               text=True, check=True)
            imp, first = map(float, re.findall(r"[0-9.]+", r.stdout))
            py_import.append(imp * 1e3)
            py_first.append(first * 1e3)

        bundle = cnncc.load(files.directory)
        assert bundle(x).tobytes() == cm(x).tobytes(), "bundle and in-process outputs differ"
        steady: dict[str, list[float]] = {"in_process": [], "loader": [], "c_example": []}
        for f in (cm, bundle):
            for _ in range(3):
                f(x)
        for _ in range(args.rounds):
            for key, f in (("in_process", cm), ("loader", bundle)):
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    f(x)
                    steady[key].append((time.perf_counter() - t0) * 1e3)
            r = subprocess.run([*c_args, "-r", str(args.calls), str(x_path)], capture_output=True, text=True,
                               check=True)
            steady["c_example"].append(float(re.search(r"steady state: ([0-9.]+) ms", r.stdout).group(1)))
        med = {k: statistics.median(v) for k, v in steady.items()}
        row = {
            "model": name, "batch": args.batch, "threads": args.threads, "cpu": cm.target.cpu,
            "compile_s": compile_s, "bundle_write_s": files.seconds,
            "library_bytes": files.library.stat().st_size, "weights_file_bytes": files.weights.stat().st_size,
            "arena_bytes": cm.program.arena_bytes,
            "cold_ms": {"c_create_plus_first_run": stats(c_first), "c_process_wall": stats(c_wall),
                        "python_load_plus_first_call": stats(py_first), "python_import_cnncc": stats(py_import)},
            "steady_ms": {k: stats(v) for k, v in steady.items()},
            "steady_ratio_vs_in_process": {k: med[k] / med["in_process"] for k in med},
        }
        results.append(row)
        cold = row["cold_ms"]
        print(f"{name} batch {args.batch}, {args.threads} threads ({cm.target.cpu}): compile {compile_s:.1f} s, "
              f"bundle written in {files.seconds:.1f} s")
        print(f"  load + first inference: C create+run {cold['c_create_plus_first_run']['median']:.1f} ms "
              f"(process wall {cold['c_process_wall']['median']:.1f} ms); Python cnncc.load + first call "
              f"{cold['python_load_plus_first_call']['median']:.1f} ms (import cnncc "
              f"{cold['python_import_cnncc']['median']:.0f} ms)")
        print("  steady state (median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()) + "; ratios "
              + ", ".join(f"{k} {v:.3f}" for k, v in row["steady_ratio_vs_in_process"].items()))
    out = ROOT / "benchmarks" / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-bundle.json"
    out.write_text(json.dumps({"host": {"platform": platform.platform(), "cpus": os.cpu_count()},
                               "args": vars(args), "results": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
