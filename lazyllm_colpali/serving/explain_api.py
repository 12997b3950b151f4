"""``POST /explain`` for the JSON search API: where a page matched a query.

    POST /explain  {"query": "...", "page_id": "...", "format": "png" | "json", "token": 3, "token_maps": false}
                   -> image/png: the page with the heat map of the whole query (or of query token ``token``)
                      and the best-matching area outlined;
                   -> JSON ("format": "json"): the grid (``n_x`` x ``n_y`` cells over ``width`` x ``height`` px),
                      the query's tokens, the query map, the best area and, with ``token_maps``, every token's map.

Maps come from the page's stored vectors (see :mod:`lazyllm_colpali.retrieve.explain`); a page id comes from
a /search hit. Kept apart from :mod:`.api` (one route added by :func:`add_explain_route`).
"""
from __future__ import annotations

import io
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from typing_extensions import Annotated, Literal

from ..errors import ColPaliError
from .api import Name, Text


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra='forbid')
    query: Text
    page_id: Name
    format: Literal['png', 'json'] = 'png'
    token: Annotated[StrictInt, Field(ge=0, le=10_000)] = None
    token_maps: StrictBool = False


def add_explain_route(app: Any, index: Any) -> None:
    from fastapi import HTTPException
    from fastapi.responses import Response

    from ..retrieve.explain import ExplainError

    @app.post('/explain')
    def explain(request: ExplainRequest):
        try:
            explanation = index.explain(request.query, request.page_id)
        except ExplainError as e:
            raise HTTPException(status_code=404 if 'no page' in str(e) else 400, detail=str(e))
        except (ColPaliError, ValueError) as e:
            raise HTTPException(status_code=400, detail=str(e))
        token: Optional[int] = request.token
        if token is not None and token >= len(explanation.tokens):
            raise HTTPException(status_code=400, detail=f'token: the query has {len(explanation.tokens)} tokens '
                                                        f'(0-{len(explanation.tokens) - 1}), got {token}')
        if request.format == 'json':
            return explanation.to_dict(token_maps=request.token_maps, token=token)
        try:
            image = explanation.overlay(token=token, box=True)
        except ExplainError as e:   # the page image is missing on this machine
            raise HTTPException(status_code=404, detail=str(e))
        buffer = io.BytesIO()
        image.save(buffer, format='PNG')
        return Response(buffer.getvalue(), media_type='image/png')
