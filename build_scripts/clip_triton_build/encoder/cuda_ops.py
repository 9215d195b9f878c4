"""The op library the fp16 export calls (`libclip_cuda_ops.so`, beside `model_fp16.pt`): the
CUDA-graph ops (native/cuda_ops/cuda_graphs.cpp) and the fused residual add and layer norm
(add_layer_norm.cpp, its kernel add_layer_norm.cu): the CMake target `clip_cuda_ops`
(native/CMakeLists.txt says what it links and why), with the options from here.

Built against the torch this build runs, which must be the torch whose libtorch the server's
pytorch backend runs: the NGC PyTorch image of the tritonserver image's release (docker/build),
or the machine's torch that the local runtime builds the backend against (clip_triton.cxx_backends).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .. import native
from ..native import CUDA_OPS_SOURCES, NativeBuildError

CSRC = CUDA_OPS_SOURCES
SOURCE = CSRC / "cuda_graphs.cpp"
SOURCES = (SOURCE, CSRC / "add_layer_norm.cpp")
KERNELS = CSRC / "add_layer_norm.cu"


def _cuda_home() -> Path:
    from torch.utils.cpp_extension import CUDA_HOME

    if not CUDA_HOME:
        raise NativeBuildError("no CUDA toolkit found (set CUDA_HOME): the ops need its headers and nvcc")
    return Path(CUDA_HOME)


def gpu_architectures() -> list[str]:
    """What the kernels are compiled for: $CLIP_CUDA_ARCHS (e.g. "90" or "80,90"), else every
    architecture this torch was built for, so the library runs wherever its libtorch does."""
    chosen = os.environ.get("CLIP_CUDA_ARCHS")
    if chosen:
        return [arch.strip() for arch in chosen.split(",") if arch.strip()]
    # in torch's order, as torch spells them ("90", "100a", ...): nvcc takes the same names
    return list(dict.fromkeys(arch[3:] for arch in torch.cuda.get_arch_list() if arch.startswith("sm_")))


def cmake_options(cuda: Path) -> dict[str, str]:
    """The CMake cache entries of the `clip_cuda_ops` target, with the CUDA toolkit at `cuda`."""
    return {
        "CLIP_CUDA_OPS": "ON",
        "TORCH_DIR": str(Path(torch.__file__).parent),
        "TORCH_CXX11_ABI": str(int(torch.compiled_with_cxx11_abi())),
        "CUDA_HOME": str(cuda),
        "CLIP_CUDA_ARCHS": ";".join(gpu_architectures()),
    }


def build(destination: Path) -> Path:
    """Compile the library to `destination` (a file path) and return it."""
    cuda = _cuda_home()
    if not (cuda / "bin" / "nvcc").is_file():  # a CUDA toolkit of headers alone
        raise NativeBuildError(f"{cuda / 'bin' / 'nvcc'} not found: the kernels need nvcc")
    with tempfile.TemporaryDirectory() as tmp:
        return native.build("clip_cuda_ops", cmake_options(cuda), Path(tmp), destination)


def load(library: Path) -> None:
    """Register the ops in this process (what LD_PRELOAD does for tritonserver), once: a process
    that loads a second repository's copy keeps the first (torch refuses a second registration of
    the same namespace, and every copy is built from the same sources)."""
    if not loaded():
        torch.ops.load_library(str(library))


def loaded() -> bool:
    """Whether this process has the ops already."""
    try:
        torch.ops.clip_cuda_graphs.stage
    except (AttributeError, RuntimeError):
        return False
    return True
