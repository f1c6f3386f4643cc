"""Tensor types of the graph IR: shape, dtype and layout, all immutable."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """Element types. Float ops run in float32 or float64; int64 carries class labels."""

    FLOAT32 = "f32"
    FLOAT64 = "f64"
    INT64 = "i64"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype({"f32": np.float32, "f64": np.float64, "i64": np.int64}[self.value])

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT32, DType.FLOAT64)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @staticmethod
    def of(x: object) -> DType:
        """The DType of a numpy dtype, a DType, or a name such as ``"float32"``."""
        if isinstance(x, DType):
            return x
        dt = np.dtype(x)  # type: ignore[call-overload]
        table = {np.dtype(np.float32): DType.FLOAT32, np.dtype(np.float64): DType.FLOAT64,
                 np.dtype(np.int64): DType.INT64}
        if dt not in table:
            from cnncc.errors import CnnccError

            raise CnnccError(f"unsupported dtype {dt}: cnncc supports float32, float64 and int64")
        return table[dt]


class Layout(enum.Enum):
    """How the axes of a tensor are laid out in memory.

    The graph normalises image tensors to NCHW: an NHWC graph input (Keras ``channels_last``) is converted by an
    explicit ``transpose`` node at the edge. ``PLAIN`` is any non-image tensor (vectors, matrices, scalars).
    Blocked layouts (NCHW16c) are introduced by the layout pass of a later issue.
    """

    PLAIN = "plain"
    NCHW = "NCHW"
    NHWC = "NHWC"


@dataclass(frozen=True)
class TensorType:
    """Static type of an SSA value."""

    shape: tuple[int, ...]
    dtype: DType = DType.FLOAT32
    layout: Layout = Layout.PLAIN

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) if self.shape else "scalar"
        lay = "" if self.layout is Layout.PLAIN else f",{self.layout.value}"
        return f"{dims}:{self.dtype.value}{lay}"


def image_type(shape: tuple[int, ...], dtype: DType = DType.FLOAT32) -> TensorType:
    """A rank-4 tensor in NCHW, any other rank PLAIN: the layout rule most ops follow."""
    return TensorType(tuple(shape), dtype, Layout.NCHW if len(shape) == 4 else Layout.PLAIN)
