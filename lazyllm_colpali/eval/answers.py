"""Answer-level metrics: exact match, token F1, ANLS, semantic similarity, abstention, an LLM judge's verdict.

Each compares one predicted answer with a question's gold answers and keeps the best match (a question may
have several acceptable answers):

* ``exact_match`` and ``token_f1``: SQuAD's definitions on SQuAD-normalised text (lower case, no punctuation,
  no articles ``a``/``an``/``the``, single spaces);
* ``anls``: DocVQA's Average Normalized Levenshtein Similarity for one question: ``1 - NL`` when the
  normalised edit distance ``NL = lev(a, o) / max(|a|, |o|)`` (on lower-cased, space-collapsed text) is below
  ``tau`` (0.5), else 0;
* ``semantic_similarity``: the cosine of two embeddings (any LazyLLM embedding module);
* a question whose gold answer is ``Not answerable`` (MMLongBench-Doc's convention) scores 1 on every metric
  when the system abstains (:func:`is_abstention`) and 0 when it answers anything else.

    >>> score_answer('16 bar [hydra_pump_manual.pdf, p. 1]', ['16 bar'])
    {'em': 1.0, 'f1': 1.0, 'anls': 1.0, 'abstained': 0.0}
    >>> score_answer('The pages do not contain the answer.', ['Not answerable'])
    {'em': 1.0, 'f1': 1.0, 'anls': 1.0, 'abstained': 1.0}
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Dict, Optional, Sequence

NOT_ANSWERABLE = 'Not answerable'
# What the stand-in VLM says, and what an SFT example teaches a model to say, when the pages lack the answer.
ABSTENTION_TEXT = 'The attached pages do not contain the answer.'

_ARTICLES = re.compile(r'\b(a|an|the)\b')
_PUNCTUATION = set(string.punctuation)
# [file, p. N]: the citations the answer prompt asks for (generation/answer.py); not part of the answer itself
_CITATION = re.compile(r'\s*\[[^\[\]]+?, p\. \d+\]')
_ABSTAIN = re.compile(
    r"not answerable|cannot be answered|can ?not answer|unable to (?:answer|find|determine|locate)|"
    r"(?:do|does|did) not (?:contain|include|mention|provide|state|show|say|specify|give)|"
    r"(?:is|are) not (?:mentioned|stated|provided|given|shown|specified|available|included)|"
    r"no (?:information|answer|mention|data) (?:about|on|regarding|for|is|was|in)|"
    r"(?:can ?not|could not|couldn't|can't) (?:find|determine|tell|locate|see)|"
    r"\bi (?:do not|don't) know\b|no indexed page matches", re.I)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation.

    >>> normalize_answer('The  Maximum, is 16-bar!')
    'maximum is 16bar'
    """
    text = ''.join(ch for ch in str(text).lower() if ch not in _PUNCTUATION)
    return ' '.join(_ARTICLES.sub(' ', text).split())


def strip_citations(text: str) -> str:
    """The answer without its ``[file, p. N]`` citations.

    >>> strip_citations('Revenue grew 18 percent [report.pdf, p. 1] in 2023 [report.pdf, p. 2].')
    'Revenue grew 18 percent in 2023.'
    """
    return ' '.join(_CITATION.sub('', str(text)).split())


def is_abstention(text: str) -> bool:
    """True when an answer says the pages do not hold the answer (any of the usual phrasings).

    >>> is_abstention(ABSTENTION_TEXT), is_abstention('Not answerable'), is_abstention('16 bar')
    (True, True, False)
    >>> is_abstention('The pump does not run dry for long.')
    False
    """
    return bool(_ABSTAIN.search(str(text)))


def is_unanswerable(golds: Sequence[str]) -> bool:
    """True when the gold answers mark the question as not answerable from the corpus."""
    return any(normalize_answer(g) == normalize_answer(NOT_ANSWERABLE) for g in golds)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer.

    >>> exact_match('The 16 bar.', ['16 bar']), exact_match('16 bars', ['16 bar'])
    (1.0, 0.0)
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:          # SQuAD: both empty is a match, one empty is not
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD token F1, best over the gold answers. Here precision 3/3, recall 3/5, F1 = 2*1*0.6/1.6:

    >>> round(token_f1('every 6 months', ['Replace it every 6 months']), 4)
    0.75
    """
    return max((_f1(prediction, g) for g in golds), default=0.0)


def _anls_text(text: str) -> str:
    return ' '.join(str(text).lower().split())


def anls(prediction: str, golds: Sequence[str], tau: float = 0.5) -> float:
    """DocVQA's ANLS for one question, best over the gold answers.

    One edit in seven characters: 1 - 1/7; two in four (NL = 0.5, not below tau): 0; case and spaces ignored:

    >>> round(anls('16 bars', ['16 bar']), 4), anls('Olso', ['Oslo']), anls('  16 BAR ', ['16 bar'])
    (0.8571, 0.0, 1.0)
    >>> anls('six months', ['every 6 months', 'six months'])
    1.0
    """
    from rapidfuzz.distance import Levenshtein

    pred = _anls_text(prediction)
    best = 0.0
    for gold in golds:
        ref = _anls_text(gold)
        longest = max(len(pred), len(ref))
        nl = Levenshtein.distance(pred, ref) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < tau else 0.0)
    return best


def score_answer(prediction: str, golds: Sequence[str], tau: float = 0.5) -> Dict[str, float]:
    """EM, F1 and ANLS of one answer (citations removed first), and whether it abstained."""
    text = strip_citations(prediction)
    abstained = is_abstention(text)
    if is_unanswerable(golds):
        right = float(abstained)
        return {'em': right, 'f1': right, 'anls': right, 'abstained': float(abstained)}
    return {'em': exact_match(text, golds), 'f1': token_f1(text, golds), 'anls': anls(text, golds, tau),
            'abstained': float(abstained)}


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    """
    >>> cosine([1.0, 0.0], [1.0, 1.0]) == 1 / math.sqrt(2), cosine([1.0, 0.0], [0.0, 0.0])
    (True, 0.0)
    """
    dot = sum(a * b for a, b in zip(u, v))
    norm = math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v))
    return dot / norm if norm else 0.0


def semantic_similarity(prediction: str, golds: Sequence[str], embed) -> float:
    """Cosine between ``embed(prediction)`` and the closest ``embed(gold)`` (``embed``: text -> vector, e.g. a
    LazyLLM ``OnlineEmbeddingModule``); not-answerable questions score by abstention like the other metrics."""
    text = strip_citations(prediction)
    if is_unanswerable(golds):
        return float(is_abstention(text))
    vector = embed(text)
    return max((cosine(vector, embed(g)) for g in golds), default=0.0)


JUDGE_PROMPT = ('You grade answers to questions about documents. [answer-judge]\n'
                'Question: {question}\n'
                'Reference answer(s): {golds}\n'
                'Candidate answer: {prediction}\n'
                'Does the candidate answer give the same information as a reference answer? If the reference is '
                '"Not answerable", the candidate is right only when it says the documents do not contain the '
                'answer. Reply with one word: yes or no.')


def judge_prompt(question: str, prediction: str, golds: Sequence[str]) -> str:
    return JUDGE_PROMPT.format(question=question, golds=' | '.join(golds), prediction=strip_citations(prediction))


def parse_judgement(reply: str) -> Optional[float]:
    """1.0 for yes, 0.0 for no, None when the judge said neither.

    >>> parse_judgement('Yes.'), parse_judgement('**No** - the year differs'), parse_judgement('maybe')
    (1.0, 0.0, None)
    """
    word = re.match(r'\W*(yes|no)\b', str(reply).strip(), re.I)
    return None if word is None else float(word.group(1).lower() == 'yes')
