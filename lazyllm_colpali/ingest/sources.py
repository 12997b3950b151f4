"""Finding source files and hashing their content."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, List, Tuple

PDF_SUFFIXES = frozenset({'.pdf'})
IMAGE_SUFFIXES = frozenset({'.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.gif'})
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES


def expand_sources(paths: Iterable[str | Path]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Expand files and folders (recursively) into a sorted list of supported files.

    Returns ``(files, problems)``: a path that does not exist, or a file given explicitly with an
    unsupported suffix, is a problem ``(path, reason)``; unsupported files found inside folders are
    silently ignored (a folder of PDFs often holds other files).
    """
    files: List[Path] = []
    problems: List[Tuple[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob('*')) if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                files.append(path)
            else:
                problems.append((str(path), f'unsupported file type {path.suffix or "(none)"!r}; '
                                            f'expected PDF or an image ({", ".join(sorted(SUPPORTED_SUFFIXES))})'))
        else:
            problems.append((str(path), 'no such file or folder'))
    seen = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    return unique, problems


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()
