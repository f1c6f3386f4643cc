"""CUDA bundles (cnncc.codegen.cuda.bundle) around a hand-built CudaCode (two nvcc-built kernels, t = x * w then
y = relu(t)): every file is written and the manifest round-trips to the same launch plan; the generated C (plan,
runtime, header) compiles against <cuda.h> and links against a libcuda stub, and its error paths (bad arguments,
altered weights, no device) return status codes with messages; ``cnncc.load`` raises NoCudaDevice without a GPU.
With a GPU (skipped otherwise): the bundle through ``cnncc.load`` and through its C library matches numpy."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import cnncc
from cnncc.bundle_format import STATUS, read_weights
from cnncc.codegen.cuda import bundle as cuda_bundle
from cnncc.codegen.cuda.build import find_nvcc
from cnncc.codegen.cuda.bundle import CudaBundleFiles, find_toolkit, write_cuda_bundle
from cnncc.errors import CnnccError
from cnncc.executable import Executable
from cnncc.runtime.cuda import CudaBundle, NoCudaDevice, code_from_manifest
from cnncc.testing.cuda_tiny import (
    BATCH,
    NBYTES,
    SAMPLE,
    N,
    build_fatbin,
    has_gpu,
    reference,
    tiny_code,
    tiny_executable,
)

CODES = {name: code for code, name in STATUS.items()}
NVCC = find_nvcc()  # $CNNCC_NVCC, $CUDA_HOME/bin, PATH or /usr/local/cuda/bin
CC = shutil.which("cc") or shutil.which("gcc")
CUDA_H = Path("/usr/local/cuda/include/cuda.h")
needs_cuda_h = pytest.mark.skipif(not CUDA_H.exists() or CC is None, reason="needs <cuda.h> and a C compiler")


HAS_GPU = has_gpu()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device (libcuda.so.1 and a GPU are needed)")


def tiny_bundle_executable(fatbin: bytes, weights: np.ndarray) -> Executable:
    return tiny_executable(tiny_code(fatbin, weights), name="Tiny-CUDA", algorithms={"act": "none"})


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(3).uniform(-2, 2, SAMPLE).astype(np.float32)


@pytest.fixture(scope="module")
def fatbin(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if NVCC is None:
        pytest.skip("nvcc is not installed (needed to build the test fat binary)")
    return build_fatbin(NVCC, tmp_path_factory.mktemp("kernels"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, fatbin: bytes, weights: np.ndarray) -> CudaBundleFiles:
    return write_cuda_bundle(tiny_bundle_executable(fatbin, weights), tmp_path_factory.mktemp("bundle") / "tiny")


# -- without a GPU --------------------------------------------------------------------------------------------------

def test_writes_every_file(bundle: CudaBundleFiles, fatbin: bytes, weights: np.ndarray) -> None:
    d, name = bundle.directory, bundle.name
    assert name == "tiny_cuda"
    for f in (f"{name}.fatbin", f"{name}.weights", f"{name}.h", f"{name}_plan.c", "cuda_runtime.c", "manifest.json"):
        assert (d / f).is_file(), f
    assert (d / f"{name}.fatbin").read_bytes() == fatbin
    ex = tiny_bundle_executable(fatbin, weights)
    assert read_weights(bundle.weights, ex.graph.hash()) == weights.tobytes()
    assert f"int {name}_create(const char *bundle_dir_or_weights_path, {name}_model **model);" in \
        bundle.header.read_text()
    assert bundle.build_command[-1].endswith(f"lib{name}.so")


def test_manifest_round_trips(bundle: CudaBundleFiles, fatbin: bytes, weights: np.ndarray) -> None:
    m = json.loads(bundle.manifest.read_text())
    ex = tiny_bundle_executable(fatbin, weights)
    code = ex.native
    assert (m["format"], m["kind"], m["target"], m["max_batch"]) == ("cnncc-bundle", "inference",
                                                                     {"kind": "cuda", "arch": "sm_90"}, BATCH)
    assert m["inputs"] == [{"name": "input", "dtype": "float32", "shape": [BATCH, 2, 4, 4], "batched": True,
                            "offset": NBYTES, "nbytes": NBYTES}]
    assert m["outputs"][0]["offset"] == 2 * NBYTES and m["arena_bytes"] == 3 * NBYTES
    assert m["weights"]["bytes"] == 128 and m["kernels"] == ["scale", "relu"] and m["algorithms"] == {"act": "none"}
    assert m["ptxas"] == code.ptxas and m["graph_hash"] == ex.graph.hash()
    back = code_from_manifest(m, fatbin, weights.tobytes())
    assert back.launches == code.launches and back.inputs == code.inputs and back.outputs == code.outputs
    assert dataclasses.replace(back, source=code.source) == code


def test_without_toolkit_writes_sources_and_says_how_to_build(tmp_path: Path, fatbin: bytes, weights: np.ndarray,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_bundle, "find_toolkit", lambda *a: None)
    files = write_cuda_bundle(tiny_bundle_executable(fatbin, weights), tmp_path, name="t", algorithms={"act": "why"})
    assert files.library is None and json.loads(files.manifest.read_text())["library"] is None
    assert any("libt.so was not built" in w and "build it with" in w for w in files.warnings)
    assert json.loads(files.manifest.read_text())["algorithms"] == {"act": "why"}


def test_refuses_bad_plans(tmp_path: Path, fatbin: bytes, weights: np.ndarray) -> None:
    ex = tiny_bundle_executable(fatbin, weights)
    with pytest.raises(CnnccError, match="needs an executable built for CUDA"):
        write_cuda_bundle(dataclasses.replace(ex, native=object()), tmp_path)
    bad = dataclasses.replace(ex.native, launches=[dataclasses.replace(ex.native.launches[0], block=(4096, 1, 1))])
    with pytest.raises(CnnccError, match="4096 threads"):
        write_cuda_bundle(dataclasses.replace(ex, native=bad), tmp_path)


def test_load_raises_no_cuda_device(bundle: CudaBundleFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNCC_LIBCUDA", "/nonexistent/libcuda.so.1")
    with pytest.raises(NoCudaDevice, match=r"^no CUDA device: /nonexistent/libcuda\.so\.1 not found"):
        cnncc.load(bundle.directory)


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_load_raises_no_cuda_device_here(bundle: CudaBundleFiles) -> None:
    with pytest.raises(NoCudaDevice, match="^no CUDA device: "):
        cnncc.load(bundle.directory)


def test_load_checks_files_first(tmp_path: Path, fatbin: bytes, weights: np.ndarray) -> None:
    files = write_cuda_bundle(tiny_bundle_executable(fatbin, weights), tmp_path)
    data = bytearray(files.weights.read_bytes())
    data[-1] ^= 1
    files.weights.write_bytes(bytes(data))
    with pytest.raises(CnnccError, match="payload fails its CRC-32"):
        CudaBundle(tmp_path, library="/nonexistent/libcuda.so.1")
    files.fatbin.unlink()
    with pytest.raises(CnnccError, match="cannot read the fat binary"):
        CudaBundle(tmp_path, library="/nonexistent/libcuda.so.1")


# -- the C runtime, linked against a stub driver ------------------------------------------------------------------

STUB_HEAD = r"""
#include <stddef.h>
static const char *stub_name = "CUDA_ERROR_STUB_LIBRARY";
int cuGetErrorName(int e, const char **s) { (void)e; *s = stub_name; return 0; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = "CUDA driver is a stub library"; return 0; }
"""
APP = r"""
#include <stdio.h>
#include <string.h>
#include "tiny_cuda.h"
int main(int argc, char **argv) {
    tiny_cuda_model *m = NULL;
    int status = tiny_cuda_create(argc > 1 ? argv[1] : NULL, &m);
    printf("%d %s\n", status, tiny_cuda_last_error());
    if (status) return 0;
    float x[4 * 32], y[4 * 32];
    for (int i = 0; i < 4 * 32; ++i) x[i] = (float)(i % 7) - 3.0f;
    const void *in[] = {x};
    void *out[] = {y};
    size_t in_bytes[] = {sizeof x}, out_bytes[] = {sizeof y}, short_bytes[] = {4};
    printf("%d\n", tiny_cuda_run(m, 9, in, in_bytes, out, out_bytes));
    printf("%d\n", tiny_cuda_run(m, 4, in, short_bytes, out, out_bytes));
    for (int k = 0; k < 2; ++k) {
        status = tiny_cuda_run(m, 4, in, in_bytes, out, out_bytes);
        printf("%d %s\n", status, tiny_cuda_last_error());
        for (int i = 0; i < 4 * 32; ++i) printf("%.9g ", y[i]);
        printf("\n");
    }
    tiny_cuda_destroy(m);
    return 0;
}
"""


def stub_driver(directory: Path, objects: Path) -> Path:
    """libcuda.so defining every cu* symbol the objects use; each returns CUDA_ERROR_STUB_LIBRARY (34)."""
    nm = subprocess.run(["nm", "-u", str(objects)], capture_output=True, text=True, check=True).stdout
    symbols = sorted({line.split()[-1] for line in nm.splitlines() if line.split()[-1].startswith("cu")}
                     - {"cuGetErrorName", "cuGetErrorString"})
    directory.mkdir(exist_ok=True)
    src = directory / "stub.c"
    src.write_text(STUB_HEAD + "".join(f"int {s}(void) {{ return 34; }}\n" for s in symbols))
    subprocess.run([CC, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(src), "-o",
                    str(directory / "libcuda.so")], check=True)
    (directory / "libcuda.so.1").symlink_to("libcuda.so")
    return directory


@pytest.fixture(scope="module")
def c_bundle(tmp_path_factory: pytest.TempPathFactory, fatbin: bytes, weights: np.ndarray) -> dict:
    """The bundle with lib<name>.so linked against a stub driver, and a C program using it."""
    if not CUDA_H.exists() or CC is None:
        pytest.skip("needs <cuda.h> and a C compiler")
    d = tmp_path_factory.mktemp("cbundle")
    ex = tiny_bundle_executable(fatbin, weights)
    first = write_cuda_bundle(ex, d / "bundle", cuda_home="/usr/local/cuda", cuda_lib_dir=d / "none")
    obj = d / "plan.o"
    subprocess.run([CC, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-c", f"-I{first.directory}",
                    f"-I{CUDA_H.parent}", str(first.plan), "-o", str(obj)], check=True)
    stubs = stub_driver(d / "stubs", obj)
    files = write_cuda_bundle(ex, d / "bundle", cuda_home="/usr/local/cuda", cuda_lib_dir=stubs)
    assert files.library is not None and files.library.is_file() and files.warnings == []
    (d / "app.c").write_text(APP)
    app = d / "app"
    subprocess.run([CC, str(d / "app.c"), f"-I{files.directory}", f"-L{files.directory}", "-ltiny_cuda",
                    f"-Wl,-rpath,{files.directory}", f"-Wl,-rpath-link,{stubs}", "-o", str(app)], check=True)
    return {"files": files, "app": app, "stubs": stubs, "dir": d}


def run_app(c_bundle: dict, *args: str, stub: bool = True) -> list[str]:
    env = {"LD_LIBRARY_PATH": str(c_bundle["stubs"])} if stub else {}
    r = subprocess.run([str(c_bundle["app"]), *args], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@needs_cuda_h
def test_library_exports_only_the_api(c_bundle: dict) -> None:
    nm = subprocess.run(["nm", "-D", "--defined-only", str(c_bundle["files"].library)], capture_output=True,
                        text=True, check=True).stdout
    exported = sorted(line.split()[-1] for line in nm.splitlines() if line.split()[1] == "T")
    assert exported == sorted(f"tiny_cuda_{f}" for f in cuda_bundle.API_FUNCTIONS)


@needs_cuda_h
def test_c_errors_before_the_device(c_bundle: dict, tmp_path: Path) -> None:
    d = c_bundle["files"].directory
    assert run_app(c_bundle)[0].startswith(f"{CODES['CNNCC_ERR_NULL']} tiny_cuda: create: pass the bundle")
    assert run_app(c_bundle, str(tmp_path / "nowhere"))[0].startswith(f"{CODES['CNNCC_ERR_IO']} tiny_cuda: cannot "
                                                                      "open weights file")
    bad = tmp_path / "tiny_cuda.weights"
    data = bytearray((d / "tiny_cuda.weights").read_bytes())
    data[200] ^= 1
    bad.write_bytes(bytes(data))
    assert "payload fails its CRC-32" in run_app(c_bundle, str(bad))[0]
    assert run_app(c_bundle, str(bad))[0].startswith(str(CODES["CNNCC_ERR_CHECKSUM"]))
    bad.write_bytes((d / "tiny_cuda.weights").read_bytes())
    assert "cannot open fat binary" in run_app(c_bundle, str(bad))[0]  # no tiny_cuda.fatbin beside it


@needs_cuda_h
def test_c_create_without_a_device(c_bundle: dict) -> None:
    d = c_bundle["files"].directory
    for path in (d, d / "tiny_cuda.weights"):
        line = run_app(c_bundle, str(path))[0]
        assert line.startswith(f"{CODES['CNNCC_ERR_CPU']} tiny_cuda: no usable CUDA device: cuInit(0) failed: "
                               "CUDA_ERROR_STUB_LIBRARY"), line


# -- with a GPU -----------------------------------------------------------------------------------------------------

@needs_gpu
def test_load_runs_on_the_gpu(bundle: CudaBundleFiles, weights: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    with cnncc.load(bundle.directory) as model:
        assert isinstance(model, CudaBundle) and model.layer_algorithms == {"act": "none"}
        for batch in (BATCH, 3):
            x = rng.standard_normal((batch, 2, 4, 4)).astype(np.float32)
            np.testing.assert_array_equal(model(x), reference(x, weights))
        assert len(model.profile(x)) == 2 and "CudaBundle 'tiny_cuda'" in repr(model)


@needs_gpu
def test_c_library_runs_on_the_gpu(c_bundle: dict, weights: np.ndarray) -> None:
    lines = run_app(c_bundle, str(c_bundle["files"].directory), stub=False)
    assert lines[0] == "0 no error"
    assert lines[1] == str(CODES["CNNCC_ERR_ARGUMENT"]) and lines[2] == str(CODES["CNNCC_ERR_SIZE"])
    x = (np.arange(N) % 7 - 3).astype(np.float32).reshape(BATCH, 2, 4, 4)
    for k in (3, 5):  # the first call captures the CUDA graph, the second replays it
        assert lines[k] == "0 no error"
        np.testing.assert_array_equal(np.array(lines[k + 1].split(), np.float32).reshape(x.shape),
                                      reference(x, weights))


def test_find_toolkit_needs_libcuda(tmp_path: Path) -> None:
    if not CUDA_H.exists():
        pytest.skip("no <cuda.h>")
    assert find_toolkit("/usr/local/cuda", tmp_path) is None
    (tmp_path / "libcuda.so").write_bytes(b"")
    assert find_toolkit("/usr/local/cuda", tmp_path) == cuda_bundle.CudaToolkit(CUDA_H.parent, tmp_path)
