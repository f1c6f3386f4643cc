"""Build a planned CUDA program: every distinct kernel scheduled and compiled by TVM into one CUDA C source, ``nvcc``
to a fat binary (a cubin for the architecture plus its PTX, which the driver JIT-compiles on newer GPUs), ``ptxas -v``'s
report kept per kernel, and the launch plan checked against the arena and the device limits.

Kernels are deduplicated by spec (ResNet-18's 20 convolutions are 11 kernels). The fat binary is cached on disk by
the hash of the CUDA C, the architecture and nvcc's version (``$CNNCC_CUDA_CACHE`` or ``~/.cache/cnncc/cuda``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cnncc.codegen.cuda.families import KernelSpec, prim_func
from cnncc.errors import CnnccError
from cnncc.launch_plan import CudaCode, IOSlot, KernelArg, Launch
from cnncc.program import Buffer, Program, Space

ALIGN = 256
MAX_THREADS = 1024
MAX_STATIC_SHARED = 48 * 1024

_SIGNATURE = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)\(([^)]*)\)\s*\{')


def tvm_module() -> Any:
    try:
        import tvm
    except ImportError as e:
        raise CnnccError("the CUDA target needs Apache TVM to generate its kernels: pip install 'cnncc[cuda]' "
                         f"(apache-tvm==0.27.0.post1); import failed: {e}") from e
    return tvm


def find_nvcc() -> str | None:
    """:func:`nvcc_path`, or None where there is no nvcc (the tests skip then)."""
    try:
        return nvcc_path()
    except CnnccError:
        return None


def nvcc_path() -> str:
    """``nvcc``: ``$CNNCC_NVCC`` if set (and then only it), else from ``$CUDA_HOME/bin``, ``PATH`` or
    ``/usr/local/cuda/bin``; a clear error if there is none."""
    if os.environ.get("CNNCC_NVCC"):
        chosen = os.environ["CNNCC_NVCC"]
        if not (os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
            raise CnnccError(f"the CUDA target needs nvcc to build its kernels: $CNNCC_NVCC={chosen} is not an "
                             "executable file")
        return chosen
    candidates = [os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")] if os.environ.get("CUDA_HOME") else []
    found = shutil.which("nvcc")
    candidates += [found] if found else []
    candidates.append("/usr/local/cuda/bin/nvcc")
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise CnnccError("the CUDA target needs nvcc (the CUDA toolkit) to build its kernels: none on PATH, in "
                     "$CUDA_HOME/bin or /usr/local/cuda/bin")


def generate_source(specs: dict[KernelSpec, str], arch: str) -> tuple[str, dict[str, tuple[list[int], list[int]]]]:
    """One CUDA C source for all kernels (``specs``: spec -> kernel name) and each kernel's launch extents
    (grid, block)."""
    tvm = tvm_module()
    funcs, dims = {}, {}
    for spec, name in specs.items():
        func, d = prim_func(spec)
        funcs[name] = func.with_attr("global_symbol", name)
        dims[name] = (d.grid, d.block)
    executable = tvm.compile(tvm.IRModule(funcs), target={"kind": "cuda", "arch": arch})
    devices = list(executable.mod.imports)
    if len(devices) != 1:  # an unscheduled function compiles to host code without complaint: refuse it
        raise CnnccError(f"internal: TVM produced {len(devices)} device modules for {len(specs)} kernels (a kernel "
                         "without thread bindings became host code)")
    return devices[0].inspect_source(), dims


def kernel_params(source: str) -> dict[str, list[int]]:
    """Each ``__global__`` kernel's pointer parameters as argument indices in declaration order: ``a3_ptr`` -> 3,
    ``y_ptr`` (every family's output) -> -1, the last buffer of the call."""
    out: dict[str, list[int]] = {}
    for m in _SIGNATURE.finditer(source):
        params = []
        for p in m.group(3).split(","):
            found = re.search(r"\b(?:a(\d+)|(y))(?:_ptr)?\s*$", p.strip())
            if not found or "*" not in p:
                raise CnnccError(f"internal: kernel {m.group(2)} has a parameter cnncc does not pass: {p.strip()!r}")
            params.append(-1 if found.group(2) else int(found.group(1)))
        out[m.group(2)] = params
    return out


def _cache_dir() -> Path:
    root = os.environ.get("CNNCC_CUDA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cnncc", "cuda")
    return Path(root)


def nvcc_version(nvcc: str) -> str:
    r = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "unknown"


def compile_fatbin(source: str, arch: str) -> tuple[bytes, str]:
    """``nvcc`` -> a fat binary (cubin for ``arch`` + PTX) and ptxas's verbose report; cached on disk."""
    nvcc = nvcc_path()
    cc = arch.removeprefix("sm_")
    key = hashlib.sha256(f"{arch}\n{nvcc_version(nvcc)}\n{source}".encode()).hexdigest()[:32]
    cache = _cache_dir()
    fat, report = cache / f"{key}.fatbin", cache / f"{key}.ptxas.txt"
    if fat.is_file() and report.is_file():
        return fat.read_bytes(), report.read_text()
    with tempfile.TemporaryDirectory(prefix="cnncc-cuda-") as tmp:
        cu, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        cu.write_text(source)
        cmd = [nvcc, "-fatbin", "-O3", f"-gencode=arch=compute_{cc},code=sm_{cc}",
               f"-gencode=arch=compute_{cc},code=compute_{cc}", "-Xptxas", "-v", "-o", str(out), str(cu)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise CnnccError(f"nvcc failed on the generated CUDA C (exit {r.returncode}):\n{r.stderr[-4000:]}")
        data = out.read_bytes()
    cache.mkdir(parents=True, exist_ok=True)
    tmp_fat, tmp_rep = fat.with_suffix(f".{os.getpid()}.tmp"), report.with_suffix(f".{os.getpid()}.tmp")
    tmp_fat.write_bytes(data)
    tmp_rep.write_text(r.stderr)
    os.replace(tmp_fat, fat)
    os.replace(tmp_rep, report)
    return data, r.stderr


def parse_ptxas(report: str) -> dict[str, dict[str, int]]:
    """Per kernel: registers, spill store/load bytes, static shared memory, stack frame (from ``ptxas -v``)."""
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            current = m.group(1)
            out.setdefault(current, {"registers": 0, "spill_stores": 0, "spill_loads": 0, "shared": 0, "stack": 0})
            continue
        if current is None:
            continue
        rec = out[current]
        if m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            rec["stack"], rec["spill_stores"], rec["spill_loads"] = map(int, m.groups())
        if m := re.search(r"Used (\d+) registers", line):
            rec["registers"] = int(m.group(1))
        if m := re.search(r"(\d+) bytes smem", line):
            rec["shared"] = int(m.group(1))
    return out


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def device_offsets(program: Program) -> tuple[int, list[IOSlot], list[IOSlot]]:
    """The arena: the planned buffers, then the inputs, then the outputs (each 256-byte aligned)."""
    top = _aligned(program.arena_bytes)
    slots: dict[str, list[IOSlot]] = {"inputs": [], "outputs": []}
    for kind, bufs in (("inputs", program.inputs), ("outputs", program.outputs)):
        for b in bufs:
            b.offset = top
            slots[kind].append(IOSlot(b.name, top, b.nbytes))
            top = _aligned(top + b.nbytes)
    return max(top, ALIGN), slots["inputs"], slots["outputs"]


def _arg(buf: Buffer) -> KernelArg:
    region = "weights" if buf.space is Space.WEIGHTS else "arena"
    if buf.offset < 0:
        raise CnnccError(f"internal: buffer {buf.name} was never placed")
    return KernelArg(region, buf.offset, buf.nbytes)


def build_code(program: Program, arch: str) -> CudaCode:
    """The fat binary and launch plan of a planned ``program``."""
    arena_bytes, inputs, outputs = device_offsets(program)
    names: dict[KernelSpec, str] = {}
    for call in program.calls:
        names.setdefault(call.params, f"cnncc_k{len(names)}_{call.params.family}")
    source, dims = generate_source(names, arch)
    params = kernel_params(source)
    symbols = {name: f"{name}_kernel" for name in names.values()}  # TVM names a function's kernel <name>_kernel
    missing = sorted(s for s in symbols.values() if s not in params)
    if missing or len(params) != len(symbols):
        raise CnnccError(f"internal: TVM's CUDA C has kernels {sorted(params)}, expected {sorted(symbols.values())}")
    fatbin, report = compile_fatbin(source, arch)
    ptxas = parse_ptxas(report)
    launches = []
    for call in program.calls:
        name = names[call.params]
        symbol = symbols[name]
        buffers = (*call.reads, *call.writes)
        grid, block = dims[name]
        args = tuple(_arg(buffers[i]) for i in params[symbol])
        launches.append(Launch(symbol, (grid[0], grid[1], grid[2]), (block[0], block[1], block[2]), args, call.layer,
                               ptxas.get(symbol, {}).get("shared", 0), 2 * call.macs))
    code = CudaCode(arch, fatbin, source, launches, arena_bytes, program.weights, inputs, outputs, ptxas)
    code.validate(MAX_THREADS, MAX_STATIC_SHARED)
    return code
