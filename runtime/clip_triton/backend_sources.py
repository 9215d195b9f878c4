"""What Triton's C++ `onnxruntime` and `pytorch` backends build from, and where it comes from: the
r24.10 sources (upstream GitHub at the commits clip_triton_build.triton_sources pins, or a mirror
with the same folders), ONNX Runtime's C API header and library (the `onnxruntime==1.19.2`
wheel), and RapidJSON. `export_sources` lays them out as a mirror for an offline host;
clip_triton.cxx_backends builds from one.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from clip_triton_build import triton_sources
from clip_triton_build.native import NativeBuildError
from clip_triton_build.triton_sources import MIRROR_RAPIDJSON, SOURCES_ENV, UPSTREAM, UPSTREAM_COMMITS, mirror_path

ORT_VERSION = "1.19.2"  # NGC 24.10's ONNX Runtime; pinned in pyproject.toml
ORT_HEADER_URL = (
    f"https://raw.githubusercontent.com/microsoft/onnxruntime/v{ORT_VERSION}/"
    "include/onnxruntime/core/session/onnxruntime_c_api.h"
)
ORT_HEADER = "onnxruntime_c_api.h"
MIRROR_ORT_INCLUDE = "onnxruntime-1.19-include"  # mirror folder holding the header


def ort_library() -> Path:
    import onnxruntime

    lib = Path(onnxruntime.__file__).parent / "capi" / f"libonnxruntime.so.{ORT_VERSION}"
    if not lib.is_file():
        raise NativeBuildError(
            f"{lib} is missing: the C++ onnxruntime backend needs onnxruntime=={ORT_VERSION} "
            f"(NGC 24.10's), installed is {onnxruntime.__version__}"
        )
    return lib


def mirror() -> Path | None:
    path = mirror_path()
    if path is None:
        return None
    missing = [name for name in UPSTREAM_COMMITS if not (path / name).is_dir()]
    if missing:
        raise NativeBuildError(f"mirror {path} lacks {', '.join(missing)} (r24.10 sources expected)")
    return path


def rapidjson_include() -> Path:
    try:
        return triton_sources.rapidjson_include()
    except triton_sources.SourcesUnavailable as exc:
        raise NativeBuildError(str(exc)) from None


def run(cmd: list[str], cwd: Path, log=None) -> None:
    result = subprocess.run(cmd, cwd=cwd, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        tail = result.stdout[-4000:] if result.stdout else f"(see {getattr(log, 'name', 'the log')})"
        raise NativeBuildError(f"{' '.join(cmd[:3])} ... failed ({result.returncode}):\n{tail}")


def fetch_upstream(name: str, dest: Path) -> None:
    """One r24.10 repository at its pinned commit (a shallow fetch of that commit)."""
    dest.mkdir(parents=True)
    run(["git", "init", "-q"], dest)
    try:
        run(["git", "fetch", "-q", "--depth", "1", f"{UPSTREAM}/{name}.git", UPSTREAM_COMMITS[name]], dest)
    except NativeBuildError as exc:
        raise NativeBuildError(
            f"cannot fetch {UPSTREAM}/{name} ({exc}); without GitHub, set ${SOURCES_ENV} "
            "to a mirror of the r24.10 sources (--export-sources writes one)"
        ) from None
    run(["git", "checkout", "-q", "FETCH_HEAD"], dest)


def export_sources(dest: Path) -> Path:
    """Writable copies of what the build reads, laid out as a mirror ($CLIP_TRITON_SOURCES takes
    it): the five r24.10 trees, the ORT C API header and the RapidJSON headers. From the mirror
    when one is set, else from upstream (and Debian's RapidJSON)."""
    source = mirror()
    for name in UPSTREAM_COMMITS:
        if source:
            shutil.copytree(source / name, dest / name)
        else:
            fetch_upstream(name, dest / name)
    include = dest / MIRROR_ORT_INCLUDE
    include.mkdir(parents=True)
    if source and (source / MIRROR_ORT_INCLUDE / ORT_HEADER).is_file():
        shutil.copy2(source / MIRROR_ORT_INCLUDE / ORT_HEADER, include / ORT_HEADER)
    else:
        try:
            with urllib.request.urlopen(ORT_HEADER_URL, timeout=60) as resp:
                (include / ORT_HEADER).write_bytes(resp.read())
        except OSError as exc:
            raise NativeBuildError(f"cannot download {ORT_HEADER_URL} ({exc}); set ${SOURCES_ENV} to a mirror") from exc
    shutil.copytree(rapidjson_include() / "rapidjson", dest / MIRROR_RAPIDJSON / "include" / "rapidjson")
    for item in [dest, *dest.rglob("*")]:  # a mirror may come without write bits
        item.chmod(item.stat().st_mode | 0o200)
    return dest


def ort_lib_dir(src: Path) -> Path:
    """The wheel names its library libonnxruntime.so.1.19.2; CMake's find_library wants libonnxruntime.so."""
    folder = src / "onnxruntime-lib"
    if not folder.exists():
        folder.mkdir()
        lib = ort_library()
        (folder / lib.name).symlink_to(lib)
        (folder / "libonnxruntime.so").symlink_to(lib.name)
    return folder
