"""Pages of the kinds the real corpus here lacks, written with real fonts through a PDF writer (fpdf2 with the
system's Liberation/DejaVu TrueType fonts), for the layout arm's tests and benchmarks:

* ``financial_statement_pdf``: a 10-K style statement of operations. Like the PDF writers behind many
  filings, it places every glyph on its own (one text object per glyph): letter-spaced capitals in the
  title, tightly tracked serif prose whose glyph boxes overlap their neighbours', a dense table of
  right-aligned figures with detached ``$`` signs and bracketed negatives.
* ``slide_deck_pdf``: 16:9 slides exported as pictures (no text layer: OCR territory), each a large title
  over a photo-like background, bullets below; and one born-digital slide whose title sits in the text
  layer over a full-bleed image.
* ``scanned_table_pdf``: a page whose text layer is a one-line header while its body is a table pasted in
  as a scanned image.

Each function returns the ground truth a test checks against (the words and table rows drawn).
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Dict, List, Tuple

FONT_DIRS = ('/usr/share/fonts/truetype/liberation', '/usr/share/fonts/truetype/dejavu',
             '/usr/share/fonts/liberation', '/usr/share/fonts/dejavu')
SERIF, SERIF_BOLD = 'LiberationSerif-Regular.ttf', 'LiberationSerif-Bold.ttf'
SANS, SANS_BOLD = 'LiberationSans-Regular.ttf', 'LiberationSans-Bold.ttf'

STATEMENT_TITLE = 'CONSOLIDATED STATEMENTS OF OPERATIONS'
STATEMENT_PROSE = [
    'Our results of operations were affected by approximately $412 million of restructuring charges',
    'in fiscal 2023, which we focused on the consolidation of our offshore drilling fleet. The effect',
    'of foreign currency fluctuations was offset by higher effective prices for our difficult-to-reach',
    'reserves; the officers of the Company believe these efforts will be sufficient.',
]
STATEMENT_ROWS: List[Tuple[str, str, str, str]] = [
    ('Revenues', '$ 14,826', '$ 13,492', '$ 11,057'),
    ('Cost of revenues', '9,318', '8,745', '7,204'),
    ('Gross profit', '5,508', '4,747', '3,853'),
    ('Selling, general and administrative', '2,117', '1,986', '1,743'),
    ('Restructuring and impairment charges', '412', '58', '131'),
    ('Operating income', '2,979', '2,703', '1,979'),
    ('Interest expense, net', '(286)', '(301)', '(318)'),
    ('Other income (expense), net', '47', '(12)', '26'),
    ('Income before income taxes', '2,740', '2,390', '1,687'),
    ('Provision for income taxes', '603', '526', '371'),
    ('Net income', '$ 2,137', '$ 1,864', '$ 1,316'),
    ('Diluted earnings per share', '$ 4.62', '$ 4.01', '$ 2.83'),
]
SLIDES: List[Tuple[str, List[str]]] = [
    ('TOP VIETNAMESE ANDROID APPS ON APPOTA PLATFORM',
     ['Zing MP3 leads music streaming with 14 million users', 'Mobile games earn 62% of platform revenue']),
    ('ECOSYSTEM PLAYERS',
     ['Payment gateways, carriers and app stores', 'Advertising networks reach 25 million devices']),
    ('QUARTERLY ACTIVE DEVICES', ['Devices grew 38% year over year', 'Android holds 71% of the smartphone market']),
]
BORN_DIGITAL_SLIDE = ('MARKET SHARE BY OPERATING SYSTEM', 'Android and iOS together hold 94 percent of devices')
SCANNED_HEADER = 'Annual Report 2023 - Appendix B'
SCANNED_ROWS: List[Tuple[str, str, str]] = [
    ('Region', 'Units sold', 'Revenue (EUR)'), ('Nordics', '18,240', '4,312,900'), ('Benelux', '11,905', '2,871,450'),
    ('Iberia', '9,377', '2,104,380'), ('Baltics', '4,126', '936,200'), ('Total', '43,648', '10,224,930'),
]


def font_path(name: str) -> str:
    """A system TrueType font by file name (the Liberation and DejaVu families ship with most Linux)."""
    for folder in FONT_DIRS:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f'font {name} not found in {", ".join(FONT_DIRS)} (apt-get install fonts-liberation)')


def _glyphs(pdf, x: float, y: float, text: str, tracking: float = 0.0) -> float:
    """Draw ``text`` one glyph per text object (as many filing generators do); ``tracking`` is added after
    each glyph (negative: glyph boxes overlap). Returns the x after the text."""
    for char in text:
        if char != ' ':
            pdf.text(x, y, char)
        x += pdf.get_string_width(char) + tracking
    return x


def _right(pdf, right: float, y: float, text: str) -> None:
    _glyphs(pdf, right - pdf.get_string_width(text), y, text)


def financial_statement_pdf(path: Path) -> Dict[str, object]:
    from fpdf import FPDF

    pdf = FPDF(unit='pt', format=(612, 792))
    pdf.set_auto_page_break(False)
    pdf.add_font('serif', '', font_path(SERIF))
    pdf.add_font('serif', 'B', font_path(SERIF_BOLD))
    pdf.add_page()
    pdf.set_font('serif', '', 8)
    _glyphs(pdf, 72, 36, 'NORTHRIDGE ENERGY CORPORATION - FORM 10-K')
    pdf.set_font('serif', 'B', 11)
    width = sum(pdf.get_string_width(c) + 0.9 for c in STATEMENT_TITLE)
    _glyphs(pdf, (612 - width) / 2, 84, STATEMENT_TITLE, tracking=0.9)
    pdf.set_font('serif', '', 9)
    _glyphs(pdf, 236, 98, '(In millions, except per share data)')
    for i, line in enumerate(STATEMENT_PROSE):
        _glyphs(pdf, 72, 126 + 12 * i, line, tracking=-0.25)
    top = 200
    pdf.set_font('serif', 'B', 9)
    for right, year in ((400, 'Fiscal 2023'), (470, 'Fiscal 2022'), (540, 'Fiscal 2021')):
        _right(pdf, right, top, year)
    pdf.line(300, top + 4, 540, top + 4)
    for i, (label, *values) in enumerate(STATEMENT_ROWS):
        y = top + 20 + 15 * i
        bold = label in ('Gross profit', 'Operating income', 'Net income')
        pdf.set_font('serif', 'B' if bold else '', 9)
        _glyphs(pdf, 72, y, label)
        for right, value in zip((400, 470, 540), values):
            if value.startswith('$ '):      # the dollar sign sits at the column's left edge
                _glyphs(pdf, right - 62, y, '$')
                value = value[2:]
            _right(pdf, right, y, value)
    pdf.set_font('serif', '', 8)
    _glyphs(pdf, 72, 740, 'See accompanying Notes to Consolidated Financial Statements.')
    _glyphs(pdf, 300, 760, 'F-4')
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return {'title': STATEMENT_TITLE, 'prose': ' '.join(STATEMENT_PROSE), 'rows': STATEMENT_ROWS}


def _background(size: Tuple[int, int], seed: int):
    """A photo-like backdrop: a colour gradient with soft shapes and grain (no text in it)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    w, h = size
    top, bottom = np.array([rng.randint(20, 90) for _ in range(3)]), np.array([rng.randint(90, 200) for _ in range(3)])
    ramp = np.linspace(0, 1, h)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1)
    image = Image.fromarray(pixels.astype('uint8'), 'RGB')
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(h // 12, h // 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(40, 230) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(h // 40))
    grain = np.random.default_rng(seed).normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype('uint8'), 'RGB')


def _slide_image(title: str, bullets: List[str], seed: int):
    from PIL import Image, ImageDraw, ImageFont

    size = (1600, 900)
    image = _background(size, seed)
    draw = ImageDraw.Draw(image)
    band = Image.new('RGB', (size[0], 100), (15, 30, 60))
    image.paste(Image.blend(image.crop((0, 5, size[0], 105)), band, 0.55), (0, 5))
    # A title at the very top in type little larger than the bullets: the layout model calls it a header.
    title_font = ImageFont.truetype(font_path(SANS_BOLD), 44)
    draw.text((70, 30), title, font=title_font, fill=(255, 255, 255))
    body = ImageFont.truetype(font_path(SANS), 40)
    for i, bullet in enumerate(bullets):
        y = 420 + 90 * i
        draw.rectangle((70, y - 40, size[0] - 70, y + 40), fill=(250, 250, 250))
        draw.text((100, y - 24), '- ' + bullet, font=body, fill=(20, 20, 20))
    return image


def slide_deck_pdf(path: Path) -> Dict[str, object]:
    """Slides exported as pictures, then one born-digital slide (title in the text layer over an image)."""
    from fpdf import FPDF

    pdf = FPDF(unit='pt', format=(960, 540))
    pdf.set_auto_page_break(False)
    for seed, (title, bullets) in enumerate(SLIDES):
        pdf.add_page()
        buf = io.BytesIO()
        _slide_image(title, bullets, seed).save(buf, format='JPEG', quality=85)
        pdf.image(buf, 0, 0, 960, 540)
    pdf.add_page()
    buf = io.BytesIO()
    _background((1600, 900), 7).save(buf, format='JPEG', quality=85)
    pdf.image(buf, 0, 0, 960, 540)
    pdf.add_font('sans', 'B', font_path(SANS_BOLD))
    pdf.add_font('sans', '', font_path(SANS))
    pdf.set_text_color(255, 255, 255)
    pdf.set_font('sans', 'B', 34)
    pdf.text(50, 60, BORN_DIGITAL_SLIDE[0])
    pdf.set_font('sans', '', 22)
    pdf.text(60, 300, BORN_DIGITAL_SLIDE[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return {'titles': [t for t, _ in SLIDES] + [BORN_DIGITAL_SLIDE[0]],
            'bullets': [b for _, bs in SLIDES for b in bs] + [BORN_DIGITAL_SLIDE[1]]}


def _table_scan(rows: List[Tuple[str, ...]]):
    """A table printed, scanned at 200 DPI: grid, grey paper, a slight tilt, noise and blur."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    widths, height = (420, 360, 420), 86
    image = Image.new('L', (sum(widths) + 40, height * len(rows) + 40), 250)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(font_path(SERIF), 40)
    bold = ImageFont.truetype(font_path(SERIF_BOLD), 40)
    for r, row in enumerate(rows):
        x = 20
        for c, (cell, width) in enumerate(zip(row, widths)):
            y = 20 + r * height
            draw.rectangle((x, y, x + width, y + height), outline=30, width=3)
            draw.text((x + 18, y + 20), cell, font=bold if r == 0 else font, fill=25)
            x += width
    image = image.rotate(0.6, resample=Image.BICUBIC, expand=True, fillcolor=250).filter(ImageFilter.GaussianBlur(1.1))
    noise = np.random.default_rng(3).normal(0, 9, (image.size[1], image.size[0]))
    return Image.fromarray(np.clip(np.asarray(image, dtype=float) + noise, 0, 255).astype('uint8'), 'L')


def scanned_table_pdf(path: Path) -> Dict[str, object]:
    from fpdf import FPDF

    pdf = FPDF(unit='pt', format=(612, 792))
    pdf.set_auto_page_break(False)
    pdf.add_font('sans', 'B', font_path(SANS_BOLD))
    pdf.add_page()
    pdf.set_font('sans', 'B', 13)
    pdf.text(72, 70, SCANNED_HEADER)
    buf = io.BytesIO()
    _table_scan(SCANNED_ROWS).save(buf, format='PNG')
    pdf.image(buf, 72, 100, 468)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return {'header': SCANNED_HEADER, 'rows': SCANNED_ROWS}
