"""cnncc's user-facing error types.

Every message names *where* (layer or op), *which rule* was broken, and the *values* seen against those expected,
so that a wrong network fails where it is written.  No bare ``assert`` guards user input anywhere in cnncc.
"""

from __future__ import annotations


class CnnccError(Exception):
    """Base class of every error cnncc raises on purpose."""


class ShapeError(CnnccError):
    """An op's shape/dtype rule rejected its inputs or attributes.

    The message reads ``layer '<layer>' (<op>): <rule>: <values>``.
    """

    def __init__(self, layer: str, op: str, rule: str, detail: str) -> None:
        self.layer, self.op, self.rule, self.detail = layer, op, rule, detail
        super().__init__(f"layer '{layer}' ({op}): {rule}: {detail}")


class AlgorithmError(CnnccError):
    """A convolution algorithm was forced on (or hand-set in the IR for) a layer it cannot compute.

    The message reads ``layer '<layer>': <algorithm> does not apply: <rule, with the values>``, e.g.
    ``layer 'conv1': winograd4 does not apply: kernel 7x7: Winograd F(m, 3x3) needs a 3x3 kernel``.
    """

    def __init__(self, layer: str, algorithm: str, rule: str) -> None:
        self.layer, self.algorithm, self.rule = layer, algorithm, rule
        super().__init__(f"layer '{layer}': {algorithm} does not apply: {rule}")


class OpAttributeError(CnnccError):
    """An op attribute is malformed (a negative stride, an unknown activation name, ...)."""


class GraphError(CnnccError):
    """The graph is malformed: use before definition, an unknown value, a duplicate name."""


class WeightsError(CnnccError):
    """A weights file or state dict does not match the model (missing, unexpected or mis-shaped arrays)."""


class ModelError(CnnccError):
    """A model cannot be found or loaded (unknown zoo name, missing file, no ``model()`` function)."""


class InputError(CnnccError):
    """Run-time inputs do not match the graph (name, shape, dtype)."""
