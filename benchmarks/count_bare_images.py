"""How often the ``text`` arm OCRs an image on a born-digital page: every page of the PDFs in the folders,
checked as ``AutoExtractor`` checks it (image objects covering 3% of the page or more with no text-layer
character over them; no layout model, no OCR here), with the time the check takes.

    heavy python benchmarks/count_bare_images.py /work/corpus-debian/pdf ../shared/corpus/real \\
        --out benchmarks/results/bare_images.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report_io import write_json  # noqa: E402


def main(argv=None) -> dict:
    import pypdfium2 as pdfium

    from lazyllm_colpali.text.extract import text_layer_usable
    from lazyllm_colpali.text.pdf_layer import bare_images
    from lazyllm_colpali.text.region_ocr import MIN_FRACTION

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folders', nargs='+')
    parser.add_argument('--out', default='benchmarks/results/bare_images.json')
    args = parser.parse_args(argv)
    pages = born_digital = with_bare = images = 0
    by_file = {}
    start = time.perf_counter()
    for path in sorted(p for folder in args.folders for p in Path(folder).rglob('*.pdf')):
        pdf = pdfium.PdfDocument(str(path))
        try:
            for index in range(len(pdf)):
                page = pdf[index]
                textpage = page.get_textpage()
                pages += 1
                if text_layer_usable(textpage.get_text_bounded()):
                    born_digital += 1
                    found = bare_images(page, textpage, MIN_FRACTION)
                    with_bare += bool(found)
                    images += len(found)
                    if found:
                        by_file[path.name] = by_file.get(path.name, 0) + 1
                textpage.close()
        finally:
            pdf.close()
    result = {'pages': pages, 'born_digital': born_digital, 'pages_with_bare_images': with_bare,
              'bare_images': images, 'share': with_bare / max(1, born_digital),
              'check_ms_per_page': 1000 * (time.perf_counter() - start) / max(1, pages), 'by_file': by_file,
              'load_average_1min': os.getloadavg()[0]}
    print(f'{pages} pages, {born_digital} born-digital, {with_bare} with a bare image ({images} images, '
          f'{result["share"]:.1%}); the check takes {result["check_ms_per_page"]:.1f} ms a page')
    write_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
