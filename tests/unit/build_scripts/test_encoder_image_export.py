"""The vision tower's fp16 GPU file (image_tower.VisionTower, export_fp16) against HF's
CLIPVisionModelWithProjection, in-process on small models of CLIP's vision architecture, in fp32 on
the CPU: the fused tower, and what its CUDA graphs capture, must not change any result. (The GPU run
checks the fp16 file on the card against the CPU fp32 path.)"""

import numpy as np
import pytest
import torch

from clip_triton_build.encoder.image_tower import (
    IMAGE_GRAPH_ROWS,
    LoadedVision,
    VisionTower,
    complete,
    export_fp16,
)
from tests.checkpoints import randomize_norms_and_biases

IMAGE_SIZE, EMBED_DIM = 32, 24


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"])
def vision(request):
    """CLIP's vision tower at a small size (2 layers, width 64, heads of 32, 4 patches of 16 pixels),
    seeded, every layer norm and bias of its own (random init leaves them the identity and zero,
    which would hide a residual add paired with the wrong norm); OpenAI's activation and LAION's."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=16,
        projection_dim=EMBED_DIM,
        hidden_act=request.param,
        attn_implementation="eager",
    )
    model = CLIPVisionModelWithProjection(config).eval()
    randomize_norms_and_biases(model, torch.Generator().manual_seed(1))
    return LoadedVision(model, complete({"size": IMAGE_SIZE, "crop_size": IMAGE_SIZE}), IMAGE_SIZE)


def hf_features(vision, pixels: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return vision.model(pixel_values=pixels).image_embeds.numpy()


def pixels(rows: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, 3, IMAGE_SIZE, IMAGE_SIZE))).float()


@pytest.fixture(scope="module")
def fp16_module(vision, encoder_ops, tmp_path_factory):
    """model_fp16.pt's structure, exported on the CPU in fp32 (`export_fp16(half=False)`)."""
    path = tmp_path_factory.mktemp("vision") / "model_fp16.pt"
    export_fp16(vision, path, device="cpu", half=False)
    return torch.jit.load(str(path), map_location="cpu")


def test_the_vision_tower_computes_hf_s_image_features(vision, encoder_ops):
    batch = pixels(3, 0)
    with torch.no_grad():
        ours = VisionTower(vision.model).eval()(batch).numpy()
    assert ours.dtype == np.float32 and ours.shape == (3, EMBED_DIM)
    assert np.abs(ours - hf_features(vision, batch)).max() <= 1e-5


@pytest.mark.parametrize("rows", [1, 5, IMAGE_GRAPH_ROWS[-1] + 3])
def test_the_fp16_file_gives_each_image_hf_s_features_at_any_batch_size(vision, fp16_module, rows):
    batch = pixels(rows, rows)
    with torch.no_grad():
        ours = fp16_module(batch).numpy()
    assert ours.shape == (rows, EMBED_DIM)
    assert np.abs(ours - hf_features(vision, batch)).max() <= 1e-5


def test_the_fp16_file_fuses_every_residual_add_with_the_norm_after_it(vision, fp16_module):
    """Two adds a layer; the last one's has no norm after it (the class token's norm is its own)."""
    layers = vision.model.config.num_hidden_layers
    assert str(fp16_module.inner.inlined_graph).count("clip_kernels::add_layer_norm") == 2 * layers - 1


def test_a_graph_runs_its_batch_staged_flat_with_zero_images_filling_its_bucket(vision, fp16_module, encoder_ops):
    """What a CUDA graph of the fp16 file captures (`_tower` over the staged buffer), run eagerly:
    3 images in the bucket of 4, the fourth row zero; each real image still gets HF's result in
    its place, and the capture bracket and the switch to the urgent stream survive scripting whole."""
    batch = pixels(3, 7)
    static = torch.zeros(4, 3 * IMAGE_SIZE * IMAGE_SIZE)
    static[:3] = batch.flatten(1)
    with torch.no_grad():
        ours = fp16_module._tower(static, batch)[:3].numpy()
    assert np.abs(ours - hf_features(vision, batch)).max() <= 1e-5
    for op in encoder_ops:
        assert f"ops.clip_cuda_graphs.{op}(" in fp16_module.code, op
    assert "torch.cpu(" in fp16_module.code  # embeddings back in host memory, one copy a batch
