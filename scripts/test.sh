#!/usr/bin/env bash
# The test suite, against real tritonserver processes the tests start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
scripts/setup_jina_venv.sh
scripts/setup_backends.sh
scripts/build_if_needed.sh
# Debian's docker-compose validates the compose files (no engine needed for `config`; tests/integration/compose
# installs and starts the engine it runs them on); Debian's nginx runs the proxy configuration
# (deploy/proxy) in front of a real server
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 || true
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
