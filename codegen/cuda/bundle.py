"""CUDA deployment bundles: a model compiled for CUDA as a fat binary, a weights file, a launch plan and a C runtime.

    <name>.fatbin       the device code (cubin for the compiled architecture, plus PTX)
    <name>.weights      the weights region with its header (cnncc.bundle_format)
    <name>.h            the C API: <name>_create / _run / _destroy / _last_error / _graph_hash, status codes, shapes
    <name>_plan.c       the launch plan as static tables; it includes cuda_runtime.c (the generic C runtime)
    cuda_runtime.c      a copy of the generic runtime, so the bundle can be rebuilt by hand
    lib<name>.so        plan + runtime, linked against the driver (-lcuda), when <cuda.h> and libcuda are found
    manifest.json       target {"kind": "cuda", "arch"}, tensor specs with their arena offsets, the launch plan

``cnncc.load(DIR)`` runs such a bundle through the Python driver wrapper (:class:`cnncc.runtime.cuda.CudaBundle`);
C programs link ``lib<name>.so``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnncc.bundle_format import MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, write_weights
from cnncc.codegen.bundle import c_name, header_prologue
from cnncc.errors import CnnccError
from cnncc.executable import Executable, TensorSpec
from cnncc.launch_plan import REGIONS, CudaCode, IOSlot

API_FUNCTIONS = ("create", "run", "destroy", "last_error", "graph_hash")
RUNTIME_SOURCE = "cuda_runtime.c"
STUB_DIRS = ("lib64/stubs", "targets/x86_64-linux/lib/stubs", "lib/stubs", "lib64", "lib")
STATUS_DOC = {
    "CNNCC_OK": "success",
    "CNNCC_ERR_NULL": "a required pointer argument is NULL",
    "CNNCC_ERR_ARGUMENT": "a bad argument: batch outside 1..MAX_BATCH",
    "CNNCC_ERR_SIZE": "an input or output buffer's byte size is not what the batch needs",
    "CNNCC_ERR_VALUE": "an input value is invalid (a class label out of range)",
    "CNNCC_ERR_CPU": "no usable CUDA device: no driver, no GPU, or a GPU older than the compiled architecture",
    "CNNCC_ERR_IO": "the weights file or fat binary cannot be opened or read",
    "CNNCC_ERR_FORMAT": "not a cnncc weights file, another format version, or truncated",
    "CNNCC_ERR_CHECKSUM": "the weights file's header or payload fails its CRC-32 (altered)",
    "CNNCC_ERR_MISMATCH": "the weights file belongs to another graph or has another size",
    "CNNCC_ERR_NOMEM": "out of host or device memory",
    "CNNCC_ERR_INTERNAL": "a CUDA driver call failed (the message names it)",
}


@dataclass
class CudaBundleFiles:
    """What :func:`write_cuda_bundle` wrote. ``library`` is None when it could not be built here (no <cuda.h> or
    no libcuda to link against); ``build_command`` then says how to build it where they exist."""

    directory: Path
    name: str
    library: Path | None
    header: Path
    manifest: Path
    weights: Path
    fatbin: Path
    plan: Path
    runtime: Path
    build_command: list[str]
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CudaToolkit:
    """Where <cuda.h> is and where a libcuda to link against is (None: the system linker's default path)."""

    include: Path
    lib_dir: Path | None


def find_toolkit(cuda_home: str | os.PathLike | None = None,
                 lib_dir: str | os.PathLike | None = None) -> CudaToolkit | None:
    """<cuda.h> under ``cuda_home``, $CUDA_HOME, $CUDA_PATH or /usr/local/cuda, and a directory holding libcuda.so
    (``lib_dir``, the toolkit's stubs, or the system's); None when either is missing."""
    homes = [cuda_home, os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    home = next((Path(h) for h in homes if h and (Path(h) / "include" / "cuda.h").is_file()), None)
    if home is None:
        return None
    if lib_dir is not None:
        return CudaToolkit(home / "include", Path(lib_dir)) if (Path(lib_dir) / "libcuda.so").exists() else None
    found = next((home / d for d in STUB_DIRS if (home / d / "libcuda.so").exists()), None)
    if found is not None:
        return CudaToolkit(home / "include", found)
    system = [Path(p) / "libcuda.so" for p in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")]
    return CudaToolkit(home / "include", None) if any(p.exists() for p in system) else None


def write_cuda_bundle(executable: Executable, directory: str | os.PathLike, name: str | None = None,
                      algorithms: dict[str, str] | None = None, *, use_graphs: bool = True,
                      cuda_home: str | os.PathLike | None = None,
                      cuda_lib_dir: str | os.PathLike | None = None) -> CudaBundleFiles:
    """Write the CUDA executable as a bundle into ``directory`` (created if needed); build ``lib<name>.so`` when
    <cuda.h> and libcuda are found (``cuda_home``, ``cuda_lib_dir`` override the search). ``algorithms``: each
    conv layer's algorithm and why (default: the program's algorithms). ``use_graphs``: the C runtime replays the
    plan as a CUDA graph."""
    t0 = time.perf_counter()
    code = executable.native
    if not isinstance(code, CudaCode):
        raise CnnccError(f"write_cuda_bundle needs an executable built for CUDA, got {type(code).__name__}")
    code.validate()
    name = c_name(name or executable.graph.name)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    graph_hash = executable.graph.hash()
    paths = {k: out / f for k, f in (("fatbin", f"{name}.fatbin"), ("weights", f"{name}.weights"),
                                      ("header", f"{name}.h"), ("plan", f"{name}_plan.c"),
                                      ("runtime", RUNTIME_SOURCE), ("library", f"lib{name}.so"))}
    paths["fatbin"].write_bytes(code.fatbin)
    write_weights(paths["weights"], code.weights, graph_hash)
    paths["header"].write_text(public_header(name, executable, code, graph_hash))
    paths["plan"].write_text(plan_source(name, executable, code, graph_hash, use_graphs))
    paths["runtime"].write_text(resources.files("cnncc.codegen.cuda").joinpath(RUNTIME_SOURCE).read_text())
    toolkit = find_toolkit(cuda_home, cuda_lib_dir)
    command = build_command(name, out, toolkit)
    warnings: list[str] = []
    library = _build(command, name, warnings) if toolkit is not None else None
    if toolkit is None:
        warnings.append(f"lib{name}.so was not built: no <cuda.h> and libcuda.so found (set CUDA_HOME); build it "
                        f"with: {' '.join(command)}")
    manifest = out / MANIFEST
    manifest.write_text(json.dumps(manifest_dict(name, executable, code, graph_hash, paths, library is not None,
                                                 use_graphs, algorithms), indent=2) + "\n")
    return CudaBundleFiles(out, name, library, paths["header"], manifest, paths["weights"], paths["fatbin"],
                           paths["plan"], paths["runtime"], command, time.perf_counter() - t0, warnings)


def build_command(name: str, out: Path, toolkit: CudaToolkit | None) -> list[str]:
    """The C compiler command that builds lib<name>.so from <name>_plan.c."""
    cc = os.environ.get("CC", "cc")
    include = str(toolkit.include) if toolkit else "$CUDA_HOME/include"
    lib_dir = ([f"-L{toolkit.lib_dir}"] if toolkit.lib_dir else []) if toolkit else ["-L$CUDA_HOME/lib64/stubs"]
    return [cc, "-std=gnu11", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", f"-I{out}", f"-I{include}",
            str(out / f"{name}_plan.c"), *lib_dir, "-lcuda", f"-Wl,-soname,lib{name}.so", "-o",
            str(out / f"lib{name}.so")]


def _build(command: list[str], name: str, warnings: list[str]) -> Path:
    if shutil.which(command[0]) is None:
        raise CnnccError(f"building the CUDA bundle needs a C compiler: '{command[0]}' is not on PATH (install gcc, "
                         "or set $CC)")
    with tempfile.TemporaryDirectory(prefix="cnncc-cuda-bundle-") as tmp:
        exports = Path(tmp) / "exports.map"
        exports.write_text("{\n  global:\n" + "".join(f"    {name}_{f};\n" for f in API_FUNCTIONS)
                           + "  local: *;\n};\n")
        cmd = [*command[:-2], f"-Wl,--version-script={exports}", *command[-2:]]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as e:
            raise CnnccError(f"cannot run '{cmd[0]}' to build the CUDA bundle: {e}") from e
    if r.returncode != 0:
        raise CnnccError(f"building the CUDA bundle failed: `{' '.join(cmd)}` exited {r.returncode}:\n"
                         f"{r.stderr.strip()}")
    if r.stderr.strip():
        warnings.append(r.stderr.strip())
    return Path(command[-1])


# -- generated text -----------------------------------------------------------------------------------------------

def _elems(spec: TensorSpec) -> int:
    return math.prod(spec.shape[1:]) if spec.batched else math.prod(spec.shape)


def _slots(code: CudaCode) -> dict[str, IOSlot]:
    return {s.name: s for s in (*code.inputs, *code.outputs)}


def _c_string(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable ASCII names is a valid C string literal


def _rows(rows: list[list[int]], width: int) -> str:
    rows = rows or [[0] * width]  # C has no empty arrays: one unused row
    return ",\n".join("    {" + ", ".join(map(str, r)) + "}" for r in rows)


def arch_number(arch: str) -> int:
    """``"sm_90"`` -> 90."""
    m = re.search(r"(\d+)", arch)
    if not m:
        raise CnnccError(f"'{arch}' is not a CUDA architecture (expected a name like 'sm_90')")
    return int(m.group(1))


def _io_table(specs: list[TensorSpec], slots: dict[str, IOSlot], labels: dict[str, int]) -> list[list[int]]:
    return [[s.dtype.itemsize, int(s.batched), _elems(s), labels.get(s.name, 0), slots[s.name].offset] for s in specs]


def plan_source(name: str, executable: Executable, code: CudaCode, graph_hash: str, use_graphs: bool) -> str:
    """``<name>_plan.c``: the configuration macros and launch tables, then the generic runtime it includes."""
    ins, outs, slots = executable.input_specs(), executable.output_specs(), _slots(code)
    labels = dict(executable.program.label_ranges)
    kernels = code.kernels
    launches: list[list[int]] = []
    args: list[list[int]] = []
    for launch in code.launches:
        launches.append([kernels.index(launch.kernel), *launch.grid, *launch.block, launch.shared_bytes, len(args),
                         len(launch.args)])
        args += [[REGIONS.index(a.region), a.offset] for a in launch.args]
    names = ", ".join(_c_string(k) for k in kernels) or '""'
    return "\n".join([
        f"/* {name}_plan.c: the launch plan of the cnncc CUDA bundle '{name}' (graph {graph_hash[:16]}...),",
        f" * generated by cnncc. Build: cc -shared -fPIC -O2 -I. -I$CUDA_HOME/include {name}_plan.c -lcuda "
        f"-o lib{name}.so */",
        "#include <stdint.h>",
        "",
        f"#define CNNCC_NAME {name}",
        f'#define CNNCC_NAME_STR "{name}"',
        f'#define CNNCC_PUBLIC_HEADER "{name}.h"',
        f'#define CNNCC_GRAPH_HASH "{graph_hash}"',
        f'#define CNNCC_ARCH "{code.arch}"',
        f"#define CNNCC_ARCH_NUMBER {arch_number(code.arch)}",
        f"#define CNNCC_MAX_BATCH {executable.max_batch}",
        f"#define CNNCC_ARENA_BYTES {code.arena_bytes}ull",
        f"#define CNNCC_WEIGHTS_BYTES {len(code.weights)}ull",
        f"#define CNNCC_NUM_INPUTS {len(ins)}",
        f"#define CNNCC_NUM_OUTPUTS {len(outs)}",
        f"#define CNNCC_NUM_LAUNCHES {len(code.launches)}",
        "#ifndef CNNCC_USE_GRAPHS",
        f"#define CNNCC_USE_GRAPHS {int(use_graphs)}",
        "#endif",
        "",
        f"static const char *const KERNEL_NAMES[] = {{{names}}};",
        "/* kernel, grid x y z, block x y z, static shared bytes, first arg, arg count */",
        f"static const uint32_t LAUNCHES[][10] = {{\n{_rows(launches, 10)}\n}};",
        "/* region (0: weights, 1: arena), byte offset */",
        f"static const uint64_t ARGS[][2] = {{\n{_rows(args, 2)}\n}};",
        f"static const char *const INPUT_NAMES[] = {{{', '.join(_c_string(s.name) for s in ins)}}};",
        f"static const char *const OUTPUT_NAMES[] = {{{', '.join(_c_string(s.name) for s in outs)}}};",
        "/* element bytes, batched, elements (per image if batched), classes, arena offset */",
        f"static const int64_t INPUTS[][5] = {{\n{_rows(_io_table(ins, slots, labels), 5)}\n}};",
        f"static const int64_t OUTPUTS[][5] = {{\n{_rows(_io_table(outs, slots, {}), 5)}\n}};",
        "",
        f'#include "{RUNTIME_SOURCE}"',
        "",
    ])


def public_header(name: str, executable: Executable, code: CudaCode, graph_hash: str) -> str:
    """``<name>.h``: the bundle's documented C API."""
    up = name.upper()
    ins, outs = executable.input_specs(), executable.output_specs()
    lines = [
        f"/* {name}.h: C API of the cnncc CUDA bundle '{name}' (graph {graph_hash[:16]}..., {code.arch}), generated",
        " * by cnncc.",
        " *",
        f" * Build:  cc app.c -I DIR -L DIR -l{name} -Wl,-rpath,DIR      (lib{name}.so links libcuda)",
        " *",
        f" *     {name}_model *m;",
        f' *     if ({name}_create("DIR", &m) != CNNCC_OK) {{     (or "DIR/{name}.weights")',
        f' *         fprintf(stderr, "%s\\n", {name}_last_error()); return 1; }}',
        " *     const void *in[] = {x};              size_t in_bytes[] = {batch * " + up + "_INPUT0_SAMPLE_BYTES};",
        " *     void *out[] = {y};                   size_t out_bytes[] = {batch * " + up + "_OUTPUT0_SAMPLE_BYTES};",
        f" *     int status = {name}_run(m, batch, in, in_bytes, out, out_bytes);",
        f" *     {name}_destroy(m);",
        " *",
        " * Tensors are host memory, C-contiguous, in the shapes below; the first axis of a batched tensor is the",
        f" * call's batch, 1..{up}_MAX_BATCH. create() opens GPU 0 (CUDA_VISIBLE_DEVICES selects it), loads",
        f" * {name}.fatbin and the weights; run() copies the inputs in, replays the kernels and copies the outputs",
        " * back. One model runs one call at a time. Every function returns a status code instead of crashing on bad",
        f" * arguments; {name}_last_error() says what went wrong.",
        " */",
        *header_prologue(f"CNNCC_CUDA_BUNDLE_{up}_H", STATUS_DOC),
              f'#define {up}_GRAPH_HASH "{graph_hash}"',
              f'#define {up}_CUDA_ARCH "{code.arch}"',
              f"#define {up}_MAX_BATCH {executable.max_batch}".ljust(48) + "/* largest batch a call may pass */",
              f"#define {up}_ARENA_BYTES {code.arena_bytes}ull".ljust(48) + "/* device memory: intermediates */",
              f"#define {up}_WEIGHTS_BYTES {len(code.weights)}ull".ljust(48) + "/* device memory: the weights */",
              f"#define {up}_NUM_LAUNCHES {len(code.launches)}",
              f"#define {up}_NUM_INPUTS {len(ins)}",
              f"#define {up}_NUM_OUTPUTS {len(outs)}", ""]
    for kind, specs in (("INPUT", ins), ("OUTPUT", outs)):
        for i, s in enumerate(specs):
            p = f"{up}_{kind}{i}"
            lines += [f'#define {p}_NAME "{s.name}"'.ljust(48) + f"/* {s.dtype.name} */",
                      f"#define {p}_RANK {len(s.shape)}",
                      f"#define {p}_SHAPE {{{', '.join(map(str, s.shape)) or '1'}}}",
                      f"#define {p}_ELEM_BYTES {s.dtype.itemsize}",
                      f"#define {p}_SAMPLE_ELEMS {_elems(s)}".ljust(48)
                      + ("/* per image */" if s.batched else "/* in all */"),
                      f"#define {p}_SAMPLE_BYTES {_elems(s) * s.dtype.itemsize}", ""]
    lines += [
        f"typedef struct {name}_model {name}_model;",
        "",
        "/* Read and check the weights file and the fat binary (path: the bundle directory or the weights file), open",
        " * the GPU, load the kernels and copy the weights to the device. On success *model is set; else NULL. */",
        f"int {name}_create(const char *bundle_dir_or_weights_path, {name}_model **model);",
        "",
        f"/* Run one batch (1..{up}_MAX_BATCH). inputs[i] / outputs[i] point to host tensors in the order of the",
        " * constants above; input_bytes[i] / output_bytes[i] are their sizes, checked against the batch. */",
        f"int {name}_run({name}_model *model, int64_t batch, const void *const *inputs, const size_t *input_bytes,",
        "    void *const *outputs, const size_t *output_bytes);",
        "",
        f"void {name}_destroy({name}_model *model);".ljust(64) + "/* NULL is fine */",
        f"const char *{name}_last_error(void);".ljust(64) + "/* the calling thread's last error */",
        f"const char *{name}_graph_hash(void);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def manifest_dict(name: str, executable: Executable, code: CudaCode, graph_hash: str, paths: dict[str, Path],
                  built: bool, use_graphs: bool, algorithms: dict[str, str] | None) -> dict[str, Any]:
    from cnncc.version import __version__

    slots = _slots(code)
    labels = executable.program.label_ranges

    def spec(s: TensorSpec) -> dict[str, Any]:
        d = {"name": s.name, "dtype": s.dtype.name, "shape": list(s.shape), "batched": s.batched,
             "offset": slots[s.name].offset, "nbytes": slots[s.name].nbytes}
        return {**d, "classes": labels[s.name]} if labels.get(s.name) else d

    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": name,
        "kind": "inference",
        "graph": executable.graph.name,
        "graph_hash": graph_hash,
        "cnncc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": {"kind": "cuda", "arch": code.arch},
        "max_batch": executable.max_batch,
        "inputs": [spec(s) for s in executable.input_specs()],
        "outputs": [spec(s) for s in executable.output_specs()],
        "arena_bytes": code.arena_bytes,
        "weights": {"file": paths["weights"].name, "embedded": False, "bytes": len(code.weights),
                    "crc32": zlib.crc32(code.weights)},
        "fatbin": paths["fatbin"].name,
        "header": paths["header"].name,
        "plan": paths["plan"].name,
        "runtime": paths["runtime"].name,
        "library": paths["library"].name if built else None,
        "use_graphs": use_graphs,
        "kernels": code.kernels,
        "launches": [dataclasses.asdict(launch) for launch in code.launches],
        "ptxas": code.ptxas,
        "algorithms": dict(algorithms if algorithms is not None else executable.program.algorithms),
    }
