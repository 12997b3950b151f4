"""Answer-level evaluation: for each arm, the RAG answer a user would get, scored against gold answers.

For every question with gold answers, the configured VLM answers from the arm's top pages through the same
``build_rag`` flow users run (the arm's hits replayed as its retriever); the answer is scored with exact
match, ANLS, token F1 (:mod:`.answers`), semantic similarity when an embedding module is given, and an LLM
judge's verdict when a judge is given. VLM calls are cached, retried and limited in flight by the machinery
the caption arm uses (:class:`~lazyllm_colpali.model_calls.CachedModelCalls`), so a rerun with the same
``--workdir`` asks only for what it has no answer for yet.

    from lazyllm_colpali.eval import run_eval
    from lazyllm_colpali.eval.answering import AnswerEvaluator, AnswerEvalSettings

    evaluator = AnswerEvaluator(AnswerEvalSettings(vlm, pages=3, embed=embed_module))
    report = run_eval(dataset, ['colpali', 'text'], arm_hooks=[evaluator])
    report.arms[0].metric_groups['answers']       # {'em': .., 'anls': .., 'f1': .., 'semantic': .., ...}
"""
from __future__ import annotations

import html
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..logging import LOG
from .answers import is_unanswerable, judge_prompt, parse_judgement, score_answer, semantic_similarity
from .sft_export import SFTExporter

GROUP = 'answers'
# column order in the table and chart; 'abstain' is the share of answers that abstained
METRICS = ('em', 'anls', 'f1', 'semantic', 'judge', 'abstain')


@dataclass
class AnswerEvalSettings:
    vlm: Callable                       # any LazyLLM chat module of type VLM: the generator under test
    pages: int = 3                      # top pages of each arm the VLM sees (as in ``build_rag``)
    max_image_side: int = 1024
    embed: Optional[Callable] = None    # a LazyLLM embedding module: semantic similarity
    judge: Optional[Callable] = None    # a LazyLLM chat module: LLM-as-judge verdicts
    concurrency: int = 4                # VLM calls in flight
    retries: int = 3
    backoff: float = 1.0
    tau: float = 0.5                    # ANLS threshold (DocVQA)
    cache_dir: Optional[Path] = None    # default: <eval workdir>/answer_cache
    progress: bool = True


def rag_answer_text(output: Any) -> str:
    """The answer text of a ``build_rag`` result: an ``Answer``, a dict, or the text with its numbered sources
    after it - plain (the default) or Markdown (``output='markdown'``: the escaped text is unescaped).

    >>> rag_answer_text('16 bar [manual.pdf, p. 1] & more\\n\\nSources\\n1. manual.pdf, p. 1 (score 0.90)')
    '16 bar [manual.pdf, p. 1] & more'
    >>> rag_answer_text('16 bar &#91;manual.pdf, p. 1&#93;\\n\\n**Sources**\\n1. manual.pdf, p. 1 (score 0.90)')
    '16 bar [manual.pdf, p. 1]'
    """
    if hasattr(output, 'text'):
        return str(output.text).strip()
    if isinstance(output, dict):
        return str(output.get('answer') or output.get('text') or output.get('content') or '').strip()
    text = str(output)
    if '\n\n**Sources**' in text:
        return html.unescape(text.rsplit('\n\n**Sources**', 1)[0]).strip()
    return text.rsplit('\n\nSources\n', 1)[0].strip()


def standin_lookup(dataset) -> List[Dict[str, Any]]:
    """The stand-in VLM's lookup for a dataset (``make_vlm('standin', standin_answers=...)``): each question
    with gold answers, answered when one of its relevant pages is attached - an oracle reader, so answer
    scores follow retrieval exactly. It checks the flow; it says nothing about a real model."""
    return [{'question': dataset.queries[qid], 'pages': sorted(dataset.qrels.get(qid, {})),
             'answer': None if is_unanswerable(golds) else golds[0]}
            for qid, golds in dataset.answers.items() if qid in dataset.queries]


class _ReplayRetriever:
    """An arm's recorded top pages per question, served as the retriever of a ``build_rag`` flow."""

    def __init__(self, hits_by_question: Dict[str, List[Any]]):
        self.hits_by_question = hits_by_question

    def __call__(self, query: str, *args, **kw) -> List[Any]:
        return self.hits_by_question.get(query, [])


def _mean(values: List[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return sum(known) / len(known) if known else None


class AnswerEvaluator:
    """An arm hook for :func:`~lazyllm_colpali.eval.harness.run_eval`: adds the ``answers`` metric group to
    each arm's row and the per-question records to ``result.details['answers']``."""

    def __init__(self, settings: AnswerEvalSettings):
        self.settings = settings
        self.notes: List[str] = []
        self._calls: Dict[str, Any] = {}

    def _model_calls(self, kind: str, module: Callable, workdir: Path):
        from ..model_calls import CachedModelCalls

        if kind not in self._calls:
            root = Path(self.settings.cache_dir) if self.settings.cache_dir else Path(workdir) / 'answer_cache'
            self._calls[kind] = CachedModelCalls(module, root / kind, retries=self.settings.retries,
                                                 backoff=self.settings.backoff,
                                                 concurrency=self.settings.concurrency)
        return self._calls[kind]

    @property
    def calls(self) -> int:
        """Model calls made so far (generation and judging, retries included)."""
        return sum(c.calls for c in self._calls.values())

    def __call__(self, result, dataset, workdir: Path) -> None:
        from tqdm.auto import tqdm

        from ..generation import AnswerSettings
        from ..pipelines import build_rag

        questions = [q for q in dataset.answers if q in dataset.queries]
        if not questions:
            return
        s = self.settings
        generator = self._model_calls('generation', s.vlm, workdir)
        replay = _ReplayRetriever({dataset.queries[q]: result.hits.get(q, []) for q in questions})
        rag = build_rag(replay, generator, AnswerSettings(pages=s.pages, max_image_side=s.max_image_side))

        def answer(qid: str) -> Dict[str, Any]:
            shown = result.hits.get(qid, [])[:s.pages]
            record = {'query_id': qid, 'question': dataset.queries[qid], 'gold': dataset.answers[qid],
                      'pages': [dataset.page_key(h.source, h.page) for h in shown], 'answer': None}
            try:
                record['answer'] = rag_answer_text(rag(dataset.queries[qid]))
            except Exception as e:   # the flow re-types errors; all mean "no answer this time"
                record['error'] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                return record
            record.update(score_answer(record['answer'], record['gold'], s.tau))
            if s.embed is not None:
                record['semantic'] = self._semantic(record)
            if s.judge is not None:
                record['judge'] = self._judge(record, workdir)
            return record

        with ThreadPoolExecutor(max_workers=max(1, s.concurrency), thread_name_prefix='answers') as pool:
            records = list(tqdm(pool.map(answer, questions), total=len(questions), unit='question', leave=False,
                                desc=f'eval {result.arm}: answers', disable=not s.progress))
        result.details[GROUP] = records
        result.metric_groups[GROUP] = self._summary(records)
        failed = [r for r in records if r['answer'] is None]
        if failed:
            LOG.warning(f'eval: {result.arm}: no answer for {len(failed)} of {len(records)} questions '
                        f'(first error: {failed[0]["error"]}); a rerun with the same --workdir asks again')
        self._note(dataset, records)

    def _semantic(self, record: Dict[str, Any]) -> Optional[float]:
        try:
            return semantic_similarity(record['answer'], record['gold'], self.settings.embed)
        except Exception as e:   # an unreachable embedding service costs this column, not the run
            record['semantic_error'] = str(e)[:300]
            return None

    def _judge(self, record: Dict[str, Any], workdir: Path) -> Optional[float]:
        calls = self._model_calls('judge', self.settings.judge, workdir)
        try:
            return calls.ask(judge_prompt(record['question'], record['answer'], record['gold']),
                             parse=parse_judgement, what=f'judging question {record["query_id"]}')
        except Exception as e:
            record['judge_error'] = str(e)[:300]
            return None

    @staticmethod
    def _summary(records: List[Dict[str, Any]]) -> Dict[str, float]:
        answered = [r for r in records if r['answer'] is not None]
        summary: Dict[str, float] = {}
        for metric in METRICS:
            value = _mean([r.get('abstained' if metric == 'abstain' else metric) for r in answered])
            if value is not None:
                summary[metric] = value
        summary.update(n_questions=len(records), n_answered=len(answered),
                       n_not_answerable=sum(is_unanswerable(r['gold']) for r in records))
        return summary

    def _note(self, dataset, records: List[Dict[str, Any]]) -> None:
        if self.notes:
            return
        s = self.settings
        model = getattr(s.vlm, '_model_name', None) or type(s.vlm).__name__
        unanswerable = sum(is_unanswerable(r['gold']) for r in records)
        extras = ', '.join(name for name, on in (('semantic similarity', s.embed), ('LLM judge', s.judge)) if on)
        self.notes.append(f'answers: {len(records)} questions with gold answers ({unanswerable} not answerable), '
                          f'answered by {model} from the top {s.pages} pages of each arm through build_rag; '
                          f'EM/F1 SQuAD-normalised, ANLS tau={s.tau}' + (f'; {extras}' if extras else ''))


def write_answers(report, path: str | Path) -> Optional[Path]:
    """Every arm's answer to every question, with its scores, as JSON lines (None when no arm has answers)."""
    import json

    lines = [json.dumps({'arm': arm.arm, **record}, ensure_ascii=False, default=float)
             for arm in report.arms for record in arm.details.get(GROUP, [])]
    if not lines:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    return path


def check_cli_args(args, dataset, arms: List[str]) -> None:
    """The ``eval`` options of answer-level evaluation and SFT export, checked before any arm is built."""
    if getattr(args, 'answers', None) and not args.corpus:
        raise SystemExit('error: --answers goes with --corpus (a --dataset folder carries answers.jsonl)')
    if args.export_sft:
        if not dataset.answers:
            raise SystemExit('error: --export-sft needs gold answers: answers.jsonl in the dataset folder, an '
                             '"answer" field in the queries, or --answers FILE')
        if Path(args.export_sft).suffix != '.json':
            raise SystemExit(f'error: --export-sft {args.export_sft}: the file must end in .json (LLaMA-Factory '
                             'reads the format from the extension)')
        if args.sft_arm and args.sft_arm not in arms:
            raise SystemExit(f'error: --sft-arm {args.sft_arm} is not among --arms ({",".join(arms)})')
    if args.answer_pages < 1:
        raise SystemExit(f'error: --answer-pages must be at least 1, got {args.answer_pages}')


def hooks_from_cli(args, dataset, arms: List[str], vlm: Optional[Callable]):
    """``(arm_hooks, servers, notes)`` for ``eval``'s options: the answer evaluator (gold answers and a VLM),
    the SFT exporter (``--export-sft``); servers are stand-ins to stop afterwards."""
    from ..vlm import make_embed, make_vlm

    hooks: List[Any] = []
    servers: List[Any] = []
    notes: List[str] = []
    if dataset.answers and not args.skip_answers:
        if vlm is None:
            notes.append('answers: not generated: no VLM given (--vlm-url URL --vlm-model NAME, or --vlm-url standin)')
        else:
            embed = judge = None
            if args.embed_url:
                embed, server = make_embed(args.embed_url, args.embed_model)
                servers.append(server)
            if args.judge_url:
                judge, server = make_vlm(args.judge_url, args.judge_model, source=args.vlm_source,
                                         api_key_env=args.vlm_key_env)
                servers.append(server)
            hooks.append(AnswerEvaluator(AnswerEvalSettings(
                vlm, pages=args.answer_pages, max_image_side=args.image_side, embed=embed, judge=judge,
                concurrency=args.vlm_concurrency, progress=True)))
            if args.vlm_url == 'standin':
                notes.append('answers: the stand-in VLM answers from a lookup of the gold answers when a relevant '
                             'page is among those shown (an oracle reader): it checks the flow, not a model')
    if args.export_sft:
        arm = args.sft_arm or ('colpali' if 'colpali' in arms else arms[0])
        hooks.append(SFTExporter(args.export_sft, arm, pages=args.answer_pages, max_image_side=args.image_side))
    return hooks, [s for s in servers if s is not None], notes
