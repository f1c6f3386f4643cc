"""What the CUDA backend hands the runtime and the bundle writer: device code plus a launch plan.

The CUDA target (:mod:`cnncc.codegen.cuda`) compiles a planned program to one fat binary (a cubin for the chosen
architecture plus PTX for newer GPUs, built by ``nvcc`` at compile time) and the list of kernel launches that make
one forward pass. At run time nothing of the compiler is needed: the runtime (:mod:`cnncc.runtime.cuda`, on the CUDA
driver API through ctypes) or the bundle's C runtime loads the fat binary, allocates two device regions and replays
the launches on one stream.

Device memory is two regions:

* ``weights``: the packed weights blob (``Program.weights``), copied once when the model is loaded;
* ``arena``: one allocation of ``arena_bytes`` holding every intermediate buffer (offsets from the memory plan),
  then the inputs, then the outputs (``inputs``/``outputs`` give their offsets). A call copies the inputs in, replays
  the launches, and copies the outputs out.

Every kernel argument is a device pointer ``region base + offset``; kernels take no scalars (shapes are compiled in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REGIONS = ("weights", "arena")


@dataclass(frozen=True)
class KernelArg:
    """A pointer argument: ``region`` ("weights" or "arena") base plus ``offset`` bytes; ``nbytes``: the extent
    the kernel may touch (checked against the region at compile time)."""

    region: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Launch:
    """One kernel launch: the kernel's symbol in the fat binary, grid and block dimensions, static shared memory
    (bytes, from ptxas), and the pointer arguments in the kernel's parameter order."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple[KernelArg, ...]
    layer: str
    shared_bytes: int = 0
    flops: int = 0

    @property
    def threads(self) -> int:
        return self.block[0] * self.block[1] * self.block[2]


@dataclass(frozen=True)
class IOSlot:
    """A model input or output in the arena: its name, byte offset and size at the compiled batch."""

    name: str
    offset: int
    nbytes: int


@dataclass
class CudaCode:
    """A built CUDA model: ``fatbin`` (cubin for ``arch`` + PTX), the CUDA C it came from, the launch plan, the
    region sizes, where inputs and outputs live in the arena, and ``ptxas``: per kernel, the registers, spill bytes
    and shared memory that ``ptxas -v`` reported."""

    arch: str
    fatbin: bytes
    source: str
    launches: list[Launch]
    arena_bytes: int
    weights: bytes
    inputs: list[IOSlot]
    outputs: list[IOSlot]
    ptxas: dict[str, dict[str, int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kernels(self) -> list[str]:
        """The distinct kernels the launches use, in first-use order."""
        return list(dict.fromkeys(launch.kernel for launch in self.launches))

    def validate(self, max_threads: int = 1024, max_shared: int = 48 * 1024,
                 max_grid: tuple[int, int, int] = (2**31 - 1, 65535, 65535)) -> None:
        """Raise :class:`cnncc.errors.CnnccError` unless every launch fits the device limits and every argument lies
        inside its region (the checks the build runs before handing the code on)."""
        from cnncc.errors import CnnccError

        sizes = {"weights": len(self.weights), "arena": self.arena_bytes}
        for i, launch in enumerate(self.launches):
            where = f"launch {i} ({launch.kernel}, layer '{launch.layer}')"
            if launch.threads > max_threads or min(launch.block) < 1:
                raise CnnccError(f"{where}: block {launch.block} has {launch.threads} threads; the device allows "
                                 f"1..{max_threads}")
            if any(g < 1 or g > m for g, m in zip(launch.grid, max_grid, strict=True)):
                raise CnnccError(f"{where}: grid {launch.grid} exceeds the device's {max_grid}")
            if launch.shared_bytes > max_shared:
                raise CnnccError(f"{where}: {launch.shared_bytes} B of shared memory; the device allows {max_shared}")
            for a in launch.args:
                if a.region not in sizes:
                    raise CnnccError(f"{where}: argument region '{a.region}' is not one of {', '.join(REGIONS)}")
                if a.offset < 0 or a.offset + a.nbytes > sizes[a.region] or a.offset % 16:
                    raise CnnccError(f"{where}: argument [{a.offset}, {a.offset + a.nbytes}) lies outside the "
                                     f"{a.region} region of {sizes[a.region]} B or is not 16-byte aligned")
        for slot in (*self.inputs, *self.outputs):
            if slot.offset < 0 or slot.offset + slot.nbytes > self.arena_bytes:
                raise CnnccError(f"tensor '{slot.name}' [{slot.offset}, {slot.offset + slot.nbytes}) lies outside the "
                                 f"arena of {self.arena_bytes} B")
