"""OCR throughput and accuracy of rapidocr (PP-OCRv6 small models shipped in its wheel) on a real scan.

en_image_only.pdf is pages 2-3 of the RAG paper rendered to grayscale at 150 DPI, slightly rotated, noised and
blurred like a scan, without a text layer; the original paper's text layer is the ground truth. For each
setting: pages/s, and how much of the ground truth comes back: characters (longest matching blocks over
the text without whitespace, difflib) and distinct words of 4+ letters. The first row is the baseline that
the speed-up column divides by; every row runs in the same process on the same pages.

The "auto" rows show the cheapest setting of all: OCR only pages whose text layer is missing or junk
(``AutoExtractor``), here over every PDF in ../shared/corpus/real.

    nice python benchmarks/bench_ocr.py --out benchmarks/results/ocr.json
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lazyllm_colpali.ingest.render import render_pages  # noqa: E402
from lazyllm_colpali.text.extract import AutoExtractor, OcrExtractor, TextLayerExtractor  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / 'shared' / 'corpus' / 'real'
# name -> (dpi, rapidocr params)
SETTINGS = {
    'rapidocr defaults (cls on)': (150, {'Global.use_cls': True}),
    'no angle classifier': (150, {'Global.use_cls': False}),      # OcrExtractor's default
    'no cls + rec batch 16': (150, {'Global.use_cls': False, 'Rec.rec_batch_num': 16}),
    'no cls + det long side <= 960': (150, {'Global.use_cls': False, 'Det.limit_type': 'max',
                                           'Det.limit_side_len': 960}),
    'no cls + 120 DPI': (120, {'Global.use_cls': False}),
    'no cls + 200 DPI': (200, {'Global.use_cls': False}),
}


def char_recall(ocr: str, truth: str) -> float:
    a, b = re.sub(r'\s+', '', ocr), re.sub(r'\s+', '', truth)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / max(1, len(b))


def word_recall(ocr: str, truth: str) -> float:
    words = lambda text: set(re.findall(r'[a-z]{4,}', text.lower()))  # noqa: E731
    return len(words(ocr) & words(truth)) / max(1, len(words(truth)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', default=str(REAL))
    parser.add_argument('--settings', default=','.join(SETTINGS), help='comma-separated names from SETTINGS')
    parser.add_argument('--pages', default='1,2', help='pages of en_image_only.pdf to OCR')
    parser.add_argument('--out', default='benchmarks/results/ocr.json')
    args = parser.parse_args(argv)
    corpus = Path(args.corpus)
    scan = corpus / 'en_image_only.pdf'
    numbers = {int(n) for n in args.pages.split(',')}
    paper = dict(TextLayerExtractor().pages(corpus / 'arxiv_2005.11401v4_rag.pdf', {n + 1 for n in numbers}))
    truth = {n: paper[n + 1] for n in numbers}        # scan page n is paper page n + 1
    rows = []
    for name in args.settings.split(','):
        dpi, params = SETTINGS[name]
        ocr = OcrExtractor(dpi=dpi, params=params)
        ocr.engine()                                   # model loading is not OCR time
        images = list(render_pages(scan, dpi=dpi, max_side=ocr.max_side, pages=numbers))
        texts, start = {}, time.perf_counter()
        for number, image in images:
            texts[number] = ocr.ocr_image(image)
        seconds = time.perf_counter() - start
        text, gold = '\n'.join(texts[n] for n in sorted(texts)), '\n'.join(truth[n] for n in sorted(truth))
        rows.append({'setting': name, 'dpi': dpi, 'params': params, 'pages': len(images),
                     's_per_page': seconds / len(images), 'pages_per_s': len(images) / seconds,
                     'chars_recovered': char_recall(text, gold), 'words_recovered': word_recall(text, gold),
                     'chars_out': len(re.sub(r'\s+', '', text)), 'chars_truth': len(re.sub(r'\s+', '', gold))})
        print(f'{name}: {rows[-1]["s_per_page"]:.2f} s/page', file=sys.stderr)
    base = rows[0]['s_per_page']
    for row in rows:
        row['speedup'] = base / row['s_per_page']

    # OCR only where needed: how many pages of the real corpus the auto extractor OCRs, and what it costs.
    auto = AutoExtractor(ocr=OcrExtractor(params=SETTINGS['no angle classifier'][1]))
    layer_only = {}
    for pdf in sorted(corpus.glob('*.pdf')):
        start = time.perf_counter()
        pages = dict(TextLayerExtractor().pages(pdf))
        layer_only[pdf.name] = {'pages': len(pages), 'needs_ocr': sum(not t.strip() for t in pages.values()),
                                'text_layer_s': time.perf_counter() - start}
    start = time.perf_counter()
    born_digital = auto.extract(corpus / 'arxiv_2005.11401v4_rag.pdf')
    auto_s = time.perf_counter() - start
    layer = dict(TextLayerExtractor().pages(corpus / 'arxiv_2005.11401v4_rag.pdf'))
    ocr_pages = sum(text != layer[number] for number, text in born_digital)   # bare images OCRed (p. 17)
    result = {'scan': scan.name, 'pages': sorted(numbers), 'rows': rows, 'corpus_pages': layer_only,
              'auto_on_rag_paper': {'pages': len(born_digital), 'seconds': auto_s, 'ocr_pages': ocr_pages,
                                    'ocr_all_estimate_s': len(born_digital) * base}}

    print(f'rapidocr on {scan.name} pages {sorted(numbers)} (ground truth: the RAG paper\'s text layer)')
    print('| setting                       | DPI | s/page | pages/s | x speed | chars recovered | words recovered |')
    print('|-------------------------------|-----|--------|---------|---------|-----------------|-----------------|')
    for r in rows:
        print(f'| {r["setting"]:29} | {r["dpi"]:3} | {r["s_per_page"]:6.2f} | {r["pages_per_s"]:7.3f} | '
              f'{r["speedup"]:7.2f} | {r["chars_recovered"]:15.1%} | {r["words_recovered"]:15.1%} |')
    total = sum(v['pages'] for v in layer_only.values())
    need = sum(v['needs_ocr'] for v in layer_only.values())
    print(f'OCR only where the text layer is empty: {need} of {total} real pages need it; the 19-page RAG paper '
          f'takes {auto_s:.2f} s with the auto extractor ({ocr_pages} page with a bare image OCRed) vs '
          f'~{len(born_digital) * base:.0f} s to OCR every page')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == '__main__':
    main()
