"""A tiny hand-written CUDA model for the runtime and bundle tests: two kernels (y = relu(x * w), one weight per
feature of a (2, 4, 4) image) with their launch plan, the executable around it, and its numpy reference."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import cnncc.frontend as nn
from cnncc.errors import CnnccError
from cnncc.executable import CompileStats, Executable
from cnncc.launch_plan import CudaCode, IOSlot, KernelArg, Launch
from cnncc.program import Program

BATCH, SAMPLE = 4, 32  # images, floats per image (2x4x4)
N = BATCH * SAMPLE
NBYTES = 4 * N
KERNELS = f"#define N {N}\n#define SAMPLE {SAMPLE}\n" + r"""
extern "C" __global__ void scale(const float *__restrict__ x, const float *__restrict__ w, float *__restrict__ t) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < N) t[i] = x[i] * w[i % SAMPLE];
}
extern "C" __global__ void relu(const float *__restrict__ t, float *__restrict__ y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < N) y[i] = t[i] > 0.f ? t[i] : 0.f;
}
"""


def has_gpu() -> bool:
    """Whether the CUDA driver loads and reports a device."""
    from cnncc.runtime.cuda import Driver

    try:
        Driver()
    except CnnccError:
        return False
    return True


def build_fatbin(nvcc: str, directory: Path) -> bytes:
    """:data:`KERNELS` built by ``nvcc`` for sm_90 (cubin + PTX)."""
    src, out = directory / "kernels.cu", directory / "kernels.fatbin"
    src.write_text(KERNELS)
    subprocess.run([nvcc, "-fatbin", "-gencode", "arch=compute_90,code=sm_90", "-gencode",
                    "arch=compute_90,code=compute_90", str(src), "-o", str(out)], check=True, capture_output=True)
    return out.read_bytes()


def tiny_code(fatbin: bytes, weights: np.ndarray) -> CudaCode:
    """Arena: t at 0, the input at NBYTES, the output at 2 * NBYTES."""
    scale = Launch("scale", (1, 1, 1), (N, 1, 1), (KernelArg("arena", NBYTES, NBYTES), KernelArg("weights", 0, 128),
                                                  KernelArg("arena", 0, NBYTES)), layer="scale", flops=2 * N)
    relu = Launch("relu", (2, 1, 1), (N // 2, 1, 1), (KernelArg("arena", 0, NBYTES),
                                                      KernelArg("arena", 2 * NBYTES, NBYTES)), layer="act", flops=N)
    return CudaCode(arch="sm_90", fatbin=fatbin, source=KERNELS, launches=[scale, relu], arena_bytes=3 * NBYTES,
                    weights=weights.tobytes(), inputs=[IOSlot("input", NBYTES, NBYTES)],
                    outputs=[IOSlot("output", 2 * NBYTES, NBYTES)], ptxas={"scale": {"registers": 8, "spill": 0}})


def tiny_executable(code: CudaCode, name: str = "tiny_cuda", algorithms: dict[str, str] | None = None) -> Executable:
    """The executable a CUDA target would hand the runtime for ``code`` (a graph of one ReLU, batch 4)."""
    graph = nn.Sequential([nn.ReLU(name="act")], input_shape=(2, 4, 4), name=name).graph(BATCH)
    program = Program(name=graph.name, batch=BATCH, weights=code.weights, arena_bytes=code.arena_bytes,
                      batched_outputs=[True], algorithms=dict(algorithms or {}))
    return Executable(graph=graph, program=program, target=SimpleNamespace(kind="cuda", arch=code.arch), native=code,
                      entry=0, profiled_entry=0, threads=1, stats=CompileStats(), prepare_threads=lambda n: None,
                      description="CUDA sm_90 (hand-written test kernels)")


def reference(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.maximum(x * weights.reshape(2, 4, 4), 0)
