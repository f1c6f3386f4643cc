"""The CUDA runtime: a CUDA model (:class:`CudaModel`, from an executable) or a CUDA bundle (:class:`CudaBundle`, from
a directory) on the CUDA driver API, through ctypes. No compiler, TVM or CUDA toolkit is needed at run time: only
``libcuda.so.1`` (the NVIDIA driver) and numpy.

The device is the primary context of one GPU (so cnncc shares it with PyTorch in one process). Loading a model loads
its fat binary, copies the weights region to the device once and allocates the arena; a call copies the inputs into
their arena slots, replays the launch plan (:mod:`cnncc.launch_plan`) on one stream, as a CUDA graph after the first
call unless ``use_graphs=False``, and copies the outputs back. Inputs are checked exactly as the CPU runtime checks
them. A call with a batch below the compiled one copies only its images; the kernels compute the compiled batch.

Without a driver or a GPU, opening the device raises :class:`NoCudaDevice`. The library is ``$CNNCC_LIBCUDA`` or
``libcuda.so.1`` unless the ``library`` argument names another.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnncc.bundle_format import MANIFEST, MANIFEST_FORMAT, MANIFEST_VERSION, read_weights
from cnncc.errors import CnnccError
from cnncc.executable import CompileStats, Executable, TensorSpec
from cnncc.launch_plan import CudaCode, IOSlot, KernelArg, Launch
from cnncc.runtime.compiled import KernelTiming, check_feeds

LIBCUDA_ENV = "CNNCC_LIBCUDA"
DEFAULT_LIBRARY = "libcuda.so.1"
ADVICE = "compile for target='cpu', or run on a machine with an NVIDIA GPU and its driver"
CUDA_ERROR_NO_DEVICE = 100
ATTR_MAX_THREADS_PER_BLOCK = 1
ATTR_MAX_GRID = (5, 6, 7)
ATTR_MAX_SHARED_PER_BLOCK = 8
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76
CU_STREAM_NON_BLOCKING = 1
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1
MIN_ALLOC = 256

_P, _I, _U, _S, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_uint64
# driver function -> argument types (CUdeviceptr is 64-bit: _D); every function returns CUresult (int)
SIGNATURES: dict[str, tuple[Any, ...]] = {
    "cuInit": (_U,),
    "cuGetErrorName": (_I, _P),
    "cuGetErrorString": (_I, _P),
    "cuDeviceGetCount": (_P,),
    "cuDeviceGet": (_P, _I),
    "cuDeviceGetName": (ctypes.c_char_p, _I, _I),
    "cuDeviceGetAttribute": (_P, _I, _I),
    "cuDevicePrimaryCtxRetain": (_P, _I),
    "cuDevicePrimaryCtxRelease_v2": (_I,),
    "cuCtxSetCurrent": (_P,),
    "cuModuleLoadData": (_P, _P),
    "cuModuleUnload": (_P,),
    "cuModuleGetFunction": (_P, _P, ctypes.c_char_p),
    "cuMemAlloc_v2": (_P, _S),
    "cuMemFree_v2": (_D,),
    "cuMemsetD8_v2": (_D, ctypes.c_ubyte, _S),
    "cuMemcpyHtoDAsync_v2": (_D, _P, _S, _P),
    "cuMemcpyDtoHAsync_v2": (_P, _D, _S, _P),
    "cuStreamCreate": (_P, _U),
    "cuStreamDestroy_v2": (_P,),
    "cuStreamSynchronize": (_P,),
    "cuLaunchKernel": (_P, _U, _U, _U, _U, _U, _U, _U, _P, _P, _P),
    "cuEventCreate": (_P, _U),
    "cuEventDestroy_v2": (_P,),
    "cuEventRecord": (_P, _P),
    "cuEventSynchronize": (_P,),
    "cuEventElapsedTime": (_P, _P, _P),
    "cuStreamBeginCapture_v2": (_P, _I),
    "cuStreamEndCapture": (_P, _P),
    "cuGraphInstantiateWithFlags": (_P, _P, ctypes.c_ulonglong),
    "cuGraphLaunch": (_P, _P),
    "cuGraphExecDestroy": (_P,),
    "cuGraphDestroy": (_P,),
}
# newer drivers export a replacement under another name; the first one present is used
ALIASES = {"cuEventElapsedTime": ("cuEventElapsedTime_v2", "cuEventElapsedTime")}


class NoCudaDevice(CnnccError):
    """No usable CUDA device: the driver library is missing, ``cuInit`` failed, or there are no GPUs."""


class CudaError(CnnccError):
    """A CUDA driver call failed; ``call`` names it, ``status`` is its CUresult."""

    def __init__(self, call: str, status: int, name: str, text: str) -> None:
        self.call, self.status = call, status
        super().__init__(f"CUDA driver call {call} failed: {name} ({text})")


# -- the driver API ---------------------------------------------------------------------------------------------

class Driver:
    """The CUDA driver API functions cnncc uses, from ``libcuda`` through ctypes; :meth:`call` raises
    :class:`CudaError` on any status but CUDA_SUCCESS. Constructing it initialises the driver and counts the
    devices, raising :class:`NoCudaDevice` when there is none."""

    def __init__(self, library: str | None = None) -> None:
        self.library = library or os.environ.get(LIBCUDA_ENV) or DEFAULT_LIBRARY
        try:
            self.lib = ctypes.CDLL(self.library)
        except OSError as e:
            raise NoCudaDevice(f"no CUDA device: {self.library} not found or not loadable ({e}): the NVIDIA driver "
                               f"is not installed; {ADVICE}") from e
        self._fns: dict[str, Any] = {}
        status = self._fn("cuInit")(0)
        if status != 0:
            raise NoCudaDevice(f"no CUDA device: cuInit returned {self.error_name(status)} "
                               f"({self.error_string(status)}); {ADVICE}")
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value < 1:
            raise NoCudaDevice(f"no CUDA device: the driver ({self.library}) reports 0 devices; {ADVICE}")
        self.device_count = count.value

    def _fn(self, name: str) -> Any:
        fn = self._fns.get(name)
        if fn is None:
            for symbol in ALIASES.get(name, (name,)):
                fn = getattr(self.lib, symbol, None)
                if fn is not None:
                    break
            if fn is None:
                raise CnnccError(f"{self.library} has no {name}: the NVIDIA driver is too old for cnncc's CUDA "
                                 "runtime (it needs CUDA 12 or newer)")
            fn.restype, fn.argtypes = ctypes.c_int, list(SIGNATURES[name])
            self._fns[name] = fn
        return fn

    def _text(self, getter: str, status: int) -> str:
        out = ctypes.c_char_p()
        try:
            if self._fn(getter)(status, ctypes.byref(out)) == 0 and out.value:
                return out.value.decode(errors="replace")
        except CnnccError:
            pass
        return f"CUresult {status}"

    def error_name(self, status: int) -> str:
        return self._text("cuGetErrorName", status)

    def error_string(self, status: int) -> str:
        return self._text("cuGetErrorString", status)

    def call(self, name: str, *args: Any) -> None:
        """Call driver function ``name``; raise :class:`CudaError` naming it unless it returns CUDA_SUCCESS."""
        status = self._fn(name)(*args)
        if status != 0:
            raise CudaError(name, status, self.error_name(status), self.error_string(status))

    # small typed helpers
    def out_handle(self, name: str, *args: Any) -> int:
        """Call ``name(&handle, *args)``; return the handle (a pointer-sized value)."""
        handle = ctypes.c_void_p()
        self.call(name, ctypes.byref(handle), *args)
        return handle.value or 0

    def attribute(self, device: int, attr: int) -> int:
        """Device attribute ``attr`` (a CUdevice_attribute) of CUdevice ``device``."""
        value = ctypes.c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(value), attr, device)
        return value.value

    def device_name(self, device: int) -> str:
        buf = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", buf, 256, device)
        return buf.value.decode(errors="replace")

    def alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64()
        self.call("cuMemAlloc_v2", ctypes.byref(ptr), max(nbytes, MIN_ALLOC))
        return ptr.value


def arch_number(arch: str) -> int:
    """``"sm_90"`` / ``"sm_90a"`` / ``"compute_90"`` -> 90."""
    m = re.search(r"(\d+)", arch)
    if not m:
        raise CnnccError(f"'{arch}' is not a CUDA architecture (expected a name like 'sm_90')")
    return int(m.group(1))


# -- one model on the device --------------------------------------------------------------------------------------

class DeviceModel:
    """A model loaded on a GPU: its module and kernels, the weights and arena regions, a stream, the launch
    parameters, and the CUDA graph once captured. Not thread-safe: its owner serialises calls."""

    def __init__(self, driver: Driver, device: int, code: CudaCode) -> None:
        self.driver, self.code, self.device = driver, code, device
        self.ctx = self.module = self.stream = self.graph_exec = 0
        self.weights_ptr = self.arena_ptr = self.handle = 0
        self.name = ""
        self.events: list[int] = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        d, code = self.driver, self.code
        if not 0 <= self.device < d.device_count:
            raise NoCudaDevice(f"no CUDA device: device {self.device} requested, the driver reports "
                               f"{d.device_count}; {ADVICE}")
        handle = ctypes.c_int()
        d.call("cuDeviceGet", ctypes.byref(handle), self.device)
        self.handle = handle.value
        self.name = d.device_name(self.handle)
        self._check_device()
        self.ctx = d.out_handle("cuDevicePrimaryCtxRetain", self.handle)
        d.call("cuCtxSetCurrent", self.ctx)
        self.stream = d.out_handle("cuStreamCreate", CU_STREAM_NON_BLOCKING)
        self.module = d.out_handle("cuModuleLoadData", code.fatbin)
        self.functions = {k: d.out_handle("cuModuleGetFunction", self.module, k.encode()) for k in code.kernels}
        self.weights_ptr = d.alloc(len(code.weights))
        self.arena_ptr = d.alloc(code.arena_bytes)
        d.call("cuMemsetD8_v2", self.arena_ptr, 0, max(code.arena_bytes, MIN_ALLOC))
        if code.weights:
            self.copy_in(self.weights_ptr, code.weights, len(code.weights))
        self.params = [self._params(launch) for launch in code.launches]
        self.sync()

    def _check_device(self) -> None:
        d, code = self.driver, self.code
        cc = 10 * d.attribute(self.handle, ATTR_CC_MAJOR) + d.attribute(self.handle, ATTR_CC_MINOR)
        if cc < arch_number(code.arch):
            raise CnnccError(f"the model was compiled for {code.arch}, but device {self.device} ({self.name}) is "
                             f"sm_{cc}: compile it with cuda_arch='sm_{cc}'")
        grid = tuple(d.attribute(self.handle, a) for a in ATTR_MAX_GRID)
        code.validate(max_threads=d.attribute(self.handle, ATTR_MAX_THREADS_PER_BLOCK),
                      max_shared=d.attribute(self.handle, ATTR_MAX_SHARED_PER_BLOCK),
                      max_grid=(grid[0], grid[1], grid[2]))

    def _params(self, launch: Launch) -> tuple[Any, Any]:
        """The launch's kernelParams: an array of pointers to the argument values (device pointers)."""
        base = {"weights": self.weights_ptr, "arena": self.arena_ptr}
        values = (ctypes.c_uint64 * max(len(launch.args), 1))(*[base[a.region] + a.offset for a in launch.args])
        size = ctypes.sizeof(ctypes.c_uint64)
        pointers = (ctypes.c_void_p * max(len(launch.args), 1))(
            *[ctypes.addressof(values) + size * i for i in range(len(launch.args))])
        return values, pointers

    # -- calls ------------------------------------------------------------------------------------------------
    def current(self) -> None:
        self.driver.call("cuCtxSetCurrent", self.ctx)

    def copy_in(self, dst: int, src: Any, nbytes: int) -> None:
        self.driver.call("cuMemcpyHtoDAsync_v2", dst, src, nbytes, self.stream)

    def copy_out(self, dst: int, src: int, nbytes: int) -> None:
        self.driver.call("cuMemcpyDtoHAsync_v2", dst, src, nbytes, self.stream)

    def sync(self) -> None:
        self.driver.call("cuStreamSynchronize", self.stream)

    def launch(self, i: int) -> None:
        launch, (_, pointers) = self.code.launches[i], self.params[i]
        self.driver.call("cuLaunchKernel", self.functions[launch.kernel], *launch.grid, *launch.block, 0,
                         self.stream, pointers, None)

    def launch_all(self, use_graph: bool) -> None:
        """Enqueue the whole plan: the CUDA graph (captured on first use) or one launch after another."""
        if not use_graph:
            for i in range(len(self.code.launches)):
                self.launch(i)
            return
        if not self.graph_exec:
            self.graph_exec = self._capture()
        self.driver.call("cuGraphLaunch", self.graph_exec, self.stream)

    def _capture(self) -> int:
        d = self.driver
        d.call("cuStreamBeginCapture_v2", self.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        graph = ctypes.c_void_p()
        try:
            for i in range(len(self.code.launches)):
                self.launch(i)
        finally:
            d.call("cuStreamEndCapture", self.stream, ctypes.byref(graph))
        try:
            return d.out_handle("cuGraphInstantiateWithFlags", graph, 0)
        finally:
            d.call("cuGraphDestroy", graph)

    def run(self, inputs: Sequence[tuple[IOSlot, np.ndarray]], outputs: Sequence[tuple[IOSlot, np.ndarray]],
            use_graph: bool) -> None:
        """Copy ``inputs`` into their slots, run the plan, copy the slots' first bytes out into ``outputs``."""
        self.current()
        for slot, a in inputs:
            self.copy_in(self.arena_ptr + slot.offset, a.ctypes.data, a.nbytes)
        self.launch_all(use_graph)
        for slot, a in outputs:
            self.copy_out(a.ctypes.data, self.arena_ptr + slot.offset, a.nbytes)
        self.sync()

    def time_launches(self, inputs: Sequence[tuple[IOSlot, np.ndarray]]) -> np.ndarray:
        """Seconds of each launch in one pass, measured with CUDA events on the stream."""
        d, n = self.driver, len(self.code.launches)
        self.current()
        while len(self.events) < n + 1:
            self.events.append(d.out_handle("cuEventCreate", 0))
        for slot, a in inputs:
            self.copy_in(self.arena_ptr + slot.offset, a.ctypes.data, a.nbytes)
        d.call("cuEventRecord", self.events[0], self.stream)
        for i in range(n):
            self.launch(i)
            d.call("cuEventRecord", self.events[i + 1], self.stream)
        self.sync()
        ms = ctypes.c_float()
        out = np.zeros(n)
        for i in range(n):
            d.call("cuEventElapsedTime", ctypes.byref(ms), self.events[i], self.events[i + 1])
            out[i] = ms.value * 1e-3
        return out

    def close(self) -> None:
        """Free everything on the device (errors are ignored: this also runs at interpreter exit)."""
        if not self.ctx:
            return
        steps = [("cuGraphExecDestroy", self.graph_exec), ("cuMemFree_v2", self.arena_ptr),
                 ("cuMemFree_v2", self.weights_ptr), ("cuModuleUnload", self.module),
                 *[("cuEventDestroy_v2", e) for e in self.events], ("cuStreamDestroy_v2", self.stream)]
        try:
            self.driver.call("cuCtxSetCurrent", self.ctx)
            if self.stream:
                self.driver.call("cuStreamSynchronize", self.stream)
        except CnnccError:
            pass
        for name, handle in steps:
            if handle:
                try:
                    self.driver.call(name, handle)
                except CnnccError:
                    pass
        try:
            self.driver.call("cuDevicePrimaryCtxRelease_v2", self.handle)
        except CnnccError:
            pass
        self.ctx = self.module = self.stream = self.graph_exec = self.weights_ptr = self.arena_ptr = 0
        self.events = []


# -- the user-facing models ---------------------------------------------------------------------------------------

class _CudaRunner:
    """What a CUDA model and a CUDA bundle share: the input checks, the device (opened on demand), run, profile."""

    name: str
    max_batch: int
    input_specs: list[TensorSpec]
    output_specs: list[TensorSpec]
    label_ranges: dict[str, int]
    code: CudaCode

    def _setup(self, use_graphs: bool, library: str | None, device: int) -> None:
        self.use_graphs, self.library, self.device = use_graphs, library, device
        self._lock = threading.Lock()
        self._device: DeviceModel | None = None
        self._slots = {s.name: s for s in (*self.code.inputs, *self.code.outputs)}
        for spec in (*self.input_specs, *self.output_specs):
            slot = self._slots.get(spec.name)
            if slot is None or slot.nbytes != int(np.prod(spec.shape)) * spec.dtype.itemsize:
                raise CnnccError(f"CUDA model '{self.name}': tensor '{spec.name}' of shape {spec.shape} has "
                                 f"{'no arena slot' if slot is None else f'an arena slot of {slot.nbytes} B'}")

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.input_specs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.output_specs]

    def _open(self) -> DeviceModel:
        """The model on the device, loaded on first use (the caller holds the lock)."""
        if self._device is None:
            self._device = DeviceModel(Driver(self.library), self.device, self.code)
        return self._device

    def open(self) -> None:
        """Open the device now (loading is otherwise done by the first call)."""
        with self._lock:
            self._open()

    @property
    def device_name(self) -> str | None:
        """The GPU's name once the device is open, else None."""
        return self._device.name if self._device else None

    def _feeds(self, x: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(x) if isinstance(x, Mapping) else {self.input_names[0]: x}

    def _inputs(self, feeds: Mapping[str, np.ndarray]) -> list[tuple[IOSlot, np.ndarray]]:
        return [(self._slots[s.name], feeds[s.name]) for s in self.input_specs]

    def run(self, feeds: Mapping[str, np.ndarray], check_finite: bool = False) -> dict[str, np.ndarray]:
        """Run on named inputs; returns the outputs by name (fresh arrays)."""
        batch = check_feeds(self.name, self.input_specs, feeds, self.max_batch, self.label_ranges, check_finite)
        outs = {s.name: np.empty((batch, *s.shape[1:]) if s.batched else s.shape, s.dtype) for s in self.output_specs}
        with self._lock:  # one arena per model: calls run one at a time
            self._open().run(self._inputs(feeds), [(self._slots[n], a) for n, a in outs.items()], self.use_graphs)
        return outs

    def __call__(self, x: np.ndarray | Mapping[str, np.ndarray], check_finite: bool = False) -> Any:
        outs = self.run(self._feeds(x), check_finite)
        return outs["output"] if len(outs) == 1 and "output" in outs else outs

    def profile(self, x: np.ndarray | Mapping[str, np.ndarray], repeats: int = 10) -> list[KernelTiming]:
        """Time every launch with CUDA events (best of ``repeats`` passes after one warm-up). The kernels always
        compute the compiled batch, so ``macs`` is the launch's work at that batch."""
        feeds = self._feeds(x)
        check_feeds(self.name, self.input_specs, feeds, self.max_batch, self.label_ranges, False)
        best = np.full(len(self.code.launches), np.inf)
        with self._lock:
            dev = self._open()
            for i in range(max(repeats, 1) + 1):
                times = dev.time_launches(self._inputs(feeds))
                best = np.minimum(best, times) if i else best
        return [KernelTiming(launch.layer, launch.kernel, launch.flops // 2, float(t))
                for launch, t in zip(self.code.launches, best, strict=True)]

    def close(self) -> None:
        """Free the device memory (a later call opens the device again)."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            if self._device is not None:
                self._device.close()
                self._device = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> _CudaRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CudaModel(_CudaRunner):
    """A model compiled for CUDA, in this process: call it like the model, ``y = model(x)``. The GPU is opened on
    the first call (constructing one needs no GPU); ``use_graphs``: replay the plan as a CUDA graph; ``library``:
    the driver library (default ``$CNNCC_LIBCUDA`` or libcuda.so.1); ``device``: the GPU's ordinal."""

    def __init__(self, executable: Executable, use_graphs: bool = True, library: str | None = None,
                 device: int = 0) -> None:
        ex = self.executable = executable
        if not isinstance(ex.native, CudaCode):
            raise CnnccError(f"CudaModel needs an executable built for CUDA, got {type(ex.native).__name__} "
                             f"({ex.description})")
        self.code = ex.native
        self.graph, self.program, self.target = ex.graph, ex.program, ex.target
        self.name = ex.graph.name
        self.threads = ex.threads
        self.stats: CompileStats = ex.stats
        self.max_batch = ex.max_batch
        self.label_ranges = dict(ex.program.label_ranges)
        self.layer_algorithms = dict(ex.program.algorithms)
        self.input_specs = ex.input_specs()
        self.output_specs = ex.output_specs()
        self.pass_log: list[str] = []
        self.choices: dict[str, Any] = {}
        self._setup(use_graphs, library, device)

    def __repr__(self) -> str:
        where = self.device_name or "device not opened yet"
        return (f"<CudaModel '{self.name}' for {self.code.arch} ({where}), batch <= {self.max_batch}, "
                f"{len(self.code.launches)} launches, arena {self.code.arena_bytes:,} B>")


# -- bundles ------------------------------------------------------------------------------------------------------

def _spec(d: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], np.dtype(d["dtype"]), tuple(d["shape"]), bool(d["batched"]))


def launch_from_dict(d: Mapping[str, Any]) -> Launch:
    """A :class:`Launch` from its manifest entry (``dataclasses.asdict`` of one)."""
    return Launch(kernel=d["kernel"], grid=(*d["grid"],), block=(*d["block"],), layer=d["layer"],
                  args=tuple(KernelArg(a["region"], a["offset"], a["nbytes"]) for a in d["args"]),
                  shared_bytes=d.get("shared_bytes", 0), flops=d.get("flops", 0))


def code_from_manifest(m: Mapping[str, Any], fatbin: bytes, weights: bytes) -> CudaCode:
    """The :class:`CudaCode` a CUDA bundle's manifest describes, with its fat binary and weights."""
    return CudaCode(arch=m["target"]["arch"], fatbin=fatbin, source="", weights=weights,
                    launches=[launch_from_dict(d) for d in m["launches"]], arena_bytes=m["arena_bytes"],
                    inputs=[IOSlot(d["name"], d["offset"], d["nbytes"]) for d in m["inputs"]],
                    outputs=[IOSlot(d["name"], d["offset"], d["nbytes"]) for d in m["outputs"]],
                    ptxas=dict(m.get("ptxas", {})))


class CudaBundle(_CudaRunner):
    """A CUDA bundle (written by :func:`cnncc.codegen.cuda.bundle.write_cuda_bundle`) run through the Python
    driver wrapper: same calls as :class:`CudaModel`. Loading reads and checks the files, then opens the GPU
    (raising :class:`NoCudaDevice` without one)."""

    def __init__(self, directory: str | os.PathLike, use_graphs: bool = True, library: str | None = None,
                 device: int = 0) -> None:
        self.directory = Path(directory)
        self.manifest = m = read_manifest(self.directory)
        if m.get("target", {}).get("kind") != "cuda":
            raise CnnccError(f"bundle '{directory}' is not a CUDA bundle (target {m.get('target')!r})")
        self.name = m["name"]
        self.max_batch = m["max_batch"]
        self.input_specs = [_spec(d) for d in m["inputs"]]
        self.output_specs = [_spec(d) for d in m["outputs"]]
        self.label_ranges = {d["name"]: d["classes"] for d in m["inputs"] if d.get("classes")}
        self.layer_algorithms = dict(m.get("algorithms", {}))
        self.code = code_from_manifest(m, self._fatbin(), self._weights())
        self._setup(use_graphs, library, device)
        self.open()

    def _fatbin(self) -> bytes:
        path = self.directory / self.manifest["fatbin"]
        try:
            return path.read_bytes()
        except OSError as e:
            raise CnnccError(f"bundle '{self.directory}': cannot read the fat binary {path.name}: {e}") from e

    def _weights(self) -> bytes:
        w = self.manifest["weights"]
        blob = read_weights(self.directory / w["file"], self.manifest["graph_hash"])
        if len(blob) != w["bytes"]:
            raise CnnccError(f"bundle '{self.directory}': {w['file']} holds {len(blob)} B of weights; the manifest "
                             f"says {w['bytes']}")
        return blob

    def __repr__(self) -> str:
        return (f"<CudaBundle '{self.name}' from {self.directory} for {self.code.arch} "
                f"({self.device_name or 'closed'}), batch <= {self.max_batch}>")


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """A bundle's manifest, checked for the cnncc format and version."""
    path = Path(directory) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CnnccError(f"'{directory}' is not a cnncc bundle: cannot read {MANIFEST}: {e}") from e
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or m.get("format_version") != MANIFEST_VERSION:
        raise CnnccError(f"'{path}' is not a version-{MANIFEST_VERSION} cnncc bundle manifest")
    return m


__all__ = ["CudaBundle", "CudaError", "CudaModel", "DeviceModel", "Driver", "NoCudaDevice", "code_from_manifest",
           "launch_from_dict", "read_manifest"]
