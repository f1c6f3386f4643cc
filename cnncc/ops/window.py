"""Sliding-window geometry shared by conv2d and the pooling ops (not an op itself).

Attributes of windowed ops always hold *explicit* values: ``(sh, sw)`` pairs and a ``(top, bottom, left, right)``
padding 4-tuple. :func:`resolve_padding` turns what a user writes (an int, a pair, a 4-tuple, ``"valid"`` or
``"same"``) into that 4-tuple; the DSL calls it once, so no op ever sees a padding *mode*.

Output size (per spatial axis, ``n`` input size, ``k`` kernel, ``s`` stride, ``d`` dilation, ``pb``/``pa`` pad before
and after)::

    out = floor((n + pb + pa - d*(k-1) - 1) / s) + 1

This is PyTorch's and Keras-'valid's rule (seed 001 L968-1001 "(N - M)/S + 1", seed 000 L642 "1 + (W - R + 2P)/S",
TV-10..TV-13 in the seeds digest).  Seed 000 L408 alone writes ``ceil``; cnncc uses floor everywhere except when a
pooling op asks for ``ceil_mode``, which follows PyTorch exactly: ceil, then drop the last window if it would start
past the input and its top/left padding.

'same' padding follows Keras/TensorFlow: ``out = ceil(n / s)``, total padding ``max((out-1)*s + d*(k-1) + 1 - n, 0)``,
split ``before = total // 2``, ``after = total - before`` -- an odd total puts the extra row/column at the
bottom/right (seed 001 L1012-1019: "PL = PR or |PL - PR| = 1"; an even kernel at stride 1 needs asymmetric padding).
Keras' 'same' *pooling* also ignores the padded cells (max over real cells, average over real cells); a DSL that
lowers it must therefore pick ``count_include_pad=False`` for average pooling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.ir.types import Layout, TensorType
from cnncc.ops.elementwise import require_float
from cnncc.ops.registry import Where

Padding = tuple[int, int, int, int]
"""Explicit padding ``(top, bottom, left, right)``."""

Pair = tuple[int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def check_pair(name: str, value: Any, minimum: int, where: Where) -> Pair:
    """Validate an attribute that must be a pair of ints ``>= minimum`` (kernel, stride, dilation)."""
    if not (isinstance(value, tuple) and len(value) == 2 and all(_is_int(v) for v in value)):
        raise where.fail(f"malformed {name}", f"{name} must be a tuple of 2 ints (height, width), got {value!r}")
    if min(value) < minimum:
        raise where.fail(f"invalid {name}",
                         f"{name} {tuple(int(v) for v in value)} must be at least {minimum} in each dimension")
    return int(value[0]), int(value[1])


def check_padding(value: Any, where: Where) -> Padding:
    """Validate an explicit ``(top, bottom, left, right)`` padding attribute: 4 ints, none negative."""
    if not (isinstance(value, tuple) and len(value) == 4 and all(_is_int(v) for v in value)):
        raise where.fail("malformed padding",
                         f"padding must be a tuple of 4 ints (top, bottom, left, right), got {value!r}")
    pad = tuple(int(v) for v in value)
    if min(pad) < 0:
        raise where.fail("negative padding", f"padding (top, bottom, left, right) = {pad} must be >= 0")
    return pad  # type: ignore[return-value]


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


def resolve_padding(spec: Any, kernel: Pair, stride: Pair, dilation: Pair, in_hw: Pair, where: Where) -> Padding:
    """Turn a user's padding into an explicit ``(top, bottom, left, right)``.

    ``spec`` is an int (all four sides), a pair ``(ph, pw)`` (top = bottom = ph, left = right = pw), a 4-tuple
    ``(top, bottom, left, right)``, ``"valid"`` (no padding) or ``"same"`` (the Keras rule in the module docstring,
    which needs ``kernel``, ``stride``, ``dilation`` and the input's spatial size ``in_hw``).
    """
    if isinstance(spec, str):
        mode = spec.lower()
        if mode == "valid":
            return (0, 0, 0, 0)
        if mode == "same":
            k = check_pair("kernel", _as_tuple(kernel), 1, where)
            s = check_pair("stride", _as_tuple(stride), 1, where)
            d = check_pair("dilation", _as_tuple(dilation), 1, where)
            t, b = _same_padding(in_hw[0], k[0], s[0], d[0])
            l, r = _same_padding(in_hw[1], k[1], s[1], d[1])
            return (t, b, l, r)
        raise where.fail("invalid padding", f"unknown padding mode {spec!r}; expected 'valid', 'same', an int, "
                                            "(ph, pw) or (top, bottom, left, right)")
    if _is_int(spec):
        return check_padding((int(spec),) * 4, where)
    if isinstance(spec, tuple | list) and all(_is_int(v) for v in spec):
        if len(spec) == 2:
            return check_padding((int(spec[0]), int(spec[0]), int(spec[1]), int(spec[1])), where)
        if len(spec) == 4:
            return check_padding(tuple(int(v) for v in spec), where)
    raise where.fail("invalid padding", f"padding must be an int, (ph, pw), (top, bottom, left, right), 'valid' or "
                                        f"'same', got {spec!r}")


def output_size(n: int, k: int, stride: int, pad_before: int, pad_after: int, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length along one axis (module docstring); may be <= 0 when the window does not fit.

    ``ceil_mode`` rounds up, then, as PyTorch does, drops the last window if it would start at or past
    ``n + pad_before`` (it must start inside the input or its top/left padding).
    """
    span = n + pad_before + pad_after - dilation * (k - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= n + pad_before:
        out -= 1
    return out


def spatial_output(in_hw: tuple[int, ...], kernel: tuple[int, ...], stride: Pair, padding: Padding, dilation: Pair,
                   ceil_mode: bool, where: Where) -> Pair:
    """Checked output ``(OH, OW)`` of a window op: the input is not empty and there is at least one window.

    Without ``ceil_mode`` that means the dilated kernel fits in the padded input. With it (pooling only), PyTorch
    also accepts a kernel that overhangs the padded input by less than a stride: the one window is partial.
    """
    h, w = in_hw
    if h < 1 or w < 1:
        raise where.fail("empty input", f"input spatial size {h}x{w} must be at least 1x1")
    t, b, l, r = padding
    eff = ((kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1)
    padded = (h + t + b, w + l + r)
    if not ceil_mode and (eff[0] > padded[0] or eff[1] > padded[1]):
        raise where.fail("kernel larger than the padded input",
                         f"effective kernel {eff[0]}x{eff[1]} (kernel {kernel[0]}x{kernel[1]}, dilation "
                         f"{dilation[0]}x{dilation[1]}) exceeds padded input {padded[0]}x{padded[1]} (input "
                         f"{h}x{w}, padding (top, bottom, left, right) = {padding})")
    oh = output_size(h, kernel[0], stride[0], t, b, dilation[0], ceil_mode)
    ow = output_size(w, kernel[1], stride[1], l, r, dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise where.fail("output size", f"output {oh}x{ow} must be at least 1x1 (effective kernel {eff[0]}x{eff[1]}, "
                                        f"padded input {padded[0]}x{padded[1]}, stride {stride[0]}x{stride[1]}, "
                                        f"ceil_mode={ceil_mode})")
    return oh, ow


def windows(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair) -> np.ndarray:
    """Read-only view ``v[n, c, i, j, r, s] = xp[n, c, i*sh + r*dh, j*sw + s*dw]`` of an already padded NCHW array.

    Shape ``(N, C, OH, OW, R, S)``; ``xp`` must be large enough for every window (pad it first).
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    v = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    return v[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]


def pad_to_windows(x: np.ndarray, padding: Padding, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair,
                   value: float) -> np.ndarray:
    """Pad ``x`` by ``padding`` with ``value``, plus whatever extra bottom/right rows a ceil-mode window reaches."""
    t, b, l, r = padding
    need_h = (out_hw[0] - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    need_w = (out_hw[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    b += max(need_h - (x.shape[2] + t + b), 0)
    r += max(need_w - (x.shape[3] + l + r), 0)
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def require_image(t: TensorType, operand: str, where: Where) -> None:
    """``t`` is a rank-4 float NCHW tensor (or a rank-4 tensor with no layout tag)."""
    if t.rank != 4:
        raise where.fail(f"{operand} rank", f"{operand} must be rank 4 (N, C, H, W), got shape {t.shape}")
    if t.layout not in (Layout.NCHW, Layout.PLAIN):
        raise where.fail(f"{operand} layout", f"{operand} must be NCHW, got {t.layout.value}")
    require_float(t, operand, where)


def check_flag(name: str, value: object, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.fail(f"malformed {name}", f"{name} must be a bool, got {value!r}")
    return value


def pool_output(x: TensorType, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any,
                where: Where) -> Pair:
    """Check a pooling op's input and window attributes; return its output ``(OH, OW)``.

    Besides the window checks of :func:`spatial_output`, each pad must be at most half the kernel
    (``pad <= k // 2``, PyTorch's rule), so that no window sees only padding; a dilated kernel can still skip
    over every input cell, which PyTorch accepts (its max is ``-inf``) and cnncc rejects.
    """
    require_image(x, "input", where)
    k = check_pair("kernel", kernel, 1, where)
    s = check_pair("stride", stride, 1, where)
    d = check_pair("dilation", dilation, 1, where)
    p = check_padding(padding, where)
    ceil = check_flag("ceil_mode", ceil_mode, where)
    half = (k[0] // 2, k[1] // 2)
    if max(p[0], p[1]) > half[0] or max(p[2], p[3]) > half[1]:
        raise where.fail("padding must be at most half the kernel",
                         f"padding (top, bottom, left, right) = {p} with kernel {k[0]}x{k[1]}: top and bottom "
                         f"must be <= {half[0]}, left and right <= {half[1]}")
    out = spatial_output(x.shape[2:], k, s, p, d, ceil, where)
    for axis, name in ((0, "row"), (1, "column")):
        _check_windows_see_input(x.shape[2 + axis], k[axis], s[axis], p[2 * axis], d[axis], out[axis], name, where)
    return out


def _check_windows_see_input(n: int, k: int, s: int, pb: int, d: int, out: int, name: str, where: Where) -> None:
    """Every window reads at least one input cell along this axis (only a dilated kernel can miss them all)."""
    if d == 1:  # pad <= k // 2 already guarantees it
        return
    for i in range(out):
        cells = [i * s - pb + j * d for j in range(k)]
        if not any(0 <= c < n for c in cells):
            raise where.fail("window sees only padding",
                             f"output {name} {i} reads input {name}s {cells} but the input has {name}s 0..{n - 1} "
                             f"(kernel {k}, stride {s}, dilation {d}, padding before {pb})")
