"""Physical placement of a tensor: which buffer, and where element (n, c, h, w) lives in it.

One addressing rule covers every layout the CPU backend uses, in float elements:

    addr(n, c, h, w) = base + n*img + (c // cb)*cblk + (c % cb)*ci + h*row + w*col

* blocked NCHW{W}c (W = vector width, 16 with AVX-512): cb = W, ci = 1, col = W, row = Wp*W, cblk = Hp*Wp*W, with an
  optional zero halo of (top, bottom, left, right) pixels around each plane and channels padded to a multiple of W;
* plain NCHW: cb = C, ci = H*W, row = W, col = 1 (cblk unused);  plain NHWC: cb = C, ci = 1, col = C, row = W*C;
* plain 2-D (N, F) is (N, F, 1, 1).

Rank-2 tensors are (N, F, 1, 1); a scalar is (1, 1, 1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cnncc.program import Buffer


@dataclass(frozen=True)
class Addr:
    img: int
    cb: int
    cblk: int
    ci: int
    row: int
    col: int
    base: int = 0

    def offset(self, n: int, c: int, h: int, w: int) -> int:
        return self.base + n * self.img + (c // self.cb) * self.cblk + (c % self.cb) * self.ci + h * self.row + \
            w * self.col


def dims4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a rank 0-4 tensor: the first axis is the batch; a scalar is (1, 1, 1, 1)."""
    s = tuple(shape) or (1,)
    if len(s) > 4:
        raise ValueError(f"rank {len(s)} tensors have no 4-D placement")
    return (*s, *(1,) * (4 - len(s)))  # type: ignore[return-value]


def padded_channels(c: int, width: int) -> int:
    return -(-c // width) * width


def blocked_addr(c: int, h: int, w: int, width: int, halo: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Addr:
    t, b, l, r = halo
    hp, wp = h + t + b, w + l + r
    cblk = hp * wp * width
    return Addr(img=padded_channels(c, width) // width * cblk, cb=width, cblk=cblk, ci=1, row=wp * width,
                col=width, base=t * wp * width + l * width)


def plain_addr(c: int, h: int, w: int, halo: tuple[int, int, int, int] = (0, 0, 0, 0)) -> Addr:
    t, b, l, r = halo
    hp, wp = h + t + b, w + l + r
    return Addr(img=c * hp * wp, cb=max(c, 1), cblk=0, ci=hp * wp, row=wp, col=1, base=t * wp + l)


def nhwc_addr(c: int, h: int, w: int) -> Addr:
    return Addr(img=h * w * c, cb=max(c, 1), cblk=0, ci=1, row=w * c, col=c)


@dataclass(frozen=True, eq=False)
class Placed:
    """A tensor at run time: its buffer, logical dims (N, C, H, W) and addressing."""

    buffer: Buffer
    dims: tuple[int, int, int, int]
    addr: Addr
    blocked: bool
    halo: tuple[int, int, int, int] = (0, 0, 0, 0)
    batched: bool = True  # False for values that are not per image (a loss)

    @property
    def contiguous_plain(self) -> bool:
        n, c, h, w = self.dims
        return not self.blocked and self.addr == plain_addr(c, h, w)

    def floats_per_image(self) -> int:
        return self.addr.img

    def with_dims(self, dims: tuple[int, int, int, int]) -> Placed:
        """The same contiguous plain memory seen with other dims (reshape/flatten)."""
        _, c, h, w = dims
        return replace(self, dims=dims, addr=plain_addr(c, h, w))
