"""Where each x86 CPU feature that LLVM names lives in CPUID: what a bundle checks before its first instruction.

A bundle records the features its code was compiled with (the ``+`` entries of the target's LLVM feature string);
at creation its C runtime reads CPUID for exactly those and refuses a CPU that lacks one, with the missing names,
instead of dying on an illegal instruction. Wider vector registers also need the operating system to save their
state: AVX needs XCR0 bits 1-2 (SSE, YMM) and AVX-512 bits 5-7 (opmask, ZMM upper halves, ZMM16-31).

Register numbers: 0 EAX, 1 EBX, 2 ECX, 3 EDX. Sources: Intel SDM vol. 2A (CPUID), AMD APM vol. 3 appendix E.
"""

from __future__ import annotations

from typing import NamedTuple

from cnncc.codegen.target import Target

EAX, EBX, ECX, EDX = range(4)


class CpuidBit(NamedTuple):
    leaf: int
    subleaf: int
    register: int
    bit: int


FEATURES: dict[str, CpuidBit] = {
    # leaf 1
    "sse3": CpuidBit(1, 0, ECX, 0), "pclmul": CpuidBit(1, 0, ECX, 1), "ssse3": CpuidBit(1, 0, ECX, 9),
    "fma": CpuidBit(1, 0, ECX, 12), "cx16": CpuidBit(1, 0, ECX, 13), "sse4.1": CpuidBit(1, 0, ECX, 19),
    "sse4.2": CpuidBit(1, 0, ECX, 20), "crc32": CpuidBit(1, 0, ECX, 20), "movbe": CpuidBit(1, 0, ECX, 22),
    "popcnt": CpuidBit(1, 0, ECX, 23), "aes": CpuidBit(1, 0, ECX, 25), "xsave": CpuidBit(1, 0, ECX, 26),
    "avx": CpuidBit(1, 0, ECX, 28), "f16c": CpuidBit(1, 0, ECX, 29), "rdrnd": CpuidBit(1, 0, ECX, 30),
    "x87": CpuidBit(1, 0, EDX, 0), "cx8": CpuidBit(1, 0, EDX, 8), "cmov": CpuidBit(1, 0, EDX, 15),
    "mmx": CpuidBit(1, 0, EDX, 23), "fxsr": CpuidBit(1, 0, EDX, 24), "sse": CpuidBit(1, 0, EDX, 25),
    "sse2": CpuidBit(1, 0, EDX, 26),
    # leaf 7, sub-leaf 0
    "fsgsbase": CpuidBit(7, 0, EBX, 0), "bmi": CpuidBit(7, 0, EBX, 3), "avx2": CpuidBit(7, 0, EBX, 5),
    "bmi2": CpuidBit(7, 0, EBX, 8), "invpcid": CpuidBit(7, 0, EBX, 10), "avx512f": CpuidBit(7, 0, EBX, 16),
    "avx512dq": CpuidBit(7, 0, EBX, 17), "rdseed": CpuidBit(7, 0, EBX, 18), "adx": CpuidBit(7, 0, EBX, 19),
    "avx512ifma": CpuidBit(7, 0, EBX, 21), "clflushopt": CpuidBit(7, 0, EBX, 23), "clwb": CpuidBit(7, 0, EBX, 24),
    "avx512cd": CpuidBit(7, 0, EBX, 28), "sha": CpuidBit(7, 0, EBX, 29), "avx512bw": CpuidBit(7, 0, EBX, 30),
    "avx512vl": CpuidBit(7, 0, EBX, 31),
    "avx512vbmi": CpuidBit(7, 0, ECX, 1), "pku": CpuidBit(7, 0, ECX, 3), "waitpkg": CpuidBit(7, 0, ECX, 5),
    "avx512vbmi2": CpuidBit(7, 0, ECX, 6), "shstk": CpuidBit(7, 0, ECX, 7), "gfni": CpuidBit(7, 0, ECX, 8),
    "vaes": CpuidBit(7, 0, ECX, 9), "vpclmulqdq": CpuidBit(7, 0, ECX, 10), "avx512vnni": CpuidBit(7, 0, ECX, 11),
    "avx512bitalg": CpuidBit(7, 0, ECX, 12), "avx512vpopcntdq": CpuidBit(7, 0, ECX, 14),
    "rdpid": CpuidBit(7, 0, ECX, 22), "cldemote": CpuidBit(7, 0, ECX, 25), "movdiri": CpuidBit(7, 0, ECX, 27),
    "movdir64b": CpuidBit(7, 0, ECX, 28),
    "avx512vp2intersect": CpuidBit(7, 0, EDX, 8), "serialize": CpuidBit(7, 0, EDX, 14),
    "tsxldtrk": CpuidBit(7, 0, EDX, 16), "amx-bf16": CpuidBit(7, 0, EDX, 22), "avx512fp16": CpuidBit(7, 0, EDX, 23),
    "amx-tile": CpuidBit(7, 0, EDX, 24), "amx-int8": CpuidBit(7, 0, EDX, 25),
    # leaf 7, sub-leaf 1
    "avxvnni": CpuidBit(7, 1, EAX, 4), "avx512bf16": CpuidBit(7, 1, EAX, 5), "cmpccxadd": CpuidBit(7, 1, EAX, 7),
    "avxifma": CpuidBit(7, 1, EAX, 23),
    # leaf 0xD, sub-leaf 1
    "xsaveopt": CpuidBit(0xD, 1, EAX, 0), "xsavec": CpuidBit(0xD, 1, EAX, 1), "xsaves": CpuidBit(0xD, 1, EAX, 3),
    # extended leaves
    "sahf": CpuidBit(0x80000001, 0, ECX, 0), "lzcnt": CpuidBit(0x80000001, 0, ECX, 5),
    "sse4a": CpuidBit(0x80000001, 0, ECX, 6), "prfchw": CpuidBit(0x80000001, 0, ECX, 8),
    "xop": CpuidBit(0x80000001, 0, ECX, 11), "fma4": CpuidBit(0x80000001, 0, ECX, 16),
    "tbm": CpuidBit(0x80000001, 0, ECX, 21), "mwaitx": CpuidBit(0x80000001, 0, ECX, 29),
    "64bit": CpuidBit(0x80000001, 0, EDX, 29),
    "clzero": CpuidBit(0x80000008, 0, EBX, 0), "rdpru": CpuidBit(0x80000008, 0, EBX, 4),
    "wbnoinvd": CpuidBit(0x80000008, 0, EBX, 9),
}

# XCR0 bits the OS must have enabled (XSAVE-managed register state) before code of a feature family may run.
XCR0_AVX = 0b110  # SSE + YMM
XCR0_AVX512 = 0b11100110  # + opmask, ZMM_Hi256, Hi16_ZMM


def required_features(target: Target) -> tuple[list[str], list[str]]:
    """(checked, unchecked): the features ``target``'s code may use that CPUID can confirm, and any it cannot."""
    names = sorted(target.enabled())
    return [n for n in names if n in FEATURES], [n for n in names if n not in FEATURES]


def xcr0_mask(features: list[str]) -> int:
    """The XCR0 bits the OS must have set for code using ``features``."""
    if any(f.startswith("avx512") for f in features):
        return XCR0_AVX512
    if any(f in ("avx", "avx2", "fma", "f16c", "vaes", "vpclmulqdq", "avxvnni") for f in features):
        return XCR0_AVX
    return 0
