#!/bin/sh
# Copy the committed repository (configs, tokenizer model.py) into the /models volume and build
# the artifacts there: tokenizer.json, model.onnx (opset 17: ONNX Runtime >= 1.14 loads it),
# model.pt (+ model_fp16.pt), stamped weights parameters, config variants.
#   CLIP_CHECKPOINT        HF id or a folder mounted in the container (default openai/clip-vit-base-patch32)
#   CLIP_REQUIRE_WEIGHTS=1 fail instead of building random weights when the checkpoint can't be loaded
#   CLIP_BUILD_ARGS        more arguments for python -m clip_build
set -eu
mkdir -p /models
cp -r /src/model_repository/. /models/
set -- --repository /models --checkpoint "${CLIP_CHECKPOINT:-openai/clip-vit-base-patch32}" \
       --torchscript-device "${CLIP_TORCHSCRIPT_DEVICE:-cuda}" --fp16
if [ "${CLIP_REQUIRE_WEIGHTS:-0}" = "1" ]; then set -- "$@" --require-weights; fi
# shellcheck disable=SC2086
exec python -m clip_build "$@" ${CLIP_BUILD_ARGS:-}
