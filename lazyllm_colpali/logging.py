"""Logging goes through LazyLLM's logger, so plugin messages land where a LazyLLM user looks."""
from lazyllm import LOG

__all__ = ['LOG']
