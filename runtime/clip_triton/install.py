"""The local runtime's tritonserver installed the way NGC's image installs it: the CPU image's server.

    python -m clip_triton.install /opt/tritonserver

builds (or reuses) Triton's C++ onnxruntime backend with clip_triton.cxx_backends and writes

    backends/python        the wheel's Python backend, with the stub for this interpreter
    backends/onnxruntime   the onnxruntime backend and libonnxruntime, copied (no link leaves ROOT
                           but the one to the wheel's libtritonserver.so)
    bin/tritonserver       the wheel's server, started with its libraries, this environment's
                           Python for the stub and ROOT/backends as its backend directory

so that the one start command of both server images (docker/server/start.sh) runs
`tritonserver --model-repository=/models ...` here as it does in NGC's image.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from . import cxx_backends
from .local import ServerFailed, prepare_backend_dir
from .paths import pytriton_paths

WRAPPER = """#!/bin/sh
# The tritonserver of nvidia-pytriton, installed by python -m clip_triton.install
export LD_LIBRARY_PATH={libraries}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}
export PATH={python_bin}:$PATH
exec {binary} --backend-directory={backends} "$@"
"""


def materialize(folder: Path, keep: Path) -> None:
    """Replace each link in `folder` by a copy of its target, except links into `keep`; a link
    to a file of the same folder (a library's SONAME) becomes a link to that name."""
    for item in sorted(folder.rglob("*")):
        if item.is_symlink():
            target = item.resolve()
            if target.is_relative_to(keep.resolve()):
                continue
            item.unlink()
            if target.name != item.name and (item.parent / target.name).exists():
                item.symlink_to(target.name)
            else:
                shutil.copy2(target, item)


def install(root: Path, built: Path) -> Path:
    """Lay out `root` from the backend build `built`; returns the bin/tritonserver it wrote."""
    server_dir, libs = pytriton_paths()
    backends = root / "backends"
    library_path = prepare_backend_dir(backends, built)
    materialize(backends, keep=libs)
    wrapper = root / "bin" / "tritonserver"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(
        WRAPPER.format(
            libraries=shlex.quote(":".join([str(libs), *library_path])),
            python_bin=shlex.quote(str(Path(sys.prefix) / "bin")),
            binary=shlex.quote(str(server_dir / "bin" / "tritonserver")),
            backends=shlex.quote(str(backends)),
        )
    )
    wrapper.chmod(0o755)
    return wrapper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton.install", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="where to install (e.g. /opt/tritonserver)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: every core)")
    args = parser.parse_args(argv)
    try:
        built = cxx_backends.build(dest_root=args.root / "build", jobs=args.jobs, backends=(cxx_backends.ONNXRUNTIME,))
        wrapper = install(args.root, built)
    except (cxx_backends.NativeBuildError, ServerFailed) as exc:
        print(f"[install] {exc}", file=sys.stderr)
        return 1
    shutil.rmtree(args.root / "build")
    print(wrapper)
    return 0


if __name__ == "__main__":
    sys.exit(main())
