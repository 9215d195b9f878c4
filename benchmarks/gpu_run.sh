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
SITE=/tmp/clip-gpu-site          # carried wheels except numpy, and the tritonserver
STUB_NUMPY=/tmp/clip-gpu-numpy1  # numpy 1.26, for the Python-backend stub only
VENV=/tmp/clip-gpu-venv
mkdir -p "$SITE" "$STUB_NUMPY" "$OUT"
[ -x "$SITE/pytriton/tritonserver/bin/tritonserver" ] || tar xJf .gpu/pytriton.tar.xz -C "$SITE"
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$@" 2>&1 | grep -v "already exists" || true; }
rm -rf "$SITE"/numpy "$SITE"/numpy-* "$SITE"/numpy.libs
pipi "$SITE" $(ls .gpu/wheels/*.whl | grep -v /numpy-)
pipi "$STUB_NUMPY" .gpu/wheels/numpy-*.whl
# The Python-backend stub takes its packages from the python3 first on PATH: a venv whose
# site-packages put numpy<2 (the 2.51 stub garbles strings with numpy 2) and the carried wheels
# before the machine's torch env. Everything else here runs on the machine's own python3.
torch_site=$(python3 -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parents[1])')
[ -x "$VENV/bin/python3" ] || python3 -m venv --without-pip "$VENV"
sp=$("$VENV/bin/python3" -c 'import site; print(site.getsitepackages()[0])')
printf '%s\n%s\n' "$STUB_NUMPY" "$SITE" > "$sp/00-clip-site.pth"
echo "$torch_site" > "$sp/zz-machine-site.pth"
"$VENV/bin/python3" -c 'import numpy, torch, ftfy; print("stub env: numpy", numpy.__version__, "torch", torch.__version__)'
export PYTHONPATH="$PWD/build_scripts:$PWD/server:$PWD/client:$PWD:$SITE"
python3 -c 'import numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))'
python3 -m clip_build --torchscript-device cuda --fp16 2>&1 | grep -v "^\s*$" | tail -5
# the local runtime puts sys.prefix/bin first on PATH for the stub: run it from the stub venv's
# prefix by pointing CLIP_STUB_PYTHON_BIN there
CLIP_STUB_BIN="$VENV/bin" python3 -m benchmarks.gpu_check --out "$OUT" "$@"
