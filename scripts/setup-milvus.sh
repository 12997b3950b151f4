#!/usr/bin/env bash
# A real Milvus standalone server (2.3.5, from PyPI's `milvus` package) for the many-machines tests, in its own
# venv so its pins never touch the project's. Idempotent: skipped when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-milvus/bin/milvus-server ]; then
    "$PY" -m venv .venv-milvus
    .venv-milvus/bin/python -m pip install -q --disable-pip-version-check "milvus==2.3.5"
fi
