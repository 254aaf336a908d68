"""The machine a measurement ran on, recorded beside its figures: timings from two hosts of the
same name can differ by 1.5x (the tiny model's CPU steps with and without AVX-512)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# instruction-set features that change the CPU engine's step times
_ISA = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def host_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model, logical cores and the ISA features of ``_ISA`` the CPU has (Linux reads
    ``cpuinfo``; elsewhere the model is ``platform.processor()`` and no features are listed)."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count() or 0,
            "isa": [f for f in _ISA if f in flags], "machine": platform.machine()}
