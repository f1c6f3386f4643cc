"""The tuning database: keys, deterministic files, concurrent writers, SIGKILL during a write, corrupt files."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import cnncc
from cnncc.errors import CnnccError
from cnncc.tuning import CACHE_ENV, TuningDB, TuningDBWarning, TuningKey, default_path

# Shared by the test process and the writer subprocesses: what a writer puts for (round, generation, slot).
RECORD_SRC = '''
from cnncc.tuning import TuningKey

PAD = 200_000


def key_for(slot):
    return TuningKey(f"conv2d(slot={slot})", "testcpu", "+avx2,+fma", "0.1.0")


def record_for(rnd, gen, slot):
    unit = f"{rnd}:{gen}:{slot};"
    return {"round": rnd, "gen": gen, "slot": slot, "pad": (unit * (PAD // len(unit) + 1))[:PAD]}
'''

KILL_WRITER_SRC = RECORD_SRC + '''
import sys
from cnncc.tuning import TuningDB

rnd, slots = int(sys.argv[1]), 6
db = TuningDB()
gen = 0
while True:
    db.put(key_for(gen % slots), record_for(rnd, gen, gen % slots))
    if gen == 0:
        print("ready", flush=True)
    gen += 1
'''

DISJOINT_WRITER_SRC = '''
import sys, time
from pathlib import Path
from cnncc.tuning import TuningDB

name, count, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
db = TuningDB()
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for i in range(count):
    db.put(f"{name}-{i}", {"writer": name, "i": i, "pad": "x" * 2000})
'''

_HELPERS: dict = {}
exec(RECORD_SRC, _HELPERS)
key_for, record_for = _HELPERS["key_for"], _HELPERS["record_for"]


def _spawn(src: str, db_path: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, **{CACHE_ENV: str(db_path)})
    return subprocess.Popen([sys.executable, "-c", src, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"writer did not start: {line!r}\n{err}")


def _open_quietly(path: Path) -> TuningDB:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return TuningDB(path)


# -- keys --------------------------------------------------------------------------------------------------------------


def test_key_text_is_stable() -> None:
    key = TuningKey("conv2d(1x3x32x32,k3,s1)", "skylake", "+avx2,+fma,-avx512f", "0.1.0")
    assert key.text() == "conv2d(1x3x32x32,k3,s1) | skylake | features=0327907392277fe4 | cnncc 0.1.0"
    assert TuningKey("conv2d(1x3x32x32,k3,s1)", "skylake", "+avx2,+fma,-avx512f", "0.1.0").text() == key.text()
    # The feature list is normalised: order, repeats and blanks do not matter.
    assert TuningKey(key.signature, "skylake", "-avx512f, +fma,+avx2,,+fma", "0.1.0").text() == key.text()


def test_different_targets_give_different_keys() -> None:
    base = TuningKey("dense(64->10)", "skylake", "+avx2,+fma", "0.1.0")
    variants = [base,
                TuningKey("dense(64->11)", "skylake", "+avx2,+fma", "0.1.0"),
                TuningKey("dense(64->10)", "znver3", "+avx2,+fma", "0.1.0"),
                TuningKey("dense(64->10)", "skylake", "+avx2,-fma", "0.1.0"),
                TuningKey("dense(64->10)", "skylake", "+avx2", "0.1.0"),
                TuningKey("dense(64->10)", "skylake", "+avx2,+fma", "0.2.0")]
    assert len({v.text() for v in variants}) == len(variants)


def test_for_target_uses_the_package_version() -> None:
    key = TuningKey.for_target("relu(1x8)", "skylake", "+avx2")
    assert key.version == cnncc.__version__
    assert key.text().endswith(f"| cnncc {cnncc.__version__}")


def test_bad_key_fields_are_rejected() -> None:
    with pytest.raises(CnnccError, match="cpu"):
        TuningKey("sig", "a|b", "", "0.1.0")
    with pytest.raises(CnnccError, match="signature"):
        TuningKey(3, "cpu", "", "0.1.0")  # type: ignore[arg-type]


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "db.json"))
    assert default_path() == tmp_path / "db.json"
    assert TuningDB().path == tmp_path / "db.json"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "cnncc" / "tuning.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".cache" / "cnncc" / "tuning.json"


# -- basic behaviour ---------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "tuning.json"
    db = TuningDB(path)
    assert len(db) == 0 and db.get(key_for(0)) is None and not path.exists()
    db.put(key_for(0), {"algo": "winograd", "tile": [4, 4], "us": 12.5, "ok": True, "note": None})
    db.put("plain-text-key", {"algo": "direct"})
    assert path.exists()

    again = _open_quietly(path)
    assert again.get(key_for(0)) == {"algo": "winograd", "tile": [4, 4], "us": 12.5, "ok": True, "note": None}
    assert again.get("plain-text-key") == {"algo": "direct"}
    assert len(again) == 2 and key_for(0) in again and "nope" not in again
    assert again.keys() == sorted([key_for(0).text(), "plain-text-key"])
    assert set(again.records()) == set(again.keys())

    db.put(key_for(0), {"algo": "im2col"})  # replace
    assert again.get(key_for(0)) == {"algo": "im2col"}  # seen through the file's changed stamp

    got = again.get("plain-text-key")
    assert got is not None
    got["algo"] = "mutated"
    assert again.get("plain-text-key") == {"algo": "direct"}  # returned records are copies

    document = json.loads(path.read_text())
    assert document["format"] == "cnncc-tuning" and document["version"] == 1 and len(document["records"]) == 2

    again.clear()
    assert len(again) == 0 and len(db) == 0 and len(_open_quietly(path)) == 0


def test_same_contents_give_identical_bytes(tmp_path: Path) -> None:
    items = [(key_for(i), {"algo": f"a{i}", "schedule": {"tile": i, "unroll": 2, "vector": 8}}) for i in range(5)]
    one, two = TuningDB(tmp_path / "one.json"), TuningDB(tmp_path / "two.json")
    for key, record in items:
        one.put(key, record)
    for key, record in reversed(items):
        two.put(key, {k: record[k] for k in reversed(record)})  # the record's own key order differs too
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


@pytest.mark.parametrize("record, why", [
    ({"fn": object()}, "not JSON"),
    ({"us": float("nan")}, "nan"),
    ({"tile": {1: 2}}, "non-string key"),
    ({"deep": [1, {"x": {3, 4}}]}, "set"),
    (["not", "a", "dict"], "must be a dict"),
])
def test_non_json_records_are_rejected(tmp_path: Path, record: object, why: str) -> None:
    db = TuningDB(tmp_path / "tuning.json")
    db.put("kept", {"ok": 1})
    before = (tmp_path / "tuning.json").read_bytes()
    with pytest.raises(CnnccError, match=why) as info:
        db.put(key_for(3), record)  # type: ignore[arg-type]
    assert key_for(3).text() in str(info.value)
    assert (tmp_path / "tuning.json").read_bytes() == before and key_for(3) not in db


# -- concurrency and crashes -------------------------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path, go, count = tmp_path / "tuning.json", tmp_path / "go", 25
    procs = [_spawn(DISJOINT_WRITER_SRC, path, tmp_path, name, str(count), str(go)) for name in ("a", "b")]
    for proc in procs:
        _wait_ready(proc)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    db = _open_quietly(path)
    assert len(db) == 2 * count
    for name in ("a", "b"):
        for i in range(count):
            assert db.get(f"{name}-{i}") == {"writer": name, "i": i, "pad": "x" * 2000}
    assert not list(tmp_path.glob(".tuning.json-*.tmp"))


def test_sigkill_during_writes_leaves_a_consistent_db(tmp_path: Path) -> None:
    path = tmp_path / "tuning.json"
    rng = random.Random()
    delays = [lo + rng.uniform(0.0, 0.1) for lo in (0.05, 0.13, 0.22, 0.31, 0.4)]
    rng.shuffle(delays)
    seen_gens: list[int] = []
    for rnd, delay in enumerate(delays):
        proc = _spawn(KILL_WRITER_SRC, path, tmp_path, str(rnd))
        _wait_ready(proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"round {rnd}: the writer exited by itself"

        db = _open_quietly(path)  # must not warn: the file is always the old or the new complete version
        records = db.records()
        assert 1 <= len(records) <= 6, f"round {rnd} (killed after {delay:.3f}s)"
        rounds = set()
        for text, rec in records.items():
            assert text == key_for(rec["slot"]).text() and rec["gen"] % 6 == rec["slot"]
            assert rec == record_for(rec["round"], rec["gen"], rec["slot"]), f"round {rnd}: record {text} garbled"
            assert rec["round"] <= rnd
            rounds.add(rec["round"])
        assert rnd in rounds
        seen_gens.append(max(r["gen"] for r in records.values() if r["round"] == rnd))
        assert not path.with_name("tuning.json.corrupt").exists()

    # Temporary files a killed writer may have left are never the database, and the next write removes them.
    TuningDB(path).put("after", {"ok": True})
    assert not list(tmp_path.glob(".tuning.json-*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuning.json", "tuning.json.lock"]
    assert max(seen_gens) > 0  # the writers did get through several writes


# -- corrupt files -----------------------------------------------------------------------------------------------------


def _valid_file(path: Path) -> bytes:
    db = TuningDB(path)
    for i in range(3):
        db.put(key_for(i), {"algo": "direct", "i": i, "pad": "y" * 500})
    return path.read_bytes()


CORRUPTIONS = {
    "truncated": lambda good: good[: len(good) // 2],
    "empty": lambda good: b"",
    "garbage": lambda good: bytes(range(256)) * 4,
    "json list": lambda good: b"[1, 2, 3]\n",
    "other format": lambda good: json.dumps({"format": "something-else", "version": 1, "records": {}}).encode(),
    "records not an object": lambda good: json.dumps({"format": "cnncc-tuning", "version": 1, "records": []}).encode(),
    "record not an object": lambda good: json.dumps(
        {"format": "cnncc-tuning", "version": 1, "records": {"k": [1, 2]}}).encode(),
    "wrong version": lambda good: good.replace(b'"version": 1', b'"version": 2'),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_file_is_moved_aside_and_rebuilt(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "tuning.json"
    bad = CORRUPTIONS[kind](_valid_file(path))
    path.write_bytes(bad)
    corrupt = tmp_path / "tuning.json.corrupt"
    corrupt.write_bytes(b"an older corrupt file")

    with pytest.warns(TuningDBWarning) as caught:
        db = TuningDB(path)
        assert len(db) == 0 and db.get(key_for(0)) is None and db.keys() == []
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(path) in message and "rebuil" in message and str(corrupt) in message
    assert not path.exists() and corrupt.read_bytes() == bad

    db.put(key_for(7), {"algo": "winograd"})
    fresh = _open_quietly(path)
    assert fresh.records() == {key_for(7).text(): {"algo": "winograd"}}
    assert json.loads(path.read_text())["format"] == "cnncc-tuning"


def test_file_corrupted_under_an_open_db_is_rebuilt_on_put(tmp_path: Path) -> None:
    path = tmp_path / "tuning.json"
    db = TuningDB(path)
    db.put("a", {"v": 1})
    path.write_bytes(b'{"format": "cnncc-tuning", "vers')
    with pytest.warns(TuningDBWarning, match="not valid JSON") as caught:
        db.put("b", {"v": 2})
    assert len(caught) == 1
    assert _open_quietly(path).records() == {"b": {"v": 2}}
