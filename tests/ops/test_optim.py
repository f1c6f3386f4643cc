"""The optimiser update ops and learning-rate schedules: numpy references (through the interpreter) vs torch.optim
over 10 steps, float32 and float64; attribute and operand errors with their exact messages; cnncc.optim."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
import torch

from cnncc import optim
from cnncc.errors import CnnccError, ShapeError
from cnncc.ir import GraphBuilder
from cnncc.ops import get_op
from cnncc.ops.adagrad_update import AdagradAttrs
from cnncc.ops.adam_update import AdamAttrs
from cnncc.ops.rmsprop_update import RmspropAttrs
from cnncc.ops.sgd_update import SgdAttrs
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_ELEMENTWISE, TOL_F64, rel_error, single_op_graph

DTYPES = [np.float32, np.float64]
STEPS = 10

# (cnncc optimiser, torch constructor, torch state names in cnncc's order)
CASES = {
    "sgd": (optim.SGD(lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), ()),
    "sgd_wd": (optim.SGD(lr=0.1, weight_decay=0.01), lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01), ()),
    "momentum": (optim.SGD(lr=0.05, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                 ("momentum_buffer",)),
    "nesterov_wd": (optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
                    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
                    ("momentum_buffer",)),
    "adagrad": (optim.Adagrad(lr=0.1), lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10), ("sum",)),
    "adagrad_wd": (optim.Adagrad(lr=0.1, weight_decay=0.1),
                   lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10, weight_decay=0.1), ("sum",)),
    "rmsprop": (optim.RMSprop(lr=0.01), lambda ps: torch.optim.RMSprop(ps, lr=0.01), ("square_avg",)),
    "rmsprop_wd": (optim.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1),
                   lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1),
                   ("square_avg",)),
    "adam": (optim.Adam(lr=1e-3), lambda ps: torch.optim.Adam(ps, lr=1e-3), ("exp_avg", "exp_avg_sq")),
    "adam_wd": (optim.Adam(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
                lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                ("exp_avg", "exp_avg_sq")),
}


def step_op(opt: Any, param: np.ndarray, grad: np.ndarray, lr: float, t: int,
            state: list[np.ndarray]) -> list[np.ndarray]:
    """One update node built for ``opt`` and run by the interpreter in ``param``'s dtype."""
    dt = param.dtype
    scalars = [np.asarray(lr, dt)] + ([np.asarray(t, dt)] if "step" in opt.scalars else [])
    g, inputs, params = single_op_graph(opt.op, [param, grad, *scalars, *state], opt.attrs)
    outs = interpret(g, inputs, params, dtype=dt.name)
    assert all(o.dtype == dt and o.shape == param.shape for o in outs.values())
    return list(outs.values())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", list(CASES))
def test_ten_steps_match_torch(case: str, dtype: type) -> None:
    opt, make, torch_state = CASES[case]
    rng = np.random.default_rng(zlib_seed(case))
    p0 = rng.standard_normal((3, 4, 5)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(STEPS)]
    assert len(opt.state) == len(torch_state)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = make([tp])
    param, state = p0.copy(), [np.zeros_like(p0) for _ in opt.state]
    tol = TOL_F64 if dtype == np.float64 else TOL_F32_ELEMENTWISE
    for t, grad in enumerate(grads, start=1):
        param, *state = step_op(opt, param, grad, opt.lr, t, state)
        tp.grad = torch.from_numpy(grad.copy())
        topt.step()
        assert rel_error(param, tp.detach().numpy()) <= tol, (case, t)
        for mine, name in zip(state, torch_state, strict=True):
            assert rel_error(mine, topt.state[tp][name].numpy()) <= tol, (case, t, name)


def zlib_seed(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lr_is_a_runtime_operand(dtype: type) -> None:
    """The same graph with another learning rate (a schedule's next value) needs no rebuild."""
    p, g = np.ones(4, dtype), np.full(4, 2.0, dtype)
    graph, inputs, _ = single_op_graph("sgd_update", [p, g, np.asarray(0.1, dtype)])
    for lr in (0.1, 0.5):
        out = interpret(graph, {**inputs, "x2": np.asarray(lr, dtype)}, dtype=np.dtype(dtype).name)["y0"]
        np.testing.assert_allclose(out, 1.0 - 2.0 * lr, rtol=1e-7)


def test_adam_first_step_seed_check() -> None:
    """seed 004's recipe: the bias-corrected first step with lr 1e-3 and gradient 0.5 is -0.00099999998."""
    p = np.zeros(1)
    new_p, m, v = step_op(optim.Adam(lr=1e-3), p, np.array([0.5]), 1e-3, 1, [np.zeros(1), np.zeros(1)])
    assert f"{new_p[0]:.11f}" == "-0.00099999998"
    assert m[0] == pytest.approx(0.05) and v[0] == pytest.approx(0.00025)


# -- schedules vs torch.optim.lr_scheduler ---------------------------------------------------------------------------

def _torch_lrs(make_sched: Any, lr0: float, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr0)
    sched = make_sched(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", ["constant", "step", "exponential", "inverse_time"])
def test_schedules_match_torch(name: str) -> None:
    lr0, k, n = 0.1, 0.3, 25
    ours, theirs = {
        "constant": (optim.constant(lr0), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0)),
        "step": (optim.step(lr0, 5, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 5, 0.5)),
        "exponential": (optim.exponential(lr0, k),
                        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, math.exp(-k))),
        "inverse_time": (optim.inverse_time(lr0, k),
                         lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1.0 + k * t))),
    }[name]
    want = _torch_lrs(theirs, lr0, n)
    got = [ours.lr(t) for t in range(n)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == lr0


def test_schedule_errors() -> None:
    with pytest.raises(CnnccError, match=re.escape("step: step_size must be an integer >= 1, got 0")):
        optim.step(0.1, 0)
    with pytest.raises(CnnccError, match=re.escape("exponential: k must be a finite number >= 0, got -1")):
        optim.exponential(0.1, -1)
    with pytest.raises(CnnccError, match=re.escape("schedule: t must be an integer >= 0 (step or epoch index from "
                                                   "0), got -1")):
        optim.constant(0.1).lr(-1)


# -- cnncc.optim: op, attributes and state names ---------------------------------------------------------------------

def test_optimizers_name_their_op_attrs_and_state() -> None:
    assert (optim.SGD().op, optim.SGD().state, optim.SGD().scalars) == ("sgd_update", (), ("lr",))
    assert optim.SGD(momentum=0.9, nesterov=True).attrs == SgdAttrs(0.9, True, 0.0)
    assert optim.SGD(momentum=0.9).state == ("velocity",)
    assert optim.Adagrad().state == ("sum",) and optim.Adagrad().attrs == AdagradAttrs()
    assert optim.RMSprop().state == ("square_avg",) and optim.RMSprop().attrs == RmspropAttrs()
    assert optim.Adam().state == ("m", "v") and optim.Adam().scalars == ("lr", "step")
    assert optim.Adam().attrs == AdamAttrs()
    with pytest.raises(CnnccError, match=re.escape("SGD: lr must be a finite number >= 0, got -0.1")):
        optim.SGD(lr=-0.1)


def test_flops() -> None:
    from cnncc.ir.types import TensorType

    t = TensorType((10,))
    assert get_op("sgd_update").flops([t], [t], SgdAttrs()) == 20
    assert get_op("sgd_update").flops([t], [t], SgdAttrs(0.9, True, 1e-4)) == 80
    assert get_op("adam_update").flops([t], [t], AdamAttrs()) == 140


# -- errors: exact messages ------------------------------------------------------------------------------------------

def _build(op: str, shapes: list[tuple[int, ...]], attrs: Any) -> None:
    b = GraphBuilder("g")
    vals = [b.input(f"x{i}", s) for i, s in enumerate(shapes)]
    b.apply_multi(op, vals, attrs, layer="upd")


P = (3, 4)
BAD = [
    ("sgd_update", [P, P, ()], SgdAttrs(nesterov=True),
     "layer 'upd' (sgd_update): nesterov: nesterov momentum needs momentum > 0, got momentum 0.0"),
    ("sgd_update", [P, P, ()], SgdAttrs(momentum=-0.5),
     "layer 'upd' (sgd_update): momentum: momentum must be a finite number >= 0, got -0.5"),
    ("sgd_update", [P, P, ()], SgdAttrs(momentum=0.9),
     "layer 'upd' (sgd_update): state operands: sgd_update with these attributes takes velocity; got 0 state "
     "operand(s) (3 operands in all)"),
    ("sgd_update", [P, P, (), P], SgdAttrs(),
     "layer 'upd' (sgd_update): state operands: sgd_update with these attributes takes no state operand; got 1 "
     "state operand(s) (4 operands in all)"),
    ("sgd_update", [P, P, ()], SgdAttrs(weight_decay=float("nan")),
     "layer 'upd' (sgd_update): weight_decay: weight_decay must be a finite number >= 0, got nan"),
    ("adagrad_update", [P, P, (), P], AdagradAttrs(eps=0.0),
     "layer 'upd' (adagrad_update): eps: eps must be a finite number > 0, got 0.0"),
    ("rmsprop_update", [P, P, (), P], RmspropAttrs(alpha=1.5),
     "layer 'upd' (rmsprop_update): alpha: alpha must be in [0, 1], got 1.5"),
    ("adam_update", [P, P, (), (), P, P], AdamAttrs(beta1=1.0),
     "layer 'upd' (adam_update): beta1: beta1 must be in [0, 1), got 1.0"),
    ("adam_update", [P, P, (), (), P, P], AdamAttrs(beta2=-0.1),
     "layer 'upd' (adam_update): beta2: beta2 must be in [0, 1), got -0.1"),
    ("adam_update", [P, P, (2,), (), P, P], AdamAttrs(),
     "layer 'upd' (adam_update): scalar operand: lr must be a scalar (shape () or (1,)), got shape (2,)"),
    ("adam_update", [P, P, (), (), P, (4, 3)], AdamAttrs(),
     "layer 'upd' (adam_update): operand shape: v has shape (4, 3) but param has shape (3, 4); they must match"),
    ("rmsprop_update", [P, (3, 5), (1,), P], RmspropAttrs(),
     "layer 'upd' (rmsprop_update): operand shape: grad has shape (3, 5) but param has shape (3, 4); they must "
     "match"),
    ("adagrad_update", [P, P, ()], AdagradAttrs(),
     "layer 'upd' (adagrad_update): operand count: expected 4 operands (param, grad, lr, sum), got 3"),
]


@pytest.mark.parametrize("op,shapes,attrs,message", BAD, ids=[m.split(": ")[1] + str(i) for i, (_, _, _, m) in
                                                             enumerate(BAD)])
def test_bad_attributes_and_operands(op: str, shapes: list, attrs: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=f"^{re.escape(message)}$"):
        _build(op, shapes, attrs)


def test_operand_dtypes_must_match() -> None:
    b = GraphBuilder("g")
    p = b.input("p", P, "float64")
    vals = [p, b.input("g", P), b.input("lr", ())]
    with pytest.raises(ShapeError, match=re.escape("operand dtype: dtypes must match: param is float64, grad is "
                                                   "float32, lr is float32")):
        b.apply_multi("sgd_update", vals, SgdAttrs(), layer="upd")
