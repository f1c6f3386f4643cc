"""cnncc's version: one home, read by the package, the tuning database's keys and the bundle manifest (which must
not import the package's top level to learn it)."""

from __future__ import annotations

__version__ = "0.1.0"
