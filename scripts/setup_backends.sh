#!/usr/bin/env bash
# Build Triton r24.10's C++ onnxruntime and pytorch backends for the local tritonserver (cached in
# .local/cxx-backends; rebuilt only when an input changes). Installs the system packages the build
# needs where this user can (Debian/Ubuntu as root); otherwise the build says what is missing.
# Sources: a mirror in $CLIP_TRITON_SOURCES, else ../shared/triton-r24.10 beside the checkout when
# present, else upstream GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v git >/dev/null 2>&1 || need+=(git)
[ -d /usr/include/rapidjson ] || need+=(rapidjson-dev)
[ -d /usr/src/googletest ] || need+=(googletest)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup_backends] apt-get install ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "[setup_backends] missing system packages: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
  fi
fi
# An offline mirror beside the checkout (the workspace's ../shared) serves when none is named.
if [ -z "${CLIP_TRITON_SOURCES:-}" ] && [ -d ../shared/triton-r24.10 ]; then
  CLIP_TRITON_SOURCES=$(cd ../shared/triton-r24.10 && pwd)
  export CLIP_TRITON_SOURCES
fi
.venv/bin/python -m clip_triton.cxx_backends >/dev/null
