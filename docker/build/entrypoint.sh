#!/bin/sh
# Write the servable repository into the /models volume: the hand-written one (configs, tokenizer
# model.py) copied from /src/model_repository, plus tokenizer.json and the tokenizer's C++ backend
# (libtriton_clip_bpe.so, compiled here: any Triton of the same API loads it), model.onnx (opset 17: ONNX
# Runtime >= 1.14 loads it), model.pt and model_fp16.pt with the ops they call
# (libclip_cuda_ops.so at the volume's root, compiled here against this image's torch: the server
# preloads it), the stamped parameters and the config variants. The volume's old contents are
# replaced (the build marks what it wrote).
#   CLIP_CHECKPOINT        HF id or a folder mounted in the container (default openai/clip-vit-base-patch32)
#   CLIP_CHECKPOINTS       NAME=CHECKPOINT,NAME=CHECKPOINT: several, each served as NAME (replaces CLIP_CHECKPOINT)
#   CLIP_ENCODER_LAYOUTS   [NAME=]ROWSxINSTANCES,...: the GPU encoder's layout, for every checkpoint or NAME's
#                          (python -m clip_triton_build --encoder-layout; docs/deploy.md)
#   CLIP_REQUIRE_WEIGHTS=1 fail instead of building random weights when the checkpoint can't be loaded
#   CLIP_TORCHSCRIPT_DEVICE where model.pt is traced: cuda (default), cpu (the CPU image)
#   CLIP_FP16=0            no model_fp16.pt and no CUDA ops (the CPU image; default 1)
#   CLIP_BUILD_ARGS        more arguments for python -m clip_triton_build
set -eu
set -- --source /src/model_repository --output /models --torchscript-device "${CLIP_TORCHSCRIPT_DEVICE:-cuda}"
if [ "${CLIP_FP16:-1}" = "1" ]; then set -- "$@" --fp16; fi
if [ -n "${CLIP_CHECKPOINTS:-}" ]; then
  old_ifs=$IFS; IFS=,
  for named in $CLIP_CHECKPOINTS; do set -- "$@" --model "$named"; done
  IFS=$old_ifs
else
  set -- "$@" --checkpoint "${CLIP_CHECKPOINT:-openai/clip-vit-base-patch32}"
fi
if [ -n "${CLIP_ENCODER_LAYOUTS:-}" ]; then
  old_ifs=$IFS; IFS=,
  for layout in $CLIP_ENCODER_LAYOUTS; do set -- "$@" --encoder-layout "$layout"; done
  IFS=$old_ifs
fi
if [ "${CLIP_REQUIRE_WEIGHTS:-0}" = "1" ]; then set -- "$@" --require-weights; fi
# shellcheck disable=SC2086
exec python -m clip_triton_build "$@" ${CLIP_BUILD_ARGS:-}
