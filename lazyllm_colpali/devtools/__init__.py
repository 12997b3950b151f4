"""Local stand-ins for services that live outside this machine (an OpenAI-compatible VLM) and real Milvus
servers started here for tests and benchmarks (:mod:`.milvus_servers`)."""
from .standin_vlm import StandinVLMServer

__all__ = ['StandinVLMServer']
