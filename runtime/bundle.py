"""Deployment bundles at run time: the weights-file format and ``cnncc.load(DIR)``, which runs a bundle's shared
library through ctypes with the same input checks as the in-process compiled model.

A bundle directory (written by ``cnncc compile``, see :mod:`cnncc.codegen.bundle`) holds ``lib<name>.so``,
``<name>.h``, ``<name>.weights`` (unless the weights are embedded) and ``manifest.json``. Loading needs neither
LLVM nor a C compiler: only the manifest, the library and numpy.

The weights-file layout and the status codes live in :mod:`cnncc.bundle_format`; this module only reads bundles.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnncc.bundle_format import MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, STATUS
from cnncc.errors import CnnccError, InputError
from cnncc.runtime.compiled import TensorSpec, aligned_bytes, check_feeds


def _spec(d: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], np.dtype(d["dtype"]), tuple(d["shape"]), bool(d["batched"]))


class Bundle:
    """A bundle loaded through ctypes: call it like a compiled model, ``y = bundle(x)``; ``run(feeds)`` for several
    inputs. Inputs are checked exactly as :class:`cnncc.runtime.compiled.CompiledModel` checks them; the C library
    checks them once more."""

    def __init__(self, directory: str | os.PathLike, threads: int | None = None) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CnnccError(f"'{directory}' is not a cnncc bundle: cannot read {MANIFEST}: {e}") from e
        m = self.manifest
        if m.get("format") != MANIFEST_FORMAT or m.get("format_version") != MANIFEST_VERSION:
            raise CnnccError(f"'{path}' is not a version-{MANIFEST_VERSION} cnncc bundle manifest "
                             f"(format {m.get('format')!r}, version {m.get('format_version')!r})")
        self.name: str = m["name"]
        self.max_batch: int = m["max_batch"]
        self.input_specs = [_spec(d) for d in m["inputs"]]
        self.output_specs = [_spec(d) for d in m["outputs"]]
        self.label_ranges = {d["name"]: d["classes"] for d in m["inputs"] if d.get("classes")}
        self.threads = m["threads"] if threads is None else threads
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            raise InputError(f"threads must be a positive integer, got {self.threads!r}")
        self._lib = self._open_library()
        self._check_cpu()
        self._model = ctypes.c_void_p()
        weights = None if m["weights"]["embedded"] else str(self.directory / m["weights"]["file"])
        status = self._fn("create", ctypes.c_int, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p)(
            None if weights is None else os.fsencode(weights), self.threads, ctypes.byref(self._model))
        self._raise(status, "cannot create the model")
        self._run = self._fn("run", ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p)
        self._destroy = self._fn("destroy", None, ctypes.c_void_p)
        self._lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------------------------
    def _fn(self, name: str, restype: Any, *argtypes: Any) -> Any:
        fn = getattr(self._lib, f"{self.name}_{name}")
        fn.restype, fn.argtypes = restype, list(argtypes)
        return fn

    def _open_library(self) -> ctypes.CDLL:
        lib = self.directory / self.manifest["library"]
        try:
            handle = ctypes.CDLL(str(lib.resolve()))
        except OSError as e:
            raise CnnccError(f"bundle '{self.directory}': cannot load {lib.name}: {e}") from e
        graph_hash = getattr(handle, f"{self.name}_graph_hash")
        graph_hash.restype = ctypes.c_char_p
        if graph_hash().decode() != self.manifest["graph_hash"]:
            raise CnnccError(f"bundle '{self.directory}': {lib.name} is graph {graph_hash().decode()[:12]}..., its "
                             f"manifest says {self.manifest['graph_hash'][:12]}...: the files come from two builds")
        return handle

    def _check_cpu(self) -> None:
        """Refuse a CPU without every feature the manifest names, before any compiled instruction runs."""
        has = self._fn("host_has_feature", ctypes.c_int, ctypes.c_char_p)
        target = self.manifest["target"]
        missing = [f for f in target["features"] if has(f.encode()) != 1]
        if missing:
            raise CnnccError(f"bundle '{self.name}' was compiled for CPU '{target['cpu']}' and needs CPU features "
                             f"this machine lacks: {', '.join(missing)}. Compile it with `cnncc compile --cpu "
                             "x86-64-v3` for any AVX2 machine.")
        self._raise(self._fn("check_cpu", ctypes.c_int)(), "CPU check failed")

    def _raise(self, status: int, what: str) -> None:
        if status != 0:
            last = self._fn("last_error", ctypes.c_char_p)().decode(errors="replace")
            raise CnnccError(f"bundle '{self.name}': {what}: {STATUS.get(status, status)}: {last}")

    # -- running ------------------------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs]

    def run(self, feeds: Mapping[str, np.ndarray], check_finite: bool = False) -> dict[str, np.ndarray]:
        """Run on named inputs; returns the outputs by name."""
        if not self._model:
            raise CnnccError(f"bundle '{self.name}' is closed")
        batch = check_feeds(self.name, self.input_specs, feeds, self.max_batch, self.label_ranges, check_finite)
        ins = [feeds[s.name] for s in self.input_specs]
        outs = {s.name: np.empty((batch, *s.shape[1:]) if s.batched else s.shape, s.dtype) for s in self.output_specs}
        in_ptrs = (ctypes.c_void_p * len(ins))(*[a.ctypes.data for a in ins])
        in_bytes = (ctypes.c_size_t * len(ins))(*[a.nbytes for a in ins])
        out_ptrs = (ctypes.c_void_p * len(outs))(*[a.ctypes.data for a in outs.values()])
        out_bytes = (ctypes.c_size_t * len(outs))(*[a.nbytes for a in outs.values()])
        with self._lock:  # one arena per model: calls run one at a time
            status = self._run(self._model, batch, in_ptrs, in_bytes, out_ptrs, out_bytes)
        self._raise(status, "run failed")
        return outs

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray], check_finite: bool = False) -> Any:
        feeds = dict(x) if isinstance(x, Mapping) else {self.input_names[0]: x}
        outs = self.run(feeds, check_finite)
        return outs["output"] if len(outs) == 1 and "output" in outs else outs

    def weights(self) -> np.ndarray:
        """A copy of the bundle's weights blob as it is now (a training bundle updates it in every step)."""
        nbytes = ctypes.c_size_t()
        ptr = self._fn("weights", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(self._model, ctypes.byref(nbytes))
        out = aligned_bytes(nbytes.value)
        ctypes.memmove(out.ctypes.data, ptr, nbytes.value)
        return out

    def state_array(self, name: str) -> np.ndarray:
        """A training bundle's parameter (or optimiser slot) ``name`` as it is now."""
        state = self.manifest.get("state", {})
        if name not in state:
            raise InputError(f"bundle '{self.name}' has no training state '{name}'; it has {sorted(state)}")
        offset, shape = state[name]["offset"], tuple(state[name]["shape"])
        count = int(np.prod(shape))
        return self.weights()[offset:offset + 4 * count].view(np.float32).reshape(shape).copy()

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the current weights as a weights file (what a C application's ``<name>_save_weights`` writes)."""
        fn = self._fn("save_weights", ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)
        self._raise(fn(self._model, os.fsencode(str(path))), "cannot save the weights")

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._destroy(self._model)
            self._model = ctypes.c_void_p()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        t = self.manifest["target"]
        return (f"<Bundle '{self.name}' ({self.manifest['kind']}) from {self.directory} for {t['cpu']}, "
                f"batch <= {self.max_batch}, {self.threads} threads>")


def _target_kind(directory: str | os.PathLike) -> str:
    """The manifest's target kind ("cpu" when it names none or cannot be read: Bundle reports what is wrong)."""
    try:
        kind = json.loads((Path(directory) / MANIFEST).read_text()).get("target", {}).get("kind", "cpu")
    except (OSError, ValueError, AttributeError):
        return "cpu"
    return kind if isinstance(kind, str) else "cpu"


def load(directory: str | os.PathLike, threads: int | None = None) -> Any:
    """Load a bundle written by ``cnncc compile`` (or :func:`cnncc.codegen.bundle.write_bundle`): a :class:`Bundle`,
    or for a CUDA bundle a :class:`cnncc.runtime.cuda.CudaBundle` (``threads`` does not apply to it), which opens
    the GPU at once and raises :class:`cnncc.runtime.cuda.NoCudaDevice` without one."""
    if _target_kind(directory) == "cuda":
        from cnncc.runtime.cuda import CudaBundle

        return CudaBundle(directory)
    return Bundle(directory, threads)
