"""CUDA backend on a GPU: every zoo model compiled for sm_90 against PyTorch on the same GPU, then latency.

Two phases, because the GPU machine has no TVM (and the zoo's weights are too big to carry):

    python benchmarks/bench_cuda.py prepare [--out DIR]          # here: cnncc compile --target cuda per model/batch
    python benchmarks/bench_cuda.py run --bundles DIR [--json F]  # on the GPU: numerics, then latency

``prepare`` writes each bundle (fat binary, launch plan, C runtime sources) and removes its weights file, keeping the
payload's SHA-256. ``run`` rebuilds the weights with cnncc's own lowering (pure numpy, deterministic from the zoo's
seed), checks the hash, writes the weights file back and loads the bundle with ``cnncc.load`` (the Python CUDA
driver runtime, no TVM). Then for each model:

* **numerics**: the bundle's output vs the PyTorch twin on the GPU in float32 with TF32 off (cuDNN and matmul),
  max |y - ref| / max |ref|, at batch 1 and 8;
* **latency** (CUDA events, medians over rounds, engines round-robin in one run): cnncc's captured CUDA graph of the
  forward (device time, inputs already on the device, as for PyTorch), PyTorch eager with TF32 off and with its
  default (cuDNN TF32 on), PyTorch with the forward captured in a CUDA graph (TF32 off), and ``torch.compile``
  (TF32 off) where ``--torch-compile`` names the model;
* a per-kernel profile of ResNet-18 (CUDA events per launch): GFLOP/s per layer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ["lenet5", "lenet", "keras_mnist", "keras_sequential", "alexnet", "vgg11", "vgg16", "googlenet",
          "resnet18", "resnet50", "mobilenet_v2"]
BATCHES = (1, 8)


def bundle_dir(root: Path, model: str, batch: int) -> Path:
    return root / f"{model}_b{batch}"


# -- prepare (a machine with TVM and nvcc) -----------------------------------------------------------------------------


def prepare(args: argparse.Namespace) -> None:
    import tempfile

    import cnncc
    from cnncc.driver import write_bundle
    from cnncc.frontend.models import get_model

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["CNNCC_CUDA_CACHE"] = tempfile.mkdtemp(prefix="cnncc-cold-")  # every fat binary built by nvcc
    report: dict[str, object] = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                 "note": "compile_s: cnncc.compile(target='cuda') wall time, passes + TVM + nvcc, "
                                         "cold fat-binary cache"}
    for model in args.models.split(","):
        for batch in BATCHES:
            t0 = time.perf_counter()
            compiled = cnncc.compile(get_model(model), target="cuda", batch=batch)
            seconds = time.perf_counter() - t0
            out = bundle_dir(root, model, batch)
            shutil.rmtree(out, ignore_errors=True)
            files = write_bundle(compiled, out)
            blob = compiled.executable.program.weights
            (out / "weights.sha256").write_text(hashlib.sha256(blob).hexdigest() + "\n")
            files.weights.unlink()
            ptxas = compiled.executable.native.ptxas
            report[f"{model}_b{batch}"] = {
                "compile_s": round(seconds, 2), "kernels": len(compiled.executable.native.kernels),
                "launches": len(compiled.executable.native.launches),
                "max_registers": max(r["registers"] for r in ptxas.values()),
                "spill_bytes": sum(r["spill_stores"] + r["spill_loads"] for r in ptxas.values()),
                "algorithms": sorted(set(compiled.layer_algorithms.values()))}
            print(model, batch, report[f"{model}_b{batch}"], flush=True)
    (root / "prepare.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


# -- run (the GPU machine: torch + CUDA, no TVM) -------------------------------------------------------------------


def rebuild_weights(model: str, batch: int, directory: Path) -> None:
    """The bundle's weights file from cnncc's own lowering of the zoo model (checked against the saved hash)."""
    from cnncc.bundle_format import write_weights
    from cnncc.driver import _lower_and_plan, conv_selection, optimize, resolve_target
    from cnncc.frontend.models import get_model
    from cnncc.passes import cpu_inference

    manifest = json.loads((directory / "manifest.json").read_text())
    m = get_model(model)
    target = resolve_target("cuda", cuda_arch=manifest["target"]["arch"])
    algorithms = manifest.get("algorithms_forced") or None
    graph, params, _ = optimize(m.graph(batch), m.params, [*cpu_inference(), conv_selection(target, 1, algorithms)])
    program, _ = _lower_and_plan(graph, params, target)
    digest = hashlib.sha256(program.weights).hexdigest()
    want = (directory / "weights.sha256").read_text().strip()
    if digest != want:
        raise SystemExit(f"{model} b{batch}: rebuilt weights hash {digest[:12]} != bundle's {want[:12]}")
    write_weights(directory / manifest["weights"]["file"], program.weights, manifest["graph_hash"])


def twin(model: str) -> object:
    import torch

    from cnncc.frontend.models import get_model
    from cnncc.testing.twins import TWINS

    net = TWINS[model]()
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in get_model(model).params.items()})
    return net.eval().cuda()


def set_tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def time_torch(fn: object, iters: int) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters * 1e-3


def time_cnncc(bundle: object, iters: int) -> float:
    """Device time of the captured forward (inputs already in the arena), CUDA events on the bundle's stream."""
    import ctypes

    dev = bundle._open()  # noqa: SLF001 - the benchmark times the device model itself
    d = dev.driver
    dev.current()
    begin, end = d.out_handle("cuEventCreate", 0), d.out_handle("cuEventCreate", 0)
    d.call("cuEventRecord", begin, dev.stream)
    for _ in range(iters):
        dev.launch_all(True)
    d.call("cuEventRecord", end, dev.stream)
    dev.sync()
    ms = ctypes.c_float()
    d.call("cuEventElapsedTime", ctypes.byref(ms), begin, end)
    d.call("cuEventDestroy_v2", begin)
    d.call("cuEventDestroy_v2", end)
    return ms.value / iters * 1e-3


def torch_graph(net: object, x: object) -> object:
    import torch

    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(3):
            net(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        net(static_x)
    return g.replay


def c_runtime(directory: Path, x: np.ndarray, expected: np.ndarray) -> dict[str, object]:
    """Build the bundle's C runtime (``<name>_plan.c`` + ``cuda_runtime.c``) with the system C compiler against the
    driver (-lcuda), run it through ctypes as a C application would, and compare with the Python runtime's output."""
    import ctypes
    import subprocess

    manifest = json.loads((directory / "manifest.json").read_text())
    name = manifest["name"]
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    lib = directory / f"lib{name}.so"
    cmd = ["cc", "-std=gnu11", "-O2", "-fPIC", "-shared", f"-I{directory}", f"-I{cuda}/include",
           str(directory / f"{name}_plan.c"), f"-L{cuda}/lib64/stubs", "-lcuda", "-o", str(lib)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return {"built": False, "error": r.stderr[-800:]}
    so = ctypes.CDLL(str(lib))
    model = ctypes.c_void_p()
    create = getattr(so, f"{name}_create")
    create.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    status = create(str(directory).encode(), ctypes.byref(model))
    if status != 0:
        return {"built": True, "create_status": status}
    out = np.empty_like(expected)
    run_fn = getattr(so, f"{name}_run")
    run_fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    in_bytes = (ctypes.c_size_t * 1)(x.nbytes)
    outs = (ctypes.c_void_p * 1)(out.ctypes.data)
    out_bytes = (ctypes.c_size_t * 1)(out.nbytes)
    status = run_fn(model, x.shape[0], ins, in_bytes, outs, out_bytes)
    getattr(so, f"{name}_destroy").argtypes = [ctypes.c_void_p]
    getattr(so, f"{name}_destroy")(model)
    return {"built": True, "run_status": status, "max_abs_diff_vs_python_runtime": float(np.abs(out - expected).max())}


def run(args: argparse.Namespace) -> None:
    import torch

    import cnncc

    root = Path(args.bundles)
    compile_models = set(filter(None, args.torch_compile.split(",")))
    results: dict[str, object] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                  "python": platform.python_version(), "rounds": args.rounds, "cases": []}
    t_start = time.time()
    for model in args.models.split(","):
        net = twin(model)
        for batch in BATCHES:
            directory = bundle_dir(root, model, batch)
            if not directory.is_dir():
                continue
            rebuild_weights(model, batch, directory)
            bundle = cnncc.load(directory)
            shape = bundle.input_specs[0].shape
            x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
            xt = torch.from_numpy(x).cuda()
            set_tf32(False)
            with torch.no_grad():
                ref = net(xt).float().cpu().numpy()
            y = bundle(x)
            err = float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))
            case: dict[str, object] = {"model": model, "batch": batch, "rel_error_vs_torch_fp32": err,
                                       "ok": bool(err <= 1e-4), "kernels": len(bundle.code.kernels),
                                       "launches": len(bundle.code.launches)}
            print(f"{model} b{batch}: error {err:.2e} ({'ok' if err <= 1e-4 else 'FAIL'})", flush=True)
            if time.time() - t_start < args.budget_s:
                case["latency_ms"] = latency(bundle, net, xt, model in compile_models, args.rounds, args.iters)
                lat = case["latency_ms"]
                case["ratio_vs_eager_tf32_off"] = lat["cnncc_graph"] / lat["torch_eager_tf32_off"]
                case["ratio_vs_eager_default"] = lat["cnncc_graph"] / lat["torch_eager_default"]
                case["ratio_vs_torch_cuda_graph"] = lat["cnncc_graph"] / lat["torch_cuda_graph"]
                print("   ", {k: round(v, 4) for k, v in lat.items()}, flush=True)
            if model in ("lenet5", "resnet18") and batch == 1:
                case["c_runtime"] = c_runtime(directory, x, y)
                print("    C runtime:", case["c_runtime"], flush=True)
            if model == "resnet18":
                case["profile"] = [{"layer": t.layer, "kernel": t.kernel, "us": round(t.seconds * 1e6, 2),
                                    "gflops": round(2 * t.macs / t.seconds / 1e9, 1) if t.seconds else 0}
                                   for t in bundle.profile(x, repeats=5)]
            results["cases"].append(case)  # type: ignore[union-attr]
            bundle.close()
        del net
        torch.cuda.empty_cache()
    results["all_ok"] = all(c["ok"] for c in results["cases"])  # type: ignore[union-attr]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.json, "all_ok", results["all_ok"], f"{time.time() - t_start:.0f} s")


def latency(bundle: object, net: object, xt: object, with_compile: bool, rounds: int, iters: int) -> dict[str, float]:
    import torch

    set_tf32(False)
    graph_replay = torch_graph(net, xt)
    engines = {
        "cnncc_graph": lambda: time_cnncc(bundle, iters),
        "torch_eager_tf32_off": lambda: (set_tf32(False), time_torch(lambda: net(xt), iters))[1],
        "torch_eager_default": lambda: (set_tf32(True), time_torch(lambda: net(xt), iters))[1],
        "torch_cuda_graph": lambda: (set_tf32(False), time_torch(graph_replay, iters))[1],
    }
    if with_compile:
        set_tf32(False)
        compiled = torch.compile(net)
        with torch.no_grad():
            for _ in range(3):
                compiled(xt)
        engines["torch_compile"] = lambda: (set_tf32(False), time_torch(lambda: compiled(xt), iters))[1]
    samples: dict[str, list[float]] = {k: [] for k in engines}
    with torch.no_grad():
        for fn in engines.values():  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in engines.items():
                samples[name].append(fn())
    set_tf32(False)
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="phase", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--out", default="benchmarks/cuda_bundles")
    pp.add_argument("--models", default=",".join(MODELS))
    pp.add_argument("--json", default=f"benchmarks/results/{time.strftime('%Y-%m-%d')}-cuda-compile.json")
    pr = sub.add_parser("run")
    pr.add_argument("--bundles", default="benchmarks/cuda_bundles")
    pr.add_argument("--models", default=",".join(MODELS))
    pr.add_argument("--json", default=f"benchmarks/results/{time.strftime('%Y-%m-%d')}-cuda.json")
    pr.add_argument("--rounds", type=int, default=7)
    pr.add_argument("--iters", type=int, default=20)
    pr.add_argument("--torch-compile", default="resnet18")
    pr.add_argument("--budget-s", type=float, default=400.0, help="stop timing (numerics only) after this long")
    args = p.parse_args()
    os.environ.setdefault("CUDA_MODULE_LOADING", "LAZY")
    (prepare if args.phase == "prepare" else run)(args)


if __name__ == "__main__":
    sys.exit(main())
