#!/usr/bin/env bash
# Build the repository's artifacts (tokenizer.json, model.onnx, model.pt, config variants) when
# they are missing or older than the build code and configs they come from.
set -euo pipefail
cd "$(dirname "$0")/.."
inputs=$(cat build_scripts/clip_build/*.py model_repository/*/config.pbtxt scripts/build_if_needed.sh | sed '/parameters { key: "weights"/d; /parameters { key: "checkpoint"/d' | sha1sum | cut -c1-16)
stamp=build/.built-$inputs
if [ ! -f "$stamp" ] || [ ! -f model_repository/clip_text_encoder/1/model.onnx ] || [ ! -f model_repository/clip_text_encoder/1/model.pt ] \
   || [ ! -f model_repository/clip_tokenizer/1/tokenizer.json ]; then
  .venv/bin/python -m clip_build "$@"
  rm -f build/.built-*
  touch "$stamp"
fi
