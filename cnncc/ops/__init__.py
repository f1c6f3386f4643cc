"""The op registry and one module per op. Importing this package registers every op."""

from cnncc.ops import relu  # noqa: F401  (registration)
from cnncc.ops.registry import NoAttrs, OpDef, Where, all_ops, get_op, register

__all__ = ["NoAttrs", "OpDef", "Where", "all_ops", "get_op", "register"]
