"""Full-model gradients, compiled: ``grad()`` of a zoo model's training graph plus cross-entropy, lowered to native
code (direct convolutions, backward kernels, train-mode batch-norm, dropout with the step's run-time seed),
against PyTorch autograd on the model's twin with the same weights and the same dropout masks, in float64.

The discrete decisions of the forward pass are matched too. A ReLU input or a max-pool candidate that lies within
float32 rounding of its rival goes either way in any two float32 implementations, and each flip moves a whole
gradient term: measured on ResNet-18 (batch 2, seeds 0-3), PyTorch float32's own gradients are 5e-3-1e-1 away
from float64 on some parameter in every seed; on VGG-11, cnncc's compiled forward (its convolutions accumulate
each output in one float32 chain: 2.6e-6 relative error at pool4, numpy's blocked sums 7.8e-7) flips one pool4
window against float64 on seed 1, and then conv4_2's weight gradient is 3.5e-4 off while its bias gradient (the
same dy values, moved within the window) stays at 3e-6. So the float64 twin takes cnncc's decisions: every
``relu`` keeps the elements whose compiled float32 input is > 0, every ``max_pool2d`` picks the compiled argmax
(first maximum), read from a probe compilation of the forward graph with those inputs as outputs (same kernels,
same values). The gradients then agree to ``TOL_F32_MODEL`` (1e-4 relative to each tensor's largest element)
for every parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from cnncc.autodiff import grad
from cnncc.driver import compile_graph
from cnncc.frontend.models import get_model
from cnncc.ir import Graph, GraphBuilder, Value
from cnncc.ops.dropout import DropoutAttrs, keep_mask
from cnncc.ops.max_pool2d import max_pool2d_indices
from cnncc.testing import TOL_F32_MODEL, randomize, rel_error
from cnncc.testing.twins import TWINS
from cnncc.training import with_loss

CASES = {"lenet5": 4, "alexnet": 2, "vgg11": 2, "resnet18": 2}  # model -> batch
RUN_SEED = 5  # the training step's dropout seed (the run-time operand)


def match_dropout(twin: torch.nn.Module, graph: Graph, run_seed: int) -> None:
    """Each twin dropout module applies the mask of the graph's dropout node of the same layer (its p, its salt and
    the run-time seed)."""
    attrs = {n.layer: n.attrs for n in graph.nodes if n.op == "dropout" and len(n.inputs) == 2}
    modules = {name: m for name, m in twin.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert set(modules) == set(attrs)

    def hook_for(a: DropoutAttrs) -> Callable[..., torch.Tensor]:
        def hook(m: torch.nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            mask = keep_mask(tuple(inputs[0].shape), a.p, a.seed, run_seed)
            return inputs[0] * torch.from_numpy(mask).to(inputs[0].dtype) / (1 - a.p)

        return hook

    for name, m in modules.items():
        m.register_forward_hook(hook_for(attrs[name]))


def compiled_decisions(fwd: Graph, params: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """For each relu / max_pool2d node of ``fwd`` in order: the compiled forward pass's keep mask / argmax indices."""
    b = GraphBuilder("decisions")
    m: dict[Value, Value] = {}
    for v in fwd.inputs:
        m[v] = b.input(v.name, v.shape, v.dtype, v.type.layout)
    for p in fwd.params:
        m[p] = b.param(p.name, p.shape, p.dtype)
    probes = []
    for node in fwd.nodes:
        m.update(zip(node.outputs, b.apply_multi(node.op, [m[v] for v in node.inputs], node.attrs, node.layer),
                     strict=True))
        if node.op in ("relu", "max_pool2d"):
            b.output(m[node.inputs[0]], f"probe{len(probes)}")
            probes.append(node)
    b.output(m[fwd.outputs[0]], "loss")
    out = compile_graph(b.build(), params, "host", threads=2).run(feeds)
    return [out[f"probe{k}"] > 0 if node.op == "relu" else max_pool2d_indices(out[f"probe{k}"], node.attrs)
            for k, node in enumerate(probes)]


class Decisions(TorchFunctionMode):
    """Replays the compiled decisions in the twin: the k-th relu / max-pool call uses the k-th mask / argmax."""

    def __init__(self, decisions: list[np.ndarray]) -> None:
        super().__init__()
        self.todo = list(decisions)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in (torch.relu, F.relu):
            x = args[0]
            keep = self.todo.pop(0)
            assert keep.shape == tuple(x.shape) and keep.dtype == np.bool_
            return x * torch.from_numpy(keep).to(x.dtype)
        if getattr(func, "__name__", "") in ("max_pool2d", "_max_pool2d"):
            x = args[0]
            index = self.todo.pop(0)
            assert index.dtype == np.int64 and index.shape[:2] == tuple(x.shape[:2])
            flat = torch.from_numpy(index).reshape(*index.shape[:2], -1)
            return x.flatten(2).gather(2, flat).reshape(index.shape)
        return func(*args, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_compiled_model_gradients_match_pytorch(name: str) -> None:
    n, seed = CASES[name], 0
    model = get_model(name)
    params = randomize(model, 0) if name.startswith("resnet") else dict(model.params)
    fwd = with_loss(model.graph(n, training=True), "cross_entropy")
    graph = grad(fwd, loss_output="loss")
    compiled = compile_graph(graph, params, "host", threads=2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(graph.inputs[0].shape).astype(np.float32)
    y = rng.integers(0, graph.outputs[graph.output_names.index("logits")].shape[1], n)
    feeds = {graph.inputs[0].name: x, "labels": y}
    if "seed" in compiled.input_names:
        feeds["seed"] = np.array(RUN_SEED, np.int64)
    out = compiled.run(feeds)

    decisions = compiled_decisions(fwd, params, feeds)
    twin = TWINS[name]().double().train()
    twin.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in params.items()})
    match_dropout(twin, fwd, RUN_SEED)
    mode = Decisions(decisions)
    with mode:
        logits = twin(torch.from_numpy(x.astype(np.float64)))
    assert not mode.todo  # every decision was replayed, in order
    loss = F.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    assert abs(float(out["loss"]) - loss.item()) <= TOL_F32_MODEL * abs(loss.item())
    for key, p in twin.named_parameters():
        assert rel_error(out["grad:" + key], p.grad.numpy()) <= TOL_F32_MODEL, key
