"""Kept for checkouts: the code lives in the installed package, :mod:`lazyllm_colpali.pipelines.visual_rag`."""
from lazyllm_colpali.pipelines.visual_rag import *  # noqa: F401,F403
from lazyllm_colpali.pipelines.visual_rag import __all__  # noqa: F401
