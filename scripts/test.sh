#!/usr/bin/env bash
# Set up (if needed) and run the test suite offline. pip runs only when constraints.txt or pyproject.toml
# changed since the last install (a stamp in .venv holds their hash), or when FORCE_SETUP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.lazyllm_colpali_setup_stamp
want=$(cat constraints.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "${FORCE_SETUP:-0}" = 1 ] || [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    bash scripts/setup.sh
    echo "$want" > "$stamp"
else
    echo "setup: installed set matches constraints.txt + pyproject.toml (stamp $stamp); skipping pip"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
