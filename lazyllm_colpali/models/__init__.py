"""Encoders for colpali-engine model families (loading, batching, pooling) and tiny offline builders."""
