#!/usr/bin/env bash
# Creates the project's Python virtual environment (default build/venv) with the checkers and
# clients the tests use from PyPI, pinned. Idempotent and quiet when it is already complete; run
# by `make deps` (and so by `make test`).
set -euo pipefail
VENV="${1:-build/venv}"
REQUIREMENTS="$(dirname "$0")/python-requirements.txt"
STAMP="$VENV/.requirements"
if [ -f "$STAMP" ] && cmp -s "$STAMP" "$REQUIREMENTS"; then exit 0; fi
echo "python-venv: creating $VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" \
  || { echo "python-venv: pip could not install $REQUIREMENTS (is PyPI reachable?)" >&2; exit 1; }
cp "$REQUIREMENTS" "$STAMP"
