"""Where Triton r24.10's sources come from: upstream GitHub at pinned commits, or a mirror.

The C++ backends (clip_triton.cxx_backends) build from all five trees; the tokenizer's batching
strategy (clip_triton_build.batching) needs two headers of `core`. A mirror is a folder with the
same five folders: `$CLIP_TRITON_SOURCES`, else `../shared/triton-r24.10` beside the checkout when
present (the workspace's offline copy, which CI has), else none and GitHub serves.
"""

from __future__ import annotations

import os
from pathlib import Path

TRITON_REF = "r24.10"
UPSTREAM = "https://github.com/triton-inference-server"
# The r24.10 branch heads these sources were verified at (../shared/triton-r24.10/SOURCES.md).
UPSTREAM_COMMITS = {
    "backend": "ac03a5d97403dec841ad46d0439e93db12c9268f",
    "core": "bfec7c61dc0939433f64f14e89b1973073eac8ba",
    "common": "578491fc3944f77d16a6a38e3d7691c485c47ba0",
    "onnxruntime_backend": "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
    "pytorch_backend": "e97a90061f7399b25368e2cb1f6d5c40f8cbae4e",
}
SOURCES_ENV = "CLIP_TRITON_SOURCES"
BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "triton-r24.10"


def mirror_path() -> Path | None:
    """The mirror to build from, or None for upstream. Not checked here: callers say what they lack."""
    value = os.environ.get(SOURCES_ENV)
    if value:
        return Path(value).resolve()
    return BESIDE_CHECKOUT if BESIDE_CHECKOUT.is_dir() else None


def upstream_file_url(repository: str, path: str) -> str:
    """One file of an r24.10 repository at its pinned commit."""
    owner = UPSTREAM.rsplit("/", 1)[1]
    return f"https://raw.githubusercontent.com/{owner}/{repository}/{UPSTREAM_COMMITS[repository]}/{path}"
