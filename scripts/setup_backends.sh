#!/usr/bin/env bash
# Build Triton r24.10's C++ onnxruntime and pytorch backends for the local tritonserver (cached in
# .local/cxx-backends; rebuilt only when an input changes). Installs the system packages the build
# needs where this user can (Debian/Ubuntu as root); otherwise the build says what is missing.
# Sources: clip_triton_build.triton_sources (a mirror in $CLIP_TRITON_SOURCES, else upstream GitHub).
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
.venv/bin/python -m clip_triton.cxx_backends >/dev/null
