"""What ``cnncc plan MODEL`` prints: the arena plan of a model's program as a table (one row per arena buffer), an
ASCII timeline of the buffers' live ranges over the call order, and the summary (arena, lower bound, naive sum,
in-place merges, weights blob).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnncc.passes.memory_plan import PlanReport, allocations, inplace_pairs
from cnncc.program import Buffer, Program

TIMELINE_WIDTH = 100  # characters per timeline line, label included
LABEL_WIDTH = 30


@dataclass(frozen=True)
class BufferRow:
    buffer: Buffer
    producer: str  # "kernel layer" of the first call writing it
    first: int
    last: int
    reuses: str  # the buffer whose memory it takes over in place, or ""


def plan_model(model: Any, batch: int = 1, optimize: bool = True) -> tuple[Program, PlanReport]:
    """Lower ``model`` at ``batch`` for this CPU as ``cnncc.compile`` does (graph passes first unless ``optimize`` is
    false) and plan its arena."""
    from cnncc import driver

    graph, params = model.graph(batch), model.params
    if optimize:  # the graph pass pipeline cnncc.compile runs before lowering
        graph, params, _ = driver.optimize(graph, params)
    _, program, report = driver.lower_and_plan(graph, params)
    return program, report


def buffer_rows(program: Program) -> list[BufferRow]:
    """The arena buffers in order of first use."""
    ranges = program.live_ranges()
    producers: dict[Buffer, str] = {}
    for call in program.calls:
        for buf in call.writes:
            producers.setdefault(buf, f"{call.kernel} {call.layer}")
    reuses = {out: a.name for a, out in inplace_pairs(program, ranges)}
    rows = [BufferRow(b, producers.get(b, "-"), *ranges[b], reuses.get(b, "")) for b in ranges]
    return sorted(rows, key=lambda r: (r.first, r.last, r.buffer.name))


def timeline(rows: list[BufferRow], ncalls: int, live: list[int] | None = None,
             width: int = TIMELINE_WIDTH) -> list[str]:
    """One line per buffer: '#' in the columns (buckets of consecutive calls) where it is live, '.' elsewhere; then,
    given the live bytes per call, their profile in tenths of the peak (X: the peak, the lower bound)."""
    cols = max(1, min(ncalls, width - LABEL_WIDTH - 2))
    per = ncalls / cols

    def bucket(call: int) -> int:
        return min(cols - 1, int(call / per))

    def line(label: str, bar: str) -> str:
        label = label if len(label) <= LABEL_WIDTH else label[:LABEL_WIDTH - 1] + "~"
        return f"{label:<{LABEL_WIDTH}}  {bar}".rstrip()

    lines = [line(f"call index ({ncalls} calls)", _axis(cols, per))]
    for r in rows:
        lo, hi = bucket(r.first), bucket(r.last)
        lines.append(line(r.buffer.name, "." * lo + "#" * (hi - lo + 1) + "." * (cols - hi - 1)))
    if live:
        peak = max(max(live), 1)
        levels = [0] * cols
        for call, nbytes in enumerate(live):
            levels[bucket(call)] = max(levels[bucket(call)], nbytes)
        lines.append(line("live bytes (tenths of peak)", "".join("X" if v >= peak else str(v * 10 // peak)
                                                                  for v in levels)))
    return lines


def _axis(cols: int, per: float) -> str:
    """A ruler: the first call index of every tenth column."""
    axis = [" "] * cols
    for c in range(0, cols, 10):
        mark = f"|{int(c * per)}"
        for k, ch in enumerate(mark[: cols - c]):
            axis[c + k] = ch
    return "".join(axis)


def live_bytes(program: Program) -> list[int]:
    """Live arena bytes at every call, merged allocations counted once (the lower bound is their maximum)."""
    live = [0] * len(program.calls)
    for alloc in allocations(program)[0]:
        for call in range(alloc.first, alloc.last + 1):
            live[call] += alloc.size
    return live


def summary(program: Program, report: PlanReport) -> list[str]:
    r = report
    return [f"arena        {r.arena_bytes:>14,} B",
            f"lower bound  {r.lower_bound:>14,} B   (peak live bytes, in-place merges counted once)",
            f"naive sum    {r.naive_bytes:>14,} B   (every arena buffer on its own)",
            f"ratio        {r.ratio:>14.3f}     arena / lower bound ({r.arena_bytes / max(r.naive_bytes, 1):.3f} "
            "of the naive sum)",
            f"in-place     {r.inplace_merges:>14,}     elementwise outputs written over their dead input",
            f"weights      {len(program.weights):>14,} B   (the packed weights blob)",
            f"strategy     {r.strategy} (the best of the planner's orders x placement rules)"]


def print_plan(program: Program, report: PlanReport, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = buffer_rows(program)
    table = Table(title=f"{title}: {len(rows)} arena buffers, {len(program.calls)} kernel calls")
    for col, justify in (("buffer", "left"), ("produced by", "left"), ("bytes", "right"), ("offset", "right"),
                         ("live", "right"), ("in place of", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.buffer.name, r.producer, f"{r.buffer.nbytes:,}", f"{r.buffer.offset:,}",
                      f"[{r.first}, {r.last}]", r.reuses)
    Console(width=140).print(table)
    print()
    print("\n".join(timeline(rows, len(program.calls), live_bytes(program))))
    print()
    print("\n".join(summary(program, report)))
