#!/usr/bin/env bash
# Build the repository's artifacts (tokenizer.json, model.onnx, model.pt, config variants) unless present.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f model_repository/clip_text_encoder/1/model.onnx ] || [ ! -f model_repository/clip_text_encoder/1/model.pt ] \
   || [ ! -f model_repository/clip_tokenizer/1/tokenizer.json ] || [ ! -f model_repository/clip_text_encoder/configs/cpu.pbtxt ]; then
  .venv/bin/python -m clip_build "$@"
fi
