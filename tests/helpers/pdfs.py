"""Real PDF files for tests: born-digital pages with a text layer (fpdf2), and a corpus of bad inputs."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List

from PIL import Image


def make_text_pdf(path: Path, pages: List[str], size=(612, 792)) -> Path:
    from fpdf import FPDF

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = FPDF(unit='pt', format=size)
    pdf.set_font('helvetica', size=24)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 30, text)
        pdf.rect(72, 400, 300, 150)  # a box, so pages are not only text
    pdf.output(str(path))
    return path


def make_bad_files(root: Path) -> Dict[str, Path]:
    """Each kind of bad input a user may feed the indexer, plus one good file that must still be indexed."""
    from pypdf import PdfReader, PdfWriter

    root.mkdir(parents=True, exist_ok=True)
    good = make_text_pdf(root / 'good.pdf', ['A good page.'])
    files = {'good': good}
    data = good.read_bytes()
    files['truncated'] = root / 'truncated.pdf'
    files['truncated'].write_bytes(data[: len(data) // 3])
    files['garbage'] = root / 'garbage.pdf'
    files['garbage'].write_bytes(b'%PDF-1.7\n' + bytes(range(256)) * 8)
    files['empty'] = root / 'empty.pdf'
    files['empty'].write_bytes(b'')
    png = io.BytesIO()
    Image.new('RGB', (64, 64), 'white').save(png, format='PNG')
    files['png_named_pdf'] = root / 'picture.pdf'
    files['png_named_pdf'].write_bytes(png.getvalue())
    writer = PdfWriter()
    writer.append(PdfReader(str(good)))
    writer.encrypt('secret')
    files['encrypted'] = root / 'encrypted.pdf'
    with open(files['encrypted'], 'wb') as f:
        writer.write(f)
    files['zero_pages'] = root / 'zero pages.pdf'
    with open(files['zero_pages'], 'wb') as f:
        PdfWriter().write(f)
    files['not_an_image'] = root / 'notes.png'
    files['not_an_image'].write_text('this is text, not a PNG')
    return files
