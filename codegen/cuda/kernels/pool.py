"""Pooling: ``max_pool`` and ``avg_pool`` (one output per thread, the window unrolled, padding and ceil-mode windows
as the ops' references define them) and ``global_avg_pool`` (one (image, channel) per thread)."""

from __future__ import annotations

from typing import Any

from cnncc.codegen.cuda.families import Dims, Family, KernelSpec, f32, family, placeholders, reduce_per_thread

# max_pool geometry: (N, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW)
# avg_pool geometry: (N, C, H, W, kh, kw, sh, sw, pt, pb, pl, pr, count_include_pad, OH, OW)


def _max_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, c_, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow = spec.geometry
    (x,) = placeholders([(n_, c_, h, w)])
    rr, rs = te.reduce_axis((0, kh), name="rr"), te.reduce_axis((0, kw), name="rs")

    def window(n: Any, c: Any, i: Any, j: Any) -> Any:
        ih, iw = i * sh - pt + rr * dh, j * sw - pl + rs * dw
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return te.max(tirx.if_then_else(inside, x[n, c, ih, iw], f32(float("-inf"))), axis=[rr, rs])

    acc = te.compute((n_, c_, oh, ow), window, name="acc")
    y = te.compute((n_, c_, oh, ow), lambda *i: acc(*i), name="y")
    return [x, y]


def _avg_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, c_, h, w, kh, kw, sh, sw, pt, pb, pl, pr, include_pad, oh, ow = spec.geometry
    (x,) = placeholders([(n_, c_, h, w)])
    rr, rs = te.reduce_axis((0, kh), name="rr"), te.reduce_axis((0, kw), name="rs")

    def window(n: Any, c: Any, i: Any, j: Any) -> Any:
        ih, iw = i * sh - pt + rr, j * sw - pl + rs
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return te.sum(tirx.if_then_else(inside, x[n, c, ih, iw], f32(0)), axis=[rr, rs])

    acc = te.compute((n_, c_, oh, ow), window, name="acc")

    def divide(n: Any, c: Any, i: Any, j: Any) -> Any:
        h0, w0 = i * sh - pt, j * sw - pl
        if include_pad:  # the window clipped to the padded extent
            rows = tirx.min(h0 + kh, h + pb) - h0
            cols = tirx.min(w0 + kw, w + pr) - w0
        else:  # the input cells in the window
            rows = tirx.min(h0 + kh, h) - tirx.max(h0, 0)
            cols = tirx.min(w0 + kw, w) - tirx.max(w0, 0)
        return acc[n, c, i, j] / (rows * cols).astype("float32")

    y = te.compute((n_, c_, oh, ow), divide, name="y")
    return [x, y]


def _window_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    reduce_per_thread(sch, dims)


def _window_flops(spec: KernelSpec) -> int:
    n, c, _, _, kh, kw, *_, oh, ow = spec.geometry
    return n * c * oh * ow * kh * kw


MAX_POOL = family(Family("max_pool", _max_compute, _window_schedule, _window_flops, "one output per thread"))
AVG_POOL = family(Family("avg_pool", _avg_compute, _window_schedule, _window_flops, "one output per thread"))


# global_avg_pool geometry: (N, C, H, W)


def _gap_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te

    n_, c_, h, w = spec.geometry
    (x,) = placeholders([(n_, c_, h, w)])
    rr, rs = te.reduce_axis((0, h), name="rr"), te.reduce_axis((0, w), name="rs")
    acc = te.compute((n_, c_), lambda n, c: te.sum(x[n, c, rr, rs], axis=[rr, rs]), name="acc")
    y = te.compute((n_, c_, 1, 1), lambda n, c, i, j: acc[n, c] * (1.0 / (h * w)), name="y")
    return [x, y]


def _gap_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    reduce_per_thread(sch, dims, 128)


GLOBAL_AVG_POOL = family(Family("global_avg_pool", _gap_compute, _gap_schedule,
                                lambda s: s.geometry[0] * s.geometry[1] * s.geometry[2] * s.geometry[3],
                                "one (image, channel) per thread"))
