"""The native libraries tritonserver loads: one CMake project (native/CMakeLists.txt), driven
from here, and the one error its builds raise.

`native/` at the checkout's root holds one folder per library (the CMakeLists.txt says what each
target is and what it links):

- `native/clip_bpe/`: the tokenizer's Triton backend (`libtriton_clip_bpe.so`, in the tokenizer
  model's folder), its core (`clip_bpe.h`, no Triton symbols) and the core's googletest suite;
  its options come from clip_triton_build.tokenizer.backend;
- `native/cuda_ops/`: the CUDA-graph ops and fused kernels the fp16 TorchScript encoders call
  (`libclip_cuda_ops.so`, preloaded into tritonserver); options from clip_triton_build.encoder.cuda_ops.

Triton's own C++ backends (onnxruntime, pytorch) for the local runtime are built from Triton's
sources by clip_triton.cxx_backends, which raises the same error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .repository import REPO_ROOT

NATIVE = REPO_ROOT / "native"
CLIP_BPE_SOURCES = NATIVE / "clip_bpe"
CUDA_OPS_SOURCES = NATIVE / "cuda_ops"


class NativeBuildError(RuntimeError):
    """A native library could not be built: the message names what is missing or what failed."""


def _run(command: list[str], step: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise NativeBuildError(f"{step}: {command[0]} not found (Debian: apt-get install cmake g++ make)") from None
    if done.returncode != 0:
        raise NativeBuildError(f"{step} failed:\n{(done.stdout + done.stderr)[-4000:]}")


def configure(work: Path, options: dict[str, str]) -> None:
    """`cmake` over native/ into the build folder `work`, with `options` as -D cache entries."""
    if shutil.which("cmake") is None:
        raise NativeBuildError("cmake not found: apt-get install cmake (or pip install cmake)")
    command = ["cmake", "-S", str(NATIVE), "-B", str(work), "-DCMAKE_BUILD_TYPE=Release"]
    if compiler := os.environ.get("CXX"):
        command.append(f"-DCMAKE_CXX_COMPILER={compiler}")
    command += [f"-D{key}={value}" for key, value in options.items()]
    _run(command, "configuring native/")


def build(target: str, options: dict[str, str], work: Path, destination: Path) -> Path:
    """Configure native/ with `options` in `work`, build `target`, copy what it made (a library
    lib<target>.so or an executable <target>) to `destination` and return that."""
    configure(work, options)
    _run(["cmake", "--build", str(work), "--target", target, "-j", str(os.cpu_count() or 1)], f"building {target}")
    made = next((p for p in (work / f"lib{target}.so", work / target) if p.is_file()), None)
    if made is None:
        raise NativeBuildError(f"building {target} wrote nothing in {work}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(made, partial)
    partial.chmod(made.stat().st_mode)
    os.replace(partial, destination)
    return destination
