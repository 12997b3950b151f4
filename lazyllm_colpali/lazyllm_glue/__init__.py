"""LazyLLM components: embed module, document/retriever pair, reader, registered similarity."""
