#!/usr/bin/env bash
# Installs segan with its test tools and runs the whole test suite (CPU only, under 10 minutes).
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -k losses
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
source .venv/bin/activate 2>/dev/null || true
python -m pytest -q "$@"
