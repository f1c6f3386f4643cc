"""cnncc.passes: graph passes (canonicalisation, fusion), per-target pipelines, and memory planning.

A pass is a small named object with ``run(graph, ctx) -> graph`` (protocol: ``cnncc.passmanager``).
"""

if __name__ != "cnncc.passes":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's passes package must be imported as 'cnncc.passes', not '{__name__}'")

from cnncc.passes.pipelines import PASSES, cpu_inference  # noqa: E402

__all__ = ["PASSES", "cpu_inference"]
