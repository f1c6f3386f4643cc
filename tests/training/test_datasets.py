"""The bundled digits data: the fixed 80/20 split, shapes, values, determinism (no download)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from cnncc.datasets import digits
from cnncc.errors import CnnccError


def test_split_is_fixed_disjoint_and_stratified() -> None:
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    assert (xtr.shape, xte.shape) == ((1438, 1, 32, 32), (359, 1, 32, 32))
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert len(ytr) + len(yte) == 1797
    for cls in range(10):  # every class is split 80/20
        n_tr, n_te = int((ytr == cls).sum()), int((yte == cls).sum())
        assert abs(n_tr / (n_tr + n_te) - 0.8) < 0.01
    flat_tr = {x.tobytes() for x in xtr}
    overlap = sum(x.tobytes() in flat_tr for x in xte)
    raw = load_digits().images
    assert overlap <= len(raw) - len({r.tobytes() for r in raw})  # only scans that are duplicated in the data
    again, yagain = digits("train")
    assert np.array_equal(again, xtr) and np.array_equal(yagain, ytr)
    assert not np.array_equal(digits("train", seed=1)[1], ytr)


def test_images_are_the_scans_enlarged_and_padded() -> None:
    x, y = digits("test", size=28)
    raw = load_digits()
    assert x.shape[2:] == (28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    core = x[:, 0, 2:26, 2:26]
    assert np.all(x[:, 0, :2] == 0) and np.all(x[:, 0, 26:] == 0)
    small = core[:, ::3, ::3] * 16  # the replicated 3x3 blocks give back the 8x8 scans
    scans = {(r.astype(np.float32).tobytes(), int(t)) for r, t in zip(raw.images, raw.target, strict=True)}
    assert all((s.tobytes(), int(t)) in scans for s, t in zip(small, y, strict=True))
    assert np.array_equal(core, np.kron(small / 16, np.ones((3, 3))).astype(np.float32))


@pytest.mark.parametrize("kw,msg", [({"split": "val"}, "split must be one of train, test"),
                                    ({"size": 20}, "size must be an even number of pixels >= 24"),
                                    ({"size": 31}, "size must be an even number")])
def test_bad_arguments(kw: dict, msg: str) -> None:
    with pytest.raises(CnnccError, match=msg):
        digits(**kw)
