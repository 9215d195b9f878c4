#!/usr/bin/env bash
# .venv-jina: jina 3.34.0 + this project's client, for the Jina executor drop-in and its test.
# The client and tritonclient go in with --no-deps (see requirements/jina.txt for why); the
# client talks HTTP there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-jina
stamp="$VENV/.installed-$(cat requirements/jina.txt client/pyproject.toml scripts/setup_jina_venv.sh | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/jina.txt
# PYTHONWARNINGS: quiet setuptools' editable-install notice (scripts/setup_venv.sh says why)
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install -q --no-deps "tritonclient==2.73.0" -e ./client
rm -f "$VENV"/.installed-*
touch "$stamp"
