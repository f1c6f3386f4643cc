"""Training step, side by side: cnncc's compiled step vs PyTorch eager, in one run, on this machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_training.py [--quick]
        [--models lenet5,resnet18] [--batch 64,8] [--threads 2] [--rounds 12] [--no-recompute]

One step is forward (training mode) + cross-entropy + backward + SGD (lr 0.01, momentum 0.9) on both sides:
``cnncc.compile_training(...).step(x, y)`` against the PyTorch twin (``cnncc.testing.twins``, holding the same
weights) doing
zero_grad + forward + ``F.cross_entropy`` + backward + ``optimizer.step()``. Contenders, timed round-robin in one
run (warm-up, then rounds A, B, C, D, A, B, ...; both sides reset to the initial weights at the start of each round,
outside the timings): cnncc, cnncc with ``recompute=True``, PyTorch with its default ``torch.backends.mkldnn``
settings (the rival as users run it; ratios are against it) and PyTorch with mkldnn disabled (for reference). Min,
median and max step times; ratio = cnncc / PyTorch (target <= 0.8, docs PERFORMANCE.md).

Also, in the same run: the loss of one identical step from identical weights on the same batch on both sides (and
of a second step, which sees the first update, and the weights after two steps: batch-norm running statistics
included); cnncc's training arena against the sum of saved activations and the liveness lower bound, with and
without recompute; and cnncc's profiled step: the 10 most expensive (layer, kernel) pairs and the split forward /
backward (``*.grad``, ``*.recompute``) / update (``*.update``, batch-norm ``*.stats``) / state copies
(``state.*``). The gradient check is against PyTorch in float64; read it with
care on ResNet-18 at batch 8: its gradients are ill-conditioned (batch-norm over few values, ReLU kinks), a relative
2e-6 noise on every convolution's output moves the float64 gradients by 2-10%, so a float32 implementation whose
convolutions round differently lands percents away (PyTorch's column is its own float32 error, for scale).
A model whose training step does not compile is reported with its error and skipped.
Results go to ``benchmarks/results/<date>-training.json``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_fusion import interleaved  # noqa: E402  (round-robin timing of named variants)

DEFAULT_BATCH = {"lenet5": 64, "resnet18": 8}
LR, MOMENTUM = 0.01, 0.9


def phase(layer: str) -> str:
    """Which part of the step a profiled kernel call belongs to, by its layer name."""
    if layer.startswith("state."):
        return "state_copy"
    if layer.endswith((".grad", ".recompute")):
        return "backward"
    if layer.endswith((".update", ".stats")):
        return "update"
    if layer.startswith("output."):
        return "outputs"
    return "forward"


def profile_summary(trainer: Any, x: np.ndarray, y: np.ndarray, top: int = 10) -> dict[str, Any]:
    timings = trainer.compiled.profile(trainer._feeds(x, y), repeats=3)
    agg: dict[tuple[str, str], dict[str, float]] = {}
    split: dict[str, float] = {}
    by_kernel: dict[str, float] = {}
    for t in timings:
        by_kernel[t.kernel] = by_kernel.get(t.kernel, 0.0) + t.seconds * 1e3
        a = agg.setdefault((t.layer, t.kernel), {"seconds": 0.0, "macs": 0, "calls": 0})
        a["seconds"] += t.seconds
        a["macs"] += t.macs
        a["calls"] += 1
        split[phase(t.layer)] = split.get(phase(t.layer), 0.0) + t.seconds * 1e3
    total = sum(t.seconds for t in timings) * 1e3
    rows = sorted(agg.items(), key=lambda kv: -kv[1]["seconds"])[:top]
    return {"kernel_sum_ms": total, "kernel_calls": len(timings),
            "split_ms": {k: split.get(k, 0.0) for k in ("forward", "backward", "update", "state_copy", "outputs")},
            "by_kernel_ms": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1])),
            "top_kernels": [{"layer": layer, "kernel": kernel, "ms": v["seconds"] * 1e3,
                             "pct": 100 * v["seconds"] * 1e3 / total, "calls": int(v["calls"]),
                             "gflops": 2 * v["macs"] / v["seconds"] / 1e9 if v["macs"] and v["seconds"] else None}
                            for (layer, kernel), v in rows]}


class TorchSide:
    """The PyTorch twin in train mode with its SGD; ``step`` is what a user's training loop does."""

    def __init__(self, name: str, params: dict[str, np.ndarray], threads: int) -> None:
        import torch

        from cnncc.testing.twins import TWINS

        torch.set_num_threads(threads)
        self.torch = torch
        self.twin = TWINS[name]().train()
        self.init = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
        self.twin.load_state_dict(self.init, strict=True)
        self.opt = torch.optim.SGD(self.twin.parameters(), lr=LR, momentum=MOMENTUM)

    def reset(self) -> None:
        self.twin.load_state_dict(self.init, strict=True)
        self.opt.state.clear()  # no momentum buffer: the next step starts it from the gradient, as cnncc's zeros

    def step(self, x: Any, y: Any, mkldnn: bool = True) -> float:
        import torch.nn.functional as F  # noqa: N812

        with self.torch.backends.mkldnn.flags(enabled=mkldnn):
            self.opt.zero_grad()
            loss = F.cross_entropy(self.twin(x), y)
            loss.backward()
            self.opt.step()
        return float(loss.detach())

    def gradients(self) -> dict[str, np.ndarray]:
        """The momentum buffers by parameter name (after the first step from a reset: the gradients)."""
        names = {id(p): n for n, p in self.twin.named_parameters()}
        return {names[id(p)]: st["momentum_buffer"].numpy().copy() for p, st in self.opt.state.items()}

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.twin.state_dict().items()}


def reset_trainer(trainer: Any, init: dict[str, np.ndarray]) -> None:
    """Every parameter, optimiser slot and running statistic back to where the first step started."""
    for name in trainer.train.state:
        trainer.compiled.set_state(name, init[name] if name in init else np.zeros(trainer.compiled.state_shape(name),
                                                                                     np.float32))


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def compile_trainer(model: Any, batch: int, threads: int, recompute: bool, algorithms: Any = None) -> Any:
    import cnncc
    import cnncc.optim

    return cnncc.compile_training(model, loss="cross_entropy", optimizer=cnncc.optim.SGD(LR, momentum=MOMENTUM),
                                  batch=batch, threads=threads, recompute=recompute, algorithms=algorithms)


def distinct_saved_bytes(train: Any) -> int:
    """The saved activations counted once per value: ``StepStats.saved_activation_bytes`` (``saved_activations``)
    keys an unnamed value by its layer and its backward reader's index, so a value read by two backward nodes counts
    twice there."""
    from cnncc.ir import ValueKind

    g, forward = train.graph, train.forward_nodes
    fwd = set(g.inputs) | {o for n in g.nodes[:forward] for o in n.outputs}
    seen = {id(v): v.type.nbytes for n in g.nodes[forward:] for v in n.inputs
            if v in fwd and v.kind is not ValueKind.PARAM}
    return sum(seen.values())


def memory_row(trainer: Any) -> dict[str, Any]:
    s = trainer.stats
    distinct = distinct_saved_bytes(trainer.train)
    return {"saved_activation_bytes": s.saved_activation_bytes, "saved_activation_bytes_distinct": distinct,
            "arena_bytes": s.arena_bytes,
            "arena_lower_bound": s.arena_lower_bound, "arena_naive_bytes": trainer.compiled.stats.naive_bytes,
            "state_bytes": s.state_bytes, "compile_s": s.compile_s,
            "arena_vs_saved": s.arena_bytes / s.saved_activation_bytes if s.saved_activation_bytes else None,
            "arena_vs_saved_distinct": s.arena_bytes / distinct if distinct else None,
            "arena_vs_lower_bound": s.arena_bytes / s.arena_lower_bound if s.arena_lower_bound else None,
            "kernel_calls": len(trainer.compiled.program.calls)}


def float64_gradients(name: str, init: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The first step's gradients from the PyTorch twin in float64 (train mode): the reference for both sides."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from cnncc.testing.twins import TWINS

    twin = TWINS[name]().train().double()
    twin.load_state_dict({k: torch.from_numpy(v).double() for k, v in init.items()}, strict=True)
    F.cross_entropy(twin(torch.from_numpy(x).double()), torch.from_numpy(y)).backward()
    return {k: p.grad.numpy() for k, p in twin.named_parameters()}


def correctness(trainer: Any, torch_side: TorchSide, x: np.ndarray, y: np.ndarray, init: dict[str, np.ndarray],
                reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Two identical steps from identical weights on the same batch: the losses; the first step's gradients (the
    momentum buffers after it: ``v = 0.9·0 + g``) on both sides against the float64 twin's; every parameter and
    running statistic after the two steps, cnncc against PyTorch. Errors are ``rel_error`` (max abs difference /
    max magnitude of the reference) per tensor; the worst tensor is reported."""
    import torch

    from cnncc.testing import rel_error

    def worst(errs: dict[str, float]) -> tuple[float, str]:
        k = max(errs, key=errs.__getitem__)
        return errs[k], k

    reset_trainer(trainer, init)
    torch_side.reset()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ours = [trainer.step(x, y)]
    theirs = [torch_side.step(xt, yt)]
    g_ours = {k.split("@", 1)[1]: v for k, v in trainer.optimizer_state().items()}
    g_theirs = torch_side.gradients()
    ours.append(trainer.step(x, y))
    theirs.append(torch_side.step(xt, yt))
    got, want = trainer.weights(), torch_side.weights()
    w_err, w_name = worst({k: rel_error(got[k], want[k]) for k in init})
    g_err, g_name = worst({k: rel_error(g_ours[k], ref) for k, ref in reference.items()})
    t_errs = {k: rel_error(g_theirs[k], ref) for k, ref in reference.items()}
    t_err, t_name = worst(t_errs)
    ratio, r_name = worst({k: rel_error(g_ours[k], ref) / max(t_errs[k], 1e-12) for k, ref in reference.items()})
    return {"loss_cnncc": ours, "loss_pytorch": theirs, "loss_rel_diff_step1": rel_diff(ours[0], theirs[0]),
            "loss_rel_diff_step2": rel_diff(ours[1], theirs[1]), "weights_max_rel_error": w_err,
            "weights_worst_tensor": w_name, "grad_max_rel_error_vs_float64": g_err, "grad_worst_tensor": g_name,
            "pytorch_grad_max_rel_error_vs_float64": t_err, "pytorch_grad_worst_tensor": t_name,
            "grad_error_ratio_worst": ratio, "grad_error_ratio_worst_tensor": r_name}


def stats_ms(runs: list[float]) -> dict[str, float]:
    return {"min_ms": min(runs), "median_ms": statistics.median(runs), "max_ms": max(runs), "runs": len(runs)}


def bench_model(name: str, batch: int, threads: int, rounds: int, recompute: bool, direct: bool) -> dict[str, Any]:
    import torch

    from cnncc.frontend.models import get_model
    from cnncc.testing import randomize

    model = get_model(name)
    init = randomize(model, 0)
    shape = (batch, *model.graph().inputs[0].shape[1:])
    classes = model.graph(batch).outputs[0].shape[1]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    ys = [rng.integers(0, classes, batch).astype(np.int64) for _ in range(4)]
    row: dict[str, Any] = {"model": name, "batch": batch, "threads": threads, "input_shape": list(shape),
                           "classes": classes}
    print(f"\n{name} batch {batch}: compiling the training step ...", flush=True)
    try:
        trainer = compile_trainer(model, batch, threads, recompute=False)
    except Exception as e:  # noqa: BLE001  (report and go on with the next model)
        row["error"] = f"{type(e).__name__}: {e}"
        row["traceback"] = traceback.format_exc()
        print(f"  training step does not compile: {row['error']}", flush=True)
        return row
    row["memory"] = memory_row(trainer)
    row["algorithms"] = dict(collections.Counter(c.impl.algorithm for c in trainer.choices.values()))
    print(f"  compiled in {trainer.stats.compile_s:.1f} s; forward convolutions: {row['algorithms']}", flush=True)
    trainers = {"cnncc": trainer}
    if direct and set(row["algorithms"]) != {"direct"}:
        trainers["cnncc_direct"] = compile_trainer(model, batch, threads, recompute=False, algorithms="direct")
        print(f"  direct only compiled in {trainers['cnncc_direct'].stats.compile_s:.1f} s", flush=True)
    if recompute:
        try:
            trainers["cnncc_recompute"] = compile_trainer(model, batch, threads, recompute=True)
            row["memory_recompute"] = memory_row(trainers["cnncc_recompute"])
            print(f"  recompute=True compiled in {trainers['cnncc_recompute'].stats.compile_s:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001
            row["recompute_error"] = f"{type(e).__name__}: {e}"
            print(f"  recompute=True does not compile: {row['recompute_error']}", flush=True)

    side = TorchSide(name, init, threads)
    reference = float64_gradients(name, init, xs[0], ys[0])
    for key, tr in trainers.items():
        row["correctness" if key == "cnncc" else f"correctness_{key.removeprefix('cnncc_')}"] = c = correctness(
            tr, side, xs[0], ys[0], init, reference)
        print(f"  {key}: loss {c['loss_cnncc'][0]:.6f} vs PyTorch {c['loss_pytorch'][0]:.6f}, rel diff "
              f"{c['loss_rel_diff_step1']:.1e} (step 2: {c['loss_rel_diff_step2']:.1e}); weights after 2 steps: "
              f"max rel error {c['weights_max_rel_error']:.1e} ({c['weights_worst_tensor']}); gradients vs "
              f"float64: cnncc {c['grad_max_rel_error_vs_float64']:.1e} ({c['grad_worst_tensor']}), PyTorch "
              f"{c['pytorch_grad_max_rel_error_vs_float64']:.1e} ({c['pytorch_grad_worst_tensor']}), worst ratio "
              f"{c['grad_error_ratio_worst']:.1f}x ({c['grad_error_ratio_worst_tensor']})", flush=True)

    # Each contender cycles through the 4 batches on its own.
    feeds = {key: itertools.cycle(list(zip(xs, ys, strict=True))) for key in trainers}
    tfeeds = {key: itertools.cycle([(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(xs, ys, strict=True)])
              for key in ("pytorch", "pytorch_no_mkldnn")}
    fns: dict[str, Callable[[], object]] = {}
    for key, tr in trainers.items():
        fns[key] = lambda tr=tr, it=feeds[key]: tr.step(*next(it))
    fns["pytorch"] = lambda it=tfeeds["pytorch"]: side.step(*next(it))
    fns["pytorch_no_mkldnn"] = lambda it=tfeeds["pytorch_no_mkldnn"]: side.step(*next(it), mkldnn=False)

    def reset() -> None:
        for tr in trainers.values():
            reset_trainer(tr, init)
        side.reset()

    # Warm-up (two steps each), then a step-time estimate (the fastest contender's third step) for the number of
    # calls per contender per round: ~100 ms of steps each, 1 to 25.
    reset()
    est = []
    for f in fns.values():
        f()
        f()
        t0 = time.perf_counter()
        f()
        est.append(time.perf_counter() - t0)
    calls = max(1, min(25, round(0.1 / min(est))))
    runs: dict[str, list[float]] = {key: [] for key in fns}
    row["loadavg_before_timing"] = os.getloadavg()[0]
    for _ in range(rounds):
        reset()  # outside the timings; interleaved() warms each contender once more after it
        for key, r in interleaved(fns, rounds=1, calls=calls).items():
            runs[key] += r
    row["rounds"], row["calls_per_round"] = rounds, calls
    row["loadavg_after_timing"] = os.getloadavg()[0]
    row["timings"] = {key: stats_ms(r) for key, r in runs.items()}
    t = row["timings"]
    row["ratio_vs_pytorch"] = t["cnncc"]["median_ms"] / t["pytorch"]["median_ms"]
    row["ratio_vs_pytorch_min"] = t["cnncc"]["min_ms"] / t["pytorch"]["min_ms"]
    row["ratio_vs_pytorch_no_mkldnn"] = t["cnncc"]["median_ms"] / t["pytorch_no_mkldnn"]["median_ms"]
    if "cnncc_direct" in t:
        row["ratio_direct_vs_pytorch"] = t["cnncc_direct"]["median_ms"] / t["pytorch"]["median_ms"]
        row["ratio_direct_vs_pytorch_min"] = t["cnncc_direct"]["min_ms"] / t["pytorch"]["min_ms"]
    if "cnncc_recompute" in t:
        row["ratio_recompute_vs_pytorch"] = t["cnncc_recompute"]["median_ms"] / t["pytorch"]["median_ms"]
        row["recompute_vs_cnncc"] = t["cnncc_recompute"]["median_ms"] / t["cnncc"]["median_ms"]
    print("  " + "  ".join(f"{key} {v['median_ms']:.2f} ms" for key, v in t.items())
          + f"  (medians)  cnncc/pytorch {row['ratio_vs_pytorch']:.2f}  (1-min load average "
          f"{row['loadavg_before_timing']:.2f} -> {row['loadavg_after_timing']:.2f}"
          + (": other processes share the 2 cores, timings are unreliable)" if row["loadavg_before_timing"] > 1.5
             else ")"), flush=True)

    reset()
    row["profile"] = profile_summary(trainer, xs[0], ys[0])
    if "cnncc_recompute" in trainers:
        row["profile_recompute"] = profile_summary(trainers["cnncc_recompute"], xs[0], ys[0])
    return row


def report(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 170))
    ok = [r for r in rows if "timings" in r]
    tab = Table(title="Training step (SGD momentum 0.9, cross-entropy), ms per step: median (min..max)")
    for col in ("model", "batch", "cnncc", "cnncc recompute", "PyTorch", "PyTorch no mkldnn", "cnncc/PyTorch",
                "(min)", "loss rel diff", "weights err", "grad err (torch)"):
        tab.add_column(col, justify="left" if col == "model" else "right")
    for r in ok:
        t = r["timings"]

        def cell(key: str, t: dict[str, Any] = t) -> str:
            return f"{t[key]['median_ms']:.2f} ({t[key]['min_ms']:.2f}..{t[key]['max_ms']:.2f})" if key in t else "-"

        ratio = r["ratio_vs_pytorch"]
        tab.add_row(r["model"], str(r["batch"]), cell("cnncc"), cell("cnncc_recompute"), cell("pytorch"),
                    cell("pytorch_no_mkldnn"),
                    f"[{'green' if ratio <= 0.8 else 'red'}]{ratio:.2f}[/]", f"{r['ratio_vs_pytorch_min']:.2f}",
                    f"{r['correctness']['loss_rel_diff_step1']:.1e}",
                    f"{r['correctness']['weights_max_rel_error']:.1e}",
                    f"{r['correctness']['grad_max_rel_error_vs_float64']:.1e} "
                    f"({r['correctness']['pytorch_grad_max_rel_error_vs_float64']:.1e})")
    for r in rows:
        if "error" in r:
            tab.add_row(r["model"], str(r["batch"]), f"[red]does not compile: {r['error'][:60]}[/]")
    console.print(tab)

    mem = Table(title="Memory (MB): training arena vs saved activations and the liveness lower bound")
    for col in ("model", "variant", "saved acts (stats)", "saved acts (distinct)", "arena", "lower bound",
                "arena/saved (distinct)", "arena/bound", "state", "compile s"):
        mem.add_column(col, justify="left" if col in ("model", "variant") else "right")
    for r in ok:
        for variant, key in (("plain", "memory"), ("recompute", "memory_recompute")):
            if key in r:
                m = r[key]
                mem.add_row(r["model"], variant, f"{m['saved_activation_bytes'] / 1e6:.1f}",
                            f"{m['saved_activation_bytes_distinct'] / 1e6:.1f}",
                            f"{m['arena_bytes'] / 1e6:.1f}", f"{m['arena_lower_bound'] / 1e6:.1f}",
                            f"{m['arena_vs_saved_distinct']:.2f}", f"{m['arena_vs_lower_bound']:.3f}",
                            f"{m['state_bytes'] / 1e6:.1f}", f"{m['compile_s']:.1f}")
    console.print(mem)

    for r in ok:
        p = r["profile"]
        split = ", ".join(f"{k} {v:.2f} ms ({100 * v / p['kernel_sum_ms']:.0f}%)" for k, v in p["split_ms"].items())
        top = Table(title=f"{r['model']} batch {r['batch']}: top kernels of the profiled step "
                          f"(sum {p['kernel_sum_ms']:.2f} ms over {p['kernel_calls']} calls; {split})")
        for col in ("layer", "kernel", "calls", "ms", "%", "GFLOP/s"):
            top.add_column(col, justify="left" if col in ("layer", "kernel") else "right")
        for k in p["top_kernels"]:
            top.add_row(k["layer"], k["kernel"], str(k["calls"]), f"{k['ms']:.3f}", f"{k['pct']:.1f}",
                        f"{k['gflops']:.1f}" if k["gflops"] else "")
        console.print(top)
        console.print("  by kernel template: " + ", ".join(f"{k} {v:.2f} ms" for k, v in p["by_kernel_ms"].items()
                                                          if v >= 0.01 * p["kernel_sum_ms"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet5,resnet18", help="comma-separated zoo names")
    ap.add_argument("--batch", help="comma-separated batch sizes, one per model or one for all "
                                    f"(default: {DEFAULT_BATCH}, else 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, help="round-robin rounds (default 12, --quick 4)")
    ap.add_argument("--quick", action="store_true", help="4 rounds instead of 12")
    ap.add_argument("--no-recompute", action="store_true", help="skip the recompute=True variant")
    ap.add_argument("--no-direct", action="store_true",
                    help="skip the direct-convolution-only variant (timed when the default picks other algorithms)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    import torch

    from cnncc.codegen.peak import measure_peak_gflops
    from cnncc.codegen.target import Target

    names = args.models.split(",")
    if args.batch:
        batches = [int(b) for b in args.batch.split(",")]
        batches = batches * len(names) if len(batches) == 1 else batches
        if len(batches) != len(names):
            ap.error("--batch takes one size, or one per model")
    else:
        batches = [DEFAULT_BATCH.get(n, 8) for n in names]
    rounds = args.rounds or (4 if args.quick else 12)
    peak = measure_peak_gflops()
    print(f"host {Target.host().cpu}, {os.cpu_count()} CPUs; single-core FMA peak {peak:.1f} GFLOP/s; "
          f"torch {torch.__version__} (mkldnn available {torch.backends.mkldnn.is_available()}); "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    load0 = os.getloadavg()
    rows = [bench_model(n, b, args.threads, rounds, not args.no_recompute, not args.no_direct)
            for n, b in zip(names, batches, strict=True)]
    print()
    report(rows)
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host_cpu": Target.host().cpu,
              "platform": platform.platform(), "cpus": os.cpu_count(), "peak_gflops_1core": peak,
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"), "torch": torch.__version__,
              "loadavg_start": load0, "loadavg_end": os.getloadavg(),
              "torch_mkldnn_available": torch.backends.mkldnn.is_available(), "threads": args.threads,
              "optimizer": {"name": "SGD", "lr": LR, "momentum": MOMENTUM}, "loss": "cross_entropy",
              "timing": "round-robin, both sides reset to the initial weights before each round; ratios of medians",
              "models": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}-training.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
