"""Optimisers and learning-rate schedules: what a training step needs to emit its update nodes.

Each optimiser is a frozen dataclass of hyperparameters that names its update op (``cnncc/ops/*_update.py``), the
op's attributes and the state tensors it keeps per parameter (all starting at zero, each of the parameter's shape).
The learning rate is not an attribute of the op: it is a run-time scalar operand, so a schedule can change it every
step without recompiling; ``lr`` here is the base rate a schedule starts from.

Conventions, from the seeds (SEEDS-DIGEST §4.3):

* SGD ``θ = θ − η·∇θ J`` (seed 000 L737-777); momentum ``v = mu*v − learning_rate*dx; x += v`` with mu around 0.9
  and Nesterov's look-ahead form (seed 004 L364-417). cnncc uses PyTorch's equivalent form ``v = mu*v + g; p -= lr*v``
  (identical iterates for a constant learning rate; see ``cnncc/ops/sgd_update.py``).
* AdaGrad ``cache += dx**2; x += -lr * dx / (sqrt(cache) + eps)``, RMSprop ``cache = decay_rate*cache + (1 -
  decay_rate)*dx**2``, Adam with bias correction and ``t`` counted from 1, defaults beta1 0.9, beta2 0.999, eps
  1e-8; eps always outside the square root (seed 004 L451-511).
* Weight decay is the seeds' "λw in the update" form of L2 regularisation (AlexNet 5e-4, ResNet 1e-5), added to the
  gradient as PyTorch does (not AdamW's decoupled decay, which the seeds do not give).
* Learning-rate annealing (seed 004 L419-429): step decay ("by a half every 5 epochs, or by 0.1 every 20 epochs"),
  exponential ``α = α0·e^{−kt}`` and 1/t decay ``α = α0/(1 + kt)``, ``t`` the iteration or epoch. Here ``t`` counts
  from 0, so ``schedule.lr(0)`` is the base rate (PyTorch's ``StepLR``, ``ExponentialLR`` with ``gamma = e^{−k}``
  and ``LambdaLR`` give the same sequences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from cnncc.errors import CnnccError
from cnncc.ops.adagrad_update import AdagradAttrs
from cnncc.ops.adam_update import AdamAttrs
from cnncc.ops.registry import UpdateOperands, traits
from cnncc.ops.rmsprop_update import RmspropAttrs
from cnncc.ops.sgd_update import SgdAttrs

# -- optimisers ----------------------------------------------------------------------------------------------------


def _update_operands(op: str) -> UpdateOperands:
    """The scalar and state operands of the update op ``op`` (its ``OpTraits.update``)."""
    update = traits(op).update
    if update is None:
        raise CnnccError(f"op '{op}' is not an optimiser update")
    return update


def _check_lr(name: str, lr: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr < 0:
        raise CnnccError(f"{name}: lr must be a finite number >= 0, got {lr!r}")


class Optimizer(Protocol):
    """What every optimiser offers a training compiler."""

    op: ClassVar[str]

    @property
    def lr(self) -> float: ...  # read-only: the optimisers are frozen dataclasses (a schedule sets the step's lr)

    @property
    def attrs(self) -> Any: ...

    @property
    def state(self) -> tuple[str, ...]: ...

    @property
    def scalars(self) -> tuple[str, ...]: ...


class _Base:
    op: ClassVar[str]
    lr: float

    def __post_init__(self) -> None:
        _check_lr(type(self).__name__, self.lr)
        self.check()

    def check(self) -> None:
        """Validate the attributes through the op's own shape rule (same messages as building the node)."""
        from cnncc.ir.types import TensorType
        from cnncc.ops import get_op

        opdef = get_op(self.op)
        t = TensorType((1,))
        types = [t, t, *(TensorType(()) for _ in self.scalars), *(t for _ in self.state)]
        opdef.infer_types(types, self.attrs, type(self).__name__)

    @property
    def attrs(self) -> Any:
        raise NotImplementedError

    @property
    def state(self) -> tuple[str, ...]:
        """Names of the per-parameter state tensors (operands after the scalars, results after the parameter)."""
        return _update_operands(self.op).state(self.attrs)

    @property
    def scalars(self) -> tuple[str, ...]:
        """Run-time scalar operands after ``(param, grad)``: ``("lr",)``, Adam ``("lr", "step")``."""
        return _update_operands(self.op).scalars


@dataclass(frozen=True)
class SGD(_Base):
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    op: ClassVar[str] = "sgd_update"

    @property
    def attrs(self) -> SgdAttrs:
        return SgdAttrs(self.momentum, self.nesterov, self.weight_decay)


@dataclass(frozen=True)
class Adagrad(_Base):
    lr: float = 0.01
    eps: float = 1e-10
    weight_decay: float = 0.0
    op: ClassVar[str] = "adagrad_update"

    @property
    def attrs(self) -> AdagradAttrs:
        return AdagradAttrs(self.eps, self.weight_decay)


@dataclass(frozen=True)
class RMSprop(_Base):
    lr: float = 0.01
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    op: ClassVar[str] = "rmsprop_update"

    @property
    def attrs(self) -> RmspropAttrs:
        return RmspropAttrs(self.alpha, self.eps, self.weight_decay)


@dataclass(frozen=True)
class Adam(_Base):
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    op: ClassVar[str] = "adam_update"

    @property
    def attrs(self) -> AdamAttrs:
        return AdamAttrs(self.beta1, self.beta2, self.eps, self.weight_decay)


# -- learning-rate schedules ---------------------------------------------------------------------------------------


class Schedule(Protocol):
    def lr(self, t: int) -> float: ...


def _check_t(t: int) -> None:
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise CnnccError(f"schedule: t must be an integer >= 0 (step or epoch index from 0), got {t!r}")


def _check_nonneg(schedule: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise CnnccError(f"{schedule}: {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Constant:
    """``lr(t) = lr0``."""

    lr0: float

    def __post_init__(self) -> None:
        _check_nonneg("constant", "lr0", self.lr0)

    def lr(self, t: int) -> float:
        _check_t(t)
        return float(self.lr0)


@dataclass(frozen=True)
class Step:
    """Step decay ``lr(t) = lr0 * gamma ** (t // step_size)`` (PyTorch's ``StepLR``; the seeds: ×0.5 every 5
    epochs, ×0.1 every 20)."""

    lr0: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_nonneg("step", "lr0", self.lr0)
        _check_nonneg("step", "gamma", self.gamma)
        if isinstance(self.step_size, bool) or not isinstance(self.step_size, int) or self.step_size < 1:
            raise CnnccError(f"step: step_size must be an integer >= 1, got {self.step_size!r}")

    def lr(self, t: int) -> float:
        _check_t(t)
        return float(self.lr0 * self.gamma ** (t // self.step_size))


@dataclass(frozen=True)
class Exponential:
    """``lr(t) = lr0 * exp(-k t)`` (PyTorch's ``ExponentialLR`` with ``gamma = exp(-k)``)."""

    lr0: float
    k: float

    def __post_init__(self) -> None:
        _check_nonneg("exponential", "lr0", self.lr0)
        _check_nonneg("exponential", "k", self.k)

    def lr(self, t: int) -> float:
        _check_t(t)
        return float(self.lr0 * math.exp(-self.k * t))


@dataclass(frozen=True)
class InverseTime:
    """1/t decay ``lr(t) = lr0 / (1 + k t)``."""

    lr0: float
    k: float

    def __post_init__(self) -> None:
        _check_nonneg("inverse_time", "lr0", self.lr0)
        _check_nonneg("inverse_time", "k", self.k)

    def lr(self, t: int) -> float:
        _check_t(t)
        return float(self.lr0 / (1.0 + self.k * t))


def constant(lr0: float) -> Constant:
    return Constant(lr0)


def step(lr0: float, step_size: int, gamma: float = 0.1) -> Step:
    return Step(lr0, step_size, gamma)


def exponential(lr0: float, k: float) -> Exponential:
    return Exponential(lr0, k)


def inverse_time(lr0: float, k: float) -> InverseTime:
    return InverseTime(lr0, k)


__all__ = ["SGD", "Adagrad", "Adam", "Constant", "Exponential", "InverseTime", "Optimizer", "RMSprop", "Schedule",
           "Step", "constant", "exponential", "inverse_time", "step"]
