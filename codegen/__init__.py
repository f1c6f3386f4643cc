"""cnncc.codegen: the LLVM CPU backend (the only package that imports llvmlite) — built by the backend issue."""

if __name__ != "cnncc.codegen":  # pragma: no cover - guards the package-dir mapping
    raise ImportError(f"cnncc's codegen package must be imported as 'cnncc.codegen', not '{__name__}'")
