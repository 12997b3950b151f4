"""Compressed token storage for MaxSim: fp16, int8 (per-token scale) and 1-bit (sign) codes.

Each codec wraps a ``(total_tokens, dim)`` matrix and decodes row ranges to float on demand, so
:func:`maxsim_packed` streams compressed pages exactly like full-precision ones (``packed.tokens[a:b]``).
Bytes per 128-dim token: float32 512, fp16 / bf16 256, int8 130 (+2 for the scale), binary 16.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..store.vector_file import PackedMultiVectors


@dataclass
class Int8Tokens:
    """Symmetric per-token int8: ``x ~ codes * scale``; error <= scale / 2 per coordinate."""

    codes: torch.Tensor    # int8 (T, dim)
    scales: torch.Tensor   # float16 (T, 1)

    @classmethod
    def encode(cls, tokens: torch.Tensor, chunk_rows: int = 1 << 18) -> 'Int8Tokens':
        # In chunks: float temporaries of a whole 10k-page collection would need ~4x its fp16 size.
        codes = torch.empty(tokens.shape, dtype=torch.int8)
        scales = torch.empty(len(tokens), 1, dtype=torch.float16)
        for a in range(0, len(tokens), chunk_rows):
            x = tokens[a:a + chunk_rows].float()
            s = (x.abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
            codes[a:a + chunk_rows] = torch.round(x / s).to(torch.int8)
            scales[a:a + chunk_rows] = s.half()
        return cls(codes, scales)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.codes[rows].float() * self.scales[rows].float()

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + self.scales.numel() * 2


@dataclass
class BinaryTokens:
    """One sign bit per coordinate, packed 8 per byte. Decodes to +-1/sqrt(dim) so that scores with a
    unit query stay on the same scale as cosine (asymmetric: the query keeps full precision)."""

    bits: torch.Tensor   # uint8 (T, dim / 8)
    dim: int

    @classmethod
    def encode(cls, tokens: torch.Tensor) -> 'BinaryTokens':
        dim = tokens.shape[1]
        if dim % 8:
            raise ValueError(f'binary codes need dim divisible by 8, got {dim}')
        signs = (tokens > 0).to(torch.uint8).view(len(tokens), dim // 8, 8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        return cls((signs * weights).sum(dim=2, dtype=torch.uint8), dim)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        bits = self.bits[rows]
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
        unpacked = (bits.unsqueeze(-1) >> shifts) & 1                      # (n, dim/8, 8)
        return (unpacked.view(len(bits), self.dim).float() * 2 - 1) / self.dim ** 0.5

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def nbytes(self) -> int:
        return self.bits.numel()


def to_bfloat16(tokens: torch.Tensor, chunk_rows: int = 1 << 18) -> torch.Tensor:
    """``tokens`` rounded to bf16 in chunks (through float32: torch's direct fp16 -> bf16 cast runs at
    ~4 GB/s on CPU, the two steps at ~35 GB/s, and no float32 copy of a whole collection ever exists)."""
    out = torch.empty(tokens.shape, dtype=torch.bfloat16)
    for a in range(0, len(tokens), chunk_rows):
        out[a:a + chunk_rows] = tokens[a:a + chunk_rows].float()
    return out


def compress(packed: PackedMultiVectors, codec: str) -> PackedMultiVectors:
    """The same pages with tokens stored as ``float32``, ``float16``, ``bfloat16``, ``int8`` or ``binary``."""
    if codec == 'float32':
        tokens = packed.tokens.float()
    elif codec == 'float16':
        tokens = packed.tokens.half()
    elif codec == 'bfloat16':
        tokens = to_bfloat16(packed.tokens)
    elif codec == 'int8':
        tokens = Int8Tokens.encode(packed.tokens)
    elif codec == 'binary':
        tokens = BinaryTokens.encode(packed.tokens)
    else:
        raise ValueError(f'unknown codec {codec!r}: float32, float16, bfloat16, int8 or binary')
    return PackedMultiVectors(packed.page_ids, tokens, packed.offsets)


def token_bytes(packed: PackedMultiVectors) -> int:
    tokens = packed.tokens
    if isinstance(tokens, torch.Tensor):
        return tokens.numel() * tokens.element_size()
    return tokens.nbytes   # Int8Tokens / BinaryTokens count their codes and scales
