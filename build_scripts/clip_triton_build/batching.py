"""The tokenizer's batching strategy (csrc/malformed_alone.cc): a malformed request is batched alone.

Triton loads a model's custom batching strategy from `batchstrategy.so` in its folder; the build
compiles it there. It is plain C++ against two headers of Triton's core (tritonbackend.h and the
tritonserver.h it includes), from the r24.10 mirror or GitHub (clip_triton_build.triton_sources),
and links nothing: the TRITONBACKEND_* calls it makes resolve in the server that loads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from .spec import BATCH_STRATEGY_LIBRARY, TOKENIZER_MODEL
from .triton_sources import SOURCES_ENV, mirror_path, upstream_file_url

SOURCE = Path(__file__).parent / "csrc" / "malformed_alone.cc"
HEADERS = ("include/triton/core/tritonbackend.h", "include/triton/core/tritonserver.h")


class BatchingBuildError(RuntimeError):
    pass


def library_path(repository: Path, prefix: str = "") -> Path:
    """Where Triton looks for the tokenizer's strategy: its model folder."""
    return Path(repository) / f"{prefix}{TOKENIZER_MODEL}" / BATCH_STRATEGY_LIBRARY


def core_include(work: Path) -> Path:
    """The include folder of Triton's core: the mirror's, or the two headers fetched into `work`."""
    source = mirror_path()
    if source is not None:
        include = source / "core" / "include"
        if not (include / "triton" / "core" / "tritonbackend.h").is_file():
            raise BatchingBuildError(f"{include} lacks triton/core/tritonbackend.h (${SOURCES_ENV}: r24.10 sources)")
        return include
    for header in HEADERS:
        url = upstream_file_url("core", header)
        target = work / header
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                target.write_bytes(resp.read())
        except OSError as exc:
            raise BatchingBuildError(f"cannot download {url} ({exc}); set ${SOURCES_ENV} to a mirror") from exc
    return work / "include"


def build(destination: Path) -> Path:
    """Compile the strategy to `destination` (a file path) and return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / destination.name
        command = [
            os.environ.get("CXX", "c++"),
            "-shared",
            "-fPIC",
            "-O2",
            "-std=c++17",
            f"-I{core_include(Path(tmp))}",
            str(SOURCE),
            "-o",
            str(output),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            raise BatchingBuildError(f"no C++ compiler ({command[0]}): install g++ ({exc})") from None
        if done.returncode != 0:
            raise BatchingBuildError(f"compiling {SOURCE.name} failed:\n{done.stderr[-4000:]}")
        shutil.copyfile(output, destination)
    return destination
