"""Deployment bundles (``cnncc compile``, ``cnncc.load``, examples/c/classify.c): the C example and the loader
compute bit for bit what the in-process runtime computes; every bad argument and bad weights file is an error code
with a message, never a crash; the CPU check refuses a CPU without the compiled-for features; valgrind memcheck
finds nothing in the C example or the loader, error paths included. (Every zoo model's C example run is checked in
tests/models/test_compiled_models.py.)"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnncc
from cnncc.bundle_format import STATUS, read_weights, write_weights
from cnncc.codegen.bundle import c_name
from cnncc.codegen.cpuid import FEATURES
from cnncc.codegen.target import Target
from cnncc.driver import write_bundle
from cnncc.errors import CnnccError, InputError, WeightsError
from cnncc.frontend.models import get_model
from cnncc.runtime.compiled import aligned_bytes
from cnncc.testing import build_c_example, randomize, repo_root, run_c_example

ROOT = repo_root(__file__)
EXAMPLE = ROOT / "examples" / "c" / "classify.c"
SUPPRESSIONS = ROOT / "tests" / "valgrind-python.supp"
CODES = {name: code for code, name in STATUS.items()}
MAX_BATCH = 4
HAS_VALGRIND = shutil.which("valgrind") is not None


def _lenet(cpu: str = "host") -> tuple[object, object]:
    model = get_model("lenet5", seed=0)
    randomize(model, 5)
    return model, cnncc.compile(model, batch=MAX_BATCH, threads=2, cpu=cpu)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """LeNet-5 compiled in-process (host CPU), its bundle, and the C example built against it."""
    model, cm = _lenet()
    d = tmp_path_factory.mktemp("lenet5")
    files = write_bundle(cm, d / "bundle", static=True)
    exe = build_c_example(EXAMPLE, files.directory, d / "classify")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((MAX_BATCH, 1, 32, 32)).astype(np.float32)
    return {"model": model, "cm": cm, "files": files, "dir": d, "exe": exe, "x": x}


def _npy(path: Path, a: np.ndarray) -> str:
    np.save(path, a)
    return str(path)


def _classify(exe: Path, weights: Path | None, x_path: str, *extra: str, valgrind: bool = False):
    args = [*(["-w", str(weights)] if weights else []), *extra, x_path]
    return run_c_example(exe, *args, valgrind=valgrind)


# -- the C example and the loader against the in-process runtime -------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3, MAX_BATCH])
def test_c_example_equals_in_process_bit_for_bit(lenet: dict, batch: int, tmp_path: Path) -> None:
    x = np.ascontiguousarray(lenet["x"][:batch])
    out = tmp_path / "y.bin"
    r = _classify(lenet["exe"], lenet["files"].weights, _npy(tmp_path / "x.npy", x), "-o", str(out))
    assert r.returncode == 0, r.stderr
    want = lenet["cm"](x)
    got = np.fromfile(out, np.float32).reshape(want.shape)
    assert got.tobytes() == want.tobytes()
    # The printed top class of each image is the in-process argmax.
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("image ")]
    assert [int(ln.split()[2]) for ln in lines] == list(np.argmax(want, axis=1))


def test_c_example_runs_without_python(lenet: dict) -> None:
    """The example links no Python: its dynamic dependencies are the bundle, libgomp and libc/libm."""
    r = subprocess.run(["ldd", str(lenet["exe"])], capture_output=True, text=True, check=True)
    assert "libpython" not in r.stdout and "liblenet5.so" in r.stdout


def test_static_archive_and_embedded_weights(lenet: dict, tmp_path: Path) -> None:
    """The static archive links into a program on its own; a bundle with embedded weights needs no file."""
    x = np.ascontiguousarray(lenet["x"][:2])
    want = lenet["cm"](x).tobytes()
    exe = build_c_example(EXAMPLE, lenet["files"].directory, tmp_path / "classify_static", static=True)
    r = _classify(exe, lenet["files"].weights, _npy(tmp_path / "x.npy", x), "-o", str(tmp_path / "a.bin"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.bin").read_bytes() == want
    emb = write_bundle(lenet["cm"], tmp_path / "embedded", embed_weights=True)
    assert emb.weights is None and not list(emb.directory.glob("*.weights"))
    exe = build_c_example(EXAMPLE, emb.directory, tmp_path / "classify_emb")
    r = _classify(exe, None, str(tmp_path / "x.npy"), "-o", str(tmp_path / "b.bin"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.bin").read_bytes() == want
    assert cnncc.load(emb.directory)(x).tobytes() == want
    # Without a weights path, a bundle without embedded weights says what it needs.
    r = _classify(lenet["exe"], None, str(tmp_path / "x.npy"))
    assert r.returncode == 2 and "no embedded weights" in r.stderr


@pytest.mark.parametrize("batch", [1, 3])
def test_loader_equals_in_process_bit_for_bit(lenet: dict, batch: int) -> None:
    bundle = cnncc.load(lenet["files"].directory)
    x = np.ascontiguousarray(lenet["x"][:batch])
    assert bundle(x).tobytes() == lenet["cm"](x).tobytes()
    assert bundle.max_batch == MAX_BATCH and bundle.input_names == lenet["cm"].input_names
    assert "lenet5" in repr(bundle) and "batch <= 4" in repr(bundle)


def test_loader_checks_inputs_as_the_compiled_model_does(lenet: dict) -> None:
    bundle, cm, x = cnncc.load(lenet["files"].directory), lenet["cm"], lenet["x"]
    bad = [x.astype(np.float64), x[:, :, :16], np.zeros((MAX_BATCH + 1, 1, 32, 32), np.float32), x[:, :, ::2, ::2],
           x[:, :, :, ::-1], [1.0], {"input": x, "other": x}, {}]
    for a in bad:
        with pytest.raises(InputError) as want:
            cm(a)
        with pytest.raises(InputError) as got:
            bundle(a)
        assert str(got.value) == str(want.value)
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        bundle(nan, check_finite=True)


def test_manifest_and_header(lenet: dict) -> None:
    files, cm = lenet["files"], lenet["cm"]
    m = json.loads(files.manifest.read_text())
    assert m["graph_hash"] == cm.graph.hash() and m["cnncc_version"] == cnncc.__version__
    assert m["target"]["cpu"] == Target.host().cpu
    assert m["target"]["features"] == sorted(f for f in Target.host().enabled() if f in FEATURES)
    assert m["threads"] == 2 and m["max_batch"] == MAX_BATCH and m["kind"] == "inference"
    assert m["inputs"] == [{"name": "input", "dtype": "float32", "shape": [MAX_BATCH, 1, 32, 32], "batched": True}]
    assert m["outputs"][0]["shape"] == [MAX_BATCH, 10]
    assert m["weights"]["crc32"] == zlib.crc32(cm.program.weights)
    header = files.header.read_text()
    for text in ("#define LENET5_MAX_BATCH 4", "#define LENET5_INPUT0_SHAPE {4, 1, 32, 32}",
                 f"#define LENET5_ARENA_BYTES {cm.program.arena_bytes}ull", "CNNCC_ERR_CHECKSUM = 8",
                 "int lenet5_create(const char *weights_path, int32_t threads, lenet5_model **model);",
                 "const char *lenet5_last_error(void);"):
        assert text in header
    # Only the C API is exported from the shared library.
    r = subprocess.run(["nm", "-D", "--defined-only", str(files.library)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in r.stdout.splitlines()}
    assert exported == {f"lenet5_{f}" for f in ("create", "run", "run_with_arena", "destroy", "last_error",
                                                "graph_hash", "check_cpu", "host_has_feature", "weights",
                                                "save_weights")}
    assert c_name("LeNet-5") == "lenet_5" and c_name("5net") == "m_5net"


@pytest.mark.skipif("avx512f" not in Target.host().enabled(),
                    reason="the host CPU has no AVX-512F, so a bundle built for it does not require it")
def test_host_bundle_requires_the_hosts_avx512(lenet: dict) -> None:
    """On an AVX-512 host (the development machines) a bundle for the host CPU uses and checks AVX-512F."""
    assert "avx512f" in json.loads(lenet["files"].manifest.read_text())["target"]["features"]


# -- weights files and error paths -------------------------------------------------------------------------------

def _bad_weights(lenet: dict, tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """Broken weights files: path, the status the C runtime returns and a phrase of its message."""
    good = lenet["files"].weights.read_bytes()
    cases = {}

    def case(name: str, data: bytes, status: str, phrase: str) -> None:
        p = tmp_path / f"{name}.weights"
        p.write_bytes(data)
        cases[name] = (p, status, phrase)

    case("truncated_payload", good[:len(good) // 2], "CNNCC_ERR_FORMAT", "truncated")
    case("truncated_header", good[:100], "CNNCC_ERR_FORMAT", "shorter than the 128-byte header")
    case("empty", b"", "CNNCC_ERR_FORMAT", "truncated")
    flipped = bytearray(good)
    flipped[len(good) - 7] ^= 0x10
    case("altered_payload", bytes(flipped), "CNNCC_ERR_CHECKSUM", "payload fails its CRC-32")
    head = bytearray(good)
    head[85] ^= 1  # the payload size field
    case("altered_header", bytes(head), "CNNCC_ERR_CHECKSUM", "header fails its CRC-32")
    reserved = bytearray(good)
    reserved[100] = 7  # not covered by the header CRC, so checked to be zero
    case("reserved", bytes(reserved), "CNNCC_ERR_FORMAT", "reserved header bytes 96..127 are not zero")
    case("not_weights", b"PK\x03\x04" + bytes(200), "CNNCC_ERR_FORMAT", "not a cnncc weights file")
    case("trailing_bytes", good + b"\0", "CNNCC_ERR_FORMAT", "bytes after")
    other = tmp_path / "other_graph.weights"
    write_weights(other, lenet["cm"].program.weights, "f" * 64)
    cases["other_graph"] = (other, "CNNCC_ERR_MISMATCH", "belongs to graph ffffffffffff")
    cases["missing"] = (tmp_path / "missing.weights", "CNNCC_ERR_IO", "cannot open")
    return cases


def test_bad_weights_files_are_error_codes(lenet: dict, tmp_path: Path) -> None:
    x_path = _npy(tmp_path / "x.npy", lenet["x"][:1])
    lib = ctypes.CDLL(str(lenet["files"].library))
    lib.lenet5_create.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p]
    lib.lenet5_last_error.restype = ctypes.c_char_p
    for name, (path, status, phrase) in _bad_weights(lenet, tmp_path).items():
        r = _classify(lenet["exe"], path, x_path)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert f"status {CODES[status]}" in r.stderr and phrase in r.stderr, (name, r.stderr)
        model = ctypes.c_void_p(1)
        assert lib.lenet5_create(str(path).encode(), 1, ctypes.byref(model)) == CODES[status], name
        assert model.value is None  # *model is NULL after a failed create
        assert phrase in lib.lenet5_last_error().decode()
        if name != "missing":  # the Python reader makes the same checks
            with pytest.raises(WeightsError):
                read_weights(path, lenet["cm"].graph.hash())
        bundle_dir = tmp_path / f"bundle_{name}"
        shutil.copytree(lenet["files"].directory, bundle_dir)
        (bundle_dir / "lenet5.weights").unlink()
        if path.exists():
            shutil.copyfile(path, bundle_dir / "lenet5.weights")
        with pytest.raises(CnnccError, match=status):
            cnncc.load(bundle_dir)
    assert read_weights(lenet["files"].weights, lenet["cm"].graph.hash()) == bytes(lenet["cm"].program.weights)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=0, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 2**31)), tail=st.binary(max_size=8))
def test_fuzzed_weights_files_never_crash(lenet: dict, tmp_path: Path, edits: list, cut: int | None,
                                          tail: bytes) -> None:
    """Random byte edits, truncations and trailing bytes: create() accepts the file exactly when it is unchanged,
    and otherwise returns FORMAT, CHECKSUM or MISMATCH with a message (a crash would take pytest down)."""
    good = lenet["files"].weights.read_bytes()
    data = bytearray(good)
    for pos, xor in edits:
        data[pos % len(data)] ^= xor
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    data += tail
    path = tmp_path / "fuzz.weights"
    path.write_bytes(bytes(data))
    lib = ctypes.CDLL(str(lenet["files"].library))
    lib.lenet5_create.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p]
    lib.lenet5_destroy.argtypes = [ctypes.c_void_p]
    lib.lenet5_last_error.restype = ctypes.c_char_p
    model = ctypes.c_void_p()
    status = lib.lenet5_create(str(path).encode(), 1, ctypes.byref(model))
    if bytes(data) == good:
        assert status == 0 and model.value
        lib.lenet5_destroy(model)
    else:
        assert status in (CODES["CNNCC_ERR_FORMAT"], CODES["CNNCC_ERR_CHECKSUM"], CODES["CNNCC_ERR_MISMATCH"])
        message = lib.lenet5_last_error().decode()
        assert not model.value and message.startswith("lenet5: ") and str(path) in message


def test_wrong_inputs_are_error_codes_in_the_c_example(lenet: dict, tmp_path: Path) -> None:
    w = lenet["files"].weights
    cases = [(np.zeros((2, 1, 32, 31), np.float32), "CNNCC_ERR_SIZE", "has 7936 bytes; at batch 2 it takes 8192"),
             (np.zeros((MAX_BATCH + 1, 1, 32, 32), np.float32), "CNNCC_ERR_ARGUMENT", "batch 5 is outside 1..4"),
             (np.zeros((0, 1, 32, 32), np.float32), "CNNCC_ERR_ARGUMENT", "batch 0 is outside")]
    for i, (x, status, phrase) in enumerate(cases):
        r = _classify(lenet["exe"], w, _npy(tmp_path / f"x{i}.npy", x))
        assert r.returncode == 2 and f"status {CODES[status]}" in r.stderr and phrase in r.stderr, r.stderr
    np.save(tmp_path / "f64.npy", np.zeros((1, 1, 32, 32)))
    r = _classify(lenet["exe"], w, str(tmp_path / "f64.npy"))
    assert r.returncode == 3 and "must hold float32" in r.stderr
    (tmp_path / "cut.npy").write_bytes((tmp_path / "f64.npy").read_bytes()[:200])
    assert _classify(lenet["exe"], w, str(tmp_path / "cut.npy")).returncode == 3
    assert run_c_example(lenet["exe"]).returncode == 1  # usage


def test_c_api_refuses_null_pointers_and_wrong_sizes(lenet: dict) -> None:
    """Every argument the C API takes, wrong, through ctypes: an error code and a message, never a crash."""
    lib = ctypes.CDLL(str(lenet["files"].library))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.lenet5_create.argtypes = [ctypes.c_char_p, ctypes.c_int32, vp]
    lib.lenet5_run.argtypes = [vp, ctypes.c_int64, vp, vp, vp, vp]
    lib.lenet5_run_with_arena.argtypes = [vp, vp, sz, ctypes.c_int64, vp, vp, vp, vp]
    lib.lenet5_destroy.argtypes = [vp]
    lib.lenet5_save_weights.argtypes = [vp, ctypes.c_char_p]
    lib.lenet5_weights.argtypes = [vp, vp]
    lib.lenet5_weights.restype = vp
    lib.lenet5_last_error.restype = ctypes.c_char_p
    err = lambda: lib.lenet5_last_error().decode()  # noqa: E731
    weights = str(lenet["files"].weights).encode()
    assert lib.lenet5_create(weights, 1, None) == CODES["CNNCC_ERR_NULL"] and "must not be NULL" in err()
    model = vp()
    assert lib.lenet5_create(weights, -1, ctypes.byref(model)) == CODES["CNNCC_ERR_ARGUMENT"] and not model.value
    assert "threads must be >= 0" in err()
    assert lib.lenet5_create(weights, 0, ctypes.byref(model)) == 0 and model.value
    assert err() == "no error"
    x = np.ascontiguousarray(lenet["x"][:2])
    y = np.empty((2, 10), np.float32)
    ins, in_bytes = (vp * 1)(x.ctypes.data), (sz * 1)(x.nbytes)
    outs, out_bytes = (vp * 1)(y.ctypes.data), (sz * 1)(y.nbytes)
    assert lib.lenet5_run(model, 2, ins, in_bytes, outs, out_bytes) == 0
    assert y.tobytes() == lenet["cm"](x).tobytes()
    calls = {
        "null model": (lambda: lib.lenet5_run(None, 2, ins, in_bytes, outs, out_bytes), "CNNCC_ERR_NULL"),
        "null inputs": (lambda: lib.lenet5_run(model, 2, None, in_bytes, outs, out_bytes), "CNNCC_ERR_NULL"),
        "null input": (lambda: lib.lenet5_run(model, 2, (vp * 1)(None), in_bytes, outs, out_bytes),
                       "CNNCC_ERR_NULL"),
        "null sizes": (lambda: lib.lenet5_run(model, 2, ins, in_bytes, outs, None), "CNNCC_ERR_NULL"),
        "input bytes": (lambda: lib.lenet5_run(model, 2, ins, (sz * 1)(x.nbytes - 4), outs, out_bytes),
                        "CNNCC_ERR_SIZE"),
        "output bytes": (lambda: lib.lenet5_run(model, 1, ins, (sz * 1)(x.nbytes // 2), outs, out_bytes),
                         "CNNCC_ERR_SIZE"),
        "batch": (lambda: lib.lenet5_run(model, 9, ins, in_bytes, outs, out_bytes), "CNNCC_ERR_ARGUMENT"),
        "arena null": (lambda: lib.lenet5_run_with_arena(model, None, 1 << 20, 2, ins, in_bytes, outs, out_bytes),
                       "CNNCC_ERR_NULL"),
        "save null": (lambda: lib.lenet5_save_weights(model, None), "CNNCC_ERR_NULL"),
        "save io": (lambda: lib.lenet5_save_weights(model, b"/nonexistent/dir/w.weights"), "CNNCC_ERR_IO"),
    }
    arena = aligned_bytes(lenet["cm"].program.arena_bytes + 64)
    calls["arena misaligned"] = (lambda: lib.lenet5_run_with_arena(model, arena.ctypes.data + 4, arena.nbytes - 4, 2,
                                                                  ins, in_bytes, outs, out_bytes), "CNNCC_ERR_ARGUMENT")
    calls["arena small"] = (lambda: lib.lenet5_run_with_arena(model, arena.ctypes.data, 1024, 2, ins, in_bytes, outs,
                                                             out_bytes), "CNNCC_ERR_ARGUMENT")
    for what, (call, status) in calls.items():
        assert call() == CODES[status], (what, err())
        assert err().startswith("lenet5: "), what
    # A caller-owned arena gives the same numbers.
    y2 = np.empty_like(y)
    assert lib.lenet5_run_with_arena(model, arena.ctypes.data, arena.nbytes, 2, ins, in_bytes,
                                     (vp * 1)(y2.ctypes.data), out_bytes) == 0
    assert y2.tobytes() == y.tobytes()
    nbytes = sz()
    assert lib.lenet5_weights(model, ctypes.byref(nbytes)) and nbytes.value == len(lenet["cm"].program.weights)
    assert lib.lenet5_weights(None, ctypes.byref(nbytes)) is None and nbytes.value == 0
    lib.lenet5_destroy(model)
    lib.lenet5_destroy(None)


# -- CPU features ------------------------------------------------------------------------------------------------

def test_cpuid_table_agrees_with_llvm_host_features(lenet: dict) -> None:
    """The bundle's CPUID reading of every feature it knows equals what LLVM reports for this host."""
    lib = ctypes.CDLL(str(lenet["files"].library))
    lib.lenet5_host_has_feature.argtypes = [ctypes.c_char_p]
    flags = {f[1:]: f[0] == "+" for f in Target.host().features.split(",") if f}
    compared = 0
    for name in FEATURES:
        if name in flags:
            assert lib.lenet5_host_has_feature(name.encode()) == int(flags[name]), name
            compared += 1
    assert compared >= 60
    assert lib.lenet5_host_has_feature(b"no-such-feature") == -1 and lib.lenet5_host_has_feature(None) == -1


def test_portable_bundle_runs_and_missing_features_are_refused(tmp_path: Path) -> None:
    """--cpu x86-64-v3 runs here, equal to the in-process x86-64-v3 code; a bundle (or a manifest) that demands a
    feature this CPU lacks is refused with the feature's name, before any compiled instruction runs."""
    _, cm = _lenet("x86-64-v3")
    files = write_bundle(cm, tmp_path / "v3")
    m = json.loads(files.manifest.read_text())
    assert m["target"]["cpu"] == "x86-64-v3" and "avx2" in m["target"]["features"]
    assert "avx512f" not in m["target"]["features"] and m["target"]["vector_width"] == 8
    x = np.random.default_rng(3).standard_normal((3, 1, 32, 32)).astype(np.float32)
    assert cnncc.load(files.directory)(x).tobytes() == cm(x).tobytes()
    exe = build_c_example(EXAMPLE, files.directory, tmp_path / "classify")
    r = _classify(exe, files.weights, _npy(tmp_path / "x.npy", x), "-o", str(tmp_path / "y.bin"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "y.bin").read_bytes() == cm(x).tobytes()

    host = {f[1:] for f in Target.host().features.split(",") if f.startswith("+")}
    lacking = sorted(f for f in FEATURES if f not in host)
    assert lacking, "this host has every feature cnncc knows: nothing to fake"
    fake = lacking[0]
    # The manifest demands it: the loader refuses.
    m["target"]["features"] = [*m["target"]["features"], fake]
    files.manifest.write_text(json.dumps(m))
    with pytest.raises(CnnccError, match=f"needs CPU features this machine lacks: {fake}"):
        cnncc.load(files.directory)
    # The library itself demands it: create() refuses (the C example exits with the message).
    faked = write_bundle(cm, tmp_path / "faked", require_features=[*m["target"]["features"]])
    exe = build_c_example(EXAMPLE, faked.directory, tmp_path / "classify_faked")
    r = _classify(exe, faked.weights, str(tmp_path / "x.npy"))
    assert r.returncode == 2 and f"status {CODES['CNNCC_ERR_CPU']}" in r.stderr
    assert f"compiled for CPU 'x86-64-v3', but this CPU lacks: {fake}" in r.stderr
    with pytest.raises(CnnccError, match="no CPUID bit is known"):
        write_bundle(cm, tmp_path / "unknown", require_features=["warp-drive"])


# -- training bundles --------------------------------------------------------------------------------------------

def test_training_bundle_steps_equal_the_trainer(tmp_path: Path) -> None:
    """The exported training step, run through the loader, updates the weights exactly as Trainer.step does."""
    from cnncc.optim import SGD

    batch = 8
    trainer = cnncc.compile_training(get_model("lenet5", seed=1), optimizer=SGD(0.05, momentum=0.9), batch=batch,
                                     threads=2)
    files = write_bundle(trainer.compiled, tmp_path / "train", kind="training")
    bundle = cnncc.load(files.directory)
    assert bundle.manifest["kind"] == "training" and "conv1.weight" in bundle.manifest["state"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((batch, 1, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        feeds = trainer._feeds(x, y)
        loss = bundle.run(feeds)["loss"]
        assert loss.tobytes() == np.float32(trainer.step(x, y)).reshape(loss.shape).tobytes()
    for name in ("conv1.weight", "fc3.bias", "velocity@conv2.weight"):
        assert bundle.state_array(name).tobytes() == trainer.compiled.state_array(name).tobytes()
    bundle.save_weights(tmp_path / "trained.weights")
    assert read_weights(tmp_path / "trained.weights", trainer.compiled.graph.hash()) == bundle.weights().tobytes()
    # Class labels are checked by the loader and once more by the C library.
    feeds["labels"] = np.full(batch, 10, np.int64)
    with pytest.raises(InputError, match=r"class labels must lie in \[0, 10\)"):
        bundle.run(feeds)
    lib = bundle._lib
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    arrays = [feeds[s.name] for s in bundle.input_specs]
    out = np.empty((), np.float32).reshape(bundle.output_specs[0].shape)
    run = getattr(lib, f"{bundle.name}_run")
    run.argtypes = [vp, ctypes.c_int64, vp, vp, vp, vp]
    status = run(bundle._model, batch, (vp * len(arrays))(*[a.ctypes.data for a in arrays]),
                 (sz * len(arrays))(*[a.nbytes for a in arrays]), (vp * 1)(out.ctypes.data), (sz * 1)(out.nbytes))
    assert status == CODES["CNNCC_ERR_VALUE"]
    with pytest.raises(InputError, match="no training state"):
        bundle.state_array("nope")
    bundle.close()
    with pytest.raises(CnnccError, match="closed"):
        bundle.run(feeds)


# -- the command line --------------------------------------------------------------------------------------------

def test_cli_compile_writes_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnncc.cli import main

    out = tmp_path / "bundle"
    assert main(["compile", "lenet5", "-o", str(out), "--max-batch", "2", "--threads", "1", "--static",
                 "--name", "digits"]) == 0
    text = capsys.readouterr().out
    assert "libdigits.so" in text and "libdigits.a" in text and "cc app.c -I" in text
    for f in ("libdigits.so", "libdigits.a", "digits.h", "digits.weights", "manifest.json", "cnncc_bundle.h"):
        assert (out / f).is_file(), f
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "digits" and m["max_batch"] == 2 and m["threads"] == 1
    assert set(m["algorithms"]) == {"conv1", "conv2"} and "direct" in m["algorithms"]["conv1"]
    model = get_model("lenet5", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert cnncc.load(out)(x).tobytes() == cnncc.compile(model, batch=2, threads=1)(x).tobytes()
    assert main(["compile", "lenet5", "-o", str(out), "--max-batch", "0"]) == 2
    assert "--max-batch must be a positive integer" in capsys.readouterr().err


def test_cli_compile_training_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnncc.cli import main

    out = tmp_path / "step"
    assert main(["compile", "lenet5", "-o", str(out), "--training", "--max-batch", "4", "--optimizer", "adam"]) == 0
    bundle = cnncc.load(out)
    m = bundle.manifest
    assert m["kind"] == "training" and m["training"]["optimizer"] == "adam"
    assert [s["name"] for s in m["inputs"]] == ["input", "labels", "lr", "step"]
    assert m["inputs"][1]["classes"] == 10 and "m@conv1.weight" in m["state"]
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((4, 1, 32, 32)).astype(np.float32),
             "labels": rng.integers(0, 10, 4).astype(np.int64), "lr": np.array(1e-3, np.float32)}
    before = bundle.state_array("conv1.weight")
    losses = [float(bundle.run({**feeds, "step": np.array(t, np.float32)})["loss"].reshape(-1)[0]) for t in (1, 2)]
    assert all(np.isfinite(losses)) and losses[1] < losses[0]  # the same batch twice: Adam lowers its loss
    assert not np.array_equal(bundle.state_array("conv1.weight"), before)
    capsys.readouterr()


def test_not_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CnnccError, match="not a cnncc bundle"):
        cnncc.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CnnccError, match="not a version-1 cnncc bundle manifest"):
        cnncc.load(tmp_path)


# -- valgrind ----------------------------------------------------------------------------------------------------

LOADER_SCRIPT = """
import sys
import numpy as np
import cnncc
from cnncc.errors import CnnccError, InputError

bundle_dir, x_path, bad_weights = sys.argv[1:4]
b = cnncc.load(bundle_dir, threads=1)
x = np.load(x_path)
y = b(x)
np.asarray(y).tofile(sys.argv[4])
for bad in (x[:, :, :-1], x.astype(np.float64)):
    try:
        b(np.ascontiguousarray(bad))
    except InputError:
        pass
    else:
        raise SystemExit("bad input accepted")
b.close()
try:  # a truncated weights file: create() fails cleanly
    cnncc.load(bad_weights)
except CnnccError as e:
    assert "truncated" in str(e), e
else:
    raise SystemExit("truncated weights accepted")
print("loader ok")
"""


def _memcheck_python(args: list[str]) -> list[str]:
    return [shutil.which("valgrind") or "valgrind", "-q", "--error-exitcode=99", "--leak-check=no",
            f"--suppressions={SUPPRESSIONS}", sys.executable, *args]


@pytest.mark.skipif(not HAS_VALGRIND, reason="valgrind is not installed (Debian package valgrind)")
@pytest.mark.parametrize("model_name", ["lenet5", "resnet18"])
def test_valgrind_finds_no_errors(model_name: str, tmp_path: Path) -> None:
    """memcheck over the C example and the Python loader, a full inference and the error paths (truncated weights,
    wrong input size), for an x86-64-v3 bundle (valgrind 3.19 does not decode AVX-512). The C example and the
    loader run side by side (one valgrind process per core)."""
    model = get_model(model_name, seed=0)
    cm = cnncc.compile(model, batch=2, threads=1, cpu="x86-64-v3")
    files = write_bundle(cm, tmp_path / "bundle")
    exe = build_c_example(EXAMPLE, files.directory, tmp_path / "classify")
    shape = model.inputs[0].spec.shape
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    x_path = _npy(tmp_path / "x.npy", x)
    wrong = _npy(tmp_path / "wrong.npy", x[..., :-1])
    truncated = tmp_path / "truncated"
    shutil.copytree(files.directory, truncated)
    data = files.weights.read_bytes()
    (truncated / files.weights.name).write_bytes(data[:len(data) - 1000])
    (tmp_path / "loader.py").write_text(LOADER_SCRIPT)
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    loader = subprocess.Popen(_memcheck_python([str(tmp_path / "loader.py"), str(files.directory), x_path,
                                                str(truncated), str(tmp_path / "py.bin")]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    w = files.weights
    full = _classify(exe, w, x_path, "-t", "1", "-o", str(tmp_path / "c.bin"), valgrind=True)
    bad_size = _classify(exe, w, wrong, valgrind=True)
    bad_weights = _classify(exe, truncated / w.name, x_path, valgrind=True)
    out, err = loader.communicate(timeout=900)
    assert full.returncode == 0, full.stderr
    assert bad_size.returncode == 2 and "status 3" in bad_size.stderr and "takes" in bad_size.stderr, bad_size.stderr
    assert bad_weights.returncode == 2 and "truncated" in bad_weights.stderr, bad_weights.stderr
    for r in (full, bad_size, bad_weights):
        assert "==" not in r.stderr, r.stderr  # no valgrind report at all
    assert loader.returncode == 0 and "loader ok" in out, err[-4000:]
    assert "==" not in err, err[-4000:]
    want = cm(x).tobytes()
    assert (tmp_path / "c.bin").read_bytes() == want and (tmp_path / "py.bin").read_bytes() == want


def test_readme_c_snippet_compiles_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's C lines, inside a main() that declares x, y and batch, build with the README's cc command
    against a bundle made by the README's cnncc compile command, and run."""
    import re
    import shlex

    from cnncc.cli import main

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployment"):readme.index("## Design")]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    compile_cmd, cc_cmd = (shlex.split(line.split("#")[0]) for line in commands)
    snippet = re.search(r"```c\n(.*?)```", section, re.S).group(1)
    include, body = snippet.split("\n", 1)
    monkeypatch.chdir(tmp_path)
    assert compile_cmd[0] == "cnncc" and main(compile_cmd[1:]) == 0
    (tmp_path / "app.c").write_text(
        f"#include <stdio.h>\n{include}\nint main(void) {{\n    static float x[2 * 1 * 32 * 32], y[2 * 10];\n"
        f"    int64_t batch = 2;\n    x[5] = 1.0f;\n{body}    printf(\"%d %g\\n\", status, y[0]);\n"
        "    return status;\n}\n")
    subprocess.run([*cc_cmd, "-Wall", "-Werror"], check=True, capture_output=True, text=True)
    r = subprocess.run(["./app"], capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    bundle = cnncc.load(tmp_path / "build" / "lenet5")
    x = np.zeros((2, 1, 32, 32), np.float32)
    x.reshape(-1)[5] = 1.0
    assert r.stdout.split() == ["0", f"{bundle(x)[0, 0]:g}"]
