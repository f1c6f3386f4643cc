"""cnncc at two commits, side by side in one run: compiled-model latency round-robin, and outputs compared bit for bit.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_versions.py --old 2ee2f32 \\
        [--new WORKTREE|REV] [--models resnet18,vgg11,mobilenet_v2,lenet5] [--rounds 15] [--threads 2]

Why a separate script: two versions of one package cannot live in one process. Each version runs in a worker
process of its own (a ``git worktree`` of ``--old``, and the working tree or ``--new``), imported through a tree of
symlinks that maps the top-level folders into the ``cnncc`` namespace as setuptools does. The coordinator compiles
every model in both workers (batch 1; the same tuning database, so both choose from the same machine model), then
for each round asks each worker in turn (alternating which goes first) to time a block of calls; only one worker
runs at a time, so a slow spell of the shared machine hits both alike. It reports per model the median and minimum
over all calls, the ratio new/old of the medians, and whether the outputs at 1 and 2 threads are identical bit for
bit. Results go to ``benchmarks/results/<date>-versions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("frontend", "passes", "codegen", "runtime")


def package_tree(src: Path, dst: Path) -> Path:
    """``dst/cnncc`` = symlinks to ``src/cnncc/*`` plus the mapped top-level folders (setuptools' package-dir)."""
    pkg = dst / "cnncc"
    pkg.mkdir(parents=True)
    for entry in (src / "cnncc").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for folder in FOLDERS:
        (pkg / folder).symlink_to(src / folder)
    return dst


# -- worker --------------------------------------------------------------------------------------------------------
def worker(threads: int, outdir: Path) -> None:
    """Read JSON commands on stdin, answer one JSON line each."""
    import cnncc
    from cnncc.frontend.models import get_model

    models: dict[str, Any] = {}
    inputs: dict[str, np.ndarray] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "compile":
            name = cmd["model"]
            model = get_model(name)
            x = np.random.default_rng(0).standard_normal((1, *model.graph().inputs[0].shape[1:])).astype(np.float32)
            t0 = time.perf_counter()
            compiled = cnncc.compile(model, batch=1, threads=threads)
            seconds = time.perf_counter() - t0
            models[name], inputs[name] = compiled, x
            paths = []
            for t in (1, 2):
                path = outdir / f"{name}-t{t}.npy"
                np.save(path, compiled(x, threads=t))
                paths.append(str(path))
            algos = sorted(c.impl.algorithm for c in compiled.choices.values())
            reply: dict[str, Any] = {"compile_s": seconds, "outputs": paths, "algorithms": algos}
        elif cmd["op"] == "time":
            compiled, x = models[cmd["model"]], inputs[cmd["model"]]
            times = []
            for _ in range(cmd["calls"]):
                t0 = time.perf_counter()
                compiled(x)
                times.append(time.perf_counter() - t0)
            reply = {"times": times}
        else:
            return
        print(json.dumps(reply), flush=True)


# -- coordinator ---------------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, label: str, tree: Path, threads: int, outdir: Path, env: dict[str, str]) -> None:
        self.label = label
        outdir.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--threads", str(threads), "--outdir", str(outdir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
            env={**env, "PYTHONPATH": str(tree)})

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} died (exit {self.proc.wait()})")
        return dict(json.loads(line))

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait()


def checkout(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="git revision of the baseline")
    ap.add_argument("--new", default="", help="git revision to compare (default: the working tree)")
    ap.add_argument("--models", default="resnet18,vgg11,mobilenet_v2,lenet5")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block-s", type=float, default=0.25, help="seconds of calls per worker and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.threads, Path(args.outdir))
    if not args.old:
        ap.error("--old REV is required")
    tmp = Path(tempfile.mkdtemp(prefix="cnncc-versions-"))
    worktrees = []
    try:
        old_src = checkout(args.old, tmp / "old-src")
        worktrees.append(old_src)
        new_src = ROOT
        if args.new:
            new_src = checkout(args.new, tmp / "new-src")
            worktrees.append(new_src)
        env = {**os.environ, "CNNCC_TUNING_DB": str(tmp / "tuning.json")}
        workers = [Worker("old", package_tree(old_src, tmp / "old"), args.threads, tmp / "out-old", env),
                   Worker("new", package_tree(new_src, tmp / "new"), args.threads, tmp / "out-new", env)]
        run(args, workers, tmp)
    finally:
        for w in worktrees:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(w)], check=False)


def run(args: argparse.Namespace, workers: list[Worker], tmp: Path) -> None:
    models = args.models.split(",")
    rows = []
    for name in models:
        info = {w.label: w.ask(op="compile", model=name) for w in workers}  # old first: it fills the tuning DB
        same = {f"threads_{t}": np.load(info["old"]["outputs"][i]).tobytes() ==
                np.load(info["new"]["outputs"][i]).tobytes() for i, t in enumerate((1, 2))}
        probe = workers[0].ask(op="time", model=name, calls=3)["times"]
        calls = max(3, int(args.block_s / max(statistics.median(probe), 1e-6)))
        times: dict[str, list[float]] = {w.label: [] for w in workers}
        for r in range(args.rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                times[w.label] += w.ask(op="time", model=name, calls=calls)["times"]
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        low = {k: min(v) * 1e3 for k, v in times.items()}
        row = {"model": name, "batch": 1, "threads": args.threads, "calls_per_block": calls, "rounds": args.rounds,
               "old_median_ms": med["old"], "new_median_ms": med["new"], "old_min_ms": low["old"],
               "new_min_ms": low["new"], "ratio_median": med["new"] / med["old"], "ratio_min": low["new"] / low["old"],
               "bit_identical": same, "algorithms_equal": info["old"]["algorithms"] == info["new"]["algorithms"],
               "algorithms": {k: {a: v["algorithms"].count(a) for a in sorted(set(v["algorithms"]))}
                              for k, v in info.items()},
               "compile_s": {k: v["compile_s"] for k, v in info.items()}}
        rows.append(row)
        print(f"{name:13s} old {med['old']:8.3f} ms  new {med['new']:8.3f} ms (median)  "
              f"new/old {row['ratio_median']:.3f} (min {row['ratio_min']:.3f})  "
              f"bit-identical t1 {same['threads_1']} t2 {same['threads_2']}  "
              f"same algorithms {row['algorithms_equal']}", flush=True)
    for w in workers:
        w.close()
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "old": args.old, "new": args.new or "working tree",
              "new_head": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True,
                                         capture_output=True).stdout.strip(),
              "platform": platform.platform(), "cpus": os.cpu_count(),
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "models": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-versions.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
