"""Training: one compiled step (forward, loss, backward, optimiser update) and the :class:`Trainer` around it.

The training graph is an ordinary graph, built in four layers on the model's training-mode graph (batch-norm on
batch statistics, dropout on):

1. the loss (cross-entropy, NLL or MSE) on the model's output and a ``labels`` input;
2. :func:`cnncc.autodiff.grad`: the backward pass, one ``grad:<p>`` value per trainable parameter;
3. the optimiser update op of every parameter (``sgd_update``, ``adam_update``, ...) on the parameter, its gradient,
   the run-time scalars ``lr`` (and Adam's ``step``) and its state tensors (momentum, squared averages), which are
   non-trainable parameters named ``<slot>@<p>`` starting at zero; and each training-mode batch-norm's
   ``batch_norm_stats`` (running mean and variance with momentum);
4. outputs ``loss``, ``logits`` and one ``state:<p>`` per updated parameter or slot.

The CPU backend keeps every parameter and slot in the weights blob as **training state** (``Lowering(state=...)``):
weights are packed for the kernels at run time by a gather (:meth:`~cnncc.codegen.lower.Lowering.packed`), and each
``state:<p>`` output is written over ``p`` at the end of the step, so a step changes the model in place and nothing
is copied in or out but the batch, the loss and the logits. The arena is planned across forward and backward; the
values the backward pass reads from the forward pass (the saved activations) are reported, and ``recompute=True``
re-runs cheap forward ops (activations, pooling, batch-norm) in the backward pass instead of keeping their outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncc.autodiff import GRAD_PREFIX, grad
from cnncc.errors import CnnccError, InputError
from cnncc.ir import DType, Graph, GraphBuilder, Node, Value, ValueKind
from cnncc.ops.registry import draws_random, ops_where
from cnncc.optim import SGD, Optimizer
from cnncc.program import STATE_PREFIX

LOSSES = ("cross_entropy", "nll", "mse")


def slot_name(slot: str, param: str) -> str:
    return f"{slot}@{param}"


@dataclass
class TrainingGraph:
    """A training step as a graph: what runs, what it updates, and how big its saved activations are."""

    graph: Graph
    state: tuple[str, ...]  # every parameter the step updates (weights, optimiser slots, running statistics)
    slots: dict[str, tuple[int, ...]]  # optimiser slot -> shape (they start at zero)
    forward_nodes: int  # the first nodes of ``graph`` are the forward pass (and the loss)
    saved: dict[str, int] = field(default_factory=dict)  # forward value read by the backward pass -> bytes

    @property
    def saved_bytes(self) -> int:
        return sum(self.saved.values())


def _loss_node(b: GraphBuilder, logits: Value, loss: str) -> tuple[Value, Value]:
    from cnncc.ops.cross_entropy import CrossEntropyAttrs
    from cnncc.ops.mse import MseAttrs
    from cnncc.ops.nll import NllAttrs

    n = logits.shape[0]
    if loss == "mse":
        target = b.input("labels", logits.shape, logits.dtype)
        return target, b.apply("mse", [logits, target], MseAttrs(), layer="loss")
    if len(logits.shape) != 2:
        raise CnnccError(f"training: {loss} needs logits of shape (N, classes); the model's output has shape "
                         f"{logits.shape}")
    labels = b.input("labels", (n,), DType.INT64)
    if loss == "cross_entropy":
        return labels, b.apply("cross_entropy", [logits, labels], CrossEntropyAttrs(), layer="loss")
    return labels, b.apply("nll", [logits, labels], NllAttrs(), layer="loss")


def _dropout_salted(attrs: Any, layer: str) -> Any:
    """A training dropout's attributes with its salt (the ``seed`` attribute, see cnncc.ops.dropout) made per layer:
    63 bits of BLAKE2b(layer name, seed attribute), so the dropout layers of a model draw different masks even when
    they share a seed attribute (the DSL's default is 0). The mask of a step is fixed by the ``seed`` input."""
    import dataclasses
    import hashlib

    digest = hashlib.blake2b(f"{layer}\0{attrs.seed}".encode(), digest_size=8).digest()
    return dataclasses.replace(attrs, seed=int.from_bytes(digest, "little") >> 1)


def with_loss(model_graph: Graph, loss: str) -> Graph:
    """``model_graph`` with a ``labels`` input and the ``loss`` on its output; outputs ``loss`` and ``logits``."""
    if loss not in LOSSES:
        raise CnnccError(f"training: unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
    if len(model_graph.outputs) != 1:
        raise CnnccError(f"training: model '{model_graph.name}' has {len(model_graph.outputs)} outputs; training "
                         "needs one (the logits)")
    b = GraphBuilder(f"{model_graph.name}_train")
    m = b.copy_inputs(model_graph)
    seed: Value | None = None  # training dropout: a per-step run-time seed operand and a per-layer salt
    for node in model_graph.nodes:
        ins, attrs = [m[v] for v in node.inputs], node.attrs
        if draws_random(node.op, attrs) and len(ins) == 1:
            seed = b.input("seed", (), DType.INT64) if seed is None else seed
            ins, attrs = [*ins, seed], _dropout_salted(attrs, node.layer)
        m.update(zip(node.outputs, b.apply_multi(node.op, ins, attrs, node.layer), strict=True))
    logits = m[model_graph.outputs[0]]
    _, loss_v = _loss_node(b, logits, loss)
    b.output(loss_v, "loss")
    b.output(logits, "logits")
    return b.build()


def _recompute_order(g: Graph, forward: int, ops: Sequence[str]) -> list[tuple[Node, bool]]:
    """The nodes in execution order, with cheap forward nodes whose outputs the backward pass reads repeated
    (``True``) just before their first backward reader. A repeated node's recomputable producers are repeated with
    it (relu after batch-norm after nothing but the saved conv output), so only the ends of cheap chains are saved."""
    back_users: dict[Value, int] = {}
    for i, n in enumerate(g.nodes[forward:], forward):
        for v in n.inputs:
            back_users.setdefault(v, i)
    cheap = [n for n in g.nodes[:forward] if n.op in ops]
    need: dict[int, int] = {}  # id(node) -> index of the backward node before which it is recomputed
    for n in reversed(cheap):  # consumers first, so a producer inherits their (earlier) need
        uses = [back_users[o] for o in n.outputs if o in back_users]
        uses += [need[id(c)] for c in cheap if id(c) in need and any(o in c.inputs for o in n.outputs)]
        if uses:
            need[id(n)] = min(uses)
    repeat: dict[int, list[Node]] = {}
    for n in cheap:
        if id(n) in need:
            repeat.setdefault(need[id(n)], []).append(n)
    order: list[tuple[Node, bool]] = [(n, False) for n in g.nodes[:forward]]
    for i, n in enumerate(g.nodes[forward:], forward):
        # each list follows ``cheap``, a subsequence of the forward order, so it is already topological
        order.extend((r, True) for r in repeat.get(i, []))
        order.append((n, False))
    return order


def training_graph(model_graph: Graph, loss: str = "cross_entropy", optimizer: Optimizer | None = None,
                   recompute: bool | Sequence[str] = False) -> TrainingGraph:
    """The training step of ``model_graph`` (a training-mode graph: ``model.graph(batch, training=True)``)."""
    optimizer = SGD() if optimizer is None else optimizer
    fwd = with_loss(model_graph, loss)
    g = grad(fwd, loss_output="loss")
    forward = len(fwd.nodes)
    b = GraphBuilder(f"{model_graph.name}_step")
    m = b.copy_inputs(g)
    scalars = {name: b.input(name, (), DType.FLOAT32) for name in optimizer.scalars}
    # recompute=True: the forward ops cheap enough to run twice (``OpTraits.recomputable``)
    ops = ops_where(lambda t: t.recomputable) if recompute is True else tuple(recompute or ())
    order = _recompute_order(g, forward, ops) if ops else [(n, False) for n in g.nodes]
    again: dict[Value, Value] = {}  # forward value -> its recomputed copy (read by the backward nodes after it)
    forward_ids = {id(n) for n in g.nodes[:forward]}
    for n, repeated in order:
        backward = repeated or id(n) not in forward_ids
        ins = [again.get(v, m[v]) if backward else m[v] for v in n.inputs]
        outs = b.apply_multi(n.op, ins, n.attrs, n.layer + (".recompute" if repeated else ""))
        (again if repeated else m).update(zip(n.outputs, outs, strict=True))
    outputs = dict(zip(g.output_names, g.outputs, strict=True))
    b.output(m[outputs["loss"]], "loss")
    b.output(m[outputs["logits"]], "logits")

    state: list[str] = []
    slots: dict[str, tuple[int, ...]] = {}
    for p in g.params:
        if not p.trainable:
            continue
        gname = GRAD_PREFIX + p.name
        slot_vals = []
        for slot in optimizer.state:
            name = slot_name(slot, p.name)
            slot_vals.append(b.param(name, p.shape, p.dtype, trainable=False))
            slots[name] = p.shape
        news = b.apply_multi(optimizer.op, [m[p], m[outputs[gname]], *scalars.values(), *slot_vals],
                             optimizer.attrs, layer=f"{p.name}.update")
        for name, v in zip([p.name, *(s.name for s in slot_vals)], news, strict=True):
            b.output(v, STATE_PREFIX + name)
            state.append(name)
    state.extend(_running_stats(b, g, m, forward))
    built = b.build()
    train = TrainingGraph(built, tuple(state), slots, forward)
    train.saved = saved_activations(built, forward)
    return train


def _running_stats(b: GraphBuilder, g: Graph, m: dict[Value, Value], forward: int) -> list[str]:
    from cnncc.ops.batch_norm_stats import BatchNormStatsAttrs

    names: list[str] = []
    for n in g.nodes[:forward]:
        if n.op != "batch_norm" or not n.attrs.training:
            continue
        x, _, _, rm, rv = n.inputs
        if rm.kind is not ValueKind.PARAM or rv.kind is not ValueKind.PARAM:
            continue
        new_m, new_v = b.apply_multi("batch_norm_stats", [m[x], m[rm], m[rv]], BatchNormStatsAttrs(n.attrs.momentum),
                                     layer=f"{n.layer}.stats")
        b.output(new_m, STATE_PREFIX + rm.name)
        b.output(new_v, STATE_PREFIX + rv.name)
        names += [rm.name, rv.name]
    return names


def saved_activations(g: Graph, forward: int) -> dict[str, int]:
    """Forward values (computed ones, and the graph inputs) that a backward node reads: what must stay in memory
    from the forward pass to the backward pass, by value name, in bytes at the compiled batch."""
    fwd: set[Value] = set(g.inputs)
    for n in g.nodes[:forward]:
        fwd.update(n.outputs)
    saved: dict[str, int] = {}
    for n in g.nodes[forward:]:
        for v in n.inputs:
            if v in fwd and v.kind is not ValueKind.PARAM:
                name = v.name if v.node is None else f"{v.node.layer}:{v.node.op}" + (f"#{v.index}" if v.index else "")
                saved.setdefault(name, v.type.nbytes)
    return saved


# -- the trainer ------------------------------------------------------------------------------------------------


@dataclass
class StepStats:
    """Sizes of a compiled training step (bytes at the compiled batch)."""

    saved_activation_bytes: int
    arena_bytes: int
    arena_lower_bound: int
    state_bytes: int
    compile_s: float


class Trainer:
    """A model compiled for training: ``loss = trainer.step(x, y)`` runs one forward, backward and update in native
    code and changes the weights in place; :meth:`evaluate` and :meth:`predict` run the current weights through the
    inference compiler; :meth:`weights` / :meth:`export` give them back in the DSL's format."""

    def __init__(self, model: Any, batch: int, loss: str = "cross_entropy", optimizer: Optimizer | None = None,
                 threads: int | None = None, cpu: str = "host", recompute: bool | Sequence[str] = False,
                 algorithms: str | Sequence[str] | Mapping[str, str] | None = None) -> None:
        from cnncc.driver import compile_training_step

        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise CnnccError(f"compile_training: batch must be a positive integer, got {batch!r}")
        self.model, self.batch, self.loss, self.cpu = model, batch, loss, cpu
        self.optimizer = SGD() if optimizer is None else optimizer
        self.threads = threads
        t0 = time.perf_counter()
        self.train = training_graph(model.graph(batch, training=True), loss, self.optimizer, recompute)
        params = dict(model.params)
        for name, shape in self.train.slots.items():
            params[name] = np.zeros(shape, np.float32)
        # every convolution's algorithm, forward and backward data (and why); with algorithms=None the FFT, whose
        # filters are transformed at compile time only, is not applicable to weights that change at every step
        self.compiled, self.choices = compile_training_step(self.train.graph, params, self.train.state, cpu, threads,
                                                            algorithms)
        self.lr = float(self.optimizer.lr)
        self.steps = 0
        self.seed_base = 0  # training dropout's run-time seed at step k is seed_base + k (the ``seed`` input)
        stats = self.compiled.stats
        self.stats = StepStats(self.train.saved_bytes, stats.arena_bytes, stats.lower_bound,
                               sum(math.prod(self.compiled.state_shape(n)) * 4 for n in self.train.state),
                               time.perf_counter() - t0)
        self._eval: dict[int, Any] = {}

    # -- training -----------------------------------------------------------------------------------------------
    def _feeds(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        name = self.train.graph.inputs[0].name
        want = self.train.graph.inputs[0].shape
        if not isinstance(x, np.ndarray) or x.shape != want:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise InputError(f"trainer '{self.model.name}': a step takes exactly the compiled batch: x of shape "
                             f"{want}, got {got} (drop or pad the last partial batch)")
        feeds = {name: np.ascontiguousarray(x, np.float32),
                 "labels": np.ascontiguousarray(y, np.int64 if self.loss != "mse" else np.float32)}
        feeds["lr"] = np.array(self.lr, np.float32)
        if "step" in self.optimizer.scalars:
            feeds["step"] = np.array(self.steps + 1, np.float32)
        if any(v.name == "seed" for v in self.train.graph.inputs):  # a new dropout mask every step
            feeds["seed"] = np.array(self.seed_base + self.steps, np.int64)
        return feeds

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on a batch; returns the loss before the update."""
        out = self.compiled.run(self._feeds(x, y), check_finite=False)
        self.steps += 1
        return float(out["loss"].reshape(-1)[0])

    def step_logits(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`step`, also returning the logits of the batch (the training accuracy is free)."""
        out = self.compiled.run(self._feeds(x, y), check_finite=False)
        self.steps += 1
        return float(out["loss"].reshape(-1)[0]), out["logits"]

    # -- weights ------------------------------------------------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        """The model's parameters (weights, biases, running statistics) as they are now, by name (copies)."""
        return {name: self.compiled.state_array(name) if name in self.train.state else np.array(value)
                for name, value in self.model.params.items()}

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return {name: self.compiled.state_array(name) for name in self.train.slots}

    def sync(self) -> None:
        """Write the current weights into the DSL model (``model.params``), e.g. before ``model.save_weights``."""
        self.model.set_weights(self.weights(), source="trainer")

    def export(self, path: str) -> None:
        """Save the current weights as the DSL's ``.npz`` (``model.load_weights(path)`` reads it back)."""
        from cnncc.frontend.weights import save_npz

        save_npz(path, self.weights())

    # -- inference ----------------------------------------------------------------------------------------------
    def _inference(self, batch: int) -> Any:
        from cnncc.api import compile as compile_model

        return compile_model(self.model.graph(batch), params=self.weights(), threads=self.threads, cpu=self.cpu)

    def predict(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Logits of ``x`` under the current weights (inference mode: running statistics, no dropout)."""
        batch = min(batch, len(x))
        compiled = self._inference(batch)
        outs = [compiled(np.ascontiguousarray(x[i:i + batch], np.float32)) for i in range(0, len(x), batch)]
        return np.concatenate(outs)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int = 256) -> tuple[float, float]:
        """(mean loss, accuracy) of the current weights on ``x``, ``y`` (class labels)."""
        logits = self.predict(x, batch).astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-logp[np.arange(len(y)), y].mean())
        return loss, float((logits.argmax(axis=1) == y).mean())

    def __repr__(self) -> str:
        return (f"<Trainer '{self.model.name}' batch {self.batch}, {type(self.optimizer).__name__}, loss {self.loss}, "
                f"saved activations {self.stats.saved_activation_bytes:,} B, arena {self.stats.arena_bytes:,} B>")


def batches(n: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Index arrays of one shuffled epoch in full batches (the last partial batch is dropped, as PyTorch's
    ``drop_last=True``: a compiled step has one batch size; reshuffling each epoch uses every example)."""
    order = rng.permutation(n)
    for i in range(0, n - batch + 1, batch):
        yield order[i:i + batch]


def compile_training(model: Any, loss: str = "cross_entropy", optimizer: Optimizer | None = None, batch: int = 32,
                     threads: int | None = None, cpu: str = "host", recompute: bool | Sequence[str] = False,
                     algorithms: str | Sequence[str] | Mapping[str, str] | None = None) -> Trainer:
    """Compile ``model``'s training step: forward (training mode), ``loss``, backward and ``optimizer`` update as one
    native entry point. Returns a :class:`Trainer`. ``algorithms``: the forward convolutions' candidates (default:
    every registered algorithm that runs with weights changing at every step, chosen per layer by the cost model as
    in ``cnncc.compile``; ``"direct"`` for direct convolution only), or a mapping layer -> algorithm forcing those
    layers (:class:`cnncc.errors.AlgorithmError` if one does not apply). Backward-data convolutions are chosen by
    the cost model among the algorithms compiled for them."""
    return Trainer(model, batch, loss, optimizer, threads, cpu, recompute, algorithms)


__all__ = ["LOSSES", "StepStats", "Trainer", "TrainingGraph", "batches",
           "compile_training", "saved_activations", "training_graph", "with_loss"]
