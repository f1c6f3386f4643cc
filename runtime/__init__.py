"""cnncc.runtime: a leaf -- it imports only the core, numpy and ctypes. The reference interpreter (the oracle), the
compiled model around an executable the driver built (arena, bound weights, input checks, profiling), and the
deployment-bundle loader (``cnncc.load``)."""

if __name__ != "cnncc.runtime":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's runtime package must be imported as 'cnncc.runtime', not '{__name__}'; "
                      "run the tests with `pytest` (importlib mode) from an installed cnncc")

from cnncc.runtime.interpreter import interpret

__all__ = ["interpret"]
