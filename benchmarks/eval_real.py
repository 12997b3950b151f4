"""The text arms on real documents: ../shared/corpus/real split into an English set (the RAG paper, 5 pages
of the ColPali paper, and 2 pages of the RAG paper as a noisy scan) and a Chinese set (a broker research
report full of tables, and 8 scanned book pages), with hand-written queries and page qrels below; and a
``kinds`` set of the page kinds that corpus lacks, generated with real fonts (``devtools/layout_pages.py``:
a 10-K statement placed glyph by glyph, slides exported as pictures with one born-digital slide, a table
scanned under a typed heading), with the ColPali pages as distractors.

Arms: ``text-layer`` (the text layer alone: plain text RAG), ``text`` (text layer, OCR where it is missing or
junk), ``layout`` (rapid-layout regions -> Markdown),
``ocr`` (OCR on every page; --ocr) and ``mineru`` (MinerU's model-free tier; skipped when not installed, see
scripts/setup-mineru.sh). No ColPali row: this machine has no real ColPali weights (the tiny test model ranks
at random). Each query is tagged with what answers it (table, scan, text, figure, slide) and the JSON gives
nDCG@5 per tag and arm, which is what docs/evaluation.md's "which arm wins where" paragraph reads from.

What an answer step reads, per arm, on the ``kinds`` pages: table rows intact (a row's cells on one line,
in order), the slide titles present, and words foreign to the text layer on born-digital pages.

    nice python benchmarks/eval_real.py --out benchmarks/results/eval_real.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lazyllm_colpali.devtools import layout_pages  # noqa: E402
from lazyllm_colpali.devtools.corpus import real_corpus  # noqa: E402
from lazyllm_colpali.eval import EvalDataset, format_table, run_eval  # noqa: E402
from lazyllm_colpali.eval.metrics import evaluate_run  # noqa: E402

REAL = real_corpus()
RAG, COLPALI, SCAN_EN = 'arxiv_2005.11401v4_rag.pdf', 'arxiv_2407.01449v6_colpali_p1-5.pdf', 'en_image_only.pdf'
REPORT, BOOK = 'zh_research_report.pdf', 'zh_scanned_book.pdf'
STATEMENT, SLIDES, SCANNED_TABLE = 'statement_10k.pdf', 'slides.pdf', 'scanned_table.pdf'
GENERATED = {STATEMENT: layout_pages.financial_statement_pdf, SLIDES: layout_pages.slide_deck_pdf,
             SCANNED_TABLE: layout_pages.scanned_table_pdf}

# query id -> (kind, query, {page: grade}); en_image_only pages 1-2 are RAG pages 2-3 scanned.
SETS: Dict[str, Tuple[List[str], Dict[str, Tuple[str, str, Dict[str, int]]]]] = {
    'real_en': ([RAG, COLPALI, SCAN_EN], {
        'e01': ('scan', 'bi-encoder retriever initialised from DPR with a BERT-base document encoder',
                {f'{RAG}#3': 2, f'{SCAN_EN}#2': 2}),
        'e02': ('scan', 'RAG-Token draws a different latent document for each target token',
                {f'{RAG}#3': 2, f'{SCAN_EN}#2': 2}),
        'e03': ('scan', 'BART-large generator with 400M parameters', {f'{RAG}#3': 2, f'{SCAN_EN}#2': 2}),
        'e04': ('figure', 'overview figure: query encoder, document index, MIPS and generator',
                {f'{RAG}#2': 2, f'{SCAN_EN}#1': 2}),
        'e05': ('scan', 'hybrid parametric and non-parametric memory for sequence-to-sequence models',
                {f'{RAG}#2': 2, f'{SCAN_EN}#1': 2, f'{RAG}#1': 1}),
        'e06': ('table', 'open-domain QA test scores on NQ, TQA, WQ and CT', {f'{RAG}#6': 2}),
        'e07': ('table', 'RAG-Seq. score 44.5 on NQ compared with DPR and REALM', {f'{RAG}#6': 2}),
        'e08': ('table', 'human assessments of Jeopardy question generation: factuality and specificity',
                {f'{RAG}#8': 2, f'{RAG}#6': 1}),
        'e09': ('table', 'ratio of distinct to total tri-grams for generation tasks', {f'{RAG}#8': 2}),
        'e10': ('table', 'number of instances in train, development and test splits of the datasets',
                {f'{RAG}#19': 2}),
        'e11': ('text', 'Unstructured tool with OCR and layout detection as a baseline pipeline', {f'{COLPALI}#5': 2}),
        'e12': ('text', 'ViDoRe benchmark design: page-level retrieval across domains', {f'{COLPALI}#4': 2}),
        'e13': ('text', 'TF-IDF and BM25 statistical text retrieval methods', {f'{COLPALI}#3': 2}),
        'e14': ('figure', 'ColPali simplifies document retrieval with better latencies figure', {f'{COLPALI}#2': 2}),
        'e15': ('text', 'FEVER 3-way classification within 4.3% of state-of-the-art pipeline systems',
                {f'{RAG}#6': 2, f'{RAG}#5': 1}),
    }),
    'real_zh': ([REPORT, BOOK], {
        'z01': ('table', '高测股份2022年营业收入预测', {f'{REPORT}#2': 2, f'{REPORT}#3': 1}),
        'z02': ('table', '净资产收益率', {f'{REPORT}#2': 2, f'{REPORT}#3': 2}),
        'z03': ('text', '扩产4000万公里金刚线 壶关', {f'{REPORT}#1': 2}),
        'z04': ('text', '分析师倪正洋简介', {f'{REPORT}#4': 2, f'{REPORT}#1': 1}),
        'z05': ('text', '投资评级说明 增持 买入', {f'{REPORT}#4': 2}),
        'z06': ('table', '每股经营现金流和每股股利', {f'{REPORT}#3': 2}),
        'z07': ('scan', '磁石吸铁的长处 巴尔本', {f'{BOOK}#1': 2}),
        'z08': ('scan', '一夸特小麦等于a公斤铁', {f'{BOOK}#2': 2}),
        'z09': ('scan', '劳动产品的使用价值抽去以后剩下的人类劳动', {f'{BOOK}#3': 2}),
    }),
    'kinds': ([STATEMENT, SLIDES, SCANNED_TABLE, COLPALI], {
        'k01': ('table', 'restructuring and impairment charges in fiscal 2022', {f'{STATEMENT}#1': 2}),
        'k02': ('table', 'diluted earnings per share 4.62', {f'{STATEMENT}#1': 2}),
        'k03': ('text', 'restructuring charges focused on the consolidation of the offshore drilling fleet',
                {f'{STATEMENT}#1': 2}),
        'k04': ('slide', 'top Vietnamese Android apps on the Appota platform', {f'{SLIDES}#1': 2}),
        'k05': ('slide', 'ecosystem players: payment gateways and carriers', {f'{SLIDES}#2': 2}),
        'k06': ('slide', 'quarterly active devices growth year over year', {f'{SLIDES}#3': 2}),
        'k07': ('slide', 'market share by operating system', {f'{SLIDES}#4': 2}),
        'k08': ('table', 'units sold in the Nordics', {f'{SCANNED_TABLE}#1': 2}),
        'k09': ('table', 'Benelux revenue in euros', {f'{SCANNED_TABLE}#1': 2}),
        'k10': ('table', 'Baltics units sold and revenue', {f'{SCANNED_TABLE}#1': 2}),
    }),
}


def by_kind(report, queries: Dict[str, Tuple[str, str, Dict[str, int]]], qrels) -> Dict[str, Dict[str, float]]:
    out: Dict[str, Dict[str, float]] = {}
    for arm in report.arms:
        if arm.error:
            continue
        for kind in sorted({k for k, _, _ in queries.values()}):
            ids = [q for q, (k, _, _) in queries.items() if k == kind]
            scores = evaluate_run({q: qrels[q] for q in ids}, {q: arm.run.get(q, {}) for q in ids}, ['ndcg@5'])
            out.setdefault(arm.arm, {})[f'{kind} ({len(ids)})'] = scores['ndcg@5']
    return out


def page_texts(workdir: Path, arm: str) -> Dict[Tuple[str, int], str]:
    """What an arm indexed, by (file name, page): the text an answer step would read."""
    from lazyllm_colpali.text.page_text_store import PageTextStore

    store = PageTextStore(workdir / arm)
    try:
        return {(r.file_name, r.page): r.text for r in store.get(store.all_ids(), with_text=True).values()}
    finally:
        store.close()


def _row_intact(row, text: str) -> bool:
    """The row's cells on one line of ``text``, in order, each a whole cell (not run into its neighbour)."""
    for line in text.splitlines():
        at = 0
        for cell in row:
            found = re.search(r'(?<![\w,.])' + re.escape(cell) + r'(?![\w,.])', line[at:])
            if not found:
                break
            at += found.end()
        else:
            return True
    return False


def readability(corpus: Path, workdir: Path, arms: List[str], truth: dict) -> dict:
    """Per arm, on the generated pages: table rows intact, slide titles present, foreign words."""
    from lazyllm_colpali.text.extract import TextLayerExtractor
    from lazyllm_colpali.text.fidelity import foreign_words

    statement_layer = dict(TextLayerExtractor().pages(corpus / STATEMENT))[1]
    rows = [(STATEMENT, 1, r) for r in truth[STATEMENT]['rows']] + [(SCANNED_TABLE, 1, r)
                                                                    for r in truth[SCANNED_TABLE]['rows']]
    out = {}
    for arm in arms:
        if not (workdir / arm).is_dir():
            continue
        texts = page_texts(workdir, arm)
        titles = truth[SLIDES]['titles']
        out[arm] = {
            'table rows intact': f'{sum(_row_intact(r, texts.get((f, n), "")) for f, n, r in rows)}/{len(rows)}',
            'slide titles read': f'{sum(t in texts.get((SLIDES, n), "") for n, t in enumerate(titles, 1))}'
                                 f'/{len(titles)}',
            'foreign words (10-K page)': len(foreign_words(texts.get((STATEMENT, 1), ''), statement_layer)),
        }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', default=str(REAL) if REAL else None, required=REAL is None)
    parser.add_argument('--sets', default=','.join(SETS))
    parser.add_argument('--arms', default='text-layer,text,layout,mineru')
    parser.add_argument('--ocr', action='store_true', help='add the OCR-every-page arm (about 10 s a page)')
    parser.add_argument('--workdir', default=None, help='keep indexes here and reuse them')
    parser.add_argument('--model', default='tiny:colpali', help='the colpali / colpali+context arms\' model')
    parser.add_argument('--dense-model', default=None, help='the dense arm\'s single-vector model')
    parser.add_argument('--hybrid-arms', default=None, help='the arms hybrid fuses (default: all the others)')
    parser.add_argument('--out', default='benchmarks/results/eval_real.json')
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(',') if a] + (['ocr'] if args.ocr else [])
    results = {'load_average_1min': os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix='eval_real_') as tmp:
        for name in args.sets.split(','):
            files, queries = SETS[name]
            corpus = Path(tmp) / name
            corpus.mkdir()
            truth = {}
            for f in files:
                if f in GENERATED:
                    truth[f] = GENERATED[f](corpus / f)
                else:
                    shutil.copy(Path(args.corpus) / f, corpus / f)
            qrels = {q: grades for q, (_, _, grades) in queries.items()}
            dataset = EvalDataset(name, corpus, {q: text for q, (_, text, _) in queries.items()}, qrels)
            dataset.validate()
            workdir = Path(args.workdir) / name if args.workdir else Path(tmp) / f'{name}_work'
            report = run_eval(dataset, arms, topk=10, workdir=workdir, model=args.model, dense_model=args.dense_model,
                              hybrid_arms=args.hybrid_arms.split(',') if args.hybrid_arms else None)
            table = format_table(report)
            kinds = by_kind(report, queries, qrels)
            print(table)
            print('nDCG@5 by what answers the query:', json.dumps(kinds, indent=1))
            top3 = {q: {a.arm: [k for k, _ in sorted(a.run.get(q, {}).items(), key=lambda kv: -kv[1])[:3]]
                        for a in report.arms if not a.error} for q in queries}
            results[name] = {**report.to_dict(), 'table': table, 'ndcg5_by_kind': kinds, 'top3': top3}
            if truth:
                results[name]['readability'] = readability(corpus, workdir, arms, truth)
                print('What an answer step reads:', json.dumps(results[name]['readability'], indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == '__main__':
    main()
