"""The memory planner (cnncc.passes.memory_plan): a hypothesis property test on random programs, the in-place rules
one by one, every zoo model against the lower bound, and compiled results with in-place reuse.

Measured at batch 1 (host target), arena / lower bound / naive sum in bytes, with in-place merges; the planner before
this change (size order + first fit, no in-place reuse) in brackets where it differed:

    lenet5               62,720 /     62,720 /     135,488  1.00x   4 merges  [100,352 / 100,352]
    lenet                92,160 /     92,160 /     210,176  1.00x   3 merges  [147,456 / 147,456]
    keras_mnist         125,440 /    125,440 /     405,120  1.00x   3 merges  [200,704 / 200,704]
    keras_sequential    246,784 /    246,784 /     570,560  1.00x   2 merges  [346,112 / 346,112]
    alexnet           1,441,536 /  1,441,536 /   7,087,552  1.00x   7 merges  [2,323,200 / 2,323,200]
    vgg11            16,056,320 / 16,056,320 /  78,620,160  1.00x  10 merges  [25,690,112 / 25,690,112]
    vgg16            25,920,512 / 25,920,512 / 153,133,568  1.00x  15 merges
    googlenet         4,014,080 /  4,014,080 /  39,952,576  1.00x  57 merges  [6,422,528 / 6,422,528]
    resnet18          4,014,080 /  4,014,080 /  41,253,760  1.00x  45 merges  [6,422,528 / 6,422,528]
    resnet50          7,225,344 /  7,225,344 / 159,658,880  1.00x 118 merges  [9,633,792 / 9,633,792]
    mobilenet_v2      9,807,360 /  9,807,360 /  96,720,896  1.00x  97 merges  [14,450,688 / 9,807,360 = 1.47x]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnncc.codegen.kernels.eltwise import EltwiseParams, Operand
from cnncc.passes.memory_plan import ALIGN, PlanReport, plan_arena, slot_bytes
from cnncc.program import Buffer, KernelCall, Program, Space

# -- random programs --------------------------------------------------------------------------------------------

SIZES = st.sampled_from([0, 1, 64, 100, 128, 1000, 4096, 5000])
STREAMS = [(0, 64, 16, 1), (0, 64, 16, 2), (8, 64, 16, 1)]


def _operand(buf: Buffer, stream: tuple[int, int, int, int]) -> Operand:
    return Operand(buf, *stream)


def _stream(o: Operand) -> tuple[int, int, int, int]:
    return o.base, o.img, o.blk, o.pix


@st.composite
def programs(draw: st.DrawFn) -> Program:
    """Random call sequences over arena, input, output and weights buffers: dummy ops reading and writing any of them,
    and eltwise calls whose output may or may not legally reuse the first operand's memory."""
    inp, out = Buffer("in", 256, Space.INPUT), Buffer("out", 256, Space.OUTPUT)
    wts = Buffer("w", 128, Space.WEIGHTS, offset=0)
    bufs: list[Buffer] = []
    prog = Program("random", 1, inputs=[inp], outputs=[out])

    def new(size: int | None = None) -> Buffer:
        bufs.append(Buffer(f"b{len(bufs)}", draw(SIZES) if size is None else size, Space.ARENA))
        return bufs[-1]

    for i in range(draw(st.integers(1, 30))):
        if bufs and draw(st.integers(0, 2)) == 0:
            prog.calls.append(_eltwise_call(draw, i, bufs, inp, out, wts, new))
            continue
        reads = draw(st.lists(st.sampled_from([*bufs, inp, wts]), max_size=3, unique_by=id))
        writes = [new() for _ in range(draw(st.integers(0, 2)))]
        writes += draw(st.lists(st.sampled_from(bufs), max_size=1)) if bufs and draw(st.booleans()) else []
        writes += [out] if draw(st.integers(0, 5)) == 0 else []
        prog.calls.append(KernelCall("dummy", None, tuple(reads), tuple(dict.fromkeys(writes)), f"op{i}"))
    return prog


def _eltwise_call(draw: st.DrawFn, i: int, bufs: list[Buffer], inp: Buffer, out: Buffer, wts: Buffer,
                  new: Callable[[int | None], Buffer]) -> KernelCall:
    a = draw(st.sampled_from([*bufs, inp]))
    choice = draw(st.integers(0, 9))
    if choice < 7:
        dst = new(a.nbytes if choice < 6 else None)
    else:
        dst = draw(st.sampled_from([*bufs, out]))  # an existing buffer, or the caller's output
    sa = draw(st.sampled_from(STREAMS))
    so = sa if draw(st.integers(0, 3)) else draw(st.sampled_from(STREAMS))
    b_kind = draw(st.sampled_from(["none", "a", "other", "weights"]))
    b = None
    if b_kind == "a":
        b = _operand(a, sa if draw(st.booleans()) else draw(st.sampled_from(STREAMS)))
    elif b_kind == "other":
        b = _operand(draw(st.sampled_from(bufs)), draw(st.sampled_from(STREAMS)))
    elif b_kind == "weights":
        b = _operand(wts, (0, 0, 16, 0))
    p = EltwiseParams("add" if b is not None else "act", _operand(dst, so), _operand(a, sa), b, None, 1, 1, 0)
    reads = tuple(dict.fromkeys(o.buf for o in (p.a, b) if o is not None))
    return KernelCall("eltwise", p, reads, (dst,), f"elt{i}")


# -- an independent statement of the rules ----------------------------------------------------------------------


def legal_merge(prog: Program, ranges: dict[Buffer, tuple[int, int]], i: int) -> tuple[Buffer, Buffer] | None:
    """(a, out) if call ``i`` is an eltwise call that may write its output over its first operand's memory."""
    call = prog.calls[i]
    if call.kernel != "eltwise":
        return None
    p = call.params
    a, out = p.a.buf, p.out.buf
    ok = (a.space is Space.ARENA and out.space is Space.ARENA and a is not out and a.nbytes == out.nbytes
          and ranges[a][1] == i and ranges[out][0] == i and out not in call.reads
          and all(_stream(o) == _stream(p.out) for o in (p.a, p.b, p.c) if o is not None and o.buf is a))
    return (a, out) if ok else None


def check_plan(prog: Program, report: PlanReport) -> None:
    ranges = prog.live_ranges()
    arena = list(ranges)
    assert all(b.offset >= 0 and b.offset % ALIGN == 0 for b in arena)
    assert report.arena_bytes == prog.arena_bytes >= max((b.offset + b.nbytes for b in arena), default=0)
    assert report.arena_bytes >= report.lower_bound
    assert report.naive_bytes == sum(slot_bytes(b) for b in arena)
    pairs = {frozenset(pair) for i in range(len(prog.calls)) if (pair := legal_merge(prog, ranges, i))}
    assert report.inplace_merges == len(pairs)
    for x, y in pairs:
        assert x.offset == y.offset
    for x, y in itertools.combinations(arena, 2):
        (fx, lx), (fy, ly) = ranges[x], ranges[y]
        live_together = fx <= ly and fy <= lx
        overlap = x.offset < y.offset + y.nbytes and y.offset < x.offset + x.nbytes
        if live_together and overlap:
            assert frozenset((x, y)) in pairs, (x, y, ranges[x], ranges[y])
    assert report.lower_bound == merged_lower_bound(prog, ranges, pairs)


def merged_lower_bound(prog: Program, ranges: dict[Buffer, tuple[int, int]], pairs: set[frozenset[Buffer]]) -> int:
    """Peak live bytes with merged buffers counted once (a merged pair is live together only at its merge call)."""
    live = [0] * len(prog.calls)
    for b, (first, last) in ranges.items():
        for t in range(first, last + 1):
            live[t] += slot_bytes(b)
    for pair in pairs:
        x, y = tuple(pair)
        t = max(ranges[x][0], ranges[y][0])
        live[t] -= slot_bytes(x)
    return max(live, default=0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_plan_safely(prog: Program) -> None:
    report = plan_arena(prog)
    check_plan(prog, report)
    offsets = [b.offset for b in prog.arena_buffers()]
    again = plan_arena(prog)  # deterministic: the same plan again
    assert again == report and offsets == [b.offset for b in prog.arena_buffers()]
    assert all(b.offset == -1 for b in (*prog.inputs, *prog.outputs))


# -- the in-place rules, one at a time --------------------------------------------------------------------------


def chain(reads_again: bool = False, out_space: Space = Space.ARENA, out_stream: tuple[int, ...] = STREAMS[0],
          out_size: int = 4096, b_on_a: tuple[int, ...] | None = None) -> tuple[Program, Buffer, Buffer]:
    """x -> producer -> a -> eltwise -> y -> consumer (optionally a consumer of a after it)."""
    a = Buffer("a", 4096, Space.ARENA)
    y = Buffer("y", out_size, out_space)
    sink = Buffer("sink", 64, Space.ARENA)
    b = _operand(a, b_on_a) if b_on_a else None
    p = EltwiseParams("add" if b else "act", Operand(y, *out_stream), Operand(a, *STREAMS[0]), b, None, 1, 1, 0)
    calls = [KernelCall("dummy", None, (), (a,), "producer"), KernelCall("eltwise", p, (a,), (y,), "relu")]
    calls.append(KernelCall("dummy", None, (y, a) if reads_again else (y,), (sink,), "consumer"))
    return Program("chain", 1, calls), a, y


@pytest.mark.parametrize("case, merged", [
    ({}, True),
    ({"b_on_a": STREAMS[0]}, True),  # a + a, both read where the output goes
    ({"reads_again": True}, False),  # a is read after the eltwise call
    ({"out_space": Space.OUTPUT}, False),  # the caller's output array is not in the arena
    ({"out_stream": STREAMS[1]}, False),  # other addressing
    ({"out_size": 8192}, False),  # other size
    ({"b_on_a": STREAMS[2]}, False),  # the second operand reads a elsewhere than where the output goes
])
def test_inplace_rules(case: dict[str, object], merged: bool) -> None:
    prog, a, y = chain(**case)  # type: ignore[arg-type]
    report = plan_arena(prog)
    assert report.inplace_merges == int(merged)
    if y.space is Space.ARENA:
        assert (a.offset == y.offset) is merged
    check_plan(prog, report)


def test_chains_merge_into_one_allocation() -> None:
    bufs = [Buffer(f"t{i}", 1000, Space.ARENA) for i in range(5)]
    calls = [KernelCall("dummy", None, (), (bufs[0],), "conv")]
    for i in range(4):  # bn, relu, bn, relu: each writes over the previous buffer
        p = EltwiseParams("act", Operand(bufs[i + 1], *STREAMS[0]), Operand(bufs[i], *STREAMS[0]), None, None, 1, 1, 0)
        calls.append(KernelCall("eltwise", p, (bufs[i],), (bufs[i + 1],), f"e{i}"))
    calls.append(KernelCall("dummy", None, (bufs[-1],), (Buffer("o", 64, Space.ARENA),), "head"))
    prog = Program("chain", 1, calls)
    report = plan_arena(prog)
    assert report.inplace_merges == 4 and len({b.offset for b in bufs}) == 1
    assert report.lower_bound == report.arena_bytes == 1024 + 64
    check_plan(prog, report)


# -- the zoo ----------------------------------------------------------------------------------------------------


def _zoo_names() -> list[str]:
    from cnncc.frontend.models import ZOO

    return list(ZOO)


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_arena_within_5_percent_of_the_lower_bound(name: str) -> None:
    """All eleven at batch 1 (lowering packs the weights: ~0.1 s for the small ones, 2-6 s for alexnet and the VGGs,
    about 25 s in all)."""
    from cnncc.driver import lower_and_plan
    from cnncc.frontend.models import ZOO

    model = ZOO[name]()
    _, prog, report = lower_and_plan(model.graph(1), model.params)
    assert report.arena_bytes <= 1.05 * report.lower_bound, report
    assert report.arena_bytes < report.naive_bytes
    assert report.inplace_merges > 0
    check_plan(prog, report)


# -- compiled code with in-place reuse --------------------------------------------------------------------------


def test_compiled_results_unchanged_with_inplace_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small net of conv -> BN -> ReLU chains with a residual add, lowered without graph passes (so BN and ReLU
    stay separate eltwise calls that can write over their inputs): the compiled output matches the interpreter,
    and bit for bit the same net planned without in-place reuse."""
    import cnncc.frontend as nn
    import cnncc.passes.memory_plan as memory_plan
    from cnncc.driver import compile_graph
    from cnncc.testing import TOL_F32_MODEL, rel_error

    x_in = nn.Input((3, 12, 12), seed=3)
    y = nn.ReLU(name="r1")(nn.BatchNorm(name="bn1")(nn.Conv2d(8, 3, padding=1, name="c1")(x_in)))
    z = nn.BatchNorm(name="bn2")(nn.Conv2d(8, 3, padding=1, name="c2")(y))
    z = nn.ReLU6(name="r2")(nn.Add(name="add")([z, y]))
    out = nn.Linear(5, name="fc")(nn.Flatten(name="flat")(nn.GlobalAvgPool2d(name="gap")(z)))
    model = nn.Model(x_in, out, name="bn_relu_chains")
    rng = np.random.default_rng(7)
    params = {k: v.copy() for k, v in model.params.items()}
    for k, v in params.items():
        if "bn" in k:
            v[...] = rng.uniform(0.5, 1.5, v.shape)
    model.set_weights(params)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)

    cm = compile_graph(model.graph(2), model.params)
    merged = [c for c in cm.program.calls if c.kernel == "eltwise" and c.params.a.buf.offset == c.params.out.buf.offset]
    assert len(merged) == 5  # bn1, r1, bn2, add (over bn2's output; y, read by c2 too, is its second operand), r2
    got = cm(x)
    assert rel_error(got, model(x)) <= TOL_F32_MODEL

    monkeypatch.setattr(memory_plan, "inplace_pairs", lambda program, ranges: [])
    plain = compile_graph(model.graph(2), model.params)
    assert not any(c.params.a.buf.offset == c.params.out.buf.offset for c in plain.program.calls
                   if c.kernel == "eltwise")
    np.testing.assert_array_equal(plain(x), got)
