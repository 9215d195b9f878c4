"""How the encoder's op library (the CUDA graphs and the fused add and layer norm) is built: the
CMake target `clip_cuda_ops` configured here by the real CMake, its link line read back; the
library itself needs nvcc and a GPU, where the GPU run builds it."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def link_line(tmp_path_factory) -> str:
    """The linker command CMake generates for clip_cuda_ops, configured as the build configures it
    (nothing is compiled: configuring needs no CUDA toolkit)."""
    from clip_triton_build import native
    from clip_triton_build.encoder import cuda_ops

    work = tmp_path_factory.mktemp("cuda-ops")
    native.configure(work, {**cuda_ops.cmake_options(Path("/usr/local/cuda")), "CMAKE_GENERATOR": "Unix Makefiles"})
    return (work / "CMakeFiles" / "clip_cuda_ops.dir" / "link.txt").read_text()


def test_the_op_library_links_libtorch_alone_so_tritonserver_can_preload_it(link_line):
    """libclip_cuda_ops.so is preloaded into tritonserver, which has no Python: linking
    libtorch_python (what torch.utils.cpp_extension adds) would leave it unloadable there, and a
    CUDA runtime of its own would not be the one libtorch_cuda loads. It finds libtorch through an
    rpath where the build's torch is the server's (the local runtime)."""
    import torch

    libraries = [arg for arg in link_line.split() if arg.startswith("-l")]
    assert not [word for word in ("torch_python", "libpython", "-lpython", "cudart") if word in link_line]
    assert libraries == ["-lc10", "-lc10_cuda", "-ltorch_cpu", "-ltorch_cuda", "-ltorch"]
    assert str(Path(torch.__file__).parent / "lib") in link_line and "-rpath" in link_line
    assert "add_layer_norm_kernels.o" in link_line  # nvcc's object, compiled without torch's headers


def test_the_kernels_are_compiled_for_torch_s_architectures_or_the_ones_named(monkeypatch):
    import torch

    from clip_triton_build.encoder import cuda_ops

    monkeypatch.delenv("CLIP_CUDA_ARCHS", raising=False)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90a", "sm_90", "compute_90"])
    assert cuda_ops.gpu_architectures() == ["80", "90a", "90"]
    monkeypatch.setenv("CLIP_CUDA_ARCHS", "90, 100")
    assert cuda_ops.cmake_options(Path("/usr/local/cuda"))["CLIP_CUDA_ARCHS"] == "90;100"


def test_the_native_project_names_each_source_it_builds():
    """One CMake project builds every library tritonserver loads: a source file no target lists
    would be silently left out of the build."""
    from clip_triton_build.native import NATIVE

    cmake = (NATIVE / "CMakeLists.txt").read_text()
    sources = [p for p in NATIVE.rglob("*") if p.suffix in (".cc", ".cpp", ".cu")]
    assert sources and all(str(p.relative_to(NATIVE)) in cmake for p in sources)
