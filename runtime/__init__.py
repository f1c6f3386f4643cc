"""cnncc.runtime: the reference interpreter now; compiled-model loading, arenas and training steps later."""

if __name__ != "cnncc.runtime":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's runtime package must be imported as 'cnncc.runtime', not '{__name__}'; "
                      "run the tests with `pytest` (importlib mode) from an installed cnncc")

from cnncc.runtime.interpreter import interpret

__all__ = ["interpret"]
