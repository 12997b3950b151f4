"""Fine-tuning ColPali-family retrievers on your own documents: LoRA adapters trained with colpali-engine's
losses and trainer on query-page pairs (from a pairs file, from your PDFs, from people's feedback), with
hard negatives mined by this project's own index. The output is an adapter folder that ``--model`` takes
everywhere (index, search, serve, serve-api, eval, the LazyLLM components).

    from lazyllm_colpali.training import FinetuneSettings, finetune
    report = finetune(FinetuneSettings(model='vidore/colqwen2-base', out='./adapter', train=['pairs.jsonl'],
                                       corpus='./pdfs', val='val.jsonl'))
    report['val_after']['recall@1']

Imports here are light; torch, transformers and colpali-engine load when training starts.
"""
from .pairs import PageRef, PairsError, TrainingPair, read_pairs, validate_pages, write_pairs
from .settings import FinetuneError, FinetuneSettings

__all__ = ['FinetuneError', 'FinetuneSettings', 'PageRef', 'PairsError', 'TrainingPair', 'finetune',
           'merge_adapter', 'pairs_from_pdfs', 'read_pairs', 'validate_pages', 'write_pairs']


def finetune(settings: FinetuneSettings):
    """Train a LoRA adapter (see :func:`lazyllm_colpali.training.trainer.finetune`)."""
    from .trainer import finetune as run

    return run(settings)


def merge_adapter(adapter_dir, out):
    """Write ``adapter_dir``'s base with the adapter merged in as a full model folder at ``out``."""
    from .trainer import merge_adapter as merge

    return merge(adapter_dir, out)


def pairs_from_pdfs(folder, **kwargs):
    """Pseudo-query pairs from a folder of PDFs, validation split by document (see :mod:`.pseudo_queries`)."""
    from .pseudo_queries import pairs_from_pdfs as make

    return make(folder, **kwargs)
