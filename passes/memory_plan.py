"""Static memory planning over a program's call order: byte offsets in one arena.

Greedy by size: buffers are placed largest first, each at the lowest aligned offset that does not overlap any
already-placed buffer whose live range intersects its own. The report gives the arena size, the lower bound (the
largest total of simultaneously live bytes) and the naive sum of all buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncc.program import Buffer, Program

ALIGN = 64


def aligned(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class PlanReport:
    arena_bytes: int
    lower_bound: int
    naive_bytes: int


def plan_arena(program: Program) -> PlanReport:
    """Assign ``offset`` to every arena buffer of ``program`` and set ``program.arena_bytes``."""
    ranges = program.live_ranges()
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    order = sorted(ranges, key=lambda b: (-b.nbytes, ranges[b][0]))
    for buf in order:
        first, last = ranges[buf]
        size = aligned(max(buf.nbytes, 1))
        conflicts = sorted((o, e) for o, e, f, l in placed if not (l < first or last < f))
        offset = 0
        for o, e in conflicts:
            if offset + size <= o:
                break
            offset = max(offset, aligned(e))
        buf.offset = offset
        placed.append((offset, offset + size, first, last))
    program.arena_bytes = max((e for _, e, _, _ in placed), default=0)
    return PlanReport(program.arena_bytes, lower_bound(program, ranges), sum(aligned(b.nbytes) for b in ranges))


def lower_bound(program: Program, ranges: dict[Buffer, tuple[int, int]]) -> int:
    live = [0] * max(len(program.calls), 1)
    for buf, (first, last) in ranges.items():
        for i in range(first, last + 1):
            live[i] += aligned(buf.nbytes)
    return max(live)
