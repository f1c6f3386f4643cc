"""cnncc.testing.cuda_on_cpu: CUDA C kernels (hand-written, and TVM-generated) run on the CPU with one host thread
per CUDA thread, against numpy / PyTorch; unsupported warp intrinsics are rejected with an error naming them."""

from __future__ import annotations

import numpy as np
import pytest

from cnncc.testing.cuda_on_cpu import (
    CudaOnCpuError,
    UnsupportedCudaError,
    cxx_compiler,
    kernel_params,
    run_on_cpu,
)

pytestmark = pytest.mark.skipif(cxx_compiler() is None, reason="cuda_on_cpu needs a C++20 compiler (g++)")

# Every round moves each value one slot along the block's shared array and adds the round number: correct only if
# the barriers separate the writes from the reads (and the end-of-block barrier keeps blocks off each other's
# shared array); the scalar `rounds` and the 2-d block exercise scalar parameters and threadIdx.y.
ROTATE = r"""
extern "C" __global__ void __launch_bounds__(64) rotate(float* __restrict__ x, float* __restrict__ y, int rounds,
                                                         int64_t* __restrict__ seen) {
  __shared__ alignas(16) float s[64];
  int t = ((int)threadIdx.y) * 8 + ((int)threadIdx.x);
  int n = 64;
  float v = x[((int)blockIdx.x) * n + t];
  for (int r = 0; r < rounds; ++r) {
    s[t] = v;
    __syncthreads();
    v = s[(t + 1) % n] + (float)r;
    __syncthreads();
  }
  y[((int)blockIdx.x) * n + t] = max(v, -1.0e30f);
  seen[((int)blockIdx.x) * n + t] = (int64_t)(((int)blockIdx.x) * 1000 + t);
}
"""


def rotate_reference(x: np.ndarray, rounds: int) -> np.ndarray:
    v = x.reshape(-1, 64).astype(np.float32)
    for r in range(rounds):
        v = np.roll(v, -1, axis=1) + np.float32(r)
    return v.reshape(x.shape)


def test_shared_memory_and_barriers_match_numpy() -> None:
    blocks, rounds = 5, 37
    x = np.random.default_rng(0).standard_normal(blocks * 64).astype(np.float32)
    y = np.zeros_like(x)
    seen = np.zeros(blocks * 64, np.int64)
    run_on_cpu(ROTATE, "rotate", (blocks, 1, 1), (8, 8, 1), [x, y, rounds, seen])
    np.testing.assert_array_equal(y, rotate_reference(x, rounds))
    np.testing.assert_array_equal(seen, (np.arange(blocks)[:, None] * 1000 + np.arange(64)[None, :]).ravel())


def test_the_test_kernel_needs_its_barriers() -> None:
    """Without __syncthreads the threads race on the shared array: the emulation really runs them concurrently."""
    x = np.random.default_rng(0).standard_normal(5 * 64).astype(np.float32)
    wrong = 0
    for _ in range(3):
        y = np.zeros_like(x)
        run_on_cpu(ROTATE.replace("__syncthreads();", ""), "rotate", (5, 1, 1), (8, 8, 1),
                   [x, y, 37, np.zeros(5 * 64, np.int64)])
        wrong += not np.array_equal(y, rotate_reference(x, 37))
    assert wrong > 0


def test_parameters_are_parsed_and_arguments_checked() -> None:
    params = kernel_params(ROTATE, "rotate")
    assert [(p.name, p.ctype, p.pointer) for p in params] == [
        ("x", "float", True), ("y", "float", True), ("rounds", "int", False), ("seen", "int64_t", True)]
    x = np.zeros(64, np.float32)
    seen = np.zeros(64, np.int64)
    with pytest.raises(CudaOnCpuError, match=r"dtype float64 is not supported \(float32, int32, int64\)"):
        run_on_cpu(ROTATE, "rotate", (1, 1, 1), (8, 8, 1), [x.astype(np.float64), x, 1, seen])
    with pytest.raises(CudaOnCpuError, match=r"argument 3 \(seen: int64_t\*\) of rotate needs dtype int64, got int32"):
        run_on_cpu(ROTATE, "rotate", (1, 1, 1), (8, 8, 1), [x, x, 1, seen.astype(np.int32)])
    with pytest.raises(CudaOnCpuError, match="takes 4 arguments"):
        run_on_cpu(ROTATE, "rotate", (1, 1, 1), (8, 8, 1), [x, x, 1])
    with pytest.raises(CudaOnCpuError, match="C-contiguous"):
        run_on_cpu(ROTATE, "rotate", (1, 1, 1), (8, 8, 1), [np.zeros(128, np.float32)[::2], x, 1, seen])
    with pytest.raises(CudaOnCpuError, match="more than 1024"):
        run_on_cpu(ROTATE, "rotate", (1, 1, 1), (64, 32, 1), [x, x, 1, seen])
    with pytest.raises(CudaOnCpuError, match="no __global__ kernel named 'nope'"):
        run_on_cpu(ROTATE, "nope", (1, 1, 1), (8, 8, 1), [x, x, 1, seen])


def test_warp_intrinsics_are_rejected() -> None:
    source = r"""
extern "C" __global__ void reduce(float* __restrict__ x) {
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o /= 2) v += __shfl_down_sync(0xffffffffu, v, o);
  x[threadIdx.x] = v;
}
"""
    with pytest.raises(UnsupportedCudaError, match=r"`__shfl_down_sync` \(warp shuffle, line 4\)"):
        run_on_cpu(source, "reduce", (1, 1, 1), (32, 1, 1), [np.zeros(32, np.float32)])


# --- a TVM-generated kernel: conv2d + bias + relu as an implicit GEMM with shared-memory tiles and virtual threads

def conv_te(n: int, c: int, h: int, w: int, k: int, r: int, s: int, st: int, pad: int, oh: int, ow: int) -> list:
    from tvm import te, tirx

    x = te.placeholder((n, c, h, w), name="x")
    wt = te.placeholder((c * r * s, k), name="w")
    b = te.placeholder((k,), name="b")

    def patch(n_, kk, p):
        c_ = kk // (r * s)
        rs = kk % (r * s)
        ih = (p // ow) * st - pad + rs // s
        iw = (p % ow) * st - pad + rs % s
        return tirx.if_then_else(tirx.all(ih >= 0, ih < h, iw >= 0, iw < w), x[n_, c_, ih, iw],
                                 tirx.const(0.0, "float32"))

    a = te.compute((n, c * r * s, oh * ow), patch, name="A")
    rk = te.reduce_axis((0, c * r * s), name="rk")
    acc = te.compute((n, k, oh * ow), lambda n_, k_, p: te.sum(a[n_, rk, p] * wt[rk, k_], axis=rk), name="acc")
    y = te.compute((n, k, oh * ow), lambda n_, k_, p: tirx.max(acc[n_, k_, p] + b[k_], tirx.const(0.0, "float32")),
                   name="y")
    return [x, wt, b, y]


def schedule_vthreads(f: object, k1: int, k2: int, p1: int, p2: int, rkt: int) -> object:
    from tvm import s_tir

    sch = s_tir.Schedule(f)
    a, acc, y = sch.get_sblock("A"), sch.get_sblock("acc"), sch.get_sblock("y")
    n, k, p, rk = sch.get_loops(acc)
    k0, k2_, k1_ = sch.split(k, [None, k2, k1])
    p0, p2_, p1_ = sch.split(p, [None, p2, p1])
    rk0, rk1 = sch.split(rk, [None, rkt])
    sch.reorder(n, k0, p0, k2_, p2_, k1_, p1_, rk0, rk1)
    sch.bind(n, "blockIdx.z")
    sch.bind(k0, "blockIdx.y")
    sch.bind(p0, "blockIdx.x")
    sch.bind(k2_, "vthread.y")
    sch.bind(p2_, "vthread.x")
    sch.bind(k1_, "threadIdx.y")
    sch.bind(p1_, "threadIdx.x")
    sch.set_scope(a, 0, "shared")
    ws = sch.cache_read(acc, 1, "shared")
    for blk in (a, ws):
        sch.compute_at(blk, rk0)
        fused = sch.fuse(*sch.get_loops(blk)[-2:])
        _, ty, tx = sch.split(fused, [None, k1, p1])
        sch.bind(ty, "threadIdx.y")
        sch.bind(tx, "threadIdx.x")
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(y, p1_)
    sch.decompose_reduction(acc, rk0)
    return sch


def test_tvm_conv_kernel_matches_torch() -> None:
    tvm = pytest.importorskip("tvm")
    torch = pytest.importorskip("torch")
    from tvm import te

    n, c, h, w, k = 1, 8, 10, 10, 16
    k1, k2, p1, p2, rkt = 4, 2, 8, 2, 8  # 100 output pixels in tiles of 16: the last block is partial (guards)
    f = te.create_prim_func(conv_te(n, c, h, w, k, 3, 3, 1, 1, h, w))
    sch = schedule_vthreads(f, k1, k2, p1, p2, rkt)
    source = tvm.compile(sch.mod, target={"kind": "cuda", "arch": "sm_90"}).mod.imports[0].inspect_source()
    assert "__syncthreads" in source and "__shared__" in source

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    w_packed = np.ascontiguousarray(wt.reshape(k, c * 9).T)
    size = n * k * h * w
    y_buf = np.full(size + 64, np.nan, np.float32)  # a tail of NaNs catches writes past the end
    y = y_buf[:size].reshape(n, k, h * w)
    arrays = {"x_ptr": x, "w_ptr": w_packed, "b_ptr": b, "y_ptr": y}
    params = kernel_params(source, "main_kernel")
    grid = (-(-h * w // (p1 * p2)), k // (k1 * k2), n)
    run_on_cpu(source, "main_kernel", grid, (p1, k1, 1), [arrays[p.name] for p in params])

    ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b),
                                                padding=1)).numpy().reshape(n, k, h * w)
    assert np.isnan(y_buf[size:]).all()
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def test_tvm_math_functions_and_float4_vectors() -> None:
    """TVM's spellings of the math functions (expf, tanhf, log1pf, rsqrtf, min, ...) and its float4 vector code
    (``*(float4*)(p + i)``, ``make_float4``) run through the prelude's shims."""
    tvm = pytest.importorskip("tvm")
    from tvm import s_tir, te, tirx

    n = 1024
    x = te.placeholder((n,), name="x")
    z = te.placeholder((n,), name="z")

    def math(i: object) -> object:
        a = tirx.abs(x[i])
        return (tirx.exp(x[i]) + tirx.tanh(x[i]) + tirx.sqrt(a) + tirx.log1p(a) + tirx.rsqrt(a + 1.0)
                + tirx.min(x[i], 0.5) + tirx.log(a + 1.0) + z[i])

    rng = np.random.default_rng(2)
    xn, zn = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    an = np.abs(xn)
    cases = [(math, np.exp(xn) + np.tanh(xn) + np.sqrt(an) + np.log1p(an) + 1 / np.sqrt(an + 1) + np.minimum(xn, 0.5)
              + np.log(an + 1) + zn),
             (lambda i: tirx.max(x[i] * 2.0 + z[i], 0.0), np.maximum(xn * 2 + zn, 0))]
    for fn, want in cases:
        y = te.compute((n,), fn, name="y")
        sch = s_tir.Schedule(te.create_prim_func([x, z, y]))
        i0, i1, i2 = sch.split(sch.get_loops(sch.get_sblock("y"))[0], [None, 64, 4])
        sch.bind(i0, "blockIdx.x")
        sch.bind(i1, "threadIdx.x")
        sch.vectorize(i2)
        source = tvm.compile(sch.mod, target={"kind": "cuda", "arch": "sm_90"}).mod.imports[0].inspect_source()
        arrays = {"x_ptr": xn, "z_ptr": zn, "y_ptr": np.zeros(n, np.float32)}
        run_on_cpu(source, "main_kernel", (n // 256, 1, 1), (64, 1, 1),
                   [arrays[p.name] for p in kernel_params(source, "main_kernel")])
        assert np.abs(arrays["y_ptr"] - want).max() <= 1e-5 * np.abs(want).max()
    assert "float4" in source and "make_float4" in source
