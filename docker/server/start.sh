#!/bin/sh
# tritonserver on the /models volume: the one start command of both server images (NGC's on GPU,
# docker/server/cpu.Dockerfile on CPU).
#   CLIP_CONFIG_NAME    config variant (--model-config-name); empty: config.pbtxt
#   CLIP_MODEL_CONTROL  Triton's --model-control-mode (default none)
#   CLIP_API_KEY        when set, inference/metadata/model-config/statistics need header x-api-key
#   CLIP_ADMIN_KEY      key for the admin APIs (model-repository, shared-memory, trace, logging); they
#                       are never open: unset, a random key nobody knows closes them
# More arguments are passed on to tritonserver.
set -eu
admin=${CLIP_ADMIN_KEY:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
# The ops every model_fp16.pt calls (CUDA graphs, fused add and norm), written by a GPU build at the
# repository's root: Triton's pytorch backend finds custom TorchScript ops only in preloaded libraries.
ops=/models/libclip_cuda_ops.so
if [ -f "$ops" ]; then export LD_PRELOAD="$ops${LD_PRELOAD:+:$LD_PRELOAD}"; fi
# The GPU image path's pixels wait in Triton's CUDA memory pool: 2 GB a GPU
# (clip_triton_build.repository.IMAGE_GPU_POOL_BYTES says why)
case "${CLIP_CONFIG_NAME:-}" in torchscript_fp16*)
  for gpu in $(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null); do
    set -- --cuda-memory-pool-byte-size="$gpu:2147483648" "$@"
  done ;;
esac
# ONNX Runtime's sessions share one thread pool (clip_triton_build.repository.ORT_SERVER_CONFIG)
set -- --model-repository=/models \
  ${CLIP_CONFIG_NAME:+--model-config-name=$CLIP_CONFIG_NAME} \
  --backend-config=onnxruntime,enable-global-threadpool=1 \
  --model-control-mode="${CLIP_MODEL_CONTROL:-none}" \
  --log-verbose=0 \
  --http-restricted-api="model-repository,shared-memory,trace,logging:x-api-key=$admin" \
  --grpc-restricted-protocol="model-repository,shared-memory,trace,logging:x-api-key=$admin" \
  "$@"
if [ -n "${CLIP_API_KEY:-}" ]; then
  set -- "$@" \
    --http-restricted-api="inference,metadata,model-config,statistics:x-api-key=$CLIP_API_KEY" \
    --grpc-restricted-protocol="inference,metadata,model-config,statistics:x-api-key=$CLIP_API_KEY"
fi
exec tritonserver "$@"
