"""Choosing each convolution's algorithm on the CPU: the registry's candidates, an analytic cost model, measured
accuracy against an error budget, and measured times from the tuning database.

For every forward conv layer the chooser lists the records of :mod:`cnncc.codegen.conv_algorithms` that apply (each
record's rule says why not otherwise), and for each one:

* **error**: the record's emulated float32 error on random data of the layer's shape (batch 1, fixed seed), max
  |y - ref| / max |ref| against the float64 reference; a candidate over ``max_error`` is excluded. Errors are cached
  per layer signature (they depend on no machine);
* **estimate**: the record's cost model (:mod:`cnncc.codegen.costmodel`): seconds on one core from the machine's
  measured FMA peak and memory bandwidths (measured once per CPU and kept in the database);
* **measured**: if ``cnncc tune`` (:func:`cnncc.tuner.tune_shapes`) timed the layer on this CPU, thread count and
  cnncc version, the measured time decides instead of the estimate.

The fastest candidate within the budget wins (measured if any candidate was measured, else estimated). The
:class:`Choice` keeps every candidate with its figures, which ``cnncc explain`` prints.

Backward-data convolutions (``conv2d_grad_input``, a training step's) are chosen by the cost model alone among the
baseline and the records compiled for them (Winograd F(4x4, 3x3)), when their weights change at run time and both
channel counts fill a vector: the rule the lowering used to apply itself, now in the IR.

``algorithms`` may also be a mapping layer -> algorithm: those layers are **forced** (a baseline name stands for the
layer's baseline, direct or depthwise), the others chosen from every algorithm; forcing an algorithm that does not
apply raises :class:`cnncc.errors.AlgorithmError` naming the layer, the algorithm and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cnncc.codegen.conv_algorithms import TARGET
from cnncc.codegen.costmodel import MachineModel, tile_efficiency
from cnncc.codegen.target import Target
from cnncc.convalgo import (
    CONV_OPS,
    DEFAULT_MAX_ERROR,
    ConvAlgorithm,
    ConvImpl,
    ConvShape,
    baseline_for,
    impl_of,
    lookup,
    records,
)
from cnncc.errors import CnnccError
from cnncc.ir import Graph, Node, ValueKind
from cnncc.tuning import TuningDB, TuningKey

DEFAULT_ALGORITHMS: tuple[str, ...] = tuple(r.name for r in records(TARGET))

__all__ = ["DEFAULT_ALGORITHMS", "DEFAULT_MAX_ERROR", "Candidate", "Choice", "CpuConvChooser", "MachineModel",
           "describe_schedule", "emulated_error", "estimate", "tile_efficiency"]


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
    """Seconds on one core by ``algorithm``'s record. The layer's weights stream from the cache level that holds
    ``weights_working_set`` bytes (a whole network's weights, read once per inference), or the layer's own weights
    when None (a layer run on its own, as ``cnncc bench`` and ``cnncc tune`` time it). ``runtime_weights``: the
    weights change every call (a training step), so each call also packs or transforms them."""
    hooks = lookup(algorithm, TARGET).hooks
    seconds: float = hooks.estimate(cs, m, width, weights_working_set)
    if runtime_weights:
        return float(hooks.pack(cs, m, width, weights_working_set) + seconds)
    return seconds


def emulated_error(cs: ConvShape, algorithm: str, seed: int = 0, kind: str = TARGET) -> float:
    """max |y - ref| / max |ref| of ``algorithm`` (on target ``kind``) in float32 on random data of the layer's
    shape (batch 1)."""
    return float(lookup(algorithm, kind).hooks.error(cs, seed))


def describe_schedule(cs: ConvShape, impl: ConvImpl, width: int = 16) -> str:
    """The schedule the lowering will use for ``impl`` on ``cs``, in words (``cnncc explain``)."""
    rec = lookup(impl.algorithm, TARGET)
    if rec.baseline:
        rec = baseline_for(cs, TARGET)
    why = rec.why_not(cs)
    return f"{rec.name} does not apply: {why}" if why else str(rec.hooks.describe(cs, impl, width))


def _all(kind: str) -> tuple[str, ...]:
    return tuple(r.name for r in records(kind))


def _candidate_names(algorithms: str | Sequence[str] | Mapping[str, str] | None, kind: str = TARGET
                     ) -> tuple[str, ...]:
    """The candidate list: every record for None/"auto" or a mapping (forcing), else the names given, where a
    baseline's name brings the other baselines (``direct`` computes depthwise layers with the depthwise kernel)."""
    if algorithms is None or algorithms == "auto" or isinstance(algorithms, Mapping):
        return _all(kind)
    names = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
    known = {r.name: r for r in records(kind)}
    unknown = [a for a in names if a not in known]
    if unknown:
        raise CnnccError(f"unknown convolution algorithm(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(_all(kind))}")
    out: list[str] = []
    for a in names:
        group = [r.name for r in records(kind) if r.baseline] if known[a].baseline else [a]
        out += [g for g in group if g not in out]
    return tuple(out)


def _forced(algorithms: object, kind: str = TARGET) -> dict[str, str]:
    if not isinstance(algorithms, Mapping):
        return {}
    known = {r.name for r in records(kind)}
    bad = {layer: a for layer, a in algorithms.items() if a not in known}
    if bad:
        raise CnnccError(f"unknown convolution algorithm(s) {', '.join(f'{a!r} (layer {l!r})' for l, a in bad.items())}"
                         f": choose from {', '.join(_all(kind))}")
    return dict(algorithms)


class CpuConvChooser:
    """Picks each conv layer's algorithm (see the module docstring); used by the ``select-algorithms`` pass.

    ``algorithms``: the candidates (names; None or "auto": every registered algorithm), or a mapping layer ->
    algorithm that forces those layers. Raises :class:`cnncc.errors.AlgorithmError` when a forced algorithm does not
    apply to its layer (``layer 'conv1': winograd4 does not apply: kernel 7x7: Winograd F(m, 3x3) needs a 3x3
    kernel``), and :class:`cnncc.errors.CnnccError` for an unknown algorithm, a forced layer the graph lacks, or a
    layer none of the candidates applies to."""

    kind = TARGET  # the registry key of the target whose records are the candidates

    def __init__(self, target: Target, max_error: float = DEFAULT_MAX_ERROR,
                 algorithms: str | Sequence[str] | Mapping[str, str] | None = DEFAULT_ALGORITHMS,
                 db: TuningDB | None = None, threads: int = 1, machine: MachineModel | None = None,
                 runtime_weights: bool = False) -> None:
        self.algorithms, self.forced = _candidate_names(algorithms, self.kind), _forced(algorithms, self.kind)
        if not (isinstance(max_error, float | int) and max_error > 0):
            raise CnnccError(f"max_error must be a positive number, got {max_error!r}")
        self.target, self.max_error = target, float(max_error)
        self.db, self.threads = db, threads
        self.runtime_weights = runtime_weights  # training: weights packed / transformed in every call
        self._machine = machine
        self._errors: dict[tuple[str, str], float] = {}
        self.all_errors = False
        self.weights_working_set: float | None = None  # set by prepare(): the network's weight bytes

    def prepare(self, graph: Graph, params: Mapping[str, np.ndarray]) -> None:
        """Called once per graph by the selection pass: inside a network every layer's weights are read once per
        inference, so they come from the cache level that holds all of them (DRAM for ResNet-18's 46 MB). A forced
        layer the graph lacks is an error (a misspelt name would otherwise force nothing)."""
        self.weights_working_set = float(sum(np.asarray(params[p.name]).size * 4 for p in graph.params))
        layers = [n.layer for n in graph.nodes if n.op in CONV_OPS]
        missing = sorted(set(self.forced) - set(layers))
        if missing:
            raise CnnccError(f"algorithms: no convolution layer named {', '.join(map(repr, missing))} (the graph's "
                             f"convolutions: {', '.join(layers[:12])}{', ...' if len(layers) > 12 else ''})")

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
                rec = {"error": emulated_error(cs, algorithm, kind=self.kind)}
                if self.db is not None:
                    self.db.put(dbkey, rec)
            self._errors[k] = rec["error"]
        return self._errors[k]

    def _estimate(self, rec: ConvAlgorithm, cs: ConvShape, wws: float | None, runtime: bool) -> float:
        return estimate(cs, rec.name, self.machine, self.target.vector_width, wws, runtime)

    def schedule_variants(self, cs: ConvShape) -> list[ConvImpl]:
        """The schedules tuning tries besides each candidate's default rule (the records' schedule spaces)."""
        width = self.target.vector_width
        return [v for name in self.algorithms for v in lookup(name, self.kind).hooks.variants(cs, width)]

    def candidates(self, cs: ConvShape) -> tuple[list[Candidate], dict[str, str]]:
        """The algorithms that apply, with estimates and any measured times (errors are filled by ``choose``)."""
        cands, skipped = [], {}
        for algo in self.algorithms:
            rec = lookup(algo, self.kind)
            why = rec.why_not(cs, self.runtime_weights)
            if why is not None:
                skipped[algo] = why
                continue
            cands.append(Candidate(ConvImpl(algo), self._estimate(rec, cs, self.weights_working_set,
                                                                  self.runtime_weights)))
        tuned = self.db.get(self.key(cs)) if self.db is not None else None
        if tuned is not None:
            by_label = {c.label: c for c in cands}
            for label, m in tuned.get("measured", {}).items():
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

    def force(self, cs: ConvShape, layer: str, algorithm: str, runtime: bool, backward: bool = False) -> Choice:
        """``algorithm`` on ``layer`` as the user forced it, checked (``direct`` stands for the layer's baseline, as
        in a candidate list: the depthwise kernel on a depthwise layer; any other name must apply as it is)."""
        rec = lookup(algorithm, self.kind)
        if algorithm == "direct":
            rec = baseline_for(cs, self.kind)
        rec.check(layer, cs, runtime, backward)
        cand = Candidate(ConvImpl(rec.name), self._estimate(rec, cs, None if backward else self.weights_working_set,
                                                            runtime))
        return Choice(layer, cs.signature(), cand.impl, "forced", [cand], {})

    def choose_backward_data(self, node: Node) -> Choice:
        """A ``conv2d_grad_input``: the baseline, or a record compiled for backward data when its weights change at
        run time, both channel counts fill a vector and the cost model (the run-time filter transform charged, the
        layer's own weights) finds it faster -- strictly, so a tie keeps the baseline."""
        cs = ConvShape.of_grad_input(node)
        runtime = self.runtime_weights or node.inputs[1].kind is not ValueKind.PARAM
        if node.layer in self.forced:
            return self.force(cs, node.layer, self.forced[node.layer], runtime, backward=True)
        base = baseline_for(cs, self.kind)
        cands = [Candidate(ConvImpl(base.name), self._estimate(base, cs, None, True))]
        skipped: dict[str, str] = {}
        width = self.target.vector_width
        for rec in records(self.kind):
            if rec.baseline or not rec.backward_data:
                continue
            why = rec.why_not(cs, runtime, backward_data=True)
            if why is None and not runtime:
                why = "compile-time weights: backward-data transforms run with run-time filter transforms only"
            if why is None and min(cs.c, cs.k) < width:
                why = f"{cs.c} -> {cs.k} channels: fewer than one {width}-lane vector"
            if why is not None:
                skipped[rec.name] = why
                continue
            cands.append(Candidate(ConvImpl(rec.name), self._estimate(rec, cs, None, True)))
        best = min(cands, key=lambda c: c.estimate_s)
        return Choice(node.layer, cs.signature(), best.impl, "model" if len(cands) > 1 else "only candidate",
                      cands, skipped)

    def choose(self, node: Node) -> Choice:
        """The algorithm of a conv node (forward or backward data): forced (by the ``algorithms`` mapping, or by an
        ``impl`` already in the IR, whose schedule is kept), or chosen."""
        preset = impl_of(node)
        if preset is not None and node.layer not in self.forced:
            backward = node.op == "conv2d_grad_input"
            cs = ConvShape.of_grad_input(node) if backward else ConvShape.of(node)
            runtime = self.runtime_weights or node.inputs[1].kind is not ValueKind.PARAM
            choice = self.force(cs, node.layer, preset.algorithm, runtime, backward)
            impl = replace(preset, algorithm=choice.impl.algorithm)  # the schedule set in the IR stays
            cands = [replace(c, impl=impl) for c in choice.candidates]
            return replace(choice, impl=impl, basis="set in the IR", candidates=cands)
        if node.op == "conv2d_grad_input":
            return self.choose_backward_data(node)
        cs = ConvShape.of(node)
        if node.layer in self.forced:
            return self.force(cs, node.layer, self.forced[node.layer], self.runtime_weights)
        return self.choose_shape(cs, node.layer, self.all_errors)
