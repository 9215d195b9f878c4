"""What the encoders' export tests share."""

import pytest
import torch


@pytest.fixture(scope="session")
def encoder_ops():
    """The ops the fp16 GPU file calls, declared from the library's own sources: the CUDA-graph
    ops CONSERVATIVE, as the library declares them (their CUDA implementations exist only on a
    GPU; the GPU run checks those), and clip_kernels::add_layer_norm with the two ATen ops it
    fuses as its CPU implementation (the GPU run checks the kernel against those)."""
    import re

    from clip_triton_build.encoder import cuda_ops

    graphs = torch.library.Library("clip_cuda_graphs", "DEF")
    schemas = re.findall(r'op\("([^"]+)"\)', cuda_ops.SOURCE.read_text())
    for schema in schemas:
        graphs.define(schema, alias_analysis="CONSERVATIVE")
    kernels = torch.library.Library("clip_kernels", "DEF")
    (schema,) = re.findall(r'm\.def\("([^"]+)"\)', (cuda_ops.CSRC / "add_layer_norm.cpp").read_text())
    kernels.define(schema)

    def add_layer_norm(x, delta, weight, bias, eps):
        total = x + delta
        return total, torch.nn.functional.layer_norm(total, (total.size(-1),), weight, bias, eps)

    kernels.impl("add_layer_norm", add_layer_norm, "CPU")
    yield [schema.split("(")[0] for schema in schemas]
    del graphs, kernels
