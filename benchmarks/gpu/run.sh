#!/usr/bin/env bash
# GPU run (docs/performance.md): on a machine with an NVIDIA GPU, the python3 that holds a CUDA
# torch, and no package registry. Carried in .gpu/ (built here by benchmarks/gpu/bundle.sh): the
# tritonserver of nvidia-pytriton 0.7.0 (slimmed: Python 3.12 stub only), wheels (numpy 1.26 for
# the stub, ftfy, tritonclient, open-clip-torch for the vocabulary, perf_analyzer), the Triton
# r24.10 sources and googletest. Builds Triton's C++ libtorch backend there with CUDA (the
# onnxruntime one needs onnxruntime-gpu to serve a GPU, which no wheel here carries under the
# size limit; the CPU reference runs model.onnx in-process), builds the repository,
# then serves the TorchScript variants with KIND_GPU instances and checks and measures them.
#   bash benchmarks/gpu/run.sh [--quick]     results in $OUT (or ./gpu-results)
# With two or more GPUs visible, a second server spreads the encoder over GPUs 0 and 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-results}
SITE=/tmp/clip-gpu-site          # carried wheels except numpy, and the tritonserver
STUB_NUMPY=/tmp/clip-gpu-numpy1  # numpy 1.26, for the Python-backend stub only
VENV=/tmp/clip-gpu-venv
mkdir -p "$SITE" "$STUB_NUMPY" "$OUT"
# everything printed goes to $OUT/gpu_run.log as it comes: a run cut off by a time limit still
# leaves what it measured so far (check.py writes its report on SIGTERM too)
exec > >(tee -a "$OUT/gpu_run.log") 2>&1
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
export PYTHONPATH="$PWD/build_scripts:$PWD/runtime:$PWD/ops:$PWD/frontend:$PWD/client:$PWD:$SITE"
python3 -c 'import numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))'
# Triton's r24.10 sources (no GitHub here): the C++ backends and the tokenizer's own backend
SRC=/tmp/clip-gpu-sources
[ -d "$SRC/triton-src" ] || { mkdir -p "$SRC" && tar xJf .gpu/sources.tar.xz -C "$SRC"; }
export CLIP_TRITON_SOURCES="$SRC/triton-src"
# Triton's C++ backends: the libtorch one against this machine's CUDA torch (sm_90 for Hopper).
t0=$(date +%s)
CLIP_GOOGLETEST_SOURCE="$SRC/googletest" python3 -m clip_triton.cxx_backends --gpu --backends pytorch
echo "C++ backends ready in $(( $(date +%s) - t0 )) s"
# model.pt is traced on the CPU (the export names no device); model_fp16.pt on the GPU.
build() { python3 -m clip_triton_build --fp16 "$@" 2>&1 | grep -v "^\s*$" | tail -3; }
for step in ${GPU_RUN_STEPS:-check two-gpus}; do  # the default repository, for the steps that serve it
  case $step in check|two-gpus|bulk|openai|traffic) build; break ;; esac
done
# the local runtime puts CLIP_STUB_BIN first on PATH for the Python-backend stub
export CLIP_STUB_BIN="$VENV/bin"
# GPU_RUN_STEPS picks what runs (default: check two-gpus):
#   check     parity + every load point + the raw encoder, the shipped GPU default on GPU 0
#   two-gpus  parity + a bulk point on GPUs 0 and 1 (skipped with one GPU)
#   bulk      clip-triton-embed on 10k / 100k / 1M lines next to CLIPClient.encode (fp16)
#   models    per CLIP family shape of GPU_FAMILIES (default b32 l14 h14: tests/checkpoints.py,
#             seeded random weights, every layer): its own repository, `check` on it, then the table
#   openai    the OpenAI frontend against Triton's HTTP endpoint (benchmarks.openai_frontend), GPU 0;
#             OPENAI_ARGS: more of its options, e.g. "--frontend calls-in-flight=2 --duration 6"
#   several   two family shapes (two layers each) built by name into one repository, one server,
#             each model's fp16 embeddings against its own CPU ONNX file
#   traffic   one-text queries idle and beside a saturating bulk job, priorities off and on
#             (benchmarks.traffic), GPU 0, per encoder layout of TRAFFIC_LAYOUTS (default: default)
#   traffic-two  the same with two models on GPU 0: queries to B/32, the bulk job to L/14 (every
#             layer, seeded random weights)
#   images    the GPU image path per vision shape of IMAGE_SHAPES (default b32,b16,l14; every layer,
#             seeded random weights): parity with the CPU fp32 path, one image, bulk images/s, the
#             decode, preprocessing and tower alone, and one-text queries beside an image bulk job
#             (benchmarks.gpu.images), GPU 0
#   images-infinity  infinity-emb's image path on GPU 0 with the same JPEGs, from its offline
#             folder INFINITY_DIR (its README: installed with --no-index, ViT-B/32, fp16)
for step in ${GPU_RUN_STEPS:-check two-gpus}; do
  case $step in
    check) python3 -m benchmarks.gpu.check --out "$OUT/one-gpu" "$@" ;;
    two-gpus)
      if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
        python3 -m benchmarks.gpu.check --out "$OUT/two-gpus" --gpus 0,1 --parity-only "$@"
      fi ;;
    bulk) python3 -m benchmarks.bulk_embed --lines 10000,100000,1000000 --config-name torchscript_fp16 --output npy \
            --gpus 0 --json "$OUT/bulk.json" ;;
    models)
      for family in ${GPU_FAMILIES:-b32 l14 h14}; do
        python3 -m benchmarks.gpu.family_checkpoint --family "$family" --out "/tmp/ckpt-$family"
        build --checkpoint "/tmp/ckpt-$family" --require-weights --output "/tmp/repo-$family"
        python3 -m benchmarks.gpu.check --repository "/tmp/repo-$family" --out "$OUT/$family" "$@" || true
        rm -rf "/tmp/ckpt-$family"
      done
      python3 -m benchmarks.gpu.models "$OUT" --families "$(echo ${GPU_FAMILIES:-b32 l14 h14} | tr ' ' ,)" \
        --json "$OUT/models.json" ;;
    openai) python3 -m benchmarks.openai_frontend --gpu --workers "${OPENAI_WORKERS:-6}" \
              --processes "${OPENAI_LOAD_PROCESSES:-6}" --json "$OUT/openai.json" --plot "$OUT/openai.png" \
              ${OPENAI_ARGS:-} ;;
    several)
      for family in b32 l14; do
        python3 -m benchmarks.gpu.family_checkpoint --family "$family" --layers 2 --out "/tmp/small-$family"
      done
      build --model b32=/tmp/small-b32 --model l14=/tmp/small-l14 --require-weights --output /tmp/several
      python3 -m benchmarks.gpu.several --repository /tmp/several --json "$OUT/several.json" ;;
    traffic) python3 -m benchmarks.traffic --gpu --bulk-processes "${BULK_PROCESSES:-4}" \
               --layouts "${TRAFFIC_LAYOUTS:-default}" --duration "${TRAFFIC_SECONDS:-20}" \
               --json "$OUT/traffic.json" --plot "$OUT/traffic.png" ;;
    traffic-two)
      for family in b32 l14; do
        python3 -m benchmarks.gpu.family_checkpoint --family "$family" --out "/tmp/full-$family"
      done
      build --model b32=/tmp/full-b32 --model l14=/tmp/full-l14 --require-weights --output /tmp/two
      python3 -m benchmarks.traffic --gpu --repository /tmp/two --models b32,l14 --bulk-processes "${BULK_PROCESSES:-4}" \
        --layouts "${TRAFFIC_TWO_LAYOUTS:-default}" --duration "${TRAFFIC_SECONDS:-20}" \
        --json "$OUT/traffic_two.json" --plot "$OUT/traffic_two.png" ;;
    images) python3 -m benchmarks.gpu.images --shapes "${IMAGE_SHAPES:-b32,b16,l14}" --texts --out "$OUT/images" \
              ${IMAGES_ARGS:-} ;;
    images-infinity)
      peer=${INFINITY_DIR:?the infinity-emb folder}; site=/tmp/infinity_site
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$peer"/wheels/*.whl
      PYTHONPATH="$site" python3 "$peer/make_ckpt.py" /tmp/infinity_clip_ckpt >/dev/null 2>&1
      PYTHONPATH="$site" DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 HF_HUB_OFFLINE=1 INFINITY_HOME=/tmp/infinity_home \
        python3 "$peer/infinity_launch.py" v2 --model-id /tmp/infinity_clip_ckpt --served-model-name clip --engine torch \
        --device cuda --device-id 0 --dtype float16 --batch-size 256 --host 127.0.0.1 --port 7997 --log-level warning \
        > "$OUT/infinity_server.log" 2>&1 &
      infinity=$!
      for _ in $(seq 180); do curl -sf http://127.0.0.1:7997/models >/dev/null && break; sleep 1; done
      python3 -m benchmarks.gpu.images --openai-url http://127.0.0.1:7997 --openai-model clip --out "$OUT/images" \
        ${IMAGES_ARGS:-} || true
      kill "$infinity"; wait "$infinity" || true ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
