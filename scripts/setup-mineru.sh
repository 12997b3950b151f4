#!/usr/bin/env bash
# MinerU (the "mineru" extractor / eval arm) in a venv of its own: it pins torch, transformers and pydantic
# versions of its own, so it stays out of .venv. Idempotent: an existing venv whose mineru-kit runs is kept
# (CI can cache the folder). ~1.7 GB, a few minutes on first run. Usage: bash scripts/setup-mineru.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${MINERU_VENV:-.mineru-venv}}
PY=${PYTHON:-python3}
if [ -x "$VENV/bin/mineru-kit" ] && "$VENV/bin/mineru-kit" --help >/dev/null 2>&1; then
    echo "MinerU ready: $VENV/bin/mineru-kit"
    exit 0
fi
"$PY" -m venv "$VENV"
# torch first, pinned to the CPU build the main stack uses: a bare requirement pulls a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "mineru==4.0.12"
"$VENV/bin/mineru-kit" --help >/dev/null
echo "MinerU ready: $VENV/bin/mineru-kit (export LAZYLLM_COLPALI_MINERU_KIT=$VENV/bin/mineru-kit)"
