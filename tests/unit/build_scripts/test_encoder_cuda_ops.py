"""How the encoder's op library (the CUDA graphs and the fused add and layer norm) is compiled:
the commands, checked here; the library itself needs nvcc and a GPU, where the GPU run builds it."""

from pathlib import Path


def test_the_op_library_links_libtorch_alone_so_tritonserver_can_preload_it():
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
