"""Kept for checkouts: the code lives in the installed package, :mod:`lazyllm_colpali.pipelines.flows`."""
from lazyllm_colpali.pipelines.flows import *  # noqa: F401,F403
from lazyllm_colpali.pipelines.flows import __all__  # noqa: F401
