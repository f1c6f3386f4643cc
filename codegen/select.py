"""Choosing each convolution's algorithm on the CPU: candidates, an analytic cost model, measured accuracy against an
error budget, and measured times from the tuning database.

For every conv layer the chooser lists the algorithms that apply (:func:`cnncc.codegen.convalgo.why_not`), and for
each one:

* **error**: the algorithm's arithmetic run by numpy in float32 (:func:`cnncc.codegen.transforms.emulate`) on random
  data of the layer's shape (batch 1, fixed seed), max |y - ref| / max |ref| against the float64 reference; a
  candidate over ``max_error`` is excluded. Direct and im2col sum the same products in float32 and share the
  float32 reference's error. Errors are cached per layer signature (they depend on no machine);
* **estimate**: seconds on one core from the machine's measured FMA peak and memory bandwidths (measured once per
  CPU and kept in the database): GEMM flops at a fixed efficiency, transform operations at the vector rate, the
  transform buffers through the caches, and the weights from the cache level that holds the network's weights (DRAM
  for ResNet-18; the layer's own when it runs alone) overlapped with the arithmetic;
* **measured**: if ``cnncc tune`` (``cnncc.tuner.tune_shapes``) timed the layer on this CPU, thread
  count and cnncc version, the measured time decides instead of the estimate.

The fastest candidate within the budget wins (measured if any candidate was measured, else estimated). The
:class:`Choice` keeps every candidate with its figures, which ``cnncc explain`` prints.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnncc.codegen.convalgo import ConvShape, why_not
from cnncc.codegen.kernels.conv import choose_schedule, direct_schedule
from cnncc.codegen.kernels.im2col import patch_rows
from cnncc.codegen.kernels.transform_conv import gemm_schedule
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.target import Target
from cnncc.codegen.transforms import emulate, transform_for
from cnncc.errors import CnnccError
from cnncc.ir import Graph, Node
from cnncc.ops.conv2d import ALGORITHMS, ConvImpl
from cnncc.tuning import TuningDB, TuningKey

DEFAULT_MAX_ERROR = 1e-4  # max |y - ref| / max |ref| of one layer; F(4x4,3x3) measures 5e-6..3e-5 on ResNet/VGG
DEFAULT_ALGORITHMS = ("direct", "im2col", "winograd2", "winograd4", "winograd6", "fft8", "fft16")
GEMM_EFFICIENCY = 0.9  # the 1x1 kernel measured 91-104% of peak on ResNet-18's 1x1 layers
DIRECT_EFFICIENCY = 0.95
# Calibration (least squares over the transform algorithms' times on the zoo's 126 conv shapes, 2026-11-22): the
# transforms run ~2 vector operations per cycle, and their buffers move at ~1.7x the 4 MiB copy bandwidth (they are
# written and read back while still in L2).
TRANSFORM_COST = 0.75  # cycles per vector add/FMA of a transform, loads and stores included
BUFFER_REUSE = 0.6
L2_BYTES, L3_BYTES = 1 << 20, 32 << 20  # per core; shared (AMD Zen 4 EPYC)


@dataclass(frozen=True)
class MachineModel:
    """What the cost model knows of the machine: one core's FMA peak and two measured copy bandwidths."""

    peak_gflops: float
    cache_gbs: float  # a 4 MiB working set (L3)
    dram_gbs: float  # a 256 MiB working set
    l2_gbs: float = 0.0  # a 256 KiB working set (L2); 0: as cache_gbs

    def bandwidth(self, nbytes: float) -> float:
        """Bytes per second for streaming a working set of ``nbytes`` through the level it fits in."""
        if nbytes <= L2_BYTES // 2 and self.l2_gbs:
            return self.l2_gbs * 1e9
        return (self.cache_gbs if nbytes <= L3_BYTES // 2 else self.dram_gbs) * 1e9

    @staticmethod
    def measure(target: Target) -> MachineModel:
        from cnncc.codegen.peak import measure_peak_gflops

        return MachineModel(measure_peak_gflops(target, seconds=0.2, repeats=5), _copy_gbs(4 << 20),
                            _copy_gbs(256 << 20, repeats=3), _copy_gbs(256 << 10, repeats=50))

    @staticmethod
    def cached(target: Target, db: TuningDB | None) -> MachineModel:
        key = TuningKey.for_target("machine model", target.cpu, target.features)
        rec = db.get(key) if db is not None else None
        fields = [f.name for f in dataclasses.fields(MachineModel)]
        if rec is not None and all(f in rec for f in fields):
            return MachineModel(**{f: rec[f] for f in fields})
        m = MachineModel.measure(target)
        if db is not None:
            db.put(key, dataclasses.asdict(m))
        return m


def _copy_gbs(nbytes: int, repeats: int = 7) -> float:
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9  # read + write


@dataclass
class Candidate:
    impl: ConvImpl
    estimate_s: float
    error: float | None = None
    measured_s: float | None = None
    excluded: str = ""  # why it may not be chosen (the error budget)

    @property
    def label(self) -> str:
        i = self.impl
        return i.algorithm + (f"(ur_w={i.ur_w},ocb={i.ocb})" if i.ur_w else "")

    @property
    def seconds(self) -> float:
        return self.measured_s if self.measured_s is not None else self.estimate_s


@dataclass
class Choice:
    layer: str
    signature: str
    impl: ConvImpl
    basis: str  # "measured" | "model" | "only candidate"
    candidates: list[Candidate] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def reason(self) -> str:
        best = next(c for c in self.candidates if c.impl == self.impl)
        parts = [f"{best.label}: {self.basis}"]
        if best.measured_s is not None:
            parts.append(f"measured {best.measured_s * 1e3:.3f} ms")
        parts.append(f"model {best.estimate_s * 1e3:.3f} ms")
        if best.error is not None:
            parts.append(f"error {best.error:.1e}")
        out = ", ".join(parts)
        excluded = [f"{c.label} ({c.excluded})" for c in self.candidates if c.excluded]
        if excluded:
            out += "; excluded: " + ", ".join(excluded)
        return out


def estimate(cs: ConvShape, algorithm: str, m: MachineModel, width: int = 16,
             weights_working_set: float | None = None, runtime_weights: bool = False) -> float:
    """Seconds on one core (see the module docstring). The layer's weights stream from the cache level that holds
    ``weights_working_set`` bytes (a whole network's weights, read once per inference), or the layer's own weights
    when None (a layer run on its own, as ``cnncc bench`` and ``cnncc tune`` time it). ``runtime_weights``: the
    weights change every call (a training step), so each call also packs them (direct, im2col: a gather reading
    the weights and an int32 index per element) or transforms them (Winograd: the transformed filters, (m+2)^2/9
    times the weights, written and read back)."""
    if runtime_weights:
        wb = cs.k * (cs.c // cs.groups) * cs.r * cs.s * 4
        total = weights_working_set or wb
        if algorithm in ("direct", "im2col"):
            pack = 3 * wb / m.bandwidth(total)
        else:
            tc = transform_for(algorithm, cs.r, cs.s, cs.stride[0], cs.stride[1])
            ub = 4 * tc.points * padded_channels(cs.c, width) * padded_channels(cs.k, width)
            pack = (wb + ub) / m.bandwidth(total * ub / wb)
        return pack + estimate(cs, algorithm, m, width, weights_working_set)
    flops = m.peak_gflops * 1e9
    vec_ops = flops / (2 * width) / TRANSFORM_COST
    cp, kp = padded_channels(cs.c, width), padded_channels(cs.k, width)
    cg = cs.c // cs.groups
    w_bytes = cs.k * cg * cs.r * cs.s * 4
    act_bytes = 4 * cs.n * (cp * cs.h * cs.w + kp * cs.oh * cs.ow)
    if algorithm == "direct":
        red = (cs.c if cs.c < width else cp) if cs.groups == 1 else (cg if cs.depthwise else padded_channels(cg, width))
        compute = 2 * cs.n * kp * cs.oh * cs.ow * red * cs.r * cs.s / (flops * DIRECT_EFFICIENCY)
        if cs.groups > 1 and not cs.depthwise and (cg % width or (cs.k // cs.groups) % width):
            compute *= cs.groups  # block-diagonal fallback
        w_time = w_bytes / m.bandwidth(weights_working_set or w_bytes)
        return max(compute, w_time) + act_bytes / m.bandwidth(act_bytes)
    if algorithm == "im2col":
        rows = patch_rows(cs.c, cs.r, cs.s, width)
        patches = 4 * cs.n * rows * cs.oh * cs.ow
        compute = 2 * cs.n * kp * cs.oh * cs.ow * rows / (flops * GEMM_EFFICIENCY)
        w_time = w_bytes / m.bandwidth(weights_working_set or w_bytes)
        return max(compute, w_time) + (2 * patches + act_bytes) / m.bandwidth(patches + act_bytes)
    tc = transform_for(algorithm, cs.r, cs.s, cs.stride[0], cs.stride[1])
    th, tw = tc.tiles(cs.oh, cs.ow)
    tiles = cs.n * th * tw
    pc, pk = tc.pair * cp, tc.pair * kp
    sched = gemm_schedule(tc, cs.k, th * tw, width)
    gemm = 2 * tc.points * tiles * pc * pk / (flops * tile_efficiency(sched.ur_w, sched.ocb, th * tw))
    in_ops, out_ops = tc.transform_ops()
    transforms = tiles * (in_ops * cp + out_ops * kp) / width / vec_ops
    buffers = 2 * 4 * tc.points * tiles * (pc + pk)
    u_bytes = 4 * tc.points * pc * pk
    u_time = u_bytes / m.bandwidth(weights_working_set or u_bytes)
    return max(gemm, u_time) + transforms + (BUFFER_REUSE * buffers + act_bytes) / m.bandwidth(buffers / 2 + act_bytes)


def describe_schedule(cs: ConvShape, impl: ConvImpl, width: int = 16) -> str:
    """The schedule the lowering will use for ``impl`` on ``cs``, in words (``cnncc explain``)."""
    cp, kp = padded_channels(cs.c, width), padded_channels(cs.k, width)
    algo = impl.algorithm if why_not(impl.algorithm, cs) is None else "direct"
    if algo == "direct":
        if cs.depthwise:
            return f"depthwise kernel, {width}-channel vectors"
        kb = kp // width if cs.groups == 1 else cs.k // cs.groups // width or 1
        weights_dominate = cs.k * cs.c // cs.groups * cs.r * cs.s > cs.n * (cs.c * cs.h * cs.w + cs.k * cs.oh * cs.ow)
        sched = direct_schedule(width, kb, cs.ow, cs.r * cs.s, impl, weights_dominate)
        split = "rows" if sched.split_rows else "output-channel groups"
        return (f"register tile {sched.ur_w} px x {sched.ocb}x{width} channels, {sched.unroll} channels "
                f"straight-line, threads split {split}")
    if algo == "im2col":
        rows = patch_rows(cs.c, cs.r, cs.s, width)
        sched = choose_schedule(width, kp // width, cs.ow, 1)
        return f"patch matrix {rows} x {cs.oh * cs.ow}, GEMM tile {sched.ur_w} px x {sched.ocb}x{width}"
    tc = transform_for(algo, cs.r, cs.s, cs.stride[0], cs.stride[1])
    th, tw = tc.tiles(cs.oh, cs.ow)
    sched = gemm_schedule(tc, cs.k, th * tw, width)
    i, o = tc.transform_ops()
    return (f"{tc.tile}x{tc.tile} input tiles -> {tc.out_h}x{tc.out_w} outputs, {th}x{tw} tiles, {tc.points} "
            f"{'complex ' if tc.pair == 2 else ''}GEMMs of {th * tw} x {tc.pair * cp} x {tc.pair * kp} "
            f"(tile {sched.ur_w} px x {sched.ocb}x{width}), transforms {i}+{o} vector ops per tile and block")


def tile_efficiency(ur: int, ocb: int, pixels: int) -> float:
    """Fraction of the peak a 1x1/GEMM register tile of ``ur`` pixels x ``ocb`` blocks reaches: ~0.92 with 12 or
    more accumulators, falling with fewer (FMA latency and one broadcast per ``ocb`` FMAs are no longer hidden;
    measured on znver4: ur 7 x 2 92%, 4 x 2 ~65%, 3 x 2 ~45%), weighted over the row's full and rest tiles."""
    def eff(u: int) -> float:
        return GEMM_EFFICIENCY * min(1.0, u * ocb / 12) ** 0.7

    full, rest = divmod(pixels, ur)
    return pixels / (full * ur / eff(ur) + (rest / eff(rest) if rest else 0.0))


def emulated_error(cs: ConvShape, algorithm: str, seed: int = 0) -> float:
    """max |y - ref| / max |ref| of ``algorithm`` in float32 on random data of the layer's shape (batch 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, cs.c, cs.h, cs.w))
    w = rng.standard_normal((cs.k, cs.c // cs.groups, cs.r, cs.s)) / np.sqrt(cs.c // cs.groups * cs.r * cs.s)
    ref = _conv(x, w, cs, np.float64)
    if algorithm in ("direct", "im2col"):
        got = _conv(x.astype(np.float32), w.astype(np.float32), cs, np.float32)
    else:
        tc = transform_for(algorithm, cs.r, cs.s, cs.stride[0], cs.stride[1])
        got = emulate(x.astype(np.float32), w, tc, cs.padding, np.float32)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def _conv(x: np.ndarray, w: np.ndarray, cs: ConvShape, dtype: type) -> np.ndarray:
    from cnncc.ops import conv2d

    a = conv2d.Conv2dAttrs(cs.stride, cs.padding, cs.dilation, cs.groups)
    return conv2d.OP.run_reference([x.astype(dtype), w.astype(dtype)], a)[0]


class CpuConvChooser:
    """Picks each conv layer's algorithm (see the module docstring); used by the ``select-algorithms`` pass."""

    def __init__(self, target: Target, max_error: float = DEFAULT_MAX_ERROR,
                 algorithms: Sequence[str] = DEFAULT_ALGORITHMS, db: TuningDB | None = None, threads: int = 1,
                 machine: MachineModel | None = None, runtime_weights: bool = False) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown:
            raise CnnccError(f"unknown convolution algorithm(s) {', '.join(unknown)}: choose from "
                             f"{', '.join(ALGORITHMS)}")
        if not (isinstance(max_error, float | int) and max_error > 0):
            raise CnnccError(f"max_error must be a positive number, got {max_error!r}")
        self.target, self.max_error, self.algorithms = target, float(max_error), tuple(algorithms)
        self.db, self.threads = db, threads
        self.runtime_weights = runtime_weights  # training: weights packed / transformed in every call
        self._machine = machine
        self._errors: dict[tuple[str, str], float] = {}
        self.all_errors = False
        self.weights_working_set: float | None = None  # set by prepare(): the network's weight bytes

    def prepare(self, graph: Graph, params: Mapping[str, np.ndarray]) -> None:
        """Called once per graph by the selection pass: inside a network every layer's weights are read once per
        inference, so they come from the cache level that holds all of them (DRAM for ResNet-18's 46 MB)."""
        self.weights_working_set = float(sum(np.asarray(params[p.name]).size * 4 for p in graph.params))

    @property
    def machine(self) -> MachineModel:
        if self._machine is None:
            self._machine = MachineModel.cached(self.target, self.db)
        return self._machine

    def key(self, cs: ConvShape) -> TuningKey:
        return TuningKey.for_target(f"{cs.signature()} threads={self.threads}", self.target.cpu,
                                    self.target.features)

    def error(self, cs: ConvShape, algorithm: str) -> float:
        sig = ConvShape(**{**cs.__dict__, "n": 1}).signature()
        k = (sig, algorithm)
        if k not in self._errors:
            dbkey = TuningKey.for_target(f"error {sig} {algorithm}", "any", "")
            rec = self.db.get(dbkey) if self.db is not None else None
            if rec is None:
                rec = {"error": emulated_error(cs, algorithm)}
                if self.db is not None:
                    self.db.put(dbkey, rec)
            self._errors[k] = rec["error"]
        return self._errors[k]

    def candidates(self, cs: ConvShape) -> tuple[list[Candidate], dict[str, str]]:
        """The algorithms that apply, with estimates and any measured times (errors are filled by ``choose``)."""
        cands, skipped = [], {}
        for algo in self.algorithms:
            why = why_not(algo, cs)
            if why is not None:
                skipped[algo] = why
                continue
            cands.append(Candidate(ConvImpl(algo), estimate(cs, algo, self.machine, self.target.vector_width,
                                                            self.weights_working_set, self.runtime_weights)))
        rec = self.db.get(self.key(cs)) if self.db is not None else None
        if rec is not None:
            by_label = {c.label: c for c in cands}
            for label, m in rec.get("measured", {}).items():
                if label in by_label:
                    by_label[label].measured_s = m["seconds"]
                elif m.get("impl"):  # a schedule variant tuning found
                    impl = ConvImpl(**m["impl"])
                    base = next((c for c in cands if c.impl.algorithm == impl.algorithm), None)
                    if base is not None:
                        cands.append(Candidate(impl, base.estimate_s, measured_s=m["seconds"]))
        return cands, skipped

    def check_error(self, cs: ConvShape, cand: Candidate) -> bool:
        """Measure (or recall) ``cand``'s error and exclude it if over the budget; True if it is allowed."""
        if cand.error is None:
            cand.error = self.error(cs, cand.impl.algorithm)
            if cand.error > self.max_error:
                cand.excluded = f"error {cand.error:.1e} > budget {self.max_error:.0e}"
        return not cand.excluded

    def choose_shape(self, cs: ConvShape, layer: str = "", all_errors: bool = False) -> Choice:
        """The fastest allowed candidate. Errors are measured lazily, fastest first, until one is within the budget
        (``all_errors``: for every candidate, as ``cnncc explain`` shows)."""
        cands, skipped = self.candidates(cs)
        if not cands:
            raise CnnccError(f"layer '{layer}': none of the algorithms {', '.join(self.algorithms)} applies "
                             f"({'; '.join(f'{a}: {w}' for a, w in skipped.items())})")
        if len(cands) == 1:
            return Choice(layer, cs.signature(), cands[0].impl, "only candidate", cands, skipped)
        measured = any(c.measured_s is not None for c in cands)
        basis = "measured" if measured else "model"
        order = sorted(cands, key=lambda c: (c.measured_s is None, c.seconds) if measured else c.estimate_s)
        best = next((c for c in order if self.check_error(cs, c)), None)
        if best is None:  # nothing within the budget: the most accurate
            best, basis = min(cands, key=lambda c: c.error or 0.0), "most accurate (none within the budget)"
        if all_errors:
            for c in cands:
                self.check_error(cs, c)
        return Choice(layer, cs.signature(), best.impl, basis, cands, skipped)

    def choose(self, node: Node) -> Choice:
        return self.choose_shape(ConvShape.of(node), node.layer, self.all_errors)

