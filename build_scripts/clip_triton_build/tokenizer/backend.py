"""The tokenizer's C++ backend (native/clip_bpe/), built into its model folder, and its core's
unit tests: the CMake targets `triton_clip_bpe` and `clip_bpe_test` (native/CMakeLists.txt).

Triton loads a model's backend from the model's own folder before its backend directory, as
`libtriton_<backend>.so`. The backend is plain C++ against Triton's backend API headers and
RapidJSON (clip_triton_build.triton_sources: a mirror, GitHub, or the system's RapidJSON; what
is found nowhere raises its SourcesUnavailable, a NativeBuildError).

The core's googletest suite builds without Triton's headers, which proves the core needs none
of them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from clip_triton_contract.names import TOKENIZER_MODEL

from .. import native
from ..native import CLIP_BPE_SOURCES, NativeBuildError
from ..spec import TOKENIZER_BACKEND_LIBRARY
from ..triton_sources import core_include, googletest_source, rapidjson_include

CSRC = CLIP_BPE_SOURCES
CORE = CSRC / "clip_bpe.cc"  # with its header, clip_bpe.h
TESTS = CSRC / "clip_bpe_test.cc"


def library_path(repository: Path) -> Path:
    """Where Triton finds the backend in a built repository: the tokenizer model's folder."""
    return Path(repository) / TOKENIZER_MODEL / TOKENIZER_BACKEND_LIBRARY


def build(destination: Path) -> Path:
    """Compile the backend to `destination` (a file path) and return it."""
    with tempfile.TemporaryDirectory() as tmp:
        options = {"TRITON_CORE_INCLUDE": str(core_include(Path(tmp))), "RAPIDJSON_INCLUDE": str(rapidjson_include())}
        return native.build("triton_clip_bpe", options, Path(tmp) / "build", destination)


def build_tests(destination: Path) -> Path:
    """Compile the core's googletest suite to `destination` (an executable): the core, its tests
    and googletest's sources, with RapidJSON and no Triton header."""
    source = googletest_source()
    if source is None or not (source / "googletest" / "src" / "gtest-all.cc").is_file():
        raise NativeBuildError(
            "googletest sources not found: apt-get install googletest (or set $CLIP_GOOGLETEST_SOURCE)"
        )
    options = {"GOOGLETEST_SOURCE": str(source), "RAPIDJSON_INCLUDE": str(rapidjson_include())}
    with tempfile.TemporaryDirectory() as tmp:
        return native.build("clip_bpe_test", options, Path(tmp), destination)
