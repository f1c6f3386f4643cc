"""cnncc.passes: graph rewrites (fusion, layout, algorithm choice, memory planning) — built by the passes issue."""

if __name__ != "cnncc.passes":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's passes package must be imported as 'cnncc.passes', not '{__name__}'")
