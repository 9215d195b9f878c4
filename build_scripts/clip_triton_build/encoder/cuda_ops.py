"""The op library the fp16 export calls (`libclip_cuda_ops.so`, beside `model_fp16.pt`): the
CUDA-graph ops (native/cuda_ops/cuda_graphs.cpp) and the fused residual add and layer norm
(add_layer_norm.cpp, its kernel add_layer_norm.cu).

Built with the C++ compiler against the torch this build runs, which must be the torch whose
libtorch the server's pytorch backend runs: the NGC PyTorch image of the tritonserver image's
release (docker/build), or the machine's torch that the local runtime builds the backend against
(clip_triton.cxx_backends). Only libtorch is linked (no libtorch_python, no
libpython: the library is preloaded into tritonserver, which has neither).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

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


def kernel_command(output: Path, cuda: Path) -> list[str]:
    """nvcc compiling the kernels (plain CUDA, no torch headers) to an object file at `output`.
    Its CUDA runtime calls (registration, launches) stay undefined, like cuda_graphs.cpp's, and
    resolve to the runtime libtorch_cuda loads."""
    gencode = [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in gpu_architectures()]
    nvcc = str(cuda / "bin" / "nvcc")
    return [nvcc, "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC", *gencode, str(KERNELS), "-o", str(output)]


def compile_command(output: Path, cuda: Path, kernels: Path) -> list[str]:
    """The compiler call that builds the library at `output` with the CUDA toolkit at `cuda` and
    the kernels' object file (kernel_command) at `kernels`."""
    torch_dir = Path(torch.__file__).parent
    lib = torch_dir / "lib"
    return [
        os.environ.get("CXX", "c++"),
        "-shared",
        "-fPIC",
        "-O2",
        "-std=c++20",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
        f"-I{torch_dir / 'include'}",
        f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
        f"-I{cuda / 'include'}",
        *map(str, SOURCES),
        str(kernels),
        "-o",
        str(output),
        f"-L{lib}",
        f"-Wl,-rpath,{lib}",  # found without LD_LIBRARY_PATH where the build's torch is the server's
        "-lc10",
        "-lc10_cuda",
        "-ltorch_cpu",
        "-ltorch_cuda",
        "-ltorch",
        # no -lcudart: its few calls (events) resolve to the CUDA runtime libtorch_cuda loads, the
        # one torch was built with, wherever that lives (a pip wheel's own copy, say)
    ]


def build(destination: Path) -> Path:
    """Compile the library to `destination` (a file path) and return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        output, kernels, cuda = Path(tmp) / destination.name, Path(tmp) / "kernels.o", _cuda_home()
        steps = [
            (f"compiling {KERNELS.name}", kernel_command(kernels, cuda)),
            (f"building {destination.name}", compile_command(output, cuda, kernels)),
        ]
        for step, command in steps:
            try:
                done = subprocess.run(command, capture_output=True, text=True)
            except FileNotFoundError:  # a CUDA toolkit of headers alone has no nvcc
                raise NativeBuildError(f"{step}: {command[0]} not found") from None
            if done.returncode != 0:
                raise NativeBuildError(f"{step} ({command[0]}) failed:\n{done.stderr[-4000:]}")
        shutil.copyfile(output, destination)
    return destination


def load(library: Path) -> None:
    """Register the ops in this process (what LD_PRELOAD does for tritonserver)."""
    torch.ops.load_library(str(library))
