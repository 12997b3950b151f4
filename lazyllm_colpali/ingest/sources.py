"""Finding source files and hashing their content."""
from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Iterable, List, Tuple

from ..serving.escape import terminal_text

PDF_SUFFIXES = frozenset({'.pdf'})
IMAGE_SUFFIXES = frozenset({'.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.gif'})
SUPPORTED_SUFFIXES = PDF_SUFFIXES | IMAGE_SUFFIXES
FOLDER_LINK = 'a link to a folder: not followed (give the folder it points to)'


def expand_sources(paths: Iterable[str | Path]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Expand files and folders (recursively) into a sorted list of supported files.

    Returns ``(files, problems)``: a path that does not exist, a file given explicitly with an unsupported
    suffix, a link to a folder inside a folder (not followed: it could loop or lead anywhere), or a name with
    control characters or non-UTF-8 bytes is a problem ``(path, reason)``; unsupported files found inside
    folders are silently ignored (a folder of PDFs often holds other files).
    """
    files: List[Path] = []
    problems: List[Tuple[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            entries = sorted(path.rglob('*'))
            files.extend(p for p in entries if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            problems.extend((terminal_text(p), FOLDER_LINK) for p in entries if p.is_symlink() and p.is_dir())
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                files.append(path)
            else:
                problems.append((str(path), f'unsupported file type {path.suffix or "(none)"!r}; '
                                            f'expected PDF or an image ({", ".join(sorted(SUPPORTED_SUFFIXES))})'))
        else:
            problems.append((str(path), 'no such file or folder'))
    seen = set()
    unique = []
    for f in files:
        reason = unsafe_name_reason(f)
        if reason:
            problems.append((terminal_text(f), reason))
        elif f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, problems


def unsafe_name_reason(path: Path) -> str:
    """Why a path cannot be stored and shown safely ('' if it can): control characters or bytes that are
    not UTF-8 would corrupt terminals, Milvus strings and Markdown downstream."""
    text = str(path)
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return 'file name is not valid UTF-8; rename the file'
    if any(unicodedata.category(c) == 'Cc' for c in text):   # C0, DEL and C1 (\x9b alone starts a terminal CSI)
        return 'file name contains control characters; rename the file'
    return ''


def document_id(path: Path) -> Tuple[str, str]:
    """``(doc_id, sha256)`` of a source file: its bytes and its absolute path (see ``make_doc_id``)."""
    from .records import make_doc_id

    sha = file_sha256(path)
    return make_doc_id(sha, str(Path(path).resolve())), sha


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()
