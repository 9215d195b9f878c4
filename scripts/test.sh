#!/usr/bin/env bash
# The test suite, against real tritonserver processes the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
scripts/setup_jina_venv.sh
scripts/setup_backends.sh
scripts/build_if_needed.sh
# docker-compose.yml is validated with Debian's docker-compose (no engine needed for `config`)
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 || true
fi
exec .venv/bin/python -m pytest "$@"
