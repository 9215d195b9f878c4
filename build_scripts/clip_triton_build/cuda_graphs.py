"""The clip_cuda_graphs op library (csrc/cuda_graphs.cpp) that the fp16 export's CUDA graphs need.

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

SOURCE = Path(__file__).parent / "csrc" / "cuda_graphs.cpp"


class CudaGraphsBuildError(RuntimeError):
    pass


def _cuda_home() -> Path:
    from torch.utils.cpp_extension import CUDA_HOME

    if not CUDA_HOME:
        raise CudaGraphsBuildError("no CUDA toolkit found (set CUDA_HOME): the CUDA-graph ops need its headers")
    return Path(CUDA_HOME)


def compile_command(output: Path, cuda: Path) -> list[str]:
    """The compiler call that builds the library at `output` with the CUDA toolkit at `cuda`."""
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
        str(SOURCE),
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
        output = Path(tmp) / destination.name
        done = subprocess.run(compile_command(output, _cuda_home()), capture_output=True, text=True)
        if done.returncode != 0:
            raise CudaGraphsBuildError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
        shutil.copyfile(output, destination)
    return destination


def load(library: Path) -> None:
    """Register the ops in this process (what LD_PRELOAD does for tritonserver)."""
    torch.ops.load_library(str(library))
