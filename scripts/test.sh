#!/usr/bin/env bash
# The test suite, against real tritonserver processes the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
scripts/setup_jina_venv.sh
scripts/build_if_needed.sh
exec .venv/bin/python -m pytest "$@"
