"""The tokenizer's C++ backend (native/clip_bpe/), compiled into its model folder, and its core's unit tests.

Triton loads a model's backend from the model's own folder before its backend directory, as
`libtriton_<backend>.so`. The backend is the tokenizer core (clip_bpe.h, clip_bpe.cc: no
Triton symbols) and the glue (clip_bpe_backend.cc), plain C++ against Triton's backend API
headers and RapidJSON (clip_triton_build.triton_sources: the r24.10 mirror, GitHub, or the
system's RapidJSON). It links nothing: the TRITONBACKEND_* and TRITONSERVER_* calls it makes
resolve in the server that loads it.

The core's googletest suite (clip_bpe_test.cc) builds without Triton's headers, which proves
the core needs none of them: `build_tests` compiles it with googletest's own sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from clip_triton_contract.names import TOKENIZER_MODEL

from ..native import CLIP_BPE_SOURCES, NativeBuildError
from ..spec import TOKENIZER_BACKEND_LIBRARY
from ..triton_sources import SourcesUnavailable, core_include, googletest_source, rapidjson_include

CSRC = CLIP_BPE_SOURCES
CORE = CSRC / "clip_bpe.cc"  # with its header, clip_bpe.h
GLUE = CSRC / "clip_bpe_backend.cc"
TESTS = CSRC / "clip_bpe_test.cc"


def library_path(repository: Path) -> Path:
    """Where Triton finds the backend in a built repository: the tokenizer model's folder."""
    return Path(repository) / TOKENIZER_MODEL / TOKENIZER_BACKEND_LIBRARY


def _compile(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise NativeBuildError(f"no C++ compiler ({command[0]}): install g++ ({exc})") from None
    if done.returncode != 0:
        raise NativeBuildError(f"compiling {what} failed:\n{done.stderr[-4000:]}")


def _rapidjson() -> Path:
    try:
        return rapidjson_include()
    except SourcesUnavailable as exc:
        raise NativeBuildError(str(exc)) from None


def build(destination: Path) -> Path:
    """Compile the backend to `destination` (a file path) and return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            core = core_include(Path(tmp))
        except SourcesUnavailable as exc:
            raise NativeBuildError(str(exc)) from None
        output = Path(tmp) / destination.name
        cxx = os.environ.get("CXX", "c++")
        flags = ["-shared", "-fPIC", "-O2", "-std=c++17", f"-I{core}", f"-I{_rapidjson()}", f"-I{CSRC}"]
        _compile([cxx, *flags, str(CORE), str(GLUE), "-o", str(output)], GLUE.name)
        shutil.copyfile(output, destination)
    return destination


def build_tests(destination: Path) -> Path:
    """Compile the core's googletest suite to `destination` (an executable): the core, its tests
    and googletest's sources, with RapidJSON and no Triton header."""
    source = googletest_source()
    gtest = source / "googletest" if source else None
    if gtest is None or not (gtest / "src" / "gtest-all.cc").is_file():
        raise NativeBuildError(
            "googletest sources not found: apt-get install googletest (or set $CLIP_GOOGLETEST_SOURCE)"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    command = [
        cxx,
        "-O1",
        "-std=c++17",
        "-pthread",
        f"-I{gtest / 'include'}",
        f"-I{gtest}",
        f"-I{_rapidjson()}",
        f"-I{CSRC}",
        str(CORE),
        str(TESTS),
        str(gtest / "src" / "gtest-all.cc"),
        str(gtest / "src" / "gtest_main.cc"),
        "-o",
        str(destination),
    ]
    _compile(command, TESTS.name)
    return destination
