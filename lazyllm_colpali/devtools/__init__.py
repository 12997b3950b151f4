"""Local stand-ins for services that live outside this machine (an OpenAI-compatible VLM)."""
from .standin_vlm import StandinVLMServer

__all__ = ['StandinVLMServer']
