"""``cnncc plan MODEL``: the arena table, the ASCII timeline and the summary (arena, lower bound, naive sum, ratio,
in-place merges, weights blob)."""

from __future__ import annotations

import re

import pytest

from cnncc.cli import main
from cnncc.frontend.models import ZOO
from cnncc.plan_view import BufferRow, buffer_rows, plan_model, timeline
from cnncc.program import Buffer, Space


def _timeline_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("call index"))
    end = next(i for i, line in enumerate(lines) if line.startswith("live bytes"))
    return lines[start:end + 1]


def _summary_value(out: str, key: str) -> str:
    match = re.search(rf"^{key}\s+(\S+)", out, re.MULTILINE)
    assert match, key
    return match.group(1)


@pytest.mark.parametrize("argv", [["plan", "lenet5"], ["plan", "resnet18", "--unoptimized"]])
def test_plan_prints_table_timeline_and_summary(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    program, report = plan_model(ZOO[argv[1]](), 1, optimize="--unoptimized" not in argv)
    rows = buffer_rows(program)
    assert f"{argv[1]} at batch 1: {len(rows)} arena buffers, {len(program.calls)} kernel calls" in out
    for r in rows:  # the table: name, producer, size, offset, live range
        assert re.search(rf"{re.escape(r.buffer.name)}\s+│ {re.escape(r.producer)}\s+│\s+{r.buffer.nbytes:,} │"
                         rf"\s+{r.buffer.offset:,} │\s+\[{r.first}, {r.last}\]", out), r
    lines = _timeline_lines(out)
    assert len(lines) == len(rows) + 2 and all(len(line) <= 100 for line in lines)
    for r, line in zip(rows, lines[1:-1], strict=True):
        assert line.startswith(r.buffer.name[:29]) and "#" in line
    assert int(_summary_value(out, "arena").replace(",", "")) == report.arena_bytes
    assert int(_summary_value(out, "lower bound").replace(",", "")) == report.lower_bound
    assert int(_summary_value(out, "naive sum").replace(",", "")) == report.naive_bytes
    assert float(_summary_value(out, "ratio")) == pytest.approx(report.ratio, abs=1e-3)
    assert int(_summary_value(out, "in-place")) == report.inplace_merges
    assert int(_summary_value(out, "weights").replace(",", "")) == len(program.weights)


def test_unoptimized_plan_shows_inplace_merges(capsys: pytest.CaptureFixture[str]) -> None:
    """Without graph passes ResNet-18's BN, ReLU and add stay eltwise calls: 45 write over their dead input."""
    assert main(["plan", "resnet18", "--unoptimized"]) == 0
    out = capsys.readouterr().out
    assert int(_summary_value(out, "in-place")) == 45
    assert re.search(r"layer1\.0\.bn1#8\s+│ eltwise layer1\.0\.bn1 .*│ layer1\.0\.conv1#7\s+│", out)


def test_plan_batch_scales_the_arena(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "lenet5"]) == 0
    one = int(_summary_value(capsys.readouterr().out, "arena").replace(",", ""))
    assert main(["plan", "lenet5", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "lenet5 at batch 4" in out
    assert int(_summary_value(out, "arena").replace(",", "")) > 3 * one


def test_plan_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "lenet5", "--batch", "0"]) == 2
    assert capsys.readouterr().err.strip() == "cnncc: error: --batch must be a positive integer, got 0"
    assert main(["plan", "resnet19"]) == 2
    assert "unknown zoo model 'resnet19'" in capsys.readouterr().err


def test_timeline_buckets_long_programs() -> None:
    """1,000 calls fold into at most 100 - 32 columns; every buffer's live columns are contiguous '#'."""
    rows = [BufferRow(Buffer(f"buffer_with_a_long_name_{i}_and_more", 64, Space.ARENA), "k l", i * 10, i * 10 + 25, "")
            for i in range(98)]
    live = [(c % 97) * 64 for c in range(1000)]
    lines = timeline(rows, 1000, live)
    assert all(len(line) <= 100 for line in lines)
    for r, line in zip(rows, lines[1:-1], strict=True):
        bar = line[32:]
        assert set(bar) <= {".", "#"} and re.fullmatch(r"\.*#+\.*", bar)
        assert bar.index("#") == int(r.first / (1000 / len(bar)))
    assert lines[0].startswith("call index (1000 calls)") and "|0" in lines[0]
    assert lines[-1].startswith("live bytes") and "X" in lines[-1]
    assert lines[1].startswith("buffer_with_a_long_name_0_and~ ") and timeline([], 1)[0].startswith("call index")
