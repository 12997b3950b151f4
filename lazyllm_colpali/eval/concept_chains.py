"""A concept-chain benchmark, generated offline: questions whose answer needs a chain of pages.

"Which model has the highest Veltrix score, and why?" needs the leaderboard chart that reports the Veltrix
score, the page defining it ("... built on the Quorra framework"), the page explaining the Quorra framework
("... relies on the Dunmore algorithm"), and so on. Each chain has 2 to 4 definitions, each in its own PDF:
prose pages, a definition inside a glossary table, and (in ``image_links`` chains per length) one link shown
only in a figure rendered as an image, so no text layer holds it. Distractor documents from neighbouring
fields reuse the vocabulary (scores, frameworks, leaderboards, the same lab names), define decoy terms the
same way, and some mention a chain's first term in passing.

Every page of a chain is gold for its question; the qrels carry each page's ``hop``: the leaderboard and the
first definition are reachable from the question (hop 1), the definition of the i-th term needs i hops.
``chains.json`` lists, for every term, the pages whose text must hold it and the pages showing it in an image.

    >>> ds = build_concept_chains(__import__('tempfile').mkdtemp(), chain_lengths=(2,), chains_per_length=1,
    ...                           distractors=1, image_links=0)
    >>> len(ds.queries), sorted(ds.chain_hops['c01'].values())
    (1, [1, 1, 2])
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from .dataset import EvalDataset, load_dataset, write_jsonl

DEFAULT_SEED = 0
MARKER = '.concept_chains'
KINDS = ('score', 'framework', 'algorithm', 'estimator', 'kernel')
DESCRIPTIONS = {
    'score': 'scoring standard that rates how well a model answers benchmark questions',
    'framework': 'framework that weighs every judged answer by the confidence of its annotators',
    'algorithm': 'algorithm that orders candidate answers by comparing them in pairs',
    'estimator': 'estimator of the noise in human relevance labels',
    'kernel': 'kernel that measures how similar two rankings are',
}
RELATIONS = ('is built on', 'relies on', 'is computed with', 'derives its weights from')
FIELDS = ('document retrieval', 'question answering', 'speech recognition', 'machine translation',
          'code generation', 'table understanding', 'chart reasoning', 'protein design')
FILLER = (
    'Models in {field} are compared on shared benchmarks under one fixed protocol.',
    'The highest scores usually come from larger models trained on more data, which makes a fair comparison hard.',
    'A scoring standard is only useful when it agrees with human judgements on a held-out set.',
    'Each submitted model is run by its authors, and the organisers recompute every score from the raw outputs.',
    'Annotators judged several thousand answers, and disagreements were settled by a third annotator.',
    'Baselines include a retrieval system, a fine-tuned encoder and a model prompted without examples.',
    'Calibration matters: a score that rewards confident wrong answers misleads every leaderboard built on it.',
    'The framework, the algorithm and the estimator behind a score are rarely described in one place.',
    'Results in {field} moved quickly: the best model of last year would rank in the middle today.',
    'We report the mean over three runs with different seeds; differences below one point are noise.',
    'Benchmarks age: once a test set is public, later models may have seen parts of it during training.',
    'A leaderboard is a table of models and scores; the reasons behind a score live in other documents.',
)
QUESTIONS = ('Which model has the highest {t1}, and why?',
             'Which system scores best on the {t1}, and what is that score built on?',
             'Who leads the {t1} leaderboard, and what does the {t1} rely on?')
_SYLLABLES = ('vel', 'trix', 'quor', 'ra', 'dun', 'more', 'ha', 'lden', 'zen', 'dar', 'mor', 'bane', 'kel', 'vis',
              'tor', 'ven', 'lu', 'mar', 'cas', 'pel', 'nor', 'vax', 'sil', 'tha', 'brin', 'dor', 'fal', 'gri', 'jun',
              'kor', 'lim', 'nex', 'ost', 'pry', 'rud', 'sab', 'tul', 'ux', 'wen', 'yor', 'zim', 'cae', 'dro', 'ent')


@dataclass
class Term:
    name: str            # the invented word: the key a bridge must carry ("Quorra")
    kind: str            # score, framework, algorithm, ...

    @property
    def phrase(self) -> str:
        return f'{self.name} {self.kind}'


@dataclass
class Chain:
    query_id: str
    question: str
    field: str
    terms: List[Term]
    leaderboard: str = ''                        # page key of the chart page ("file.pdf#2")
    definitions: List[str] = field(default_factory=list)   # page key defining terms[i]
    forms: List[str] = field(default_factory=list)          # prose | table | figure (figure: link shown as image)
    image_link: Optional[int] = None             # i: the link terms[i] -> terms[i+1] exists only in a figure
    mentions: List[str] = field(default_factory=list)       # distractor pages naming terms[0] in passing
    answer: str = ''                             # the model with the highest score (only in the chart image)

    def gold(self) -> Dict[str, int]:
        hops = {self.leaderboard: 1}
        for i, page in enumerate(self.definitions):
            hops[page] = i + 1
        return hops

    def expected_text_pages(self) -> Dict[str, Set[str]]:
        """The pages whose text layer must hold each term's invented name (and no others)."""
        expected = {self.terms[0].name: {self.leaderboard, self.definitions[0], *self.mentions}}
        for i, term in enumerate(self.terms[1:], 1):
            expected[term.name] = {self.definitions[i]} | ({self.definitions[i - 1]} if self.image_link != i - 1
                                                            else set())
        return expected


class _Names:
    """Invented words, unique across the whole corpus (so every term is unambiguous)."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def __call__(self, syllables: int = 2) -> str:
        while True:
            word = ''.join(self.rng.choice(_SYLLABLES) for _ in range(syllables)).capitalize()
            if word not in self.used and 5 <= len(word) <= 11:
                self.used.add(word)
                return word


def _a(noun_phrase: str) -> str:
    return ('An ' if noun_phrase[0] in 'aeiou' else 'A ') + noun_phrase


def _pdf_helpers():
    from .sample import _chart_png, _heading, _new_pdf, _paragraphs
    return _chart_png, _heading, _new_pdf, _paragraphs


def _filler(rng: random.Random, field_name: str, n: int) -> List[str]:
    return [s.format(field=field_name) for s in rng.sample(FILLER, n)]


def _diagram_png(left: str, relation: str, right: str) -> bytes:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.0), dpi=110)
    ax.axis('off')
    box = dict(boxstyle='round,pad=0.5', fc='#dde8f5', ec='#3b6ea5')
    ax.text(0.17, 0.45, left, ha='center', va='center', fontsize=13, bbox=box)
    ax.text(0.83, 0.45, right, ha='center', va='center', fontsize=13, bbox=box)
    ax.annotate('', xy=(0.64, 0.45), xytext=(0.36, 0.45), arrowprops=dict(arrowstyle='->', lw=2))
    ax.text(0.5, 0.7, relation, ha='center', va='center', fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    return buf.getvalue()


def _definition_sentences(term: Term, nxt: Optional[Term], relation: str, lab: str, year: int,
                          in_text: bool) -> List[str]:
    first = f'The {term.phrase} is {_a(DESCRIPTIONS[term.kind]).lower()}, proposed by the {lab} Lab in {year}.'
    if nxt is None:
        second = f'The {term.phrase} needs nothing beyond standard statistics; it is the end of the chain of methods.'
    elif in_text:
        second = f'The {term.phrase} {relation} the {nxt.phrase}, which it uses for every judged answer.'
    else:
        second = f'What the {term.phrase} {relation} is shown in Figure 2 below.'
    return [first, second]


def _write_leaderboard(path: Path, chain: Chain, models: List[Tuple[str, float]], rng: random.Random) -> int:
    chart_png, heading, new_pdf, paragraphs = _pdf_helpers()
    pdf = new_pdf()
    pdf.add_page()
    heading(pdf, f'{chain.field.capitalize()} leaderboard, spring edition')
    paragraphs(pdf, _filler(rng, chain.field, 4))
    pdf.add_page()
    heading(pdf, 'Results')
    png = chart_png('bar', [m for m, _ in models], [v for _, v in models], f'{chain.terms[0].phrase} by model')
    pdf.image(io.BytesIO(png), w=170)
    paragraphs(pdf, [f'Figure 1. The {chain.terms[0].phrase} of four submitted models (higher is better).'])
    pdf.output(str(path))
    return 2


def _write_definition(path: Path, chain: Chain, i: int, form: str, lab: str, rng: random.Random,
                      decoys: List[Term]) -> int:
    """A 1-3 page document; returns the page that defines ``chain.terms[i]``."""
    _, heading, new_pdf, paragraphs = _pdf_helpers()
    term = chain.terms[i]
    nxt = chain.terms[i + 1] if i + 1 < len(chain.terms) else None
    relation = rng.choice(RELATIONS)
    in_text = chain.image_link != i
    n_pages = rng.randint(1, 3)
    at = rng.randint(1, n_pages)
    pdf = new_pdf()
    for number in range(1, n_pages + 1):
        pdf.add_page()
        if number != at:
            heading(pdf, f'Notes on evaluation in {chain.field}, part {number}')
            paragraphs(pdf, _filler(rng, chain.field, 5))
            continue
        year = rng.randint(2016, 2024)
        if form == 'table':
            heading(pdf, f'Glossary of {chain.field} evaluation')
            paragraphs(pdf, _filler(rng, chain.field, 1))
            rows = [(term.phrase, f'{_a(DESCRIPTIONS[term.kind])} ({lab} Lab, {year}).',
                     nxt.phrase if nxt is not None else '-')]
            for a, b in zip(decoys[::2], decoys[1::2]):
                rows.append((a.phrase, f'{_a(DESCRIPTIONS[a.kind])}.', b.phrase))
            rng.shuffle(rows)
            pdf.set_font('Helvetica', '', 10)
            with pdf.table(col_widths=(45, 95, 45), text_align='LEFT') as table:
                for cells in [('Term', 'Meaning', 'Builds on')] + rows:
                    row = table.row()
                    for cell in cells:
                        row.cell(cell)
        else:
            heading(pdf, term.phrase)
            paragraphs(pdf, _definition_sentences(term, nxt, relation, lab, year, in_text or form != 'figure')
                       + _filler(rng, chain.field, 2))
            if form == 'figure' and nxt is not None:
                pdf.image(io.BytesIO(_diagram_png(term.phrase, relation, nxt.phrase)), w=160)
                paragraphs(pdf, [f'Figure 2. What the {term.phrase} {relation}.'])
    pdf.output(str(path))
    return at


def _write_distractor(path: Path, field_name: str, decoys: List[Term], lab: str, rng: random.Random,
                      mention: Optional[Term], chart: bool, model_names: List[str]) -> Tuple[int, Optional[int]]:
    """A document of a neighbouring field that defines decoy terms like a chain does; ``mention`` names a
    chain's first term in passing. Returns (pages, page holding the mention)."""
    chart_png, heading, new_pdf, paragraphs = _pdf_helpers()
    pdf = new_pdf()
    n_pages = rng.randint(1, 3)
    mention_page = rng.randint(1, n_pages) if mention is not None else None
    for number in range(1, n_pages + 1):
        pdf.add_page()
        heading(pdf, f'{field_name.capitalize()}: {decoys[0].phrase}' if number == 1 else f'Part {number}')
        text = _filler(rng, field_name, 3)
        if number == 1:
            a, b = decoys[0], decoys[1]
            text = _definition_sentences(a, b, rng.choice(RELATIONS), lab, rng.randint(2016, 2024), True) + text
        if number == mention_page:
            text.append(f'Unlike the {mention.phrase}, the {decoys[0].phrase} rewards short answers; the two '
                        'rarely agree on which model is best.')
        paragraphs(pdf, text)
        if chart and number == n_pages:
            values = [round(rng.uniform(40, 90), 1) for _ in model_names]
            pdf.image(io.BytesIO(chart_png('bar', model_names, values, f'{decoys[0].phrase} by model')), w=150)
            paragraphs(pdf, [f'Figure 1. The highest {decoys[0].phrase} among the models we tried.'])
    pdf.output(str(path))
    return n_pages, mention_page


def build_concept_chains(root: str | Path, *, seed: int = DEFAULT_SEED, chain_lengths: Sequence[int] = (2, 3, 4),
                         chains_per_length: int = 4, distractors: int = 24, image_links: int = 1,
                         mentions: int = 2) -> EvalDataset:
    """Write the benchmark under ``root`` (``corpus/``, ``queries.jsonl``, ``qrels.jsonl`` with a ``hop`` per
    gold page, ``chains.json``) and load it. ``image_links``: chains per length whose one link is only in a
    figure; ``mentions``: distractor pages naming each chain's first term. Same arguments, same files."""
    for n in chain_lengths:
        if not 2 <= int(n) <= len(KINDS):
            raise ValueError(f'chain lengths must be between 2 and {len(KINDS)}, got {n}')
    if chains_per_length < 1 or distractors < 0 or mentions < 0 or not 0 <= image_links <= chains_per_length:
        raise ValueError('chains_per_length >= 1, distractors >= 0, mentions >= 0, 0 <= image_links <= '
                         'chains_per_length')
    params = dict(seed=seed, chain_lengths=[int(n) for n in chain_lengths], chains_per_length=chains_per_length,
                  distractors=distractors, image_links=image_links, mentions=mentions)
    root = Path(root)
    manifest_file = root / 'chains.json'
    if manifest_file.exists() and json.loads(manifest_file.read_text()).get('params') == params:
        return _load(root)
    rng = random.Random(seed)
    names = _Names(rng)
    corpus = root / 'corpus'
    marker = root / MARKER   # written first: a folder holding it is ours to rewrite (also after an interrupted run)
    if any(corpus.glob('*.pdf')) and not (marker.exists() or manifest_file.exists()):
        raise ValueError(f'{corpus} holds PDFs this generator did not write; choose an empty or new folder')
    corpus.mkdir(parents=True, exist_ok=True)
    marker.write_text('written by lazyllm_colpali.eval.concept_chains; its corpus/ is regenerated on demand\n')
    for old in corpus.glob('*.pdf'):
        old.unlink()
    labs = [names() for _ in range(max(3, len(chain_lengths) * chains_per_length // 2))]
    chains: List[Chain] = []
    for n in chain_lengths:
        for j in range(chains_per_length):
            qid = f'c{len(chains) + 1:02d}'
            field_name = FIELDS[len(chains) % len(FIELDS)]
            terms = [Term(names(), KINDS[i]) for i in range(int(n))]
            chain = Chain(qid, rng.choice(QUESTIONS).format(t1=terms[0].phrase), field_name, terms)
            if j >= chains_per_length - image_links:
                chain.image_link = rng.randrange(int(n) - 1)
            forms = ['prose'] * int(n)
            forms[rng.randrange(int(n))] = 'table'
            if chain.image_link is not None:
                forms[chain.image_link] = 'figure'
            if forms.count('table') == 0:   # the figure took the table's place: put the table elsewhere
                forms[next(i for i, f in enumerate(forms) if f == 'prose')] = 'table'
            chain.forms = forms
            models = [(f'{names()}-{rng.choice((3, 7, 13, 34, 70))}B', round(rng.uniform(40, 95), 1)) for _ in range(4)]
            chain.answer = max(models, key=lambda m: m[1])[0]
            board = f'{qid}_{field_name.replace(" ", "_")}_leaderboard.pdf'
            chain.leaderboard = f'{board}#{_write_leaderboard(corpus / board, chain, models, rng)}'
            for i in range(int(n)):
                doc = f'{qid}_{terms[i].name.lower()}_{terms[i].kind}.pdf'
                decoys = [Term(names(), rng.choice(KINDS)) for _ in range(4)] if forms[i] == 'table' else []
                page = _write_definition(corpus / doc, chain, i, forms[i], rng.choice(labs), rng, decoys)
                chain.definitions.append(f'{doc}#{page}')
            chains.append(chain)
    to_mention = [c for c in chains for _ in range(mentions)]
    rng.shuffle(to_mention)
    for d in range(distractors):
        field_name = FIELDS[(d * 3 + 1) % len(FIELDS)]
        decoys = [Term(names(), KINDS[0]), Term(names(), rng.choice(KINDS[1:]))]
        mention = to_mention[d] if d < len(to_mention) else None
        doc = f'd{d + 1:02d}_{field_name.replace(" ", "_")}_{decoys[0].name.lower()}.pdf'
        _, page = _write_distractor(corpus / doc, field_name, decoys, rng.choice(labs), rng,
                                    mention.terms[0] if mention else None, chart=d % 4 == 0,
                                    model_names=[f'{names()}-{rng.choice((7, 13, 70))}B' for _ in range(4)])
        if mention is not None:
            mention.mentions.append(f'{doc}#{page}')
    write_jsonl(root / 'queries.jsonl', ({'query_id': c.query_id, 'query': c.question, 'answer': c.answer,
                                          'chain_length': len(c.terms), 'image_link': c.image_link is not None}
                                         for c in chains))
    write_jsonl(root / 'qrels.jsonl', ({'query_id': c.query_id, 'page': page, 'score': 1, 'hop': hop}
                                       for c in chains for page, hop in c.gold().items()))
    manifest_file.write_text(json.dumps({'params': params, 'chains': [asdict(c) for c in chains]}, indent=1))
    return _load(root)


def load_chains(root: str | Path) -> List[Chain]:
    data = json.loads((Path(root) / 'chains.json').read_text())
    chains = []
    for raw in data['chains']:
        raw = dict(raw)
        raw['terms'] = [Term(**t) for t in raw['terms']]
        chains.append(Chain(**raw))
    return chains


def _load(root: Path) -> EvalDataset:
    return load_dataset(root, name=f'concept_chains_s{json.loads((root / "chains.json").read_text())["params"]["seed"]}')
