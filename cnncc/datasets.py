"""Real data that ships inside a package (nothing is downloaded): scikit-learn's handwritten digits.

``load_digits`` holds 1,797 real 8x8 scans of handwritten digits 0-9 (UCI "Optical Recognition of Handwritten
Digits", 16 grey levels). For the LeNets each scan is scaled to [0, 1], enlarged 3x by pixel replication (8x8 ->
24x24, no invented detail) and zero-padded to the network's input: 32x32 for LeNet-5 (as LeCun padded 28x28 MNIST
to 32x32) or 28x28 for the PyTorch LeNet. The split is fixed: per class, a seeded permutation puts 80 % of the
scans (rounded per class) in ``train`` and the rest in ``test`` (1,438 / 359), the same on every machine.
"""

from __future__ import annotations

import numpy as np

from cnncc.errors import CnnccError

SPLITS = ("train", "test")
TRAIN_FRACTION = 0.8


def digits(split: str = "train", size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 1, size, size) in [0, 1], labels int64 (N,)) of the fixed ``split``."""
    if split not in SPLITS:
        raise CnnccError(f"digits: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(size, int) or size < 24 or size % 2:
        raise CnnccError(f"digits: size must be an even number of pixels >= 24 (the 3x-enlarged 8x8 scan is 24x24), "
                         f"got {size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is in the test extra
        raise CnnccError("the digits dataset comes with scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    images, labels = data.images.astype(np.float64) / 16.0, data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cut = int(round(TRAIN_FRACTION * len(idx)))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    pick = np.sort(np.concatenate(train_idx if split == "train" else test_idx))
    big = np.kron(images[pick], np.ones((3, 3)))  # (N, 24, 24)
    pad = (size - 24) // 2
    out = np.zeros((len(pick), 1, size, size), np.float32)
    out[:, 0, pad:pad + 24, pad:pad + 24] = big
    return out, labels[pick]
