#!/usr/bin/env bash
# Create/refresh .venv with everything the server, the build, the client and the tests need.
# Idempotent: reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat pyproject.toml client/pyproject.toml scripts/setup_venv.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# PYTHONWARNINGS: setuptools warns on every editable install that a folder named like a package
# could shadow it; ours are the packages themselves, so a first run stays quiet.
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q -e ./client -e ".[serve,build,openai,dataset,dev]"
# Only the BPE vocabulary file of open_clip is used (build + tokenizer parity tests).
"$VENV/bin/python" -m pip install -q --no-deps "open-clip-torch==3.3.0"
rm -f "$VENV"/.installed-*
touch "$stamp"
