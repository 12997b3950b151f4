"""Does the layout arm read born-digital pages as the text layer says them? Word checks over hundreds of real
pages, before (a git ref of this repo, run in a subprocess) and after (this checkout), plus the cost of each
step and of OCRing bare image regions.

Pages: every born-digital page (a usable text layer) of the PDFs in the given folders, sampled evenly across
documents (``--pages`` in all, at most ``--per-doc`` from one document, seeded). Per page and side:

* foreign words: words of the layout Markdown beyond what the text layer has (doubled letters "affffefected",
  fragments "CO N SO", a word read twice; ``lazyllm_colpali/text/fidelity.py``), and split words: 2-4 pieces
  that together make one text-layer word ("re sults"); a page with either is garbled;
* missing words: text-layer words the layout Markdown lacks, not counting words in the top and bottom 12% of
  the page (running headers and footers are dropped on purpose).

The "after" side is measured with region OCR off, so that every word it writes must come from the text
layer; region OCR is then timed on its own: how many pages have a figure, table or image with no text-layer
word over it, and what OCRing those crops costs.

    heavy python benchmarks/bench_layout_words.py --corpus /work/corpus-debian/pdf --corpus ../shared/corpus/real \\
        --pages 400 --baseline-ref d57b193 --out benchmarks/results/layout_words.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_io import write_json  # noqa: E402

Page = Tuple[str, int]   # (pdf path, 1-based page number)
DOUBLED = re.compile(r'([^\W\d_]{2})\1', re.UNICODE)   # "afaf", "rere": a letter pair read twice


def born_digital_pages(folders: List[Path], n_pages: int, per_doc: int, seed: int) -> List[Page]:
    """Pages with a usable text layer, evenly sampled across the PDFs (seeded)."""
    import pypdfium2 as pdfium

    from lazyllm_colpali.text.extract import text_layer_usable

    rng = random.Random(seed)
    per_file: Dict[str, List[int]] = {}
    for pdf_path in sorted(p for folder in folders for p in folder.rglob('*.pdf')):
        try:
            pdf = pdfium.PdfDocument(str(pdf_path))
        except pdfium.PdfiumError:
            continue
        try:
            numbers = list(range(1, len(pdf) + 1))
            rng.shuffle(numbers)
            usable = []
            for number in numbers:
                if len(usable) >= per_doc:
                    break
                textpage = pdf[number - 1].get_textpage()
                if text_layer_usable(textpage.get_text_bounded()):
                    usable.append(number)
                textpage.close()
            if usable:
                per_file[str(pdf_path)] = sorted(usable)
        finally:
            pdf.close()
    chosen: List[Page] = []
    round_ = 0
    while len(chosen) < n_pages and any(len(v) > round_ for v in per_file.values()):
        chosen += [(path, nums[round_]) for path, nums in per_file.items() if len(nums) > round_]
        round_ += 1
    rng.shuffle(chosen)
    return sorted(chosen[:n_pages])


_EXTRACT = r'''
import json, sys, time
from pathlib import Path
from lazyllm_colpali.text.layout import LayoutExtractor
pages = json.load(open(sys.argv[1]))
extractor = LayoutExtractor(**json.loads(sys.argv[3]))
out, by_file = {}, {}
for path, number in pages:
    by_file.setdefault(path, []).append(number)
for path, numbers in by_file.items():
    start = time.perf_counter()
    for number, text in extractor.pages(Path(path), set(numbers)):
        out[f'{path}#{number}'] = text
    out[f'{path}#seconds'] = time.perf_counter() - start
json.dump(out, open(sys.argv[2], 'w'))
'''


def layout_texts(pages: List[Page], src: Path, options: dict) -> Dict[str, str]:
    """Layout Markdown of ``pages`` by the lazyllm_colpali under ``src``, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix='layout_words_') as tmp:
        todo, out = Path(tmp) / 'pages.json', Path(tmp) / 'out.json'
        todo.write_text(json.dumps(pages))
        env = {**os.environ, 'PYTHONPATH': str(src)}
        subprocess.run([sys.executable, '-c', _EXTRACT, str(todo), str(out), json.dumps(options)], env=env,
                       check=True, cwd=tmp)
        return json.loads(out.read_text())


def export_ref(ref: str, target: Path) -> Path:
    """The package as it is at git ``ref`` of this repo, unpacked under ``target``."""
    archive = subprocess.run(['git', '-C', str(ROOT), 'archive', ref, 'lazyllm_colpali'], check=True,
                             capture_output=True).stdout
    tar_path = target / 'ref.tar'
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(target, filter='data')
    return target


def layer_and_margins(page: Page) -> Tuple[str, List[str]]:
    """The page's text layer (what the text arm indexes) and its words in the top/bottom 12% of the page."""
    import pypdfium2 as pdfium

    from lazyllm_colpali.text.pdf_layer import text_layer_words

    pdf = pdfium.PdfDocument(page[0])
    try:
        pdf_page = pdf[page[1] - 1]
        textpage = pdf_page.get_textpage()
        width, height = (round(v) for v in pdf_page.get_size())
        margins = [w.text for w in text_layer_words(pdf_page, textpage, width, height)
                   if not 0.12 * height < (w.box[1] + w.box[3]) / 2 < 0.88 * height]
        return textpage.get_text_bounded(), margins
    finally:
        pdf.close()


def region_ocr_cost(pages: List[Page]) -> dict:
    """Per page: the layout steps timed apart, and the OCR of bare figure/table/image regions."""
    import pypdfium2 as pdfium

    from lazyllm_colpali.ingest.render import _scale_for
    from lazyllm_colpali.text.layout import LayoutExtractor
    from lazyllm_colpali.text.pdf_layer import image_boxes, text_layer_words
    from lazyllm_colpali.text.region_ocr import bare_boxes, ocr_boxes

    extractor = LayoutExtractor()
    steps = {'render': [], 'layout model': [], 'text-layer words': [], 'region OCR': []}
    ocr_pages, ocr_boxes_n, examples = 0, 0, []
    for path, number in pages:
        pdf = pdfium.PdfDocument(path)
        try:
            page = pdf[number - 1]
            textpage = page.get_textpage()
            t0 = time.perf_counter()
            image = page.render(scale=_scale_for(*page.get_size(), extractor.dpi, extractor.max_side)).to_pil()
            image = image.convert('RGB')
            t1 = time.perf_counter()
            regions = extractor.regions(image)
            t2 = time.perf_counter()
            words = text_layer_words(page, textpage, *image.size)
            t3 = time.perf_counter()
            candidates = [r.box for r in regions if r.label in ('figure', 'table')] + image_boxes(page, *image.size)
            boxes = bare_boxes(candidates, words, image.size[0] * image.size[1], extractor.region_min_fraction)
            lines = ocr_boxes(image, boxes, extractor.ocr) if boxes else []
            t4 = time.perf_counter()
        finally:
            pdf.close()
        for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            steps[name].append(seconds)
        if boxes:
            ocr_pages += 1
            ocr_boxes_n += len(boxes)
            if len(examples) < 12:
                examples.append({'page': f'{Path(path).name}#{number}', 'boxes': len(boxes),
                                 'seconds': round(t4 - t3, 2),
                                 'ocr_words': sum(len(ln.text.split()) for ln in lines),
                                 'sample': ' '.join(ln.text for ln in lines)[:120]})
    summary = {name: {'mean_s': statistics.fmean(v), 'p95_s': sorted(v)[int(0.95 * (len(v) - 1))]}
               for name, v in steps.items()}
    ocr_times = [s for s in steps['region OCR'] if s > 0.01]
    return {'steps': summary, 'pages_with_bare_regions': ocr_pages, 'bare_regions': ocr_boxes_n,
            'region_ocr_s_per_affected_page': statistics.fmean(ocr_times) if ocr_times else 0.0,
            'examples': examples}


def check(pages: List[Page], texts: Dict[str, str]) -> dict:
    from lazyllm_colpali.text.fidelity import compare_words, missing_words, words

    per_page, seconds = {}, 0.0
    for page in pages:
        layer, margins = layer_and_margins(page)
        layout = texts[f'{page[0]}#{page[1]}']
        foreign, split = compare_words(layout, layer)
        missing = missing_words(layout, layer, allowed=margins)
        per_page[f'{Path(page[0]).name}#{page[1]}'] = {
            'layer_words': len(words(layer)), 'foreign': len(foreign), 'split': len(split),
            'missing': len(missing), 'split_sample': split[:8],
            'doubled': sum(bool(DOUBLED.search(w)) for w in foreign),
            'fragments': sum(len(w) <= 2 and w.isalpha() for w in foreign + split), 'foreign_sample': foreign[:8],
            'missing_sample': missing[:8]}
    for key, value in texts.items():
        if key.endswith('#seconds'):
            seconds += value
    rows = per_page.values()
    total_layer = sum(r['layer_words'] for r in rows)
    return {
        'pages': len(per_page),
        'pages_garbled': sum(r['foreign'] + r['split'] > 0 for r in rows),
        'pages_with_foreign_words': sum(r['foreign'] > 0 for r in rows),
        'pages_with_doubled_letter_words': sum(r['doubled'] > 0 for r in rows),
        'pages_with_fragments': sum(r['fragments'] > 0 for r in rows),
        'foreign_words': sum(r['foreign'] for r in rows),
        'pages_with_split_words': sum(r['split'] > 0 for r in rows),
        'split_words': sum(r['split'] for r in rows),
        'foreign_word_rate': sum(r['foreign'] for r in rows) / max(1, total_layer),
        'pages_missing_over_2pct': sum(r['missing'] > 0.02 * r['layer_words'] for r in rows),
        'missing_word_rate': sum(r['missing'] for r in rows) / max(1, total_layer),
        'seconds_per_page': seconds / max(1, len(per_page)),
        'worst': sorted(({'page': k, **v} for k, v in per_page.items()), key=lambda r: -r['foreign'])[:10],
        'per_page': per_page,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', action='append', required=True, help='folder of PDFs (repeatable)')
    parser.add_argument('--pages', type=int, default=400)
    parser.add_argument('--per-doc', type=int, default=15, help='at most this many pages from one PDF')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--baseline-ref', default='main', help='git ref for the "before" side ("" to skip)')
    parser.add_argument('--no-region-ocr-cost', action='store_true')
    parser.add_argument('--out', default='benchmarks/results/layout_words.json')
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    pages = born_digital_pages([Path(c) for c in args.corpus], args.pages, args.per_doc, args.seed)
    print(f'{len(pages)} born-digital pages from {len({p for p, _ in pages})} PDFs; load average {load:.1f}')
    result = {'pages': [f'{p}#{n}' for p, n in pages], 'load_average_1min': load, 'sides': {}}
    sides = [('after', ROOT, {'region_ocr': False})]
    with tempfile.TemporaryDirectory(prefix='layout_ref_') as tmp:
        if args.baseline_ref:
            sides.insert(0, (f'before ({args.baseline_ref})', export_ref(args.baseline_ref, Path(tmp)), {}))
        for name, src, options in sides:
            start = time.perf_counter()
            result['sides'][name] = check(pages, layout_texts(pages, src, options))
            print(f'{name}: {time.perf_counter() - start:.0f} s')
    if not args.no_region_ocr_cost:
        result['region_ocr'] = region_ocr_cost(pages)
    columns = ['pages', 'pages_garbled', 'pages_with_foreign_words', 'pages_with_doubled_letter_words', 'pages_with_fragments',
               'foreign_words', 'foreign_word_rate', 'pages_with_split_words', 'split_words',
               'pages_missing_over_2pct', 'missing_word_rate', 'seconds_per_page']
    print('| side | ' + ' | '.join(columns) + ' |')
    print('|---|' + '---|' * len(columns))
    for name, side in result['sides'].items():
        cells = [f'{side[c]:.4f}' if isinstance(side[c], float) else str(side[c]) for c in columns]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    if 'region_ocr' in result:
        ocr = result['region_ocr']
        print(f"region OCR: {ocr['pages_with_bare_regions']} of {len(pages)} pages have bare regions "
              f"({ocr['bare_regions']} regions), {ocr['region_ocr_s_per_affected_page']:.2f} s per such page; steps "
              + ', '.join(f"{k} {v['mean_s']:.3f} s" for k, v in ocr['steps'].items()))
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
