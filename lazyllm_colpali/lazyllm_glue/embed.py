"""``ColPaliEmbed``: a LazyLLM embedding module that returns multi-vectors.

It follows LazyLLM's embed contract, so it can be given to ``lazyllm.Document(embed=...)``:
a ``str`` gives the query's multi-vector ``List[List[float]]``; a list of images (data URIs, paths or PIL
images) with ``modality='image'`` gives ``[multivector, ...]`` (LazyLLM keeps element 0 per image node).
"""
from __future__ import annotations

import base64
import io
from typing import Any, List, Optional, Union

from lazyllm.module import ModuleBase
from PIL import Image

from ..models.encoder import ColPaliEncoder
from ..settings import default_model


def to_image(item: Any) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert('RGB')
    if isinstance(item, str) and item.startswith('data:'):
        return Image.open(io.BytesIO(base64.b64decode(item.split(',', 1)[1]))).convert('RGB')
    with Image.open(item) as image:
        return image.convert('RGB')


class ColPaliEmbed(ModuleBase):
    """LazyLLM module wrapping a :class:`ColPaliEncoder`.

    >>> embed = ColPaliEmbed('tiny:colpali')
    >>> len(embed('total revenue')[0])                    # one 128-dim vector per query token
    128
    """

    def __init__(self, model: Union[str, ColPaliEncoder, None] = None, *, encoder: Optional[ColPaliEncoder] = None,
                 return_trace: bool = False, **encoder_kwargs):
        super().__init__(return_trace=return_trace)
        if isinstance(model, ColPaliEncoder):   # ColPaliEmbed(encoder) reads naturally too
            model, encoder = None, model
        self.encoder = encoder or ColPaliEncoder(model or default_model(), **encoder_kwargs)

    def forward(self, input: Union[str, List[Any]], modality: Optional[str] = None, **kw) -> List:
        if modality == 'image' or (isinstance(input, list) and input and not isinstance(input[0], str)):
            images = [to_image(x) for x in (input if isinstance(input, list) else [input])]
            return [v.tolist() for v in self.encoder.encode_images(images)]
        if isinstance(input, list):
            return [v.tolist() for v in self.encoder.encode_queries(input)]
        return self.encoder.encode_queries([input])[0].tolist()

    def __repr__(self) -> str:
        return f'ColPaliEmbed({self.encoder.model_name!r})'
