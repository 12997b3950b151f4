"""``POST /feedback {"query": "...", "page_id": "...", "useful": true}`` for the search API: one person's
verdict on one retrieved page, stored beside the collection (:mod:`lazyllm_colpali.training.feedback`) and
exported later as training pairs (``lazyllm-colpali feedback export``)."""
from __future__ import annotations

from typing import Any, Dict

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from typing_extensions import Annotated

from ..training.feedback import MAX_QUERY_CHARS, FeedbackError, FeedbackStore


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError('empty; say which question the page was (not) useful for')
    text.encode('utf-8')   # a lone surrogate raises UnicodeEncodeError, a ValueError: a 400 naming the field
    return text


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra='forbid')
    query: Annotated[StrictStr, Field(min_length=1, max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank)]
    page_id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    useful: StrictBool


def record_feedback(index: Any, feedback: FeedbackStore, query: str, page_id: str, useful: bool,
                    via: str) -> Dict[str, Any]:
    """Store a verdict on a page of ``index``'s collection; an unknown page is a :class:`FeedbackError`."""
    record = index.store.records([page_id], images=False).get(page_id)
    if record is None:
        raise FeedbackError(f'page_id: no page {page_id!r} in this collection (use a page_id from /search)')
    return feedback.add(query, page_id, useful, file=record.file_name, page=record.page_number,
                        source=record.source, doc_id=record.doc_id, via=via)


def add_feedback_route(app: Any, index: Any, feedback: FeedbackStore) -> None:
    """Register ``POST /feedback`` on the API's FastAPI app (errors are 400/404 naming the field)."""
    from fastapi import HTTPException

    @app.post('/feedback')
    def post_feedback(request: FeedbackRequest) -> Dict[str, Any]:
        try:
            stored = record_feedback(index, feedback, request.query, request.page_id, request.useful, via='api')
        except FeedbackError as e:
            raise HTTPException(status_code=404 if str(e).startswith('page_id') else 400, detail=str(e))
        return {'stored': stored['id'], 'feedback': len(feedback.records())}
