"""Multi-vector store interface, the Milvus backend, the local vector file and the page image store."""
