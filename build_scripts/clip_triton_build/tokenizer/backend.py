"""The tokenizer's C++ backend (csrc/clip_bpe_backend.cc), compiled into its model folder.

Triton loads a model's backend from the model's own folder before its backend directory, as
`libtriton_<backend>.so`. It is plain C++ against Triton's backend API headers and RapidJSON
(clip_triton_build.triton_sources: the r24.10 mirror, GitHub, or the system's RapidJSON), and links
nothing: the TRITONBACKEND_* and TRITONSERVER_* calls it makes resolve in the server that loads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..spec import TOKENIZER_BACKEND_LIBRARY, TOKENIZER_MODEL
from ..triton_sources import SourcesUnavailable, core_include, rapidjson_include

SOURCE = Path(__file__).parent / "csrc" / "clip_bpe_backend.cc"


class TokenizerBackendBuildError(RuntimeError):
    pass


def library_path(repository: Path) -> Path:
    """Where Triton finds the backend in a built repository: the tokenizer model's folder."""
    return Path(repository) / TOKENIZER_MODEL / TOKENIZER_BACKEND_LIBRARY


def build(destination: Path) -> Path:
    """Compile the backend to `destination` (a file path) and return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rapidjson, core = rapidjson_include(), core_include(Path(tmp))
        except SourcesUnavailable as exc:
            raise TokenizerBackendBuildError(str(exc)) from None
        output = Path(tmp) / destination.name
        command = [
            os.environ.get("CXX", "c++"),
            "-shared",
            "-fPIC",
            "-O2",
            "-std=c++17",
            f"-I{core}",
            f"-I{rapidjson}",
            str(SOURCE),
            "-o",
            str(output),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            raise TokenizerBackendBuildError(f"no C++ compiler ({command[0]}): install g++ ({exc})") from None
        if done.returncode != 0:
            raise TokenizerBackendBuildError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
        shutil.copyfile(output, destination)
    return destination
