#!/usr/bin/env bash
# Refreshes constraints.txt, the lock every install uses: a throw-away virtual environment gets
# the newest releases that pyproject.toml allows (torch held at the pinned build), then every
# installed package is written with its exact version. Run it, then the test suite, and commit
# constraints.txt (and pyproject.toml's lower bounds, if a release changed them) together.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_pins=$(grep -E '^(torch|torchvision)==' constraints.txt)
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
printf '%s\n' "$torch_pins" > "$venv/torch-pins.txt"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c "$venv/torch-pins.txt" -e ".[dev,offline-weights,onnx,openvino,int8,docs]"
{
  echo "# The lock: every runtime and dev dependency at the exact version CI passed with."
  echo "# Used by scripts/setup.sh (pip install -c constraints.txt). Refresh with: bash scripts/lock.sh"
  echo "pip==$("$venv/bin/python" -m pip --version | cut -d' ' -f2)"
  "$venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "constraints.txt: $(grep -c '==' constraints.txt) exact pins"
