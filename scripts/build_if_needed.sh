#!/usr/bin/env bash
# Build the servable repository (build/model_repository: the hand-written model_repository/ plus
# tokenizer.json and the tokenizer's C++ backend, model.onnx, model.pt and the config variants) when it is missing or older than
# the build code and the source repository it comes from.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/model_repository
inputs=$( (find build_scripts/clip_triton_build client/clip_triton_contract native model_repository -type f ! -path '*/__pycache__/*' | LC_ALL=C sort \
           | xargs cat; cat scripts/build_if_needed.sh) | sha1sum | cut -c1-16)
stamp=build/.built-$inputs
if [ ! -f "$stamp" ] || [ ! -f $out/clip_text_encoder/1/model.onnx ] || [ ! -f $out/clip_text_encoder/1/model.pt ] \
   || [ ! -f $out/clip_tokenizer/1/tokenizer.json ] || [ ! -f $out/clip_tokenizer/libtriton_clip_bpe.so ]; then
  .venv/bin/python -m clip_triton_build --output $out "$@"
  rm -f build/.built-*
  touch "$stamp"
fi
