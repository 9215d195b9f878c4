"""Build Triton's C++ `onnxruntime` and `pytorch` backends (r24.10) for the local tritonserver.

The tritonserver 2.51.0 inside the `nvidia-pytriton` wheel is the server of NGC 24.10 without its
framework backends. This module compiles the same backends NGC ships, from the r24.10 sources:

- `onnxruntime`: against `libonnxruntime.so.1.19.2` from the `onnxruntime==1.19.2` wheel (the ONNX
  Runtime of NGC 24.10) and its C API header;
- `pytorch` (libtorch): against the libtorch of the `torch` wheel installed here, with the C++ ABI
  that torch was built with.

What it builds from, and where that comes from (upstream GitHub at the pinned r24.10 commits, or
a mirror named by `$CLIP_TRITON_SOURCES`): this
package's backend_sources. This module is the CMake build and its cache, under
`.local/cxx-backends/<key>/`; the key hashes every input (sources, ORT and torch builds, compiler,
GPU on/off, both modules), so a changed input rebuilds and an unchanged one costs nothing.

    python -m clip_triton.cxx_backends            # build (or reuse) and print the output folder
    python -m clip_triton.cxx_backends --gpu      # libtorch backend with CUDA (KIND_GPU instances)
    python -m clip_triton.cxx_backends --export-sources DIR   # a mirror for a host without GitHub

Layout of an output folder, ready to be a tritonserver `--backend-directory` entry each:
    onnxruntime/libtriton_onnxruntime.so, libonnxruntime.so.1(.19.2), libtritonserver.so -> wheel's
    pytorch/libtriton_pytorch.so, libtritonserver.so -> wheel's
    manifest.json    what was built from what; `library_path`: folders the server needs on
                     LD_LIBRARY_PATH (libtorch's)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clip_triton_build.native import NativeBuildError
from clip_triton_build.triton_sources import MIRROR_RAPIDJSON, TRITON_REF, UPSTREAM_COMMITS, googletest_source

from . import backend_sources
from .backend_sources import (
    MIRROR_ORT_INCLUDE,
    ORT_VERSION,
    export_sources,
    mirror,
    ort_lib_dir,
    ort_library,
    run,
)
from .paths import STATE_DIR, pytriton_paths

# CUDA 13 dropped sm_53..72, which backend/CMakeLists.txt lists for its kernel library: on a GPU
# build that list becomes this (Hopper: H100/H200). Override with $CLIP_CUDA_ARCHITECTURES.
DEFAULT_CUDA_ARCHITECTURES = "90-real"
DEFAULT_STATE = STATE_DIR / "cxx-backends"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Backend:
    name: str  # the `backend:` value in config.pbtxt and the backend-directory folder
    source: str  # source folder (mirror / upstream repository name)
    target: str  # CMake target
    library: str  # what tritonserver loads


ONNXRUNTIME = Backend("onnxruntime", "onnxruntime_backend", "triton-onnxruntime-backend", "libtriton_onnxruntime.so")
PYTORCH = Backend("pytorch", "pytorch_backend", "triton-pytorch-backend", "libtriton_pytorch.so")
BACKENDS = (ONNXRUNTIME, PYTORCH)


# -- inputs ------------------------------------------------------------------------------------------
def torch_facts() -> dict:
    import torch

    root = Path(torch.__file__).parent
    return {
        "version": torch.__version__,
        "root": str(root),
        "lib": str(root / "lib"),
        "cxx11_abi": int(torch.compiled_with_cxx11_abi()),
        "cuda": torch.version.cuda,
    }


def tree_digest(paths: list[Path]) -> str:
    """Content hash of files and folders (names and bytes), for the cache key."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            digest.update(str(file.relative_to(root.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def compiler_version() -> str:
    cxx = os.environ.get("CXX", "c++")
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        raise NativeBuildError(f"no C++ compiler ({cxx}): install g++ (Debian: apt-get install g++)") from None


def require_tools(gpu: bool) -> None:
    for tool, hint in (("cmake", "apt-get install cmake (or pip install cmake)"), ("git", "apt-get install git")):
        if shutil.which(tool) is None and not (tool == "git" and mirror()):
            raise NativeBuildError(f"{tool} is required to build the C++ backends: {hint}")
    if gpu and shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        raise NativeBuildError("a GPU build needs the CUDA toolkit (nvcc)")


def cache_key(gpu: bool, backends: tuple[Backend, ...] = BACKENDS) -> tuple[str, dict]:
    source = mirror()
    torch = torch_facts() if PYTORCH in backends else None  # an onnxruntime-only build needs no torch
    facts = {
        "triton_ref": TRITON_REF,
        "backends": [b.name for b in backends],
        "sources": f"mirror:{tree_digest([source / n for n in UPSTREAM_COMMITS])}" if source else UPSTREAM_COMMITS,
        "onnxruntime": (
            f"{ORT_VERSION}:{hashlib.sha256(ort_library().read_bytes()).hexdigest()}"
            if ONNXRUNTIME in backends
            else None
        ),
        "torch": {k: torch[k] for k in ("version", "cxx11_abi", "cuda")} if torch else None,
        "compiler": compiler_version(),
        "gpu": gpu,
        "cuda_architectures": cuda_architectures() if gpu else None,
        "python": platform.python_version(),
        "builder": hashlib.sha256(
            Path(__file__).read_bytes() + Path(backend_sources.__file__).read_bytes()
        ).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return ("gpu-" if gpu else "cpu-") + key, facts


def cuda_architectures() -> str:
    return os.environ.get("CLIP_CUDA_ARCHITECTURES", DEFAULT_CUDA_ARCHITECTURES)


def patch_cuda_architectures(src: Path) -> None:
    cmake = src / "backend" / "CMakeLists.txt"
    text = cmake.read_text()
    old = 'CUDA_ARCHITECTURES "53;60-real;62-real;70-real;72-real;75-real;80-real;86-real;89-real;90-real"'
    if old not in text:
        raise NativeBuildError(f"{cmake}: the CUDA_ARCHITECTURES list to replace was not found")
    cmake.write_text(text.replace(old, f'CUDA_ARCHITECTURES "{cuda_architectures()}"'))


def write_rapidjson_config(src: Path, work: Path) -> Path:
    """Triton's common asks `find_package(RapidJSON CONFIG)` for RAPIDJSON_INCLUDE_DIRS; a
    two-line config file serves."""
    folder = work / "rapidjson-cmake"
    folder.mkdir(exist_ok=True)
    include = src / MIRROR_RAPIDJSON / "include"
    (folder / "RapidJSONConfig.cmake").write_text(
        f'set(RAPIDJSON_INCLUDE_DIRS "{include}")\nset(RapidJSON_INCLUDE_DIRS "{include}")\n'
    )
    return folder


# -- build ------------------------------------------------------------------------------------------------
def common_cmake_args(src: Path, work: Path) -> list[str]:
    googletest = googletest_source()
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DFETCHCONTENT_FULLY_DISCONNECTED=" + ("ON" if googletest else "OFF"),
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-COMMON={src / 'common'}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-CORE={src / 'core'}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND={src / 'backend'}",
        f"-DRapidJSON_DIR={write_rapidjson_config(src, work)}",
        f"-DPython3_INCLUDE_DIR={sysconfig.get_paths()['include']}",
    ]
    if googletest:
        args.append(f"-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST={googletest}")
    if shutil.which("ninja"):
        args.append("-GNinja")
    return args


def backend_cmake_args(backend: Backend, src: Path, gpu: bool) -> list[str]:
    # gcc >= 13 flags rapidjson's std::iterator as deprecated and Triton builds with -Werror.
    cxx_flags = "-Wno-error=deprecated-declarations"
    if backend is ONNXRUNTIME:
        return [
            # The onnxruntime wheel is ONNX Runtime's CPU build (no CUDA provider): its backend
            # serves KIND_CPU instances on every host, GPU or not.
            "-DTRITON_ENABLE_GPU=OFF",
            f"-DCMAKE_CXX_FLAGS={cxx_flags}",
            "-DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF",  # NGC's ORT has TensorRT; this wheel's has not
            "-DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF",
            f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={src / MIRROR_ORT_INCLUDE}",
            # a non-empty lib path turns off the backend's Docker-based ORT build
            f"-DTRITON_ONNXRUNTIME_LIB_PATHS={ort_lib_dir(src)}",
        ]
    torch = torch_facts()
    return [
        f"-DTRITON_ENABLE_GPU={'ON' if gpu else 'OFF'}",
        f"-DCMAKE_CXX_FLAGS={cxx_flags} -D_GLIBCXX_USE_CXX11_ABI={torch['cxx11_abi']}",
        "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF",
        "-DTRITON_PYTORCH_ENABLE_TORCHTRT=OFF",
        "-DTRITON_MIN_CXX_STANDARD=20",  # torch >= 2.9 headers need C++20
        f"-DTRITON_PYTORCH_INCLUDE_PATHS={torch['root']}/include;{torch['root']}/include/torch/csrc/api/include",
        f"-DTRITON_PYTORCH_LIB_PATHS={torch['lib']}",
    ]


def build(
    dest_root: Path = DEFAULT_STATE,
    gpu: bool = False,
    jobs: int | None = None,
    verbose: bool = True,
    backends: tuple[Backend, ...] = BACKENDS,
) -> Path:
    """Build the backends (or reuse the cached build with the same inputs); returns the folder."""
    key, facts = cache_key(gpu, backends)
    dest = dest_root / key
    if (dest / MANIFEST).is_file():
        point_current_link(gpu, dest)
        return dest
    require_tools(gpu)
    dest_root.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 2
    work = Path(tempfile.mkdtemp(prefix=f"build-{key}-", dir=dest_root))
    staged = work / "out"
    log_path = dest_root / f"build-{key}.log"
    say = (lambda msg: print(f"[cxx-backends] {msg}", file=sys.stderr, flush=True)) if verbose else (lambda msg: None)
    say(f"building Triton {TRITON_REF} C++ backends ({'GPU' if gpu else 'CPU'}) into {dest} (log: {log_path})")
    try:
        _build_into(staged, work, log_path, gpu, jobs, say, backends)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    manifest = {
        **facts,
        "key": key,
        "library_path": [torch_facts()["lib"]] if PYTORCH in backends else [],
        "backends": {b.name: f"{b.name}/{b.library}" for b in backends},
    }
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    staged.rename(dest)
    shutil.rmtree(work)
    point_current_link(gpu, dest)
    say(f"done: {dest}")
    return dest


def _build_into(
    staged: Path, work: Path, log_path: Path, gpu: bool, jobs: int, say, backends: tuple[Backend, ...]
) -> None:
    with open(log_path, "w") as log:
        src = export_sources(work / "src")
        if gpu:
            patch_cuda_architectures(src)
        for backend in backends:
            build_dir = work / f"build-{backend.name}"
            say(f"{backend.name}: configure + build ({jobs} jobs) ...")
            run(
                [
                    "cmake",
                    "-S",
                    str(src / backend.source),
                    "-B",
                    str(build_dir),
                    *common_cmake_args(src, work),
                    *backend_cmake_args(backend, src, gpu),
                ],
                work,
                log,
            )
            # only the backend target: the pytorch backend's install rules copy CUDA libraries a
            # CPU torch wheel does not have
            run(["cmake", "--build", str(build_dir), "--target", backend.target, "-j", str(jobs)], work, log)
            built = next(build_dir.rglob(backend.library), None)
            if built is None:
                raise NativeBuildError(f"{backend.library} not produced; see {log_path}")
            out = staged / backend.name
            out.mkdir(parents=True)
            shutil.copy2(built, out / backend.library)
            say(f"{backend.name}: {out / backend.library} ({built.stat().st_size // 1024} KB)")
        if ONNXRUNTIME in backends:
            library = ort_library()
            ort = staged / ONNXRUNTIME.name / library.name
            shutil.copy2(library, ort)
            (ort.parent / "libonnxruntime.so.1").symlink_to(ort.name)  # its SONAME, what the backend asks for


def install_into(backend_dir: Path, built: Path) -> list[str]:
    """Put the built backends into a tritonserver backend directory; returns LD_LIBRARY_PATH entries.

    The backends are linked against `libtritonserver.so` and look beside themselves for it
    (RPATH $ORIGIN); the wheel ships it under a hashed name, so each backend folder gets a
    `libtritonserver.so` link to that file."""
    _, libs = pytriton_paths()
    server_lib = next(libs.glob("libtritonserver*.so*"), None)
    if server_lib is None:
        raise NativeBuildError(f"no libtritonserver*.so in {libs}")
    manifest = json.loads((built / MANIFEST).read_text())
    for backend in (b for b in BACKENDS if b.name in manifest["backends"]):
        folder = backend_dir / backend.name
        folder.mkdir(parents=True, exist_ok=True)
        for item in (built / backend.name).iterdir():
            (folder / item.name).symlink_to(item)
        (folder / "libtritonserver.so").symlink_to(server_lib)
    return list(manifest["library_path"])


def current_link(gpu: bool, dest_root: Path = DEFAULT_STATE) -> Path:
    return dest_root / ("current-gpu" if gpu else "current-cpu")


def point_current_link(gpu: bool, dest: Path) -> None:
    """`current-gpu`/`current-cpu` beside `dest` names it: what the runtime serves with."""
    link = current_link(gpu, dest.parent)
    if link.is_symlink() and link.resolve() == dest.resolve():
        return
    link.unlink(missing_ok=True)
    link.symlink_to(dest.name)


def find_built(gpu: bool | None = None, dest_root: Path = DEFAULT_STATE) -> Path:
    """The last completed build (GPU when `gpu`, CPU when False; None: GPU if there is one)."""
    for choice in [gpu] if gpu is not None else [True, False]:
        link = current_link(choice, dest_root)
        if (link / MANIFEST).is_file():
            return link.resolve()
    raise NativeBuildError(
        "the C++ backends are not built here: run `python -m clip_triton.cxx_backends` "
        "(scripts/serve.sh and scripts/test.sh do)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton.cxx_backends",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gpu", action="store_true", help="build with CUDA (TRITON_ENABLE_GPU=ON)")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument(
        "--backends", default=",".join(b.name for b in BACKENDS), help="which to build (default: onnxruntime,pytorch)"
    )
    parser.add_argument("--dest", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--export-sources",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write the sources the build reads to DIR, as a mirror for an offline host",
    )
    args = parser.parse_args(argv)
    asked = [name for name in args.backends.split(",") if name]
    unknown = [name for name in asked if name not in {b.name for b in BACKENDS}]
    if unknown or not asked:  # refused before anything is built or written
        parser.error(
            f"--backends {args.backends!r}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
            f"choose from {', '.join(b.name for b in BACKENDS)}"
        )
    try:
        if args.export_sources:
            print(export_sources(args.export_sources))
            return 0
        chosen = tuple(b for b in BACKENDS if b.name in asked)
        print(build(args.dest, gpu=args.gpu, jobs=args.jobs, backends=chosen))
    except NativeBuildError as exc:
        print(f"[cxx-backends] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
