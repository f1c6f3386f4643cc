"""A persistent, process-safe database of per-layer tuning measurements.

The auto-tuner measures, for each layer, which algorithm and schedule runs fastest on the host CPU.  Measuring is
slow, so results are kept on disk and reused by later compilations on the same machine with the same cnncc.

Location
    :func:`default_path`: ``$CNNCC_TUNING_DB`` if set, else ``$XDG_CACHE_HOME/cnncc/tuning.json``, else
    ``~/.cache/cnncc/tuning.json``.

Keys
    A :class:`TuningKey` is (layer signature, CPU name, CPU feature string, cnncc version).  Its :meth:`TuningKey.text`
    is the single string the file is keyed by, e.g. ``conv2d(...) | skylake | features=1f0c... | cnncc 0.1.0``: the
    CPU name and version stay readable, the (long) feature list is normalised and hashed to a short sha256 prefix.  A
    different CPU, feature set or cnncc version therefore never reuses a stale measurement.

Format
    One JSON object, ``{"format": "cnncc-tuning", "version": 1, "records": {key_text: record}}``, where every record is
    a plain JSON object.  It is written with sorted keys, fixed indentation and ASCII escapes, so the same contents
    always give a byte-identical file, whatever order the records were put in.

Atomicity
    A write never modifies the database file in place.  The new contents go to a temporary file in the same
    directory (``.<name>-XXXXXXXX.tmp``, from :func:`tempfile.mkstemp`), which is flushed and ``fsync``-ed and then
    renamed over the database with :func:`os.replace`; finally the directory itself is ``fsync``-ed so that the rename
    is durable.  A rename within one file system is atomic: any reader, and any process that starts after a writer
    was killed (even by ``SIGKILL``, even half-way through writing its temporary file), sees either the complete old
    file or the complete new file, never a mixture or a truncated file.  A killed writer can only leave its temporary
    file behind; temporary files are never read as the database.

Lock
    Read-modify-write cycles (:meth:`TuningDB.put`, :meth:`TuningDB.clear`) hold an exclusive :func:`fcntl.flock` on
    the sibling file ``<path>.lock`` and re-read the database file under it, so concurrent writers (processes or
    threads) merge their records instead of overwriting each other's.  The lock is released by the kernel when its
    holder dies, so a killed writer cannot wedge the database.  Readers take no lock: thanks to the atomic rename
    they always see a complete file.  :meth:`TuningDB.get` and friends keep an in-memory copy and re-read the file
    whenever its (inode, mtime_ns, ctime_ns, size) stamp changed, so records written by other processes are seen.
    While it holds the lock, a successful write deletes left-over temporary files of *this* database (those named
    ``.<name>-*.tmp``): only a writer holding the lock ever creates one, so any other such file belongs to a writer that
    died.  Temporary files of other databases, or of other programs, in the same directory are left alone.  ``flock``
    may not be honoured on some network file systems; keep the database on a local disk.

Corruption policy
    A missing file is an empty database.  A file that cannot be used (truncated or otherwise not JSON, not the object
    above, another ``format`` or ``version``, a record that is not an object) never makes cnncc fail: a
    :class:`TuningDBWarning` names the file and what is wrong with it, the file is moved aside to ``<path>.corrupt``
    (replacing an older one) for inspection, and the database continues empty; the next write creates a fresh, valid
    file.  Tuning results are only a cache, so losing them costs re-measuring, never correctness.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnncc.errors import CnnccError

__all__ = ["CACHE_ENV", "FORMAT", "FORMAT_VERSION", "TuningDB", "TuningDBWarning", "TuningKey", "default_path"]

CACHE_ENV = "CNNCC_TUNING_DB"
FORMAT = "cnncc-tuning"
FORMAT_VERSION = 1
_FEATURE_HASH_CHARS = 16
_SEP = " | "

_Stamp = tuple[int, int, int, int]


class TuningDBWarning(UserWarning):
    """The tuning database file was unusable; it was moved aside and the database rebuilt from empty."""


def default_path() -> Path:
    """Where the tuning database lives: ``$CNNCC_TUNING_DB``, else the XDG cache directory (see the module doc)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative $XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cnncc" / "tuning.json"


def _cnncc_version() -> str:
    from cnncc.version import __version__

    return __version__


@dataclass(frozen=True)
class TuningKey:
    """What a tuning measurement depends on: the layer, the CPU (name and feature string) and the cnncc version.

    ``signature`` describes the layer's op, shapes, dtypes and attributes; ``features`` is a comma-separated CPU
    feature string such as LLVM's ``+avx2,+fma,-avx512f``.
    """

    signature: str
    cpu: str
    features: str
    version: str

    def __post_init__(self) -> None:
        for name in ("signature", "cpu", "features", "version"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise CnnccError(f"TuningKey.{name} must be a str, got {type(value).__name__} {value!r}")
            if "\n" in value or "\r" in value:
                raise CnnccError(f"TuningKey.{name} must be a single line, got {value!r}")
        # text() is parsed from the right, so only the signature may contain the separator.
        for name in ("cpu", "version"):
            if "|" in getattr(self, name):
                raise CnnccError(f"TuningKey.{name} must not contain '|', got {getattr(self, name)!r}")

    @classmethod
    def for_target(cls, signature: str, cpu_name: str, features: str) -> TuningKey:
        """A key for the running cnncc (``version`` is ``cnncc.__version__``)."""
        return cls(signature, cpu_name, features, _cnncc_version())

    def features_hash(self) -> str:
        """Short sha256 hex prefix of the normalised (deduplicated, sorted) feature list."""
        normal = ",".join(sorted({f.strip() for f in self.features.split(",") if f.strip()}))
        return hashlib.sha256(normal.encode("utf-8")).hexdigest()[:_FEATURE_HASH_CHARS]

    def text(self) -> str:
        """The stable single-string form the database file is keyed by."""
        return _SEP.join((self.signature, self.cpu, f"features={self.features_hash()}", f"cnncc {self.version}"))


def _key_text(key: TuningKey | str) -> str:
    if isinstance(key, TuningKey):
        return key.text()
    if isinstance(key, str):
        return key
    raise CnnccError(f"a tuning key must be a TuningKey or a str, got {type(key).__name__} {key!r}")


def _check_json(value: Any, where: str) -> str | None:
    """Why ``value`` is not plain JSON (naming the offending path), or None if it is."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}, which JSON cannot represent"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (why := _check_json(item, f"{where}[{i}]")) is not None:
                return why
        return None
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, str):
                return f"{where} has the non-string key {k!r} ({type(k).__name__})"
            if (why := _check_json(item, f"{where}[{k!r}]")) is not None:
                return why
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which is not JSON"


def _encode(records: dict[str, dict]) -> bytes:
    document = {"format": FORMAT, "version": FORMAT_VERSION, "records": records}
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _decode(blob: bytes) -> dict[str, dict]:
    """The records in a database file; raises ValueError saying what is wrong with it."""
    try:
        document = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); truncated?") from None
    if not isinstance(document, dict):
        raise ValueError(f"the top level is a JSON {type(document).__name__}, expected an object")
    if document.get("format") != FORMAT:
        raise ValueError(f"format is {document.get('format')!r}, expected {FORMAT!r}")
    version = document.get("version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"version is {version!r}, expected {FORMAT_VERSION}")
    records = document.get("records")
    if not isinstance(records, dict):
        raise ValueError(f"'records' is {type(records).__name__}, expected an object")
    for key, record in records.items():
        if not isinstance(record, dict):
            raise ValueError(f"record {key!r} is a JSON {type(record).__name__}, expected an object")
    return records


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with suppress(OSError):  # some file systems cannot fsync a directory; the rename is still atomic
            os.fsync(fd)
    finally:
        os.close(fd)


class TuningDB:
    """Tuning records on disk, keyed by :class:`TuningKey` (or its text); see the module doc for the guarantees.

    Records are plain JSON objects; what is stored (and returned by :meth:`get`) is the record's JSON round trip, so
    tuples come back as lists.  Returned records are copies: mutating them does not change the database.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.corrupt_path = self.path.with_name(self.path.name + ".corrupt")
        self._tmp_prefix = f".{self.path.name}-"
        self._records: dict[str, dict] = {}
        self._stamp: _Stamp | None = None
        self._mutex = threading.RLock()
        self._refresh()

    def __repr__(self) -> str:
        return f"TuningDB({str(self.path)!r})"

    # -- reading ----------------------------------------------------------------------------------------------------

    def _read(self) -> tuple[_Stamp | None, dict[str, dict] | None, str | None]:
        """(stamp, records, problem) of the file now: records is None when unchanged since the last read or corrupt."""
        try:
            with open(self.path, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                if stamp == self._stamp:
                    return stamp, None, None
                blob = f.read()
        except FileNotFoundError:
            return None, {}, None
        try:
            return stamp, _decode(blob), None
        except ValueError as e:
            return stamp, None, str(e)

    def _refresh(self) -> None:
        """Bring the in-memory copy up to date with the file, without taking the lock unless the file is corrupt."""
        with self._mutex:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._records, self._stamp = {}, None
                return
            if _stamp(st) == self._stamp:
                return
            stamp, records, problem = self._read()
            if problem is None:
                if records is not None:
                    self._records, self._stamp = records, stamp
                return
            # Moving the file aside must not race with a writer replacing it by a good one: decide under the lock.
            with self._locked():
                self._read_locked()

    def _read_locked(self) -> dict[str, dict]:
        """The current records, read while holding the lock; quarantines a corrupt file."""
        stamp, records, problem = self._read()
        if problem is not None:
            moved = f"moved it to {self.corrupt_path}"
            try:
                os.replace(self.path, self.corrupt_path)
            except OSError as e:
                moved = f"could not move it to {self.corrupt_path} ({e})"
            warnings.warn(f"cnncc tuning database {self.path} is unusable: {problem}; {moved} and rebuilding the "
                          "database from empty", TuningDBWarning, stacklevel=4)
            records, stamp = {}, None
        if records is not None:
            self._records, self._stamp = records, stamp
        return self._records

    # -- writing ----------------------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def _write_locked(self, records: dict[str, dict]) -> None:
        blob = _encode(records)
        directory = self.path.parent
        try:
            mode = os.stat(self.path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=self._tmp_prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        self._records, self._stamp = records, _stamp(os.stat(self.path))
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files left by killed writers of this database (only called while holding the lock)."""
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(self._tmp_prefix) and entry.name.endswith(".tmp"):
                with suppress(OSError):
                    os.unlink(entry.path)

    # -- public API -------------------------------------------------------------------------------------------------

    def get(self, key: TuningKey | str) -> dict | None:
        """The record stored under ``key`` (a copy), or None."""
        text = _key_text(key)
        with self._mutex:
            self._refresh()
            record = self._records.get(text)
            return None if record is None else copy.deepcopy(record)

    def put(self, key: TuningKey | str, record: dict) -> None:
        """Store ``record`` (a plain JSON object) under ``key``, replacing any earlier one, atomically."""
        text = _key_text(key)
        if not isinstance(record, dict):
            raise CnnccError(f"tuning record for key '{text}' must be a dict, got {type(record).__name__}")
        if (why := _check_json(record, "record")) is not None:
            raise CnnccError(f"tuning record for key '{text}' is not plain JSON: {why}")
        clean = json.loads(json.dumps(record, allow_nan=False))
        with self._locked():
            records = dict(self._read_locked())
            records[text] = clean
            self._write_locked(records)

    def clear(self) -> None:
        """Remove every record (the file is rewritten as an empty, valid database)."""
        with self._locked():
            self._read_locked()
            self._write_locked({})

    def keys(self) -> list[str]:
        """The key texts of every record, sorted."""
        with self._mutex:
            self._refresh()
            return sorted(self._records)

    def records(self) -> dict[str, dict]:
        """Every record (copies), by key text, in sorted key order."""
        with self._mutex:
            self._refresh()
            return {k: copy.deepcopy(self._records[k]) for k in sorted(self._records)}

    def __len__(self) -> int:
        with self._mutex:
            self._refresh()
            return len(self._records)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, TuningKey | str):
            return False
        with self._mutex:
            self._refresh()
            return _key_text(key) in self._records
