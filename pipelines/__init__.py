"""Ready LazyLLM flows built from lazyllm_colpali components."""
