#!/usr/bin/env bash
# Make .gpu/ for benchmarks/gpu/run.sh: what a GPU machine without a package registry needs,
# in ~55-63 MB to copy there. Run on a machine with one, after scripts/setup_venv.sh (with pip and
# network to the registry), with the GPU_RUN_STEPS the run will take (run.sh lists them). The
# Triton r24.10 sources come from $CLIP_TRITON_SOURCES when set, else from GitHub; googletest from
# Debian's package (the C++ backends' build needs both).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu && mkdir -p .gpu/wheels
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_39_x86_64 --platform manylinux_2_38_x86_64 --platform manylinux_2_35_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$1" "$2"; }
for spec in numpy==1.26.4 python-rapidjson==1.25 ftfy==6.3.1 wcwidth==0.2.13 tritonclient==2.73.0 open-clip-torch==3.3.0 perf-analyzer==2.60.0; do
  dl .gpu/wheels "$spec"
done
# the OpenAI frontend (docker/openai/requirements.txt) and the benchmark's load generator, for the
# steps that start them: GPU_RUN_STEPS as run.sh reads it (unset: every step). Without them the
# bundle and the tree fit one 64 MiB copy.
steps=" ${GPU_RUN_STEPS:-openai} "
case $steps in *" openai "*|*" traffic "*|*" traffic-two "*) frontend=1 ;; *) frontend=0 ;; esac
if [ "$frontend" = 1 ]; then for spec in $(grep -v '^#' docker/openai/requirements.txt | grep -v -e tritonclient -e numpy | sed 's/\[.*\]//') \
    h11 click anyio sniffio uvloop httptools aiohttp multidict yarl frozenlist aiosignal propcache aiohappyeyeballs \
    attrs idna typing-extensions; do
  dl .gpu/wheels "$spec"
done; fi
tmp=$(mktemp -d); dl "$tmp" nvidia-pytriton==0.7.0
(cd "$tmp" && unzip -q nvidia_pytriton-*.whl)
slim=$(mktemp -d); mkdir -p "$slim/pytriton/tritonserver/python_backend_stubs"
touch "$slim/pytriton/__init__.py"
cp -r "$tmp/pytriton/tritonserver/bin" "$tmp/pytriton/tritonserver/backends" "$slim/pytriton/tritonserver/"
cp -r "$tmp/pytriton/tritonserver/python_backend_stubs/3.12" "$slim/pytriton/tritonserver/python_backend_stubs/"
cp -r "$tmp/nvidia_pytriton.libs" "$slim/" && rm -f "$slim"/nvidia_pytriton.libs/libpython3-*
tar cJf .gpu/pytriton.tar.xz -C "$slim" .
rm -rf "$tmp" "$slim"
src=$(mktemp -d)
.venv/bin/python -m clip_triton.cxx_backends --export-sources "$src/triton-src" >/dev/null
[ -d /usr/src/googletest ] || { echo "googletest sources missing: apt-get install googletest" >&2; exit 1; }
cp -r /usr/src/googletest "$src/googletest"
tar cJf .gpu/sources.tar.xz -C "$src" triton-src googletest
rm -rf "$src"
du -sh .gpu
