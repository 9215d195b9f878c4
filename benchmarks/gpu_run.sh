#!/usr/bin/env bash
# GPU run (docs/benchmarks.md, issue "GPU instance groups"): on a machine with an NVIDIA GPU, the
# python3 that holds a CUDA torch, and no package registry. Carried in .gpu/ (built here by
# benchmarks/gpu_bundle.sh): the tritonserver of nvidia-pytriton 0.7.0 (slimmed: Python 3.12
# stub only) and wheels (numpy 1.26 for the stub, ftfy, tritonclient, open-clip-torch for the
# vocabulary, perf_analyzer).
#   bash benchmarks/gpu_run.sh [--quick]     results in $OUT (or ./gpu-results)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
SITE=/tmp/clip-gpu-site
VENV=/tmp/clip-gpu-venv
mkdir -p "$SITE" "$OUT"
if [ ! -x "$SITE/pytriton/tritonserver/bin/tritonserver" ]; then
  tar xJf .gpu/pytriton.tar.xz -C "$SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu/wheels/*.whl
fi
# The Python-backend stub takes its packages from the python3 first on PATH: a venv whose own
# site-packages (numpy<2 and the carried wheels, via $SITE) come before the machine's torch env.
if [ ! -x "$VENV/bin/python3" ]; then
  python3 -m venv --without-pip "$VENV"
  torch_site=$(python3 -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parents[1])')
  sp=$("$VENV/bin/python3" -c 'import site; print(site.getsitepackages()[0])')
  echo "$SITE" > "$sp/00-clip-site.pth"
  echo "$torch_site" > "$sp/zz-machine-site.pth"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$PWD/build_scripts:$PWD/server:$PWD/client:$PWD"
python3 -c 'import numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))'
[ -f model_repository/clip_text_encoder/1/model_fp16.pt ] || \
  python3 -m clip_build --torchscript-device cuda --fp16 2>&1 | grep -v "^\s*$" | tail -5
python3 -m benchmarks.gpu_check --out "$OUT" "$@"
