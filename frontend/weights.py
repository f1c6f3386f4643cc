"""Weights on disk (``.npz``, never pickled) and from PyTorch state dicts, checked against the model.

Every mismatch is reported at once: missing arrays, unexpected arrays, and arrays whose shape differs.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from cnncc.errors import WeightsError


def check_against(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Any], source: str,
                  model: str) -> None:
    """Raise one :class:`WeightsError` listing every missing, unexpected and mis-shaped array."""
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = sorted(k for k in given if k not in expected)
    if missing:
        problems.append(f"missing arrays {missing}")
    if unexpected:
        problems.append(f"unexpected arrays {unexpected}")
    for k, shape in expected.items():
        if k in given and tuple(np.shape(given[k])) != shape:
            problems.append(f"array '{k}' has shape {tuple(np.shape(given[k]))}, the model expects {shape}")
    if problems:
        raise WeightsError(f"{source} does not match model '{model}': " + "; ".join(problems))


def save_npz(path: str | os.PathLike[str], params: Mapping[str, np.ndarray]) -> None:
    # dict[str, Any]: numpy's stub types savez's keywords as arrays except allow_pickle (a bool), so a mapping of
    # arrays only passes as Any (a parameter named allow_pickle cannot exist: names are "layer.weight").
    arrays: dict[str, Any] = {k: np.asarray(v) for k, v in params.items()}
    np.savez(path, **arrays)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file with ``allow_pickle=False``; unreadable files raise WeightsError."""
    if not os.path.exists(path):
        raise WeightsError(f"weights file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise WeightsError(f"weights file '{path}' cannot be read as .npz ({type(e).__name__}: {e})") from e


def from_state_dict(state_dict: Mapping[str, Any],
                    mapping: Mapping[str, str] | Callable[[str], str | None] | None = None) -> dict[str, np.ndarray]:
    """Turn a PyTorch ``state_dict`` into cnncc parameter arrays.

    Tensors become float32 numpy arrays; ``num_batches_tracked`` counters are dropped; ``mapping`` renames keys
    (a dict, or a function returning the cnncc name or None to drop the key). The zoo names its layers as the
    PyTorch twins do, so no mapping is needed for them.
    """
    out: dict[str, np.ndarray] = {}
    for key, tensor in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        name: str | None = key
        if callable(mapping):
            name = mapping(key)
        elif mapping is not None:
            name = mapping.get(key, key)
        if name is None:
            continue
        arr = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out
