#!/usr/bin/env bash
# Set up, index a folder of PDFs into embedded Milvus Lite (./colpali.db) and answer a query.
#   bash scripts/quickstart.sh PDF_FOLDER "your question"
# Model: $LAZYLLM_COLPALI_MODEL (a local folder or hub name; default vidore/colqwen2-v1.0).
# Offline with no model folder: LAZYLLM_COLPALI_MODEL=tiny:colqwen2 (random weights: runs, ranks meaninglessly).
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER=${1:-../shared/corpus/real}
QUERY=${2:-"How does late interaction score a page?"}
bash scripts/setup.sh
.venv/bin/lazyllm-colpali index "$FOLDER"
.venv/bin/lazyllm-colpali search "$QUERY" -k 5
