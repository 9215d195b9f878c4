#!/usr/bin/env bash
# The main job: install, build the repository (default checkpoint; random weights when offline),
# serve it on CPU with the bundled tritonserver and Triton's C++ backends (built once), embed a few texts over HTTP and gRPC, keep serving.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
scripts/setup_backends.sh
scripts/build_if_needed.sh
exec .venv/bin/python -m clip_triton "$@"
