"""Static memory planning over a program's call order: byte offsets in one arena, with in-place reuse.

Liveness. A program is a list of kernel calls in the order they run; an arena buffer is live from the first call that
touches it to the last (``Program.live_ranges``). Every arena buffer is planned this way: activations, layout copies
and any scratch (workspace) buffer an algorithm's lowering allocates, so workspaces are counted in the arena and the
lower bound like everything else.

In-place reuse. An ``eltwise`` call may write its output over its first operand ``a`` when that is legal: ``a`` is
last touched by this call (no later reader or writer), the output is first touched by it and is not also read, both
are arena buffers of the same size, and the output stream has exactly ``a``'s addressing (the same ``Operand``
base/img/blk/pix, blocked or plain), as does any other operand of the call that reads ``a``. Each vector is then read
before it is stored at the same place by the same thread, so sharing the memory changes no result. Merged buffers
(a chain of merges) form one *allocation* whose live range is the union of theirs; they get the same
``Buffer.offset``, which is what the code generator bakes in. INPUT, OUTPUT and WEIGHTS buffers are never merged
(they are not in the arena).

Placement. Allocations are placed one at a time, each at an aligned offset that overlaps no already-placed allocation
whose live range intersects its own. The result depends on the order and on which gap is chosen, and no single rule
is best on every network, so several are tried and the smallest arena kept (ties: the first in the fixed list, so the
plan is deterministic). Orders: by size (largest first; ties by earlier start, or by later end), "by breadth" (visit
calls from the one with the most live bytes down, placing its live allocations largest first, as TFLite's planner
does), by size x lifetime, by lifetime, by start, by end (latest first). Rules: first fit (the lowest gap that fits)
and best fit (the tightest gap that fits; else on top of the conflicting ones). 7 orders x 2 rules = 14 placements,
each O(n x conflicts).

Report. ``arena_bytes``; ``lower_bound``, the largest total of simultaneously live bytes, computed on the same merged
allocations (a merged pair counts once), so no placement can beat it; ``naive_bytes``, the sum of all arena buffers
(no reuse at all); ``inplace_merges``; the winning ``strategy``.

Measured (zoo, batch 1, host target; the old planner was size order + first fit, no in-place reuse):
mobilenet_v2 was 14,450,688 B for a bound of 9,807,360 (1.47x): three equal-size buffers of one inverted-residual
block, placed in start order, left the third on top of the first two. The "size, late end first" order reaches the
bound (1.00x) even without in-place reuse; with it the plan is also 1.00x (97 merges). Every other zoo model was and
stays at 1.00x; in-place reuse lowers the arena itself, e.g. resnet18 6,422,528 -> 4,014,080 B (45 merges),
resnet50 9,633,792 -> 7,225,344 (118), googlenet 6,422,528 -> 4,014,080 (57), vgg11 25,690,112 -> 16,056,320 (10).
After the graph passes (BN folded, activations fused into convolutions) few eltwise calls remain and merges are rare;
every zoo model is still at 1.00x. Planning takes a few milliseconds per model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from cnncc.program import Buffer, KernelCall, Program, Space

ALIGN = 64


def aligned(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


def slot_bytes(buf: Buffer) -> int:
    """The bytes a buffer occupies in the arena (at least one aligned slot)."""
    return aligned(max(buf.nbytes, 1))


@dataclass(frozen=True)
class PlanReport:
    arena_bytes: int
    lower_bound: int
    naive_bytes: int
    inplace_merges: int = 0
    strategy: str = ""

    @property
    def ratio(self) -> float:
        """Arena over the lower bound (1.0 is optimal)."""
        return self.arena_bytes / self.lower_bound if self.lower_bound else 1.0


@dataclass
class Allocation:
    """One block of the arena: the buffers merged in place share it; it is live over calls [first, last]."""

    buffers: list[Buffer]
    size: int
    first: int
    last: int
    offset: int = 0


# -- in-place reuse ---------------------------------------------------------------------------------------------


def _stream(operand: Any) -> tuple[int, int, int, int]:
    return operand.base, operand.img, operand.blk, operand.pix


def inplace_pair(call: KernelCall, index: int, ranges: dict[Buffer, tuple[int, int]]) -> tuple[Buffer, Buffer] | None:
    """``(a, out)`` when the eltwise ``call`` (at ``index``) may write its output over its first operand ``a``."""
    p = call.params
    if call.kernel != "eltwise" or not all(hasattr(p, f) for f in ("a", "out")):
        return None
    a, out = p.a.buf, p.out.buf
    if a is out or a.space is not Space.ARENA or out.space is not Space.ARENA or a.nbytes != out.nbytes:
        return None
    if len(call.writes) != 1 or call.writes[0] is not out or any(b is out for b in call.reads):
        return None
    if not any(b is a for b in call.reads) or ranges[a][1] != index or ranges[out][0] != index:
        return None
    readers_of_a = [o for o in (p.a, getattr(p, "b", None), getattr(p, "c", None)) if o is not None and o.buf is a]
    if any(_stream(o) != _stream(p.out) for o in readers_of_a):
        return None
    return a, out


def inplace_pairs(program: Program, ranges: dict[Buffer, tuple[int, int]]) -> list[tuple[Buffer, Buffer]]:
    return [pair for i, c in enumerate(program.calls) if (pair := inplace_pair(c, i, ranges)) is not None]


def allocations(program: Program) -> tuple[list[Allocation], int]:
    """The arena allocations (in-place merges applied: merged chains) and the number of merges."""
    ranges = program.live_ranges()
    pairs = inplace_pairs(program, ranges)
    # A buffer is merged over at most one other (at the call that first touches it) and under at most one (at the
    # call that last touches it): merges form chains, and in call order a chain's buffers come one after the other.
    # So no union-find: each buffer joins the allocation of the buffer it is merged over (first: its own).
    over = {out: a for a, out in pairs}
    root: dict[Buffer, Buffer] = {}
    groups: dict[Buffer, list[Buffer]] = {}
    for b in ranges:
        root[b] = root[over[b]] if b in over else b
        groups.setdefault(root[b], []).append(b)
    allocs = [Allocation(bs, max(slot_bytes(b) for b in bs), min(ranges[b][0] for b in bs),
                         max(ranges[b][1] for b in bs)) for bs in groups.values()]
    return allocs, len(pairs)


def lower_bound(allocs: list[Allocation]) -> int:
    """The largest total of simultaneously live bytes (over calls)."""
    if not allocs:
        return 0
    delta = [0] * (max(a.last for a in allocs) + 2)
    for a in allocs:
        delta[a.first] += a.size
        delta[a.last + 1] -= a.size
    return max(accumulate(delta))


# -- placement --------------------------------------------------------------------------------------------------


def _conflicts(allocs: list[Allocation]) -> list[list[int]]:
    """For each allocation, the indices of those whose live ranges intersect its own (a sweep by start)."""
    out: list[list[int]] = [[] for _ in allocs]
    order = sorted(range(len(allocs)), key=lambda i: (allocs[i].first, i))
    for k, i in enumerate(order):
        for j in order[k + 1:]:
            if allocs[j].first > allocs[i].last:
                break
            out[i].append(j)
            out[j].append(i)
    return out


def _fit(busy: list[tuple[int, int]], size: int, best_fit: bool) -> int:
    """An offset for ``size`` bytes among the sorted ``busy`` intervals: the lowest gap that fits (first fit) or the
    tightest (best fit); above all of them when no gap fits."""
    best, best_gap, top = -1, 0, 0
    for lo, hi in busy:
        gap = lo - top
        if gap >= size:
            if not best_fit:
                return top
            if best < 0 or gap < best_gap:
                best, best_gap = top, gap
        top = max(top, hi)
    return top if best < 0 else best


def _place(order: list[int], allocs: list[Allocation], conflicts: list[list[int]], best_fit: bool) -> list[int]:
    offsets = [-1] * len(allocs)
    for i in order:
        busy = sorted((offsets[j], offsets[j] + allocs[j].size) for j in conflicts[i] if offsets[j] >= 0)
        offsets[i] = _fit(busy, allocs[i].size, best_fit)
    return offsets


def _breadth_order(allocs: list[Allocation]) -> list[int]:
    """Calls by decreasing live bytes; within each, its not-yet-ordered allocations largest first."""
    ncalls = max(a.last for a in allocs) + 1
    live: list[list[int]] = [[] for _ in range(ncalls)]
    for i, a in enumerate(allocs):
        for t in range(a.first, a.last + 1):
            live[t].append(i)
    breadth = [sum(allocs[i].size for i in ids) for ids in live]
    seen: set[int] = set()
    order = []
    for t in sorted(range(ncalls), key=lambda t: (-breadth[t], t)):
        for i in sorted(live[t], key=lambda i: (-allocs[i].size, i)):
            if i not in seen:
                seen.add(i)
                order.append(i)
    return order


def _keyed(key: Callable[[Allocation], tuple[int, ...]]) -> Callable[[list[Allocation]], list[int]]:
    return lambda allocs: sorted(range(len(allocs)), key=lambda i: (*key(allocs[i]), i))


ORDERS: dict[str, Callable[[list[Allocation]], list[int]]] = {
    "size": _keyed(lambda a: (-a.size, a.first)),
    "size, late end first": _keyed(lambda a: (-a.size, -a.last)),
    "breadth": _breadth_order,
    "area": _keyed(lambda a: (-a.size * (a.last - a.first + 1), a.first)),
    "lifetime": _keyed(lambda a: (a.first - a.last, -a.size)),
    "start": _keyed(lambda a: (a.first, -a.size)),
    "end": _keyed(lambda a: (-a.last, -a.size)),
}


def best_placement(allocs: list[Allocation]) -> tuple[str, list[int], int]:
    """Try every order x rule; the (strategy name, offsets, arena bytes) with the smallest arena (first on ties)."""
    if not allocs:
        return "empty", [], 0
    conflicts = _conflicts(allocs)
    best: tuple[str, list[int], int] | None = None
    for name, order_fn in ORDERS.items():
        order = order_fn(allocs)
        for rule, best_fit in (("first fit", False), ("best fit", True)):
            offsets = _place(order, allocs, conflicts, best_fit)
            arena = max(o + a.size for o, a in zip(offsets, allocs, strict=True))
            if best is None or arena < best[2]:
                best = (f"{name}, {rule}", offsets, arena)
    assert best is not None
    return best


def plan_arena(program: Program) -> PlanReport:
    """Assign ``offset`` to every arena buffer of ``program`` and set ``program.arena_bytes``."""
    allocs, merges = allocations(program)
    strategy, offsets, arena = best_placement(allocs)
    for alloc, offset in zip(allocs, offsets, strict=True):
        alloc.offset = offset
        for buf in alloc.buffers:
            buf.offset = offset
    program.arena_bytes = arena
    naive = sum(slot_bytes(b) for a in allocs for b in a.buffers)
    return PlanReport(arena, lower_bound(allocs), naive, merges, strategy)
