"""Deployment bundles: a compiled model as a shared library, a C header, a weights file and a manifest.

The object code is the very LLVM module the in-process runtime JIT-compiled (``Executable.native``), emitted for
the same target machine, so a bundle computes bit for bit what ``compiled(x)`` computes. Its exported entry point
``cnncc_forward`` is renamed ``<name>__forward`` (objcopy), so that several bundles link into one program. The C
runtime around it (``bundle_runtime.c``: create/run/destroy, the weights file, the CPU check) is compiled once per
bundle with a generated configuration header and linked with the system C compiler (``$CC``, default ``cc``).

    lib<name>.so        the model; only the ``<name>_*`` API is exported
    lib<name>.a         the same objects as a static archive (``static=True``; link with ``-fopenmp``)
    <name>.h            the documented C API: functions, status codes, shapes, arena and weights sizes
    cnncc_bundle.h      includes <name>.h and maps ``cnncc_bundle_*`` to it (code written for any bundle)
    <name>.weights      the weights blob with its header (unless ``embed_weights=True``)
    manifest.json       graph hash, cnncc version, target CPU and features, threads, tensor specs, file names
"""

from __future__ import annotations

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

from cnncc.bundle_format import MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, STATUS, write_weights
from cnncc.codegen.cpuid import FEATURES, required_features, xcr0_mask
from cnncc.errors import CnnccError
from cnncc.executable import Executable, TensorSpec

ALIGN = 64
API_FUNCTIONS = ("create", "run", "run_with_arena", "destroy", "last_error", "graph_hash", "check_cpu",
                 "host_has_feature", "weights", "save_weights")
STATUS_DOC = {
    "CNNCC_OK": "success",
    "CNNCC_ERR_NULL": "a required pointer argument is NULL",
    "CNNCC_ERR_ARGUMENT": "a bad argument: batch outside 1..MAX_BATCH, threads < 0, arena too small or misaligned",
    "CNNCC_ERR_SIZE": "an input or output buffer's byte size is not what the batch needs",
    "CNNCC_ERR_VALUE": "an input value is invalid (a class label out of range)",
    "CNNCC_ERR_CPU": "this CPU lacks a feature the bundle was compiled for",
    "CNNCC_ERR_IO": "the weights file cannot be opened, read or written",
    "CNNCC_ERR_FORMAT": "not a cnncc weights file, another format version, or truncated",
    "CNNCC_ERR_CHECKSUM": "the weights file's header or payload fails its CRC-32 (altered)",
    "CNNCC_ERR_MISMATCH": "the weights file belongs to another graph or has another size",
    "CNNCC_ERR_NOMEM": "out of memory",
    "CNNCC_ERR_INTERNAL": "the compiled code reported an error",
}


@dataclass
class BundleFiles:
    """What :func:`write_bundle` wrote, and the compiler's warnings (none expected)."""

    directory: Path
    name: str
    library: Path
    header: Path
    manifest: Path
    weights: Path | None
    static_library: Path | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


def c_name(name: str) -> str:
    """A C identifier from a model name: ``mobilenet_v2`` stays, ``LeNet-5`` becomes ``lenet_5``."""
    out = re.sub(r"[^0-9a-zA-Z_]", "_", name).lower().strip("_") or "model"
    return out if out[0].isalpha() else f"m_{out}"


def write_bundle(compiled: Executable, directory: str | os.PathLike, name: str | None = None, *,
                 embed_weights: bool = False, static: bool = False, kind: str = "inference",
                 require_features: list[str] | None = None, extra: dict[str, Any] | None = None,
                 algorithms: dict[str, str] | None = None) -> BundleFiles:
    """Write the executable ``compiled`` as a bundle into ``directory`` (created if needed).

    ``require_features``: the CPU features the bundle checks at creation (default: every feature of the compiled
    target that CPUID can confirm). ``extra``: more manifest entries (training settings). ``algorithms``: each conv
    layer's algorithm choice and why (the driver passes the selection pass's reasons)."""
    t0 = time.perf_counter()
    name = c_name(name or compiled.graph.name)
    checked, unchecked = required_features(compiled.target)
    required = checked if require_features is None else list(require_features)
    unknown = [f for f in required if f not in FEATURES]
    if unknown:
        raise CnnccError(f"bundle '{name}': no CPUID bit is known for feature(s) {unknown}; known: "
                         f"{', '.join(sorted(FEATURES))}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    program = compiled.program
    blob = bytes(program.weights)
    graph_hash = compiled.graph.hash()
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise CnnccError(f"writing a bundle needs a C compiler: '{cc}' is not on PATH (install gcc, or set $CC)")
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cnncc-bundle-") as tmp:
        build = Path(tmp)
        objects = [build / "model.o", build / "runtime.o"]
        objects[0].write_bytes(compiled.target.machine().emit_object(compiled.native.module))
        _run(["objcopy", f"--redefine-sym=cnncc_forward={name}__forward",
              f"--redefine-sym=cnncc_forward_profiled={name}__forward_profiled", str(objects[0])], warnings)
        header = out / f"{name}.h"
        header.write_text(public_header(name, compiled, graph_hash))
        (out / "cnncc_bundle.h").write_text(generic_header(name))
        (build / "config.h").write_text(config_header(name, compiled, graph_hash, required, embed_weights, kind))
        source = resources.files("cnncc.codegen").joinpath("bundle_runtime.c").read_text()
        (build / "bundle_runtime.c").write_text(source)
        _run([cc, "-std=gnu11", "-O2", "-fPIC", "-fopenmp", "-Wall", "-Wextra", f"-I{out}", "-include",
              str(build / "config.h"), "-c", str(build / "bundle_runtime.c"), "-o", str(objects[1])], warnings)
        if embed_weights:
            (build / "weights.bin").write_bytes(blob)
            (build / "weights.S").write_text(embedded_weights_asm(name, build / "weights.bin", len(blob)))
            objects.append(build / "weights.o")
            _run([cc, "-c", str(build / "weights.S"), "-o", str(objects[-1])], warnings)
        (build / "exports.map").write_text(
            "{\n  global:\n" + "".join(f"    {name}_{f};\n" for f in API_FUNCTIONS) + "  local: *;\n};\n")
        library = out / f"lib{name}.so"
        _run([cc, "-shared", "-fopenmp", f"-Wl,--version-script={build / 'exports.map'}", f"-Wl,-soname,lib{name}.so",
              "-Wl,-z,noexecstack", "-o", str(library), *map(str, objects), "-lm"], warnings)
        archive = None
        if static:
            archive = out / f"lib{name}.a"
            archive.unlink(missing_ok=True)
            _run(["ar", "rcs", str(archive), *map(str, objects)], warnings)
    weights = None
    if not embed_weights:
        weights = out / f"{name}.weights"
        write_weights(weights, blob, graph_hash)
    manifest = out / MANIFEST
    manifest.write_text(json.dumps(manifest_dict(name, compiled, graph_hash, required, unchecked, kind, library,
                                                 archive, header, weights, blob, extra or {}, algorithms or {}),
                                   indent=2) + "\n")
    return BundleFiles(out, name, library, header, manifest, weights, archive, time.perf_counter() - t0, warnings)


def _run(cmd: list[str], warnings: list[str]) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise CnnccError(f"cannot run '{cmd[0]}' to build the bundle: {e}") from e
    if r.returncode != 0:
        raise CnnccError(f"building the bundle failed: `{' '.join(cmd)}` exited {r.returncode}:\n{r.stderr.strip()}")
    if r.stderr.strip():
        warnings.append(r.stderr.strip())


# -- generated text -----------------------------------------------------------------------------------------------

def _elems(spec: TensorSpec) -> int:
    return math.prod(spec.shape[1:]) if spec.batched else math.prod(spec.shape)


def config_header(name: str, compiled: Executable, graph_hash: str, required: list[str], embedded: bool,
                  kind: str) -> str:
    """The private configuration ``bundle_runtime.c`` is compiled with."""
    ins, outs = compiled.input_specs(), compiled.output_specs()

    def specs(items: list[TensorSpec], classes: dict[str, int]) -> str:
        return ", ".join(f'{{"{s.name}", {s.dtype.itemsize}, {int(s.batched)}, {_elems(s)}, {classes.get(s.name, 0)}}}'
                         for s in items)

    table = " ".join(f'{{"{f}", {b.leaf:#x}u, {b.subleaf}u, {b.register}u, {b.bit}u}},'
                     for f, b in sorted(FEATURES.items()))
    return "\n".join([
        f"/* generated by cnncc for bundle '{name}' */",
        f"#define CNNCC_NAME {name}",
        f'#define CNNCC_NAME_STR "{name}"',
        f'#define CNNCC_PUBLIC_HEADER "{name}.h"',
        f'#define CNNCC_GRAPH_HASH "{graph_hash}"',
        f'#define CNNCC_TARGET_CPU "{compiled.target.cpu}"',
        f"#define CNNCC_MAX_BATCH {compiled.max_batch}",
        f"#define CNNCC_ARENA_BYTES {max(compiled.program.arena_bytes, ALIGN)}ull",
        f"#define CNNCC_WEIGHTS_BYTES {len(compiled.program.weights)}ull",
        f"#define CNNCC_DEFAULT_THREADS {compiled.threads}",
        f"#define CNNCC_EMBEDDED {int(embedded)}",
        f"#define CNNCC_TRAINING {int(kind == 'training')}",
        f"#define CNNCC_NUM_INPUTS {len(ins)}",
        f"#define CNNCC_NUM_OUTPUTS {len(outs)}",
        f"#define CNNCC_INPUT_SPECS {specs(ins, compiled.program.label_ranges)}",
        f"#define CNNCC_OUTPUT_SPECS {specs(outs, {})}",
        f"#define CNNCC_FEATURE_TABLE {table}",
        "#define CNNCC_REQUIRED_FEATURES " + " ".join(f'"{f}",' for f in required),
        f"#define CNNCC_XCR0_MASK {xcr0_mask(required):#x}ull",
        "",
    ])


def header_prologue(guard: str, docs: dict[str, str]) -> list[str]:
    """The lines every bundle header (CPU or CUDA) opens with after its comment: the include guard, C++ linkage
    and the status codes with the target's ``docs`` for each."""
    lines = [f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>", "#include <stdint.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", "", "#ifndef CNNCC_STATUS_CODES",
             "#define CNNCC_STATUS_CODES", "/* Status codes, the same in every cnncc bundle. */", "enum cnncc_status {"]
    lines += [f"    {sym} = {code},".ljust(32) + f"/* {docs[sym]} */" for code, sym in STATUS.items()]
    return [*lines, "};", "#endif", ""]


def public_header(name: str, compiled: Executable, graph_hash: str) -> str:
    """``<name>.h``: the bundle's documented C API."""
    up = name.upper()
    ins, outs = compiled.input_specs(), compiled.output_specs()
    lines = [
        f"/* {name}.h: C API of the cnncc bundle '{name}' (graph {graph_hash[:16]}...), generated by cnncc.",
        " *",
        f" * Build:  cc app.c -I DIR -L DIR -l{name} -Wl,-rpath,DIR",
        " *",
        f" *     {name}_model *m;",
        f' *     if ({name}_create("DIR/{name}.weights", 0, &m) != CNNCC_OK) {{',
        f' *         fprintf(stderr, "%s\\n", {name}_last_error()); return 1; }}',
        " *     const void *in[] = {x};              size_t in_bytes[] = {batch * " + up + "_INPUT0_SAMPLE_BYTES};",
        " *     void *out[] = {y};                   size_t out_bytes[] = {batch * " + up + "_OUTPUT0_SAMPLE_BYTES};",
        f" *     int status = {name}_run(m, batch, in, in_bytes, out, out_bytes);",
        f" *     {name}_destroy(m);",
        " *",
        " * Tensors are C-contiguous, row-major, in the shapes below; the first axis of a batched tensor is the call's",
        f" * batch, any value from 1 to {up}_MAX_BATCH (the memory plan is made for the maximum). Every function",
        f" * returns a status code instead of crashing on bad arguments; {name}_last_error() says what went wrong.",
        " * One model runs one call at a time (it owns one arena); give each thread its own arena with",
        f" * {name}_run_with_arena to run one model from several threads (inference bundles only: a training step",
        " * updates the weights).",
        " */",
        *header_prologue(f"CNNCC_BUNDLE_{up}_H", STATUS_DOC),
              f'#define {up}_GRAPH_HASH "{graph_hash}"',
              f'#define {up}_TARGET_CPU "{compiled.target.cpu}"',
              f"#define {up}_MAX_BATCH {compiled.max_batch}".ljust(48) + "/* largest batch a call may pass */",
              f"#define {up}_DEFAULT_THREADS {compiled.threads}".ljust(48) + "/* threads when create() gets 0 */",
              f"#define {up}_ARENA_BYTES {max(compiled.program.arena_bytes, ALIGN)}ull".ljust(48)
              + "/* scratch memory of one call (the planned arena) */",
              f"#define {up}_ARENA_ALIGN {ALIGN}".ljust(48) + "/* alignment run_with_arena needs */",
              f"#define {up}_WEIGHTS_BYTES {len(compiled.program.weights)}ull".ljust(48)
              + "/* the packed weights blob */",
              f"#define {up}_WORKSPACE_BYTES ({up}_ARENA_BYTES + {up}_WEIGHTS_BYTES)"
              + "  /* heap memory create() allocates */",
              f"#define {up}_NUM_INPUTS {len(ins)}",
              f"#define {up}_NUM_OUTPUTS {len(outs)}", ""]
    for kind, specs in (("INPUT", ins), ("OUTPUT", outs)):
        for i, s in enumerate(specs):
            p = f"{up}_{kind}{i}"
            shape = ", ".join(map(str, s.shape)) or "1"
            ctype = {"float32": "float", "int64": "int64_t", "float64": "double"}[s.dtype.name]
            where = "first axis: the batch (its maximum here)" if s.batched else "not batched"
            classes = compiled.program.label_ranges.get(s.name, 0) if kind == "INPUT" else 0
            lines += [f'#define {p}_NAME "{s.name}"'.ljust(48) + f"/* {ctype}, {where}"
                      + (f"; class labels in [0, {classes})" if classes else "") + " */",
                      f"#define {p}_RANK {len(s.shape)}",
                      f"#define {p}_SHAPE {{{shape}}}",
                      f"#define {p}_ELEM_BYTES {s.dtype.itemsize}",
                      f"#define {p}_SAMPLE_ELEMS {_elems(s)}".ljust(48)
                      + ("/* per image */" if s.batched else "/* in all */"),
                      f"#define {p}_SAMPLE_BYTES {_elems(s) * s.dtype.itemsize}", ""]
    lines += [
        f"typedef struct {name}_model {name}_model;",
        "",
        "/* Check the CPU, read and verify the weights (NULL: the embedded weights, if the bundle has them), allocate",
        f" * the arena. threads: 0 for {up}_DEFAULT_THREADS. On success *model is set; on failure it is NULL. */",
        f"int {name}_create(const char *weights_path, int32_t threads, {name}_model **model);",
        "",
        f"/* Run one batch (1..{up}_MAX_BATCH). inputs[i] / outputs[i] point to the tensors in the order of the",
        " * constants above; input_bytes[i] / output_bytes[i] are their sizes, checked against the batch. */",
        f"int {name}_run({name}_model *model, int64_t batch, const void *const *inputs, const size_t *input_bytes,",
        "    void *const *outputs, const size_t *output_bytes);",
        "",
        f"/* {name}_run with a caller-owned arena of at least {up}_ARENA_BYTES bytes, {up}_ARENA_ALIGN-aligned. */",
        f"int {name}_run_with_arena(const {name}_model *model, void *arena, size_t arena_bytes, int64_t batch,",
        "    const void *const *inputs, const size_t *input_bytes, void *const *outputs, const size_t *output_bytes);",
        "",
        f"void {name}_destroy({name}_model *model);".ljust(64) + "/* NULL is fine */",
        f"const char *{name}_last_error(void);".ljust(64) + "/* the calling thread's last error */",
        f"const char *{name}_graph_hash(void);",
        f"int {name}_check_cpu(void);".ljust(64) + "/* CNNCC_OK, or CNNCC_ERR_CPU naming the missing features */",
        f"int {name}_host_has_feature(const char *llvm_feature);".ljust(64) + "/* 1, 0, or -1: unknown name */",
        f"const void *{name}_weights(const {name}_model *model, size_t *nbytes);".ljust(64)
        + "/* the weights blob, in place */",
        f"int {name}_save_weights(const {name}_model *model, const char *path);".ljust(64)
        + "/* e.g. after training steps */",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def generic_header(name: str) -> str:
    up = name.upper()
    funcs = "\n".join(f"#define cnncc_bundle_{f} {name}_{f}" for f in API_FUNCTIONS)
    consts = "\n".join(f"#define CNNCC_BUNDLE_{c} {up}_{c}" for c in
                       ("MAX_BATCH", "DEFAULT_THREADS", "ARENA_BYTES", "ARENA_ALIGN", "WEIGHTS_BYTES",
                        "WORKSPACE_BYTES", "NUM_INPUTS", "NUM_OUTPUTS", "GRAPH_HASH", "TARGET_CPU",
                        "INPUT0_SAMPLE_ELEMS", "INPUT0_SAMPLE_BYTES", "INPUT0_SHAPE", "INPUT0_RANK",
                        "OUTPUT0_SAMPLE_ELEMS", "OUTPUT0_SAMPLE_BYTES", "OUTPUT0_SHAPE", "OUTPUT0_RANK"))
    return (f"/* cnncc_bundle.h: the bundle '{name}' under generic names (cnncc_bundle_*), for code written against\n"
            " * any bundle, such as examples/c/classify.c. */\n"
            "#ifndef CNNCC_BUNDLE_GENERIC_H\n#define CNNCC_BUNDLE_GENERIC_H\n"
            f'#include "{name}.h"\n'
            f'#define CNNCC_BUNDLE_NAME "{name}"\n'
            f"typedef {name}_model cnncc_bundle_model;\n{funcs}\n{consts}\n#endif\n")


def embedded_weights_asm(name: str, path: Path, nbytes: int) -> str:
    sym = f"{name}__weights"
    return (f'\t.section .rodata.{sym},"a",@progbits\n\t.balign {ALIGN}\n\t.globl {sym}\n\t.hidden {sym}\n'
            f"\t.type {sym}, @object\n{sym}:\n\t.incbin \"{path}\"\n\t.size {sym}, {nbytes}\n"
            '\t.section .note.GNU-stack,"",@progbits\n')


def manifest_dict(name: str, compiled: Executable, graph_hash: str, required: list[str], unchecked: list[str],
                  kind: str, library: Path, archive: Path | None, header: Path, weights: Path | None, blob: bytes,
                  extra: dict[str, Any], algorithms: dict[str, str]) -> dict[str, Any]:
    from cnncc.version import __version__

    ins, outs = compiled.input_specs(), compiled.output_specs()

    def spec(s: TensorSpec, classes: int = 0) -> dict[str, Any]:
        d = {"name": s.name, "dtype": s.dtype.name, "shape": list(s.shape), "batched": s.batched}
        return {**d, "classes": classes} if classes else d

    state = {n: {"offset": buf.offset, "shape": list(shape)} for n, (buf, shape) in compiled.state_buffers().items()}
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": name,
        "kind": kind,
        "graph": compiled.graph.name,
        "graph_hash": graph_hash,
        "cnncc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": {"cpu": compiled.target.cpu, "vector_width": compiled.target.vector_width,
                   "features": required, "unchecked_features": unchecked,
                   "llvm_features": compiled.target.features},
        "threads": compiled.threads,
        "max_batch": compiled.max_batch,
        "inputs": [spec(s, compiled.program.label_ranges.get(s.name, 0)) for s in ins],
        "outputs": [spec(s) for s in outs],
        "arena_bytes": max(compiled.program.arena_bytes, ALIGN),
        "weights": {"file": weights.name if weights else None, "embedded": weights is None, "bytes": len(blob),
                    "crc32": zlib.crc32(blob)},
        "library": library.name,
        "static_library": archive.name if archive else None,
        "header": header.name,
        "kernels": len(compiled.program.calls),
        "algorithms": dict(algorithms),  # each conv's choice, and why
        **({"state": state} if state else {}),
        **extra,
    }
