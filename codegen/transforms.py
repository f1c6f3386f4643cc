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
        """Vector operations one application costs: an add/sub/FMA per entry past the first, a multiply when the
        first is scaled; a copied or unused (empty) row is free."""
        return sum(len(r) - 1 + (r[0][1] not in (1.0, -1.0)) for r in self.rows if r)


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


def _radix2(t: int, sign: int) -> list[np.ndarray]:
    """Complex factors (first applied first) of the t-point DFT ``F[k, n] = e^{sign 2 pi i k n / t}``: the radix-2
    decimation-in-time butterflies, the bit-reversal folded into the first. A power of two is required."""
    bits = t.bit_length() - 1
    perm = [int(format(i, f"0{bits}b")[::-1], 2) for i in range(t)] if bits else [0]
    factors = []
    size = 2
    while size <= t:
        f = np.zeros((t, t), complex)
        half = size // 2
        for start in range(0, t, size):
            for k in range(half):
                w = np.exp(sign * 2j * np.pi * k / size)
                f[start + k, start + k], f[start + k, start + k + half] = 1, w
                f[start + k + half, start + k], f[start + k + half, start + k + half] = 1, -w
        factors.append(f)
        size *= 2
    p = np.zeros((t, t))
    p[np.arange(t), perm] = 1
    factors[0] = factors[0] @ p
    return factors


def _as_real(c: np.ndarray) -> np.ndarray:
    """A complex matrix acting on interleaved (re, im) pairs, as a real matrix."""
    out = np.zeros((2 * c.shape[0], 2 * c.shape[1]))
    out[0::2, 0::2], out[0::2, 1::2] = c.real, -c.imag
    out[1::2, 0::2], out[1::2, 1::2] = c.imag, c.real
    return out


def _codelet(pre: np.ndarray, t: int, sign: int, post: np.ndarray) -> list[np.ndarray]:
    """Real factors of ``post @ DFT_t @ pre`` (pre/post: real matrices on interleaved pairs): the radix-2 FFT or the
    dense product, whichever has fewer non-zero coefficients once constants are folded."""
    if t & (t - 1) == 0 and t > 2:
        fft = [_as_real(f) for f in _radix2(t, sign)]
        fft[0], fft[-1] = fft[0] @ pre, post @ fft[-1]
        fft = _chop(fft)
        dense = [post @ _as_real(np.exp(sign * 2j * np.pi * np.outer(np.arange(t), np.arange(t)) / t)) @ pre]
        nnz = lambda fs: sum(int((np.abs(f) > 1e-12).sum()) for f in fs)  # noqa: E731
        return fft if nnz(fft) < nnz(dense) else _chop(dense)
    return _chop([post @ _as_real(np.exp(sign * 2j * np.pi * np.outer(np.arange(t), np.arange(t)) / t)) @ pre])


def _chop(factors: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for f in factors:
        f = f.copy()
        f[np.abs(f) < 1e-12] = 0.0
        out.append(f)
    # dead-code: zero the rows of earlier factors whose outputs no later factor reads
    for i in range(len(out) - 2, -1, -1):
        used = np.abs(out[i + 1]).sum(axis=0) > 0
        out[i][~used] = 0.0
    return out


def _along_rows(m: np.ndarray, rows: int) -> np.ndarray:
    """``m`` applied to each of ``rows`` consecutive row vectors (the last axis)."""
    return np.kron(np.eye(rows), m)


def _along_cols(m: np.ndarray, cols: int) -> np.ndarray:
    """``m``, a real matrix on interleaved (position, re/im) pairs, applied along the leading axis of a
    (position, cols, re/im) layout."""
    m4 = m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2)
    return np.einsum("aqbr,kl->akqblr", m4, np.eye(cols)).reshape(m.shape[0] * cols, m.shape[1] * cols)


def _dft_stages(t: int, r: int, s: int, sh: int, sw: int) -> tuple[tuple[Stage, ...], tuple[Stage, ...], int, int]:
    """Input and output stages of FFT convolution on t x t tiles (see the module docstring), with the layouts

    input tile (h, w) -> (h, k2, re/im) -> (k1, k2, re/im) = points;  points -> (io, k2, re/im) -> (io, jo)

    for k2 in 0..t/2 (the real DFT's half spectrum) and the strided output positions io*sh, jo*sw only."""
    h2 = t // 2 + 1
    out_h, out_w = (t - r) // sh + 1, (t - s) // sw + 1
    embed = np.zeros((2 * t, t))
    embed[0::2] = np.eye(t)  # real samples -> (re, 0) pairs
    half = np.eye(2 * t)[:2 * h2]  # keep bins 0..t/2
    along_w = [_along_rows(f, t) for f in _codelet(embed, t, -1, half)]
    along_h = [_along_cols(f, h2) for f in _codelet(np.eye(2 * t), t, -1, np.eye(2 * t))]
    pick_rows = np.zeros((2 * out_h, 2 * t))
    for io in range(out_h):
        pick_rows[2 * io, 2 * io * sh], pick_rows[2 * io + 1, 2 * io * sh + 1] = 1, 1
    inv_h = [_along_cols(f, h2) for f in _codelet(np.eye(2 * t), t, +1, pick_rows)]
    expand = np.zeros((2 * t, 2 * h2))  # half spectrum -> full: X[t-k] = conj(X[k])
    for k in range(t):
        src, conj = (k, 1.0) if k < h2 else (t - k, -1.0)
        expand[2 * k, 2 * src], expand[2 * k + 1, 2 * src + 1] = 1.0, conj
    real_at = np.zeros((out_w, 2 * t))
    for jo in range(out_w):
        real_at[jo, 2 * jo * sw] = 1.0 / (t * t)
    inv_w = [_along_rows(f, out_h) for f in _codelet(expand, t, +1, real_at)]
    ins = tuple(Stage.from_dense(f) for f in along_w + along_h)
    outs = tuple(Stage.from_dense(f) for f in inv_h + inv_w)
    return ins, outs, out_h, out_w


def fft(t: int, r: int, s: int, sh: int = 1, sw: int = 1) -> TransformConv:
    if t % 2 or t < max(r, s) + 1:
        raise CnnccError(f"FFT tile {t} must be even and larger than the {r}x{s} kernel")
    ins, outs, oh, ow = _dft_stages(t, r, s, sh, sw)
    return TransformConv(name=f"fft{t}", kind="fft", tile=t, out_h=oh, out_w=ow, step_h=oh * sh, step_w=ow * sw,
                         pair=2, points=t * (t // 2 + 1), input_stages=ins, output_stages=outs, r=r, s=s)


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
    u: np.ndarray = tc.filter_transform(np.asarray(w, np.float64)).astype(dtype)  # (points, pair*K, pair*C)
    mm = v @ u.transpose(0, 2, 1)  # (n, points, tiles, pair*K)
    mm = mm.reshape(n, tc.points, th * tw, tc.pair, k).transpose(0, 4, 2, 1, 3).reshape(n, k, th * tw, tc.values)
    y = mm @ tc.output_matrix().T.astype(dtype)  # (n, k, tiles, out_h*out_w)
    y = y.reshape(n, k, th, tw, tc.out_h, tc.out_w).transpose(0, 1, 2, 4, 3, 5).reshape(n, k, th * tc.out_h,
                                                                                      tw * tc.out_w)
    return y[:, :, :oh, :ow]
