"""The CPU a module is compiled for: LLVM CPU name, feature string, and the vector width that follows from them.

The vector width is the channel block of cnncc's blocked layouts (NCHW16c with AVX-512, NCHW8c with AVX2): the same
code generator serves both, so code compiled for ``x86-64-v3`` runs on any AVX2 machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnncc.errors import CnnccError

# x86-64 micro-architecture levels: the features each one requires (what a bundle checks on the host).
LEVEL_FEATURES: dict[str, tuple[str, ...]] = {
    "x86-64": ("sse2",),
    "x86-64-v2": ("sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"),
    "x86-64-v3": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe"),
    "x86-64-v4": ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2", "f16c", "lzcnt", "movbe", "avx512f",
                  "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}


@dataclass(frozen=True)
class Target:
    """``cpu`` as LLVM names it; ``features`` an LLVM feature string ("+avx2,+fma,..."), empty for the CPU's own."""

    cpu: str
    features: str = ""

    @staticmethod
    def host() -> Target:
        from cnncc.codegen.jit import initialize, llvm

        initialize()
        return Target(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten())

    @staticmethod
    def named(cpu: str) -> Target:
        """A target by LLVM CPU name (``x86-64-v3``, ``znver4``, ``skylake-avx512``) or ``"host"``."""
        if cpu in ("host", "native", ""):
            return Target.host()
        if cpu in LEVEL_FEATURES:
            return Target(cpu, ",".join(f"+{f}" for f in LEVEL_FEATURES[cpu]))
        host = Target.host()
        if cpu == host.cpu:
            return host
        raise CnnccError(f"unknown target CPU '{cpu}': use 'host' or one of {', '.join(LEVEL_FEATURES)} "
                         f"(this host is '{host.cpu}')")

    def enabled(self) -> set[str]:
        return {f[1:] for f in self.features.split(",") if f.startswith("+")}

    @property
    def vector_width(self) -> int:
        """float32 lanes per vector register: 16 with AVX-512F, 8 with AVX, else 4."""
        feats = self.enabled()
        if "avx512f" in feats:
            return 16
        if "avx" in feats:
            return 8
        return 4

    @property
    def key(self) -> str:
        return f"{self.cpu}:{self.features}"

    def machine(self):  # noqa: ANN201 - llvmlite TargetMachine
        """A new TargetMachine: an MCJIT engine takes ownership of (and frees) the one it is given."""
        return _machine(self.cpu, self.features)


def _machine(cpu: str, features: str):  # noqa: ANN202
    from cnncc.codegen.jit import initialize, llvm

    initialize()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default",
                                        jit=False)
