"""Run CUDA C kernels (as Apache TVM emits them) on the CPU, so their numerics can be tested without a GPU.

The CUDA source is compiled as host C++20 with a prelude that makes the CUDA dialect valid C++, and the kernel runs
with one host thread per CUDA thread of a block:

- ``threadIdx``/``blockIdx`` are ``thread_local`` ``{x, y, z}`` structs, ``blockDim``/``gridDim`` globals;
- ``__shared__`` becomes ``static``: one array per kernel, shared by the threads of the block.  Blocks therefore
  run ONE AT A TIME, in order (x fastest), with a barrier after each, so no thread starts the next block while
  another still uses shared memory;
- ``__syncthreads()`` waits on a ``std::barrier`` over all threads of the block (the same barrier that ends a block:
  as on a GPU, every thread of the block must reach every ``__syncthreads``, so a thread that returns early may do
  so only after the last one it would have met);
- the math functions TVM uses (``max``/``min`` for any arithmetic type, ``__expf``, ``__fdividef``, ``rsqrtf``, ...),
  the vector types ``float2``/``float4``/``int2``/``int4`` with their ``make_*``, and ``atomicAdd`` are defined.

Warp-level intrinsics (shuffles, votes, tensor-core ops, async copies), inline PTX, dynamic shared memory and half
precision are rejected with an :class:`UnsupportedCudaError` naming what was found: they have no faithful meaning
with one host thread per CUDA thread.

The shared library is cached under ``tempfile.gettempdir()/cnncc-cuda-on-cpu`` keyed by a hash of the final source
and compiler command, and loaded once per process.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnncc.launch_plan import CudaCode

__all__ = ["CUDA_ON_CPU_CACHE", "CudaOnCpuError", "KernelParam", "UnsupportedCudaError", "compile_kernel",
           "cxx_compiler", "kernel_params", "run_on_cpu", "run_plan_on_cpu"]

CUDA_ON_CPU_CACHE = Path(tempfile.gettempdir()) / "cnncc-cuda-on-cpu"
CXXFLAGS = ["-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-w"]
MAX_BLOCK_THREADS = 1024


class CudaOnCpuError(RuntimeError):
    """The CUDA source could not be compiled as C++, or the launch was malformed (arguments, dimensions)."""


class UnsupportedCudaError(ValueError):
    """The CUDA source uses a feature that one host thread per CUDA thread cannot run faithfully."""


# (pattern on the comment-stripped source, what to call it in the message)
UNSUPPORTED: list[tuple[str, str]] = [
    (r"\b__shfl\w*", "warp shuffle"),
    (r"\b__ballot\w*", "warp vote"),
    (r"\b__activemask\b", "warp vote"),
    (r"\b__any_sync\b|\b__all_sync\b|\b__match_\w*_sync\b|\b__reduce_\w*_sync\b", "warp vote/reduction"),
    (r"\b__syncwarp\b", "warp barrier"),
    (r"\bwmma\b", "tensor-core (wmma) op"),
    (r"\bmma\.sync\b", "tensor-core (mma.sync) PTX"),
    (r"\bldmatrix\b", "warp-level ldmatrix PTX"),
    (r"\bcp\.async\b", "asynchronous copy (cp.async) PTX"),
    (r"\b(?:asm|__asm__)\s*(?:volatile|__volatile__)?\s*\(", "inline PTX assembly"),
    (r"\bextern\s+__shared__\b", "dynamic shared memory (extern __shared__)"),
    (r"\bcuda_fp16\.h\b|\b__half2?\b|\bhalf\b", "half precision"),
    (r"\bcuda_bf16\.h\b|\b__nv_bfloat16\b", "bfloat16"),
]

# C type of a kernel parameter (after dropping const/volatile/__restrict__) -> numpy dtype.
C_TYPES: dict[str, np.dtype] = {
    "float": np.dtype(np.float32),
    "int": np.dtype(np.int32),
    "int32_t": np.dtype(np.int32),
    "int64_t": np.dtype(np.int64),
    "long long": np.dtype(np.int64),
}

PRELUDE = r"""// ---- cnncc cuda_on_cpu prelude: the CUDA dialect as host C++20 ----
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <math.h>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };
static thread_local uint3 threadIdx;
static thread_local uint3 blockIdx;
static dim3 blockDim;
static dim3 gridDim;
static std::barrier<>* cnncc_block_barrier = nullptr;

static inline void __syncthreads() { cnncc_block_barrier->arrive_and_wait(); }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
// (g++ understands __restrict__ itself: it is the same qualifier as __restrict)

template <class A, class B> static inline auto max(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) return std::fmax(T(a), T(b));
  else return T(a) > T(b) ? T(a) : T(b);
}
template <class A, class B> static inline auto min(A a, B b) {
  using T = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<T>) return std::fmin(T(a), T(b));
  else return T(a) < T(b) ? T(a) : T(b);
}
// glibc declares __expf & co. itself (extern): ours are renamed by macro
static inline float cnncc__expf(float x) { return expf(x); }
#define __expf cnncc__expf
static inline float cnncc__exp10f(float x) { return powf(10.0f, x); }
#define __exp10f cnncc__exp10f
static inline float cnncc__logf(float x) { return logf(x); }
#define __logf cnncc__logf
static inline float cnncc__log2f(float x) { return log2f(x); }
#define __log2f cnncc__log2f
static inline float cnncc__log10f(float x) { return log10f(x); }
#define __log10f cnncc__log10f
static inline float cnncc__powf(float x, float y) { return powf(x, y); }
#define __powf cnncc__powf
static inline float cnncc__sinf(float x) { return sinf(x); }
#define __sinf cnncc__sinf
static inline float cnncc__cosf(float x) { return cosf(x); }
#define __cosf cnncc__cosf
static inline float cnncc__tanf(float x) { return tanf(x); }
#define __tanf cnncc__tanf
static inline float __fdividef(float x, float y) { return x / y; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __int_as_float(int x) { float f; __builtin_memcpy(&f, &x, 4); return f; }
static inline int __float_as_int(float f) { int x; __builtin_memcpy(&x, &f, 4); return x; }
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
template <class T> static inline T __ldg(const T* p) { return *p; }

template <class T, class U> static inline T atomicAdd(T* p, U v) { return std::atomic_ref<T>(*p).fetch_add(T(v)); }
template <class T, class U> static inline T atomicSub(T* p, U v) { return std::atomic_ref<T>(*p).fetch_sub(T(v)); }
template <class T, class U> static inline T atomicExch(T* p, U v) { return std::atomic_ref<T>(*p).exchange(T(v)); }
template <class T, class U> static inline T atomicMax(T* p, U v) {
  std::atomic_ref<T> a(*p); T old = a.load();
  while (old < T(v) && !a.compare_exchange_weak(old, T(v))) {}
  return old;
}
template <class T, class U> static inline T atomicMin(T* p, U v) {
  std::atomic_ref<T> a(*p); T old = a.load();
  while (old > T(v) && !a.compare_exchange_weak(old, T(v))) {}
  return old;
}

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return {x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
// ---- end of prelude; the CUDA source follows ----
"""

LAUNCHER = r"""
// ---- cnncc cuda_on_cpu launcher for {kernel} ----
extern "C" int cnncc_launch_{kernel}(void** args, int nargs, unsigned gx, unsigned gy, unsigned gz,
                            unsigned bx, unsigned by, unsigned bz) {{
  if (nargs != {nargs}) {{ std::fprintf(stderr, "cnncc_launch: {kernel} takes {nargs} arguments, got %d\n", nargs);
                          return 1; }}
  std::lock_guard<std::mutex> lock(cnncc_launch_mutex);
{unpack}
  gridDim = {{gx, gy, gz}};
  blockDim = {{bx, by, bz}};
  const unsigned nthreads = bx * by * bz;
  std::barrier<> bar((std::ptrdiff_t)nthreads);
  cnncc_block_barrier = &bar;
  std::vector<std::thread> threads;
  threads.reserve(nthreads);
  try {{
    for (unsigned t = 0; t < nthreads; ++t) {{
      threads.emplace_back([=, &bar] {{
        threadIdx = uint3{{t % bx, (t / bx) % by, t / (bx * by)}};
        for (unsigned z = 0; z < gz; ++z)
          for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {{
              blockIdx = uint3{{x, y, z}};
              {kernel}({call});
              bar.arrive_and_wait();  // the end of the block: shared memory is free for the next one
            }}
      }});
    }}
  }} catch (...) {{
    // could not start every thread: the started ones wait for the missing ones; nothing safe to do but abort
    std::fprintf(stderr, "cnncc_launch: could not start %u threads\n", nthreads);
    std::abort();
  }}
  for (auto& th : threads) th.join();
  cnncc_block_barrier = nullptr;
  return 0;
}}
"""


@dataclass(frozen=True)
class KernelParam:
    """One parameter of a ``__global__`` kernel: its name, C type, whether it is a pointer, and the numpy dtype of
    the argument it takes (the element type for a pointer)."""

    name: str
    ctype: str
    pointer: bool
    dtype: np.dtype


def strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", source, flags=re.S)


def check_supported(source: str) -> None:
    """Raise :class:`UnsupportedCudaError` naming the first unsupported intrinsic/feature found in ``source``."""
    code = strip_comments(source)
    for pattern, what in UNSUPPORTED:
        m = re.search(pattern, code)
        if m:
            line = code.count("\n", 0, m.start()) + 1
            raise UnsupportedCudaError(
                f"cuda_on_cpu: the source uses `{m.group(0).strip()}` ({what}, line {line}), which cannot run with "
                "one host thread per CUDA thread; test this kernel on a GPU")


def kernel_params(source: str, kernel: str) -> list[KernelParam]:
    """The parameter list of ``__global__`` kernel ``kernel`` in ``source``, in order."""
    code = strip_comments(source)
    m = re.search(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?" + re.escape(kernel) + r"\s*\(([^)]*)\)",
                  code)
    if m is None:
        names = re.findall(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(", code)
        raise CudaOnCpuError(f"cuda_on_cpu: no __global__ kernel named {kernel!r} in the source "
                             f"(kernels found: {sorted(set(names)) or 'none'})")
    params: list[KernelParam] = []
    text = m.group(1).strip()
    if text in ("", "void"):
        return params
    for i, raw in enumerate(text.split(",")):
        decl = " ".join(raw.replace("*", " * ").split())
        pm = re.fullmatch(r"(.*?)\s*(\*?)\s*((?:__restrict__|__restrict|const|volatile)\s+)*(\w+)", decl)
        if pm is None:
            raise CudaOnCpuError(f"cuda_on_cpu: cannot parse parameter {i} of {kernel}: {raw.strip()!r}")
        base = " ".join(w for w in pm.group(1).split() if w not in ("const", "volatile", "__restrict__", "__restrict"))
        pointer = pm.group(2) == "*"
        if "*" in base or base not in C_TYPES:
            kind = "pointer to " if pointer else ""
            raise UnsupportedCudaError(
                f"cuda_on_cpu: parameter {i} of {kernel} ({raw.strip()!r}) has type {kind}{base!r}; supported: "
                f"pointers to and scalars of {', '.join(C_TYPES)}")
        params.append(KernelParam(pm.group(4), base, pointer, C_TYPES[base]))
    return params


def rewrite(source: str) -> str:
    """The source edits the prelude's macros cannot do: ``__shared__ alignas(N) T x[..]`` (TVM's spelling) becomes
    ``alignas(N) __shared__ T x[..]``, since C++ does not allow ``alignas`` after ``static``."""
    return re.sub(r"\b__shared__(\s+)(alignas\s*\([^)]*\))", r"\2\1__shared__", source)


def cxx_compiler() -> str | None:
    """The C++ compiler used (``$CXX`` or ``g++``), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def kernel_names(source: str) -> list[str]:
    """Every ``__global__`` kernel defined in ``source`` (declarations without a body are skipped)."""
    code = strip_comments(source)
    pattern = r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\([^)]*\)\s*\{"
    return list(dict.fromkeys(re.findall(pattern, code)))


def launcher_source(kernel: str, params: Sequence[KernelParam]) -> str:
    unpack, call = [], []
    for i, p in enumerate(params):
        if p.pointer:
            unpack.append(f"  {p.ctype}* a{i} = ({p.ctype}*)args[{i}];")
        else:
            unpack.append(f"  {p.ctype} a{i} = *({p.ctype}*)args[{i}];")
        call.append(f"a{i}")
    return LAUNCHER.format(kernel=kernel, nargs=len(params), unpack="\n".join(unpack), call=", ".join(call))


_LOADED: dict[str, ctypes.CDLL] = {}
_LOADED_LOCK = threading.Lock()


def compile_kernel(source: str, kernel: str) -> tuple[ctypes.CDLL, list[KernelParam]]:
    """Compile ``source`` with a launcher ``cnncc_launch_<name>`` for each of its kernels (one build per source,
    cached on disk and per process); the loaded library and ``kernel``'s parameters."""
    check_supported(source)
    params = kernel_params(source, kernel)
    cxx = cxx_compiler()
    if cxx is None:
        raise CudaOnCpuError("cuda_on_cpu: no C++ compiler (g++ or $CXX) on PATH")
    launchers = "".join(launcher_source(k, kernel_params(source, k)) for k in kernel_names(source))
    final = PRELUDE + "static std::mutex cnncc_launch_mutex;\n" + rewrite(source) + launchers
    key = hashlib.sha256("\0".join([cxx, *CXXFLAGS, final]).encode()).hexdigest()[:24]
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key], params
        folder = CUDA_ON_CPU_CACHE / key
        lib = folder / "kernel.so"
        if not lib.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            # TVM's preamble includes <cuda.h> outside NVRTC: an empty one next to the source satisfies it
            (folder / "cuda.h").write_text("// empty: cuda_on_cpu needs nothing from the CUDA driver API\n")
            # TVM includes <math_constants.h> for infinities (a max-pool's padding)
            (folder / "math_constants.h").write_text(
                "#include <math.h>\n#define CUDART_INF_F INFINITY\n#define CUDART_NAN_F NAN\n"
                "#define CUDART_INF ((double)INFINITY)\n#define CUDART_NAN ((double)NAN)\n")
            stem = f"kernel.{os.getpid()}.{threading.get_ident()}"  # private names: concurrent builds never collide
            src, tmp = folder / f"{stem}.cpp", folder / f"{stem}.so"
            src.write_text(final)
            cmd = [cxx, *CXXFLAGS, f"-I{folder}", str(src), "-o", str(tmp)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise CudaOnCpuError(f"cuda_on_cpu: compiling {kernel} as C++ failed ({' '.join(cmd)}):\n"
                                     f"{done.stderr[-6000:]}")
            os.replace(src, folder / "kernel.cpp")  # kept for reading the compiled code
            os.replace(tmp, lib)  # atomic: a concurrent compile of the same key never sees half a library
        dll = ctypes.CDLL(str(lib))
        for name in kernel_names(source):
            fn = getattr(dll, f"cnncc_launch_{name}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, *[ctypes.c_uint] * 6]
        _LOADED[key] = dll
        return dll, params


def _dims(name: str, dims: Sequence[int]) -> tuple[int, int, int]:
    t = [int(d) for d in dims]
    if len(t) != 3 or any(d < 1 for d in t):
        raise CudaOnCpuError(f"cuda_on_cpu: {name} must be three positive integers, got {tuple(dims)}")
    return t[0], t[1], t[2]


def run_on_cpu(source: str, kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: Sequence[np.ndarray]) -> None:
    """Run ``__global__`` kernel ``kernel`` of the CUDA C ``source`` on the CPU over ``grid`` x ``block``.

    ``args`` are the kernel's arguments in order: a C-contiguous numpy array of the pointer's element type
    (float32, int32 or int64) for each pointer parameter (written in place), and a numpy/Python scalar or 0-d
    array for each scalar parameter.
    """
    grid, block = _dims("grid", grid), _dims("block", block)
    nthreads = block[0] * block[1] * block[2]
    if nthreads > MAX_BLOCK_THREADS:
        raise CudaOnCpuError(f"cuda_on_cpu: block {block} has {nthreads} threads, more than {MAX_BLOCK_THREADS}")
    dll, params = compile_kernel(source, kernel)
    if len(args) != len(params):
        raise CudaOnCpuError(f"cuda_on_cpu: {kernel} takes {len(params)} arguments "
                             f"({', '.join(p.name for p in params)}), got {len(args)}")
    keep: list[np.ndarray] = []
    for i, (p, a) in enumerate(zip(params, args, strict=True)):
        where = f"argument {i} ({p.name}: {p.ctype}{'*' if p.pointer else ''}) of {kernel}"
        if p.pointer:
            if not isinstance(a, np.ndarray):
                raise CudaOnCpuError(f"cuda_on_cpu: {where} must be a numpy array, got {type(a).__name__}")
            if a.dtype not in (np.float32, np.int32, np.int64):
                raise CudaOnCpuError(f"cuda_on_cpu: {where}: dtype {a.dtype} is not supported "
                                     "(float32, int32, int64)")
            if a.dtype != p.dtype:
                raise CudaOnCpuError(f"cuda_on_cpu: {where} needs dtype {p.dtype}, got {a.dtype}")
            if not a.flags.c_contiguous:
                raise CudaOnCpuError(f"cuda_on_cpu: {where} must be C-contiguous (use np.ascontiguousarray)")
            keep.append(a)
        else:
            value = np.asarray(a)
            if value.ndim != 0:
                raise CudaOnCpuError(f"cuda_on_cpu: {where} is a scalar parameter, got an array of shape "
                                     f"{value.shape}")
            cast = value.astype(p.dtype)
            if cast != value:
                raise CudaOnCpuError(f"cuda_on_cpu: {where}: {value} does not fit {p.dtype}")
            keep.append(np.ascontiguousarray(cast.reshape(1)))
    pointers = (ctypes.c_void_p * max(len(keep), 1))(*[a.ctypes.data for a in keep])
    rc = getattr(dll, f"cnncc_launch_{kernel}")(pointers, len(keep), *grid, *block)
    if rc != 0:
        raise CudaOnCpuError(f"cuda_on_cpu: launching {kernel} failed (code {rc})")


def run_plan_on_cpu(code: CudaCode, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A whole CUDA launch plan on the CPU: the fat binary's CUDA C source, every launch in order over host copies of
    the weights and arena regions (the kernels' pointer arguments are views at the plan's offsets). Returns the
    outputs at the compiled batch, flat."""
    arena = np.zeros(code.arena_bytes // 4 + 1, np.float32)
    weights = np.frombuffer(code.weights, np.float32).copy() if code.weights else np.zeros(1, np.float32)
    regions = {"arena": arena, "weights": weights}
    for slot, x in zip(code.inputs, inputs, strict=True):
        data = np.ascontiguousarray(x, np.float32).reshape(-1)
        arena[slot.offset // 4:slot.offset // 4 + data.size] = data
    for launch in code.launches:
        args = [regions[a.region][a.offset // 4:(a.offset + a.nbytes) // 4] for a in launch.args]
        run_on_cpu(code.source, launch.kernel, launch.grid, launch.block, args)
    return [arena[s.offset // 4:(s.offset + s.nbytes) // 4].copy() for s in code.outputs]
