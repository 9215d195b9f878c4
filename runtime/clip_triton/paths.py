"""Where the local runtime finds things: the built repository, its state folder, the wheel's tritonserver."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from clip_triton_build.repository import BUILT_REPOSITORY, REPO_ROOT

__all__ = ["BUILT_REPOSITORY", "LOGS_KEPT", "REPO_ROOT", "STATE_DIR", "pytriton_paths"]

# the running servers' backend directories, the processes' logs, the C++ backend builds
STATE_DIR = REPO_ROOT / ".local"
LOGS_KEPT = 20  # the newest logs STATE_DIR keeps: a process that starts deletes older ones


def pytriton_paths() -> tuple[Path, Path]:
    """(tritonserver folder inside the nvidia-pytriton wheel, its bundled shared libraries)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nvidia-pytriton is not installed: pip install 'nvidia-pytriton==0.7.0'")
    package = Path(list(spec.submodule_search_locations)[0])
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"
