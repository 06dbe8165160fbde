#!/usr/bin/env bash
# Installs segan into a virtual environment with the pinned CPU-capable torch build.
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh dev      # plus the test tools
# Uses the active virtual environment if there is one, else creates .venv in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
python -m pip install --quiet -c constraints.txt pip
python -m pip install --quiet -c constraints.txt -e ".${extras}"
python -c "import torch, segan; print(f'segan {segan.__version__} installed with torch {torch.__version__} in {__import__(\"sys\").prefix}')"
