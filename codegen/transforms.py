"""Transform-domain convolution: Winograd F(m x m, 3 x 3) and FFT on tiles, as one mechanism.

Both algorithms compute a tile of outputs as

    y_tile = O( sum_c  U_c  (.)  I(d_tile_c) )        (per output channel)

where ``I`` maps a T x T input tile to N transform-domain values (the *input transform*), ``U`` is the transformed
filter (computed once, at compile time, in float64), the sum over input channels at each transform-domain point is a
matrix product (tiles x C) @ (C x K) -- one GEMM per point, which is where the time goes -- and ``O`` maps the N
values back to the tile's outputs (the *output transform*, which also drops the outputs a stride skips).

* Winograd F(m, 3) (Lavin & Gray 2016): T = alpha = m + 2, N = alpha^2 real points, I(d) = B^T d B,
  U = G g G^T, O(M) = A^T M A. The matrices come from Cook-Toom interpolation at the points {0, -1, 1, -2, 2, ...}
  plus infinity; ``B^T`` is solved exactly in rationals from ``A^T`` and ``G`` (the identity
  sum_j A^T[i,j] G[j,k] B^T[j,l] = [l == i + k] defines it), so no hand-copied table can be wrong.
* FFT on T x T tiles: I is the 2-D real DFT (T x (T/2 + 1) complex points, each a pair (re, im)), U the conjugate
  of the filter's DFT (a convolution in the code is a cross-correlation), and each point's complex product is one
  real GEMM on (re, im)-stacked channels: [Y_re; Y_im] = [[A, -B], [B, A]] [X_re; X_im] with U = A + iB. O is the
  inverse real DFT at the strided output positions only, so FFT also runs strided layers (11 x 11 stride 4).

I and O are separable: each is a short sequence of sparse :class:`Stage` matrices (one along the columns, one along
the rows). The code generator emits a stage as straight-line vector arithmetic with its constants folded (zeros
dropped, +-1 as adds and subtracts). :func:`emulate` runs the same stages with numpy in float32, which is how the
accuracy of a candidate is estimated before anything is compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numpy as np

from cnncc.errors import CnnccError

WINOGRAD_POINTS = (Fraction(0), Fraction(-1), Fraction(1), Fraction(-2), Fraction(2), Fraction(-1, 2), Fraction(1, 2),
                   Fraction(-3), Fraction(3))


@dataclass(frozen=True)
class Stage:
    """A sparse linear map: ``out[i] = sum(coef * inp[j] for j, coef in rows[i])``."""

    rows: tuple[tuple[tuple[int, float], ...], ...]
    n_in: int

    @staticmethod
    def from_dense(m: np.ndarray) -> Stage:
        rows = []
        scale = float(np.abs(m).max()) or 1.0
        for r in m:
            entries = []
            for j in np.flatnonzero(np.abs(r) > 1e-13 * scale):
                c = float(r[j])
                for exact in (1.0, -1.0, 0.5, -0.5, 2.0, -2.0):
                    if abs(c - exact) < 1e-14:
                        c = exact
                entries.append((int(j), c))
            rows.append(tuple(entries))
        return Stage(tuple(rows), m.shape[1])

    def dense(self) -> np.ndarray:
        m = np.zeros((len(self.rows), self.n_in))
        for i, row in enumerate(self.rows):
            for j, c in row:
                m[i, j] = c
        return m

    @property
    def ops(self) -> int:
        """Vector operations one application costs (one add/sub/FMA per entry past the first)."""
        return sum(max(len(r), 1) for r in self.rows)


@dataclass(frozen=True)
class TransformConv:
    """The geometry and transforms of one transform-domain algorithm for one kernel size and stride."""

    name: str
    kind: str  # "winograd" | "fft"
    tile: int  # T: input tile edge
    out_h: int  # outputs per tile along H (after the stride)
    out_w: int
    step_h: int  # input rows from one tile to the next (= out_h * stride)
    step_w: int
    pair: int  # reals per transform-domain point: 1 (Winograd), 2 (complex, FFT)
    points: int  # transform-domain points (each one GEMM)
    input_stages: tuple[Stage, ...]
    output_stages: tuple[Stage, ...]
    r: int
    s: int

    @property
    def values(self) -> int:
        return self.points * self.pair

    def input_matrix(self) -> np.ndarray:
        """Dense (values, T*T) input transform."""
        return _product(self.input_stages)

    def output_matrix(self) -> np.ndarray:
        """Dense (out_h*out_w, values) output transform."""
        return _product(self.output_stages)

    def transform_ops(self) -> tuple[int, int]:
        """Vector operations of the input and of the output transform, per tile and channel block."""
        return sum(s.ops for s in self.input_stages), sum(s.ops for s in self.output_stages)

    def filter_transform(self, w: np.ndarray) -> np.ndarray:
        """(K, C, R, S) float64 weights -> (points, pair*K, pair*C): the matrix each point's GEMM multiplies by
        (output channels by input channels; for FFT the [[A, -B], [B, A]] real form of the complex product)."""
        k, c, r, s = w.shape
        t = self.tile
        if self.kind == "winograd":
            g = _winograd(self.out_w, r)[1]
            u = np.einsum("ar,kcrs,bs->abkc", g, w, g)  # (alpha, alpha, K, C)
            return u.reshape(t * t, k, c)
        padded = np.zeros((k, c, t, t))
        padded[:, :, :r, :s] = w
        wf = np.conj(np.fft.rfft2(padded))  # (K, C, T, T/2+1)
        wf = wf.transpose(2, 3, 0, 1).reshape(self.points, k, c)
        a, b = wf.real, wf.imag
        top = np.concatenate([a, -b], axis=2)
        bottom = np.concatenate([b, a], axis=2)
        return np.concatenate([top, bottom], axis=1)

    def tiles(self, oh: int, ow: int) -> tuple[int, int]:
        return -(-oh // self.out_h), -(-ow // self.out_w)

    def input_extent(self, oh: int, ow: int) -> tuple[int, int]:
        """Rows and columns of padded input the tiles read."""
        th, tw = self.tiles(oh, ow)
        return (th - 1) * self.step_h + self.tile, (tw - 1) * self.step_w + self.tile


def _product(stages: tuple[Stage, ...]) -> np.ndarray:
    m = stages[0].dense()
    for st in stages[1:]:
        m = st.dense() @ m
    return m


# -- Winograd (Cook-Toom) ----------------------------------------------------------------------------------------


@cache
def _winograd(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T (m x alpha), G (alpha x r), B^T (alpha x alpha)) of F(m, r), exact rationals turned to float64."""
    alpha = m + r - 1
    pts = WINOGRAD_POINTS[:alpha - 1]
    if len(pts) < alpha - 1:
        raise CnnccError(f"Winograd F({m},{r}) needs {alpha - 1} interpolation points; cnncc has "
                         f"{len(WINOGRAD_POINTS)}")
    at = [[p ** i for p in pts] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j, p in enumerate(pts):
        f = Fraction(1)
        for q, other in enumerate(pts):
            if q != j:
                f *= p - other
        g.append([p ** k / f for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = _solve_bt(at, g, m, r, alpha)
    to = lambda rows: np.array([[float(v) for v in row] for row in rows])  # noqa: E731
    return to(at), to(g), to(bt)


def _solve_bt(at: list, g: list, m: int, r: int, alpha: int) -> list[list[Fraction]]:
    """B^T from sum_j A^T[i,j] G[j,k] B^T[j,l] = [l == i+k], solved per column l by exact Gaussian elimination."""
    eqs = [[at[i][j] * g[j][k] for j in range(alpha)] for i in range(m) for k in range(r)]
    cols = []
    for col in range(alpha):
        rhs = [Fraction(int(col == i + k)) for i in range(m) for k in range(r)]
        cols.append(_exact_solve([row[:] for row in eqs], rhs, alpha))
    return [[cols[col][j] for col in range(alpha)] for j in range(alpha)]


def _exact_solve(a: list[list[Fraction]], b: list[Fraction], n: int) -> list[Fraction]:
    rows = [row + [v] for row, v in zip(a, b, strict=True)]
    piv_row = 0
    pivots = []
    for col in range(n):
        pick = next((i for i in range(piv_row, len(rows)) if rows[i][col] != 0), None)
        if pick is None:
            continue
        rows[piv_row], rows[pick] = rows[pick], rows[piv_row]
        pv = rows[piv_row][col]
        rows[piv_row] = [v / pv for v in rows[piv_row]]
        for i in range(len(rows)):
            if i != piv_row and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [v - f * w for v, w in zip(rows[i], rows[piv_row], strict=True)]
        pivots.append(col)
        piv_row += 1
    if any(row[n] != 0 for row in rows[piv_row:]) or len(pivots) < n:
        raise CnnccError("internal: Winograd interpolation system has no unique solution")
    return [rows[pivots.index(j)][n] for j in range(n)]


def _separable(mat_h: np.ndarray, mat_w: np.ndarray) -> tuple[Stage, Stage]:
    """Stages of ``Y = mat_h @ X @ mat_w.T`` on a row-major flattened X: first along W, then along H."""
    first = np.kron(np.eye(mat_h.shape[1]), mat_w)  # (h_in*w_out, h_in*w_in)
    second = np.kron(mat_h, np.eye(mat_w.shape[0]))
    return Stage.from_dense(first), Stage.from_dense(second)


def winograd(m: int, r: int = 3, s: int = 3) -> TransformConv:
    if r != s:
        raise CnnccError(f"Winograd F({m}x{m},{r}x{s}): cnncc builds square kernels only")
    at, _, bt = _winograd(m, r)
    alpha = m + r - 1
    return TransformConv(name=f"winograd{m}", kind="winograd", tile=alpha, out_h=m, out_w=m, step_h=m, step_w=m,
                         pair=1, points=alpha * alpha, input_stages=_separable(bt, bt),
                         output_stages=_separable(at, at), r=r, s=s)


# -- FFT -----------------------------------------------------------------------------------------------------------


def _dft_stages(t: int, r: int, s: int, sh: int, sw: int) -> tuple[tuple[Stage, Stage], tuple[Stage, Stage], int, int]:
    h2 = t // 2 + 1
    n = np.arange(t)
    # input stage 1, along W: P[h, k2] = sum_w d[h, w] e^{-2 pi i k2 w / T}; values ((h*h2 + k2)*2 + q)
    s1 = np.zeros((t * h2 * 2, t * t))
    for h in range(t):
        for k2 in range(h2):
            ang = 2 * np.pi * k2 * n / t
            s1[(h * h2 + k2) * 2, h * t + n] = np.cos(ang)
            s1[(h * h2 + k2) * 2 + 1, h * t + n] = -np.sin(ang)
    # input stage 2, along H: X[k1, k2] = sum_h P[h, k2] e^{-2 pi i k1 h / T}
    s2 = np.zeros((t * h2 * 2, t * h2 * 2))
    for k1 in range(t):
        ang = 2 * np.pi * k1 * n / t
        c, sn = np.cos(ang), np.sin(ang)
        for k2 in range(h2):
            re, im = (k1 * h2 + k2) * 2, (k1 * h2 + k2) * 2 + 1
            src_re, src_im = (n * h2 + k2) * 2, (n * h2 + k2) * 2 + 1
            s2[re, src_re], s2[re, src_im] = c, sn
            s2[im, src_im], s2[im, src_re] = c, -sn
    out_h = (t - r) // sh + 1
    out_w = (t - s) // sw + 1
    k = np.arange(t)
    # output stage 1, along k1, at rows i = io*sh: Z[io, k2] = sum_k1 Y[k1, k2] e^{+2 pi i k1 i / T}
    o1 = np.zeros((out_h * h2 * 2, t * h2 * 2))
    for io in range(out_h):
        ang = 2 * np.pi * k * (io * sh) / t
        c, sn = np.cos(ang), np.sin(ang)
        for k2 in range(h2):
            re, im = (io * h2 + k2) * 2, (io * h2 + k2) * 2 + 1
            src_re, src_im = (k * h2 + k2) * 2, (k * h2 + k2) * 2 + 1
            o1[re, src_re], o1[re, src_im] = c, -sn
            o1[im, src_im], o1[im, src_re] = c, sn
    # output stage 2, along k2, at columns j = jo*sw: y = 1/T^2 sum_k2 c_k2 (Z_re cos - Z_im sin)
    o2 = np.zeros((out_h * out_w, out_h * h2 * 2))
    weight = np.where((np.arange(h2) == 0) | (np.arange(h2) == t // 2), 1.0, 2.0) / (t * t)
    for io in range(out_h):
        for jo in range(out_w):
            for k2 in range(h2):
                ang = 2 * np.pi * k2 * (jo * sw) / t
                o2[io * out_w + jo, (io * h2 + k2) * 2] = weight[k2] * np.cos(ang)
                o2[io * out_w + jo, (io * h2 + k2) * 2 + 1] = -weight[k2] * np.sin(ang)
    return ((Stage.from_dense(s1), Stage.from_dense(s2)), (Stage.from_dense(o1), Stage.from_dense(o2)), out_h,
            out_w)


def fft(t: int, r: int, s: int, sh: int = 1, sw: int = 1) -> TransformConv:
    if t % 2 or t < max(r, s) + 1:
        raise CnnccError(f"FFT tile {t} must be even and larger than the {r}x{s} kernel")
    ins, outs, oh, ow = _dft_stages(t, r, s, sh, sw)
    return TransformConv(name=f"fft{t}", kind="fft", tile=t, out_h=oh, out_w=ow, step_h=oh * sh, step_w=ow * sw,
                         pair=2, points=t * (t // 2 + 1), input_stages=ins, output_stages=outs, r=r, s=s)


@cache
def transform_for(name: str, r: int, s: int, sh: int, sw: int) -> TransformConv:
    """The transform of algorithm ``name`` ("winograd2", "winograd4", "winograd6", "fft8", "fft16", ...)."""
    if name.startswith("winograd"):
        return winograd(int(name[len("winograd"):]), r, s)
    if name.startswith("fft"):
        return fft(int(name[3:]), r, s, sh, sw)
    raise CnnccError(f"unknown transform algorithm '{name}'")


# -- numpy emulation ---------------------------------------------------------------------------------------------


def emulate(x: np.ndarray, w: np.ndarray, tc: TransformConv, padding: tuple[int, int, int, int],
            dtype: type = np.float32) -> np.ndarray:
    """conv2d (no bias) through ``tc`` with numpy in ``dtype``: the algorithm's arithmetic without the kernels
    (used to estimate a candidate's error, and to test the transforms on their own)."""
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    pt, pb, pl, pr = padding
    sh, sw = tc.step_h // tc.out_h, tc.step_w // tc.out_w
    oh, ow = (h + pt + pb - r) // sh + 1, (wd + pl + pr - s) // sw + 1
    th, tw = tc.tiles(oh, ow)
    eh, ew = tc.input_extent(oh, ow)
    xp = np.zeros((n, c, max(eh, h + pt), max(ew, wd + pl)), dtype)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    t = tc.tile
    idx_h = (np.arange(th) * tc.step_h)[:, None] + np.arange(t)[None, :]
    idx_w = (np.arange(tw) * tc.step_w)[:, None] + np.arange(t)[None, :]
    tiles = xp[:, :, idx_h[:, None, :, None], idx_w[None, :, None, :]]  # (n, c, th, tw, T, T)
    tiles = tiles.reshape(n, c, th * tw, t * t)
    v = tiles @ tc.input_matrix().T.astype(dtype)  # (n, c, tiles, values)
    v = v.reshape(n, c, th * tw, tc.points, tc.pair).transpose(0, 3, 2, 4, 1).reshape(n, tc.points, th * tw,
                                                                                      tc.pair * c)
    u = tc.filter_transform(np.asarray(w, np.float64)).astype(dtype)  # (points, pair*K, pair*C)
    mm = v @ u.transpose(0, 2, 1)  # (n, points, tiles, pair*K)
    mm = mm.reshape(n, tc.points, th * tw, tc.pair, k).transpose(0, 4, 2, 1, 3).reshape(n, k, th * tw, tc.values)
    y = mm @ tc.output_matrix().T.astype(dtype)  # (n, k, tiles, out_h*out_w)
    y = y.reshape(n, k, th, tw, tc.out_h, tc.out_w).transpose(0, 1, 2, 4, 3, 5).reshape(n, k, th * tc.out_h,
                                                                                      tw * tc.out_w)
    return y[:, :, :oh, :ow]
