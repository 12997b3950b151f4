"""Encoders for colpali-engine model families (loading, batching, pooling) and tiny offline builders."""
from .._compat import install_torchvision_shim

install_torchvision_shim()   # before transformers / colpali_engine import torchvision (see _compat)
