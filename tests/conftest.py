"""Session setup: the tests never touch the user's tuning database (``~/.cache/cnncc``)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("CNNCC_TUNING_DB", os.path.join(tempfile.mkdtemp(prefix="cnncc-tests-"), "tuning.json"))
