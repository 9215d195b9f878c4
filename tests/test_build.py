"""The build reads the hand-written repository and writes the servable one elsewhere: a build
never dirties the checkout, and never deletes a folder it did not write."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clip_triton_build.repository import (
    BUILT_MARKER,
    BUILT_REPOSITORY,
    SOURCE_REPOSITORY,
    NotABuiltRepository,
    start_repository,
)
from clip_triton_build.spec import ENCODER_MODEL, ONNX_FILE, TOKENIZER_BACKEND_LIBRARY, TOKENIZER_FILE, TOKENIZER_MODEL
from clip_triton_build.triton_sources import SOURCES_ENV, mirror_path
from helpers import REPO_ROOT


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_fresh_clone_builds_and_git_status_stays_empty(tmp_path):
    """A clone of this checkout, with the working tree's uncommitted files laid over it and
    committed (so the clone's HEAD is what a fresh clone of main would be once they are), built with
    its own build code to the default output."""
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(REPO_ROOT), str(clone), cwd=tmp_path)
    for name in git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO_ROOT).split("\0"):
        source, target = REPO_ROOT / name, clone / name
        if name and source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif name and target.is_file():  # deleted here, not yet committed
            target.unlink()
    git("add", "--all", cwd=clone)
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@localhost",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        "the working tree",
        cwd=clone,
    )
    env = {**os.environ, "PYTHONPATH": str(clone / "build_scripts")}  # the clone's clip_triton_build, not ours
    mirror = mirror_path()  # the clone has no ../shared beside it: the sources this checkout builds from
    if mirror is not None:
        env[SOURCES_ENV] = str(mirror)
    build = subprocess.run(
        [sys.executable, "-m", "clip_triton_build", "--format", "onnx"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    built = clone / BUILT_REPOSITORY.relative_to(REPO_ROOT)  # the clone's default output
    assert (built / ENCODER_MODEL / "1" / ONNX_FILE).is_file()
    assert (built / TOKENIZER_MODEL / "1" / TOKENIZER_FILE).is_file()
    assert (built / TOKENIZER_MODEL / TOKENIZER_BACKEND_LIBRARY).is_file()  # compiled from the clone's csrc
    assert git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""


def test_the_build_refuses_to_empty_a_folder_it_did_not_write(tmp_path):
    output = tmp_path / "models"
    output.mkdir()
    (output / "someone_elses_model").mkdir()
    with pytest.raises(NotABuiltRepository):
        start_repository(SOURCE_REPOSITORY, output)
    assert (output / "someone_elses_model").is_dir()


def test_a_rebuild_replaces_everything_the_last_build_wrote(tmp_path):
    output = tmp_path / "models"
    start_repository(SOURCE_REPOSITORY, output)
    stale = output / ENCODER_MODEL / "1" / "model_fp16.pt"  # e.g. from a GPU build, not made this time
    stale.write_bytes(b"stale")
    start_repository(SOURCE_REPOSITORY, output)
    assert (output / BUILT_MARKER).is_file() and not stale.exists()
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == sorted(
        p.name for p in (SOURCE_REPOSITORY).iterdir() if (p / "config.pbtxt").is_file()
    )


def test_the_build_never_writes_into_its_source(tmp_path):
    with pytest.raises(NotABuiltRepository):
        start_repository(SOURCE_REPOSITORY, SOURCE_REPOSITORY / "built")


def test_the_cuda_graph_ops_link_libtorch_alone_so_tritonserver_can_preload_them():
    """libclip_cuda_ops.so is preloaded into tritonserver, which has no Python: linking
    libtorch_python (what torch.utils.cpp_extension adds) would leave it unloadable there. It
    finds libtorch through an rpath where the build's torch is the server's (the local runtime).
    Its kernels are plain CUDA, compiled by nvcc without torch's headers, for what it names."""
    import torch

    from clip_triton_build.encoder import cuda_ops

    kernels = Path("/tmp/kernels.o")
    command = cuda_ops.compile_command(Path("/tmp/libclip_cuda_ops.so"), Path("/usr/local/cuda"), kernels)
    libraries = [arg for arg in command if arg.startswith("-l")]
    assert libraries == ["-lc10", "-lc10_cuda", "-ltorch_cpu", "-ltorch_cuda", "-ltorch"]
    assert f"-Wl,-rpath,{Path(torch.__file__).parent / 'lib'}" in command
    assert "-I/usr/local/cuda/include" in command
    assert str(kernels) in command
    for source in cuda_ops.SOURCES:
        assert str(source) in command and source.is_file()
    nvcc = cuda_ops.kernel_command(kernels, Path("/usr/local/cuda"))
    assert nvcc[0] == "/usr/local/cuda/bin/nvcc" and str(cuda_ops.KERNELS) in nvcc and cuda_ops.KERNELS.is_file()
    assert not [arg for arg in nvcc if arg.startswith("-I")]


def test_the_kernels_are_compiled_for_torch_s_architectures_or_the_ones_named(monkeypatch):
    import torch

    from clip_triton_build.encoder import cuda_ops

    monkeypatch.delenv("CLIP_CUDA_ARCHS", raising=False)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90a", "sm_90", "compute_90"])
    assert cuda_ops.gpu_architectures() == ["80", "90a", "90"]
    monkeypatch.setenv("CLIP_CUDA_ARCHS", "90, 100")
    nvcc = cuda_ops.kernel_command(Path("/tmp/kernels.o"), Path("/usr/local/cuda"))
    assert [arg for arg in nvcc if arg.startswith("-gencode")] == [
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_100,code=sm_100",
    ]
