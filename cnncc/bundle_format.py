"""The deployment bundle's formats, shared by the writer (``cnncc.codegen.bundle``) and the reader
(``cnncc.runtime.bundle``, and the C runtime ``codegen/bundle_runtime.c``): the weights file, the manifest's name and
version, and the C API's status codes. A neutral home in the core, so that neither side imports the other.

Weights file (little-endian; the C runtime reads the same layout):

    0  char[8]  magic b"CNNCCWT\\0"      8  u32 format version (1)     12 u32 header bytes (128)
    16 char[64] graph hash (hex)         80 u64 payload bytes           88 u32 CRC-32 of the payload
    92 u32 CRC-32 of bytes 0..91         96..127 zero (checked)         128 the weights blob
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from cnncc.errors import CnnccError, WeightsError

WEIGHTS_MAGIC = b"CNNCCWT\0"
WEIGHTS_VERSION = 1
WEIGHTS_HEADER = 128
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "cnncc-bundle"
MANIFEST_VERSION = 1

# The C API's status codes (codegen/bundle.py writes them into every header).
STATUS = {
    0: "CNNCC_OK", 1: "CNNCC_ERR_NULL", 2: "CNNCC_ERR_ARGUMENT", 3: "CNNCC_ERR_SIZE", 4: "CNNCC_ERR_VALUE",
    5: "CNNCC_ERR_CPU", 6: "CNNCC_ERR_IO", 7: "CNNCC_ERR_FORMAT", 8: "CNNCC_ERR_CHECKSUM", 9: "CNNCC_ERR_MISMATCH",
    10: "CNNCC_ERR_NOMEM", 11: "CNNCC_ERR_INTERNAL",
}


def weights_header(blob: bytes, graph_hash: str) -> bytes:
    if len(graph_hash) != 64:
        raise CnnccError(f"internal: a graph hash has 64 hex digits, got {graph_hash!r}")
    head = WEIGHTS_MAGIC + struct.pack("<II", WEIGHTS_VERSION, WEIGHTS_HEADER) + graph_hash.encode("ascii")
    head += struct.pack("<QI", len(blob), zlib.crc32(blob))
    head += struct.pack("<I", zlib.crc32(head))
    return head + bytes(WEIGHTS_HEADER - len(head))


def write_weights(path: str | os.PathLike, blob: bytes, graph_hash: str) -> None:
    """Write a weights blob with its header (magic, version, graph hash, size, CRC-32s)."""
    with open(path, "wb") as f:
        f.write(weights_header(blob, graph_hash))
        f.write(blob)


def read_weights(path: str | os.PathLike, graph_hash: str | None = None) -> bytes:
    """The payload of a weights file, after the same checks the C runtime makes (for tools and tests)."""
    data = Path(path).read_bytes()
    if len(data) < WEIGHTS_HEADER:
        raise WeightsError(f"weights file '{path}' is truncated: {len(data)} bytes, shorter than its header")
    head = data[:WEIGHTS_HEADER]
    if head[:8] != WEIGHTS_MAGIC:
        raise WeightsError(f"'{path}' is not a cnncc weights file (bad magic)")
    version, size, nbytes, crc, head_crc = (*struct.unpack_from("<II", head, 8),
                                            *struct.unpack_from("<QII", head, 80))
    if head_crc != zlib.crc32(head[:92]):
        raise WeightsError(f"weights file '{path}': the header fails its CRC-32 (the file was altered)")
    if any(head[96:]):
        raise WeightsError(f"weights file '{path}': the reserved header bytes 96..127 are not zero")
    if (version, size) != (WEIGHTS_VERSION, WEIGHTS_HEADER):
        raise WeightsError(f"weights file '{path}' has format version {version}; this cnncc reads {WEIGHTS_VERSION}")
    stored_hash = head[16:80].decode("ascii", "replace")
    if graph_hash is not None and stored_hash != graph_hash:
        raise WeightsError(f"weights file '{path}' belongs to graph {stored_hash[:12]}..., not {graph_hash[:12]}...")
    payload = data[WEIGHTS_HEADER:]
    if len(payload) != nbytes:
        raise WeightsError(f"weights file '{path}' has {len(payload)} payload bytes; its header says {nbytes}")
    if zlib.crc32(payload) != crc:
        raise WeightsError(f"weights file '{path}': the payload fails its CRC-32 (the file was altered)")
    return payload
