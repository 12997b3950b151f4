"""Kept for checkouts: the code lives in the installed package, :mod:`lazyllm_colpali.pipelines.arms`."""
from lazyllm_colpali.pipelines.arms import *  # noqa: F401,F403
from lazyllm_colpali.pipelines.arms import __all__  # noqa: F401
