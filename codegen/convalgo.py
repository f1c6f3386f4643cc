"""The convolution algorithms of the CPU backend: what each one needs of a layer, and a layer's signature.

An algorithm that does not apply to a layer says why (:func:`why_not`), and the lowering falls back to direct
convolution: selection never picks it, and a hand-set ``impl`` that does not apply still compiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncc.ir import Node
from cnncc.ops.conv2d import ALGORITHMS, Conv2dAttrs, ConvImpl


@dataclass(frozen=True)
class ConvShape:
    """What decides a convolution's algorithms and cost: shapes and attributes, not weights or names."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    oh: int
    ow: int

    @staticmethod
    def of(node: Node) -> ConvShape:
        a = conv_attrs(node)
        n, c, h, w = node.inputs[0].shape
        k, _, r, s = node.inputs[1].shape
        _, _, oh, ow = node.outputs[0].shape
        return ConvShape(n, c, h, w, k, r, s, tuple(a.stride), tuple(a.padding), tuple(a.dilation), a.groups, oh, ow)

    @property
    def macs(self) -> int:
        return self.n * self.k * self.oh * self.ow * (self.c // self.groups) * self.r * self.s

    def signature(self) -> str:
        """Stable text key (the tuning database's). A fused epilogue is not part of it: it costs every algorithm
        the same few vector operations per output."""
        return (f"conv2d n{self.n} c{self.c} {self.h}x{self.w} k{self.k} {self.r}x{self.s} s{self.stride[0]}x"
                f"{self.stride[1]} p{'/'.join(map(str, self.padding))} d{self.dilation[0]}x{self.dilation[1]} "
                f"g{self.groups}")

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.c == self.groups and self.k == self.c


def conv_attrs(node: Node) -> Conv2dAttrs:
    return node.attrs.conv if node.op == "fused_conv2d" else node.attrs


def impl_of(node: Node) -> ConvImpl:
    return conv_attrs(node).impl or ConvImpl()


def why_not(algorithm: str, cs: ConvShape) -> str | None:
    """None if ``algorithm`` can compute the layer, else the rule it breaks (in words, with the values)."""
    if algorithm not in ALGORITHMS:
        return f"unknown algorithm '{algorithm}'"
    if algorithm == "direct":
        return None
    if cs.groups > 1:
        return f"groups={cs.groups}: only direct convolution runs grouped and depthwise layers"
    if cs.dilation != (1, 1):
        return f"dilation {cs.dilation}: needs dilation 1"
    if algorithm == "im2col":
        return None
    if algorithm.startswith("winograd"):
        if (cs.r, cs.s) != (3, 3):
            return f"kernel {cs.r}x{cs.s}: Winograd F(m, 3x3) needs a 3x3 kernel"
        if cs.stride != (1, 1):
            return f"stride {cs.stride}: Winograd needs stride 1"
        return None
    tile = int(algorithm[3:])
    if max(cs.r, cs.s) < 3:
        return f"kernel {cs.r}x{cs.s}: FFT needs a kernel of at least 3x3"
    if tile < max(cs.r, cs.s) + max(cs.stride):
        return f"kernel {cs.r}x{cs.s} stride {cs.stride}: an FFT tile of {tile} leaves too few outputs per tile"
    return None
