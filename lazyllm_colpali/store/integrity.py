"""Per-page checksums and the store's private part of a page row's ``meta``.

A page's vectors carry a CRC-32 of their bytes in two places: the local vector file's manifest (of the bytes
as cached) and the page row in Milvus (of the fp16 vectors as written, under :data:`ROW_META_KEY`), so a cache
whose bytes rotted or that holds another version of a page is found by comparing numbers, without reading
Milvus's copy. CRC-32 (zlib) is there to catch damage, not forgery: ~1 GB/s, four bytes per page.

>>> import numpy as np
>>> a = np.ones((3, 4), dtype=np.float16)
>>> vectors_checksum(a) == vectors_checksum(a.copy()), vectors_checksum(a) == vectors_checksum(a * 2)
(True, False)
>>> split_meta({'kb_id': 'k', ROW_META_KEY: {'crc': 7}})
({'kb_id': 'k'}, {'crc': 7})
"""
from __future__ import annotations

import zlib
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

ROW_META_KEY = '_lazyllm_colpali'   # reserved key in a page row's meta JSON; never shown as user metadata


def vectors_checksum(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes (C order), as stored."""
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast('B')) & 0xFFFFFFFF


def fp16_checksum(array: np.ndarray) -> int:
    """The checksum a page row records: of the vectors as fp16, the precision Milvus keeps."""
    return vectors_checksum(np.asarray(array).astype(np.float16, copy=False))


def split_meta(meta: Optional[Mapping[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(user metadata, the store's own fields)`` of a row's ``meta``."""
    user = dict(meta or {})
    own = user.pop(ROW_META_KEY, None)
    return user, dict(own) if isinstance(own, dict) else {}


def row_checksum(meta: Optional[Mapping[str, Any]]) -> Optional[int]:
    """The vectors' checksum a page row records (None for rows written before checksums)."""
    crc = split_meta(meta)[1].get('crc')
    return int(crc) if isinstance(crc, int) and not isinstance(crc, bool) else None
