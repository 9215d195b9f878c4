"""Where the native code that tritonserver loads lives, and the one error its builds raise.

`native/` at the checkout's root holds one folder per library:

- `native/clip_bpe/`: the tokenizer's Triton backend (`libtriton_clip_bpe.so`, in the tokenizer
  model's folder), its core (`clip_bpe.h`, no Triton symbols) and the core's googletest suite;
  compiled by clip_triton_build.tokenizer.backend;
- `native/cuda_ops/`: the CUDA-graph ops and fused kernels the fp16 TorchScript encoders call
  (`libclip_cuda_ops.so`, preloaded into tritonserver); compiled by clip_triton_build.encoder.cuda_ops.

Triton's own C++ backends (onnxruntime, pytorch) for the local runtime are built from Triton's
sources by clip_triton.cxx_backends, which raises the same error.
"""

from __future__ import annotations

from .repository import REPO_ROOT

NATIVE = REPO_ROOT / "native"
CLIP_BPE_SOURCES = NATIVE / "clip_bpe"
CUDA_OPS_SOURCES = NATIVE / "cuda_ops"


class NativeBuildError(RuntimeError):
    """A native library could not be built: the message names what is missing or what failed."""
