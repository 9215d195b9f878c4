"""Where Triton r24.10's sources come from: upstream GitHub at pinned commits, or a mirror.

The C++ onnxruntime and pytorch backends (clip_triton.cxx_backends) build from all five trees;
the tokenizer's own backend (clip_triton_build.tokenizer.backend) needs two headers of `core` and
RapidJSON. A mirror is a folder with the same five folders (and `rapidjson/include`), named by
`$CLIP_TRITON_SOURCES` (for a host without GitHub: `python -m clip_triton.cxx_backends
--export-sources DIR` writes one); without it, GitHub serves.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from .native import NativeBuildError

TRITON_REF = "r24.10"
UPSTREAM = "https://github.com/triton-inference-server"
# The r24.10 branch heads these sources were verified at.
UPSTREAM_COMMITS = {
    "backend": "ac03a5d97403dec841ad46d0439e93db12c9268f",
    "core": "bfec7c61dc0939433f64f14e89b1973073eac8ba",
    "common": "578491fc3944f77d16a6a38e3d7691c485c47ba0",
    "onnxruntime_backend": "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
    "pytorch_backend": "e97a90061f7399b25368e2cb1f6d5c40f8cbae4e",
}
SOURCES_ENV = "CLIP_TRITON_SOURCES"
MIRROR_RAPIDJSON = "rapidjson"  # mirror folder holding include/rapidjson (for hosts without apt)
SYSTEM_RAPIDJSON = Path("/usr/include/rapidjson")  # Debian/Ubuntu: apt-get install rapidjson-dev
# The backend API's headers, as the core repository lays them out
CORE_HEADERS = ("include/triton/core/tritonbackend.h", "include/triton/core/tritonserver.h")


GOOGLETEST_ENV = "CLIP_GOOGLETEST_SOURCE"
DEBIAN_GOOGLETEST = Path("/usr/src/googletest")  # Debian/Ubuntu: apt-get install googletest


class SourcesUnavailable(NativeBuildError):
    """The sources a native build needs are neither in the mirror nor reachable upstream."""


def googletest_source() -> Path | None:
    """googletest's sources (the folder holding googletest/): Triton's common always builds a
    googletest-based test folder, and the tokenizer core's unit tests use it. Debian's googletest
    package, or $CLIP_GOOGLETEST_SOURCE; None when neither is there."""
    value = os.environ.get(GOOGLETEST_ENV)
    if value:
        return Path(value)
    return DEBIAN_GOOGLETEST if DEBIAN_GOOGLETEST.is_dir() else None


def mirror_path() -> Path | None:
    """The mirror to build from, or None for upstream. Not checked here: callers say what they lack."""
    value = os.environ.get(SOURCES_ENV)
    return Path(value).resolve() if value else None


def rapidjson_include() -> Path:
    """The folder holding rapidjson/: the mirror's, else the system's."""
    source = mirror_path()
    if source and (source / MIRROR_RAPIDJSON / "include" / "rapidjson").is_dir():
        return source / MIRROR_RAPIDJSON / "include"
    if SYSTEM_RAPIDJSON.is_dir():
        return SYSTEM_RAPIDJSON.parent
    raise SourcesUnavailable(
        "RapidJSON headers not found: apt-get install rapidjson-dev "
        f"(or set ${SOURCES_ENV} to a mirror with {MIRROR_RAPIDJSON}/include)"
    )


def fetch_core_headers(dest: Path) -> Path:
    """The core's backend API headers from GitHub at the pinned commit, laid out as a mirror's
    (`dest/core/include/...`: `$CLIP_TRITON_SOURCES=dest` then serves them); returns the include folder."""
    owner = UPSTREAM.rsplit("/", 1)[1]
    for header in CORE_HEADERS:
        url = f"https://raw.githubusercontent.com/{owner}/core/{UPSTREAM_COMMITS['core']}/{header}"
        target = dest / "core" / header
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                target.write_bytes(resp.read())
        except OSError as exc:
            raise SourcesUnavailable(f"cannot download {url} ({exc}); set ${SOURCES_ENV} to a mirror") from exc
    return dest / "core" / "include"


def core_include(work: Path) -> Path:
    """The include folder of Triton's core: the mirror's, or the headers fetched into `work`."""
    source = mirror_path()
    if source is None:
        return fetch_core_headers(work)
    include = source / "core" / "include"
    if not (include / "triton" / "core" / "tritonbackend.h").is_file():
        raise SourcesUnavailable(f"{include} lacks triton/core/tritonbackend.h (r24.10 sources expected)")
    return include
