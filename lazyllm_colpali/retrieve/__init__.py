"""MaxSim scoring (reference + fast path) and the retriever."""
