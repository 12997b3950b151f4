"""A small built-in evaluation set, generated offline: born-digital pages with text and tables, pages whose
facts live only in a chart image, and a scanned page with no text layer (OCR territory). Gold answers go
with the questions (``answers.jsonl``), including one the documents do not answer (``Not answerable``).

    >>> from lazyllm_colpali.eval.sample import SAMPLE_ANSWERS, SAMPLE_QUERIES, SAMPLE_QRELS
    >>> len(SAMPLE_QUERIES), all(q in SAMPLE_QUERIES for q in [*SAMPLE_QRELS, *SAMPLE_ANSWERS])
    (13, True)
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Dict, List, Tuple

from .dataset import EvalDataset, load_dataset, write_jsonl

REPORT, MANUAL, SCAN, BRIEF = ('northwind_annual_report_2023.pdf', 'hydra_pump_manual.pdf',
                               'scans/warehouse_visit_scan.pdf', 'climate_brief.pdf')

SAMPLE_QUERIES: Dict[str, str] = {
    'q01': 'How much did Northwind revenue grow in 2023?',
    'q02': 'Revenue of the Nordics region in 2022',
    'q03': 'How many people work in the engineering department?',
    'q04': 'Which department has the fewest employees?',
    'q05': 'What is the maximum operating pressure of the pump?',
    'q06': 'How often should the filter cartridge be replaced?',
    'q07': 'What does error code E4 mean?',
    'q08': 'Where was the roof leak found during the warehouse visit?',
    'q09': 'Was the forklift battery charger replaced?',
    'q10': 'How much has the average summer temperature in Oslo risen since 1990?',
    'q11': 'Chart of CO2 emissions per capita from 1990 to 2020',
    'q12': 'Where did Northwind open its new distribution centre?',
    'q13': 'What was the operating margin of Northwind in 2019?',    # the report gives 2022 and 2023 only
}
SAMPLE_QRELS: Dict[str, Dict[str, int]] = {
    'q01': {f'{REPORT}#1': 2, f'{REPORT}#2': 1}, 'q02': {f'{REPORT}#2': 2}, 'q03': {f'{REPORT}#3': 2},
    'q04': {f'{REPORT}#3': 2}, 'q05': {f'{MANUAL}#1': 2}, 'q06': {f'{MANUAL}#2': 2}, 'q07': {f'{MANUAL}#3': 2},
    'q08': {f'{SCAN}#1': 2}, 'q09': {f'{SCAN}#1': 2}, 'q10': {f'{BRIEF}#1': 2}, 'q11': {f'{BRIEF}#2': 2},
    'q12': {f'{REPORT}#1': 2},
}
# Gold answers (several where wordings differ); q11 is a search request, not a question, so it has none.
SAMPLE_ANSWERS: Dict[str, List[str]] = {
    'q01': ['18 percent', '18%'], 'q02': ['118 million euros', 'EUR 118 million', '118'], 'q03': ['320'],
    'q04': ['Finance'], 'q05': ['16 bar'], 'q06': ['every 6 months', 'every six months'],
    'q07': ['the motor is overheating', 'motor overheating'], 'q08': ['above loading bay 3', 'loading bay 3'],
    'q09': ['yes'], 'q10': ['1.4 degrees Celsius', '1.4 °C'], 'q12': ['Gothenburg, Sweden', 'Gothenburg'],
    'q13': ['Not answerable'],
}


def _chart_png(kind: str, labels: List[str], values: List[float], title: str) -> bytes:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    if kind == 'bar':
        bars = ax.bar(labels, values, color=['#3b6ea5', '#e07b39', '#5aa469', '#b5504b'][:len(labels)])
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f'{value:g}', ha='center', va='bottom')
    else:
        ax.plot(labels, values, marker='o')
        for x, y in zip(labels, values):
            ax.annotate(f'{y:g}', (x, y), textcoords='offset points', xytext=(0, 6), ha='center')
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return buf.getvalue()


def _new_pdf():
    from fpdf import FPDF
    pdf = FPDF(format='A4')
    pdf.set_auto_page_break(True, margin=15)
    return pdf


def _heading(pdf, text: str) -> None:
    pdf.set_font('Helvetica', 'B', 16)
    pdf.multi_cell(0, 9, text, new_x='LMARGIN', new_y='NEXT')
    pdf.ln(2)
    pdf.set_font('Helvetica', '', 11)


def _paragraphs(pdf, paragraphs: List[str]) -> None:
    pdf.set_font('Helvetica', '', 11)
    for paragraph in paragraphs:
        pdf.multi_cell(0, 6, paragraph, new_x='LMARGIN', new_y='NEXT')
        pdf.ln(3)


def _table(pdf, header: Tuple[str, ...], rows: List[Tuple[str, ...]], widths: Tuple[int, ...]) -> None:
    pdf.set_font('Helvetica', 'B', 11)
    for text, width in zip(header, widths):
        pdf.cell(width, 8, text, border=1)
    pdf.ln()
    pdf.set_font('Helvetica', '', 11)
    for row in rows:
        for text, width in zip(row, widths):
            pdf.cell(width, 8, text, border=1)
        pdf.ln()


def _report(path: Path) -> None:
    pdf = _new_pdf()
    pdf.add_page()
    _heading(pdf, 'Northwind Traders - Annual Report 2023\nLetter from the Chief Executive')
    _paragraphs(pdf, [
        'Dear shareholders, 2023 was a year of strong growth. Group revenue grew by 18 percent to 412 million '
        'euros, driven by our expansion in the Nordic countries and a recovery of demand in Iberia.',
        'In September we opened a new distribution centre in Gothenburg, Sweden, which now serves every customer '
        'in Scandinavia within 24 hours. Operating margin improved from 7.9 to 9.4 percent.',
        'We thank our employees, customers and partners for their trust, and we look forward to 2024.'])
    pdf.add_page()
    _heading(pdf, 'Revenue by region (EUR million)')
    _table(pdf, ('Region', '2023', '2022', 'Change'),
           [('Nordics', '142', '118', '+20%'), ('DACH', '121', '109', '+11%'), ('Benelux', '88', '80', '+10%'),
            ('Iberia', '61', '43', '+42%')], (60, 35, 35, 35))
    pdf.ln(4)
    _paragraphs(pdf, ['Totals exclude intra-group sales. Figures are audited.'])
    pdf.add_page()
    _heading(pdf, 'Figure 3. Our people')
    png = _chart_png('bar', ['Engineering', 'Sales', 'Support', 'Finance'], [320, 210, 150, 45],
                     'Employees by department, December 2023')
    pdf.image(io.BytesIO(png), w=180)
    pdf.output(str(path))


def _manual(path: Path) -> None:
    pdf = _new_pdf()
    pdf.add_page()
    _heading(pdf, 'HydraFlow HF-200 Pump - Operating Manual\n1. Safety instructions')
    _paragraphs(pdf, ['Disconnect the power supply before opening the housing. Wear protective gloves when '
                      'handling the impeller.',
                      'The maximum operating pressure is 16 bar. Never run the pump dry for more than 30 seconds.'])
    pdf.add_page()
    _heading(pdf, '2. Maintenance schedule')
    _table(pdf, ('Part', 'Action', 'Interval'),
           [('Filter cartridge', 'Replace', 'every 6 months'), ('Shaft seals', 'Inspect', 'every 12 months'),
            ('Impeller', 'Clean', 'every 3 months'), ('Motor bearings', 'Lubricate', 'every 2000 hours')],
           (60, 45, 60))
    pdf.add_page()
    _heading(pdf, '3. Troubleshooting')
    _paragraphs(pdf, ['Pump runs but no water flows: open the inlet valve and vent the suction line.',
                      'Error code E4: the motor is overheating. Let it cool for 20 minutes and clean the fan cover.',
                      'Error code E7: the pressure sensor is disconnected.'])
    pdf.output(str(path))


def _scan(path: Path) -> None:
    """A typed memo printed, 'scanned' (rasterised, rotated, noised) and saved as an image-only PDF."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageFilter

    pdf = _new_pdf()
    pdf.add_page()
    pdf.set_font('Helvetica', 'B', 18)
    pdf.multi_cell(0, 10, 'Memo: warehouse site visit', new_x='LMARGIN', new_y='NEXT')
    pdf.set_font('Helvetica', '', 15)
    pdf.multi_cell(0, 9, 'Site visit to the Tromso warehouse on 14 March. We found a roof leak above loading '
                         'bay 3. The forklift battery charger was replaced. Next inspection in June.',
                   new_x='LMARGIN', new_y='NEXT')
    raw = io.BytesIO(pdf.output())
    image = pdfium.PdfDocument(raw)[0].render(scale=150 / 72).to_pil().convert('L')
    rng = random.Random(7)
    image = image.rotate(0.8, expand=False, fillcolor=255, resample=Image.BICUBIC).filter(ImageFilter.GaussianBlur(0.6))
    pixels = image.load()
    for _ in range(image.width * image.height // 60):   # speckle noise, like a photocopy
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        pixels[x, y] = rng.choice((0, 90, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, 'PDF', resolution=150)


def _brief(path: Path) -> None:
    pdf = _new_pdf()
    pdf.add_page()
    _heading(pdf, 'Climate brief: Oslo')
    _paragraphs(pdf, ['The average summer temperature in Oslo has risen by 1.4 degrees Celsius since 1990. '
                      'Heat waves now occur about twice as often as in the 1990s, and spring arrives nine days '
                      'earlier.'])
    pdf.add_page()
    _heading(pdf, 'Figure 2')
    png = _chart_png('line', ['1990', '2000', '2010', '2020'], [8.1, 9.4, 9.0, 6.9],
                     'CO2 emissions per capita (tonnes)')
    pdf.image(io.BytesIO(png), w=170)
    pdf.output(str(path))


def build_sample(root: str | Path) -> EvalDataset:
    """Write the sample dataset under ``root`` (idempotent) and load it."""
    root = Path(root)
    corpus = root / 'corpus'
    (corpus / 'scans').mkdir(parents=True, exist_ok=True)
    for name, make in ((REPORT, _report), (MANUAL, _manual), (SCAN, _scan), (BRIEF, _brief)):
        if not (corpus / name).exists():
            make(corpus / name)
    write_jsonl(root / 'queries.jsonl', ({'query_id': q, 'query': text} for q, text in SAMPLE_QUERIES.items()))
    write_jsonl(root / 'qrels.jsonl', ({'query_id': q, 'page': page, 'score': score}
                                       for q, rel in SAMPLE_QRELS.items() for page, score in rel.items()))
    write_jsonl(root / 'answers.jsonl', ({'query_id': q, 'answers': answers} for q, answers in SAMPLE_ANSWERS.items()))
    return load_dataset(root, name='sample')
