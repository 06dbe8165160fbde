#!/usr/bin/env bash
# Builds the documentation site into docs/_build/html (open docs/_build/html/index.html).
# Regenerates the generated pages first (CLI and config references, benchmark tables), then builds
# with warnings as errors, as the test suite does. Needs the docs extra: bash scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate 2>/dev/null || true
python scripts/docs.py
python -m sphinx -W --keep-going -q -b html docs docs/_build/html
echo "site built: $(pwd)/docs/_build/html/index.html"
