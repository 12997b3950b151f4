"""Which matrix units this CPU has, for choosing a MaxSim scoring path.

``bf16``: bf16 dot products in hardware (AVX-512 BF16, or AMX-BF16 tiles); ``int8``: int8 dot products
(AVX-512 VNNI / AVX-VNNI, or AMX-INT8). oneDNN (inside torch) picks the widest of these for a GEMM by itself,
so an AMX machine and an AVX-512 BF16 machine take the same path through the same library calls; without
the units, bf16 and int8 GEMMs are emulated and slower than the numba kernel, which then stays the path.

Read from torch's own CPU probes (cpuinfo), with ``/proc/cpuinfo`` flags as a fallback.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, FrozenSet


@dataclass(frozen=True)
class MatrixUnits:
    bf16: bool
    int8: bool
    amx: bool

    def __str__(self) -> str:
        found = [name for name, present in (('AMX', self.amx), ('bf16 dot products', self.bf16),
                                            ('int8 dot products', self.int8)) if present]
        return ', '.join(found) or 'none'


def _cpuinfo_flags() -> FrozenSet[str]:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _torch_probe(name: str) -> Callable[[], bool]:
    import torch

    probe = getattr(torch.cpu, name, None)
    if probe is None:
        raise AttributeError(name)
    return probe


@functools.lru_cache(maxsize=1)
def matrix_units() -> MatrixUnits:
    """What this CPU offers (cached: the hardware does not change while a process runs).

    >>> isinstance(matrix_units().bf16, bool)
    True
    """
    flags = _cpuinfo_flags()
    try:
        amx = _torch_probe('_is_amx_tile_supported')()
        bf16 = _torch_probe('_is_avx512_bf16_supported')() or (amx and 'amx_bf16' in flags)
        int8 = _torch_probe('_is_vnni_supported')() or (amx and 'amx_int8' in flags)
    except AttributeError:   # a torch without the probes
        amx = 'amx_tile' in flags
        bf16 = 'avx512_bf16' in flags or 'amx_bf16' in flags
        int8 = bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & flags)
    return MatrixUnits(bf16=bool(bf16), int8=bool(int8), amx=bool(amx))
