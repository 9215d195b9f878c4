"""CLIP checkpoints of each family's text-tower shape, with seeded random weights, saved the way
the hub's are (`save_pretrained`), for builds that need no network: the tests' (few layers) and
the GPU benchmarks' (every layer).

Layer norms and biases are random too (HF initialises them to 1 and 0), so a weight the export
put in the wrong place changes the embeddings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from clip_triton_build.spec import VOCAB_SIZE
from clip_triton_build.tokenizer.assets import clip_bpe


@dataclass(frozen=True)
class Family:
    """A published checkpoint's text tower (HF CLIPTextConfig fields) and how it is saved."""

    hub_id: str
    width: int
    heads: int
    layers: int
    mlp: int
    projection_dim: int
    hidden_act: str
    eos_token_id: int
    full_clip: bool  # CLIPModel (text and vision) or CLIPTextModelWithProjection
    tokenizer_files: tuple[str, ...]  # what it ships: vocab.json + merges.txt, tokenizer.json


FAMILIES = {
    "b32": Family("openai/clip-vit-base-patch32", 512, 8, 12, 2048, 512, "quick_gelu", 2, True, ("vocab", "merges")),
    "l14": Family("openai/clip-vit-large-patch14", 768, 12, 12, 3072, 768, "quick_gelu", 2, False, ("vocab", "merges")),
    "h14": Family("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", 1024, 16, 24, 4096, 1024, "gelu", 49407, True, ("json",)),
    "bigg": Family("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", 1280, 20, 32, 5120, 1280, "gelu", 49407, True, ()),
}


# Published vision towers (HF CLIPVisionConfig fields): what the image side's tests and benchmarks
# build, with few layers in the tests
VISION_SHAPES = {
    "b32": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=32, image_size=224),
    "b16": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, patch_size=16, image_size=224),
    "l14": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, patch_size=14, image_size=224),
    "l14-336": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, patch_size=14, image_size=336),
    "h14": dict(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=16,
        patch_size=14,
        image_size=224,
        hidden_act="gelu",
    ),
}
# The image tests' checkpoints: name -> (text family, vision shape), two text layers and one vision
# layer each (the shapes, not the depth, are what the export must get right)
IMAGE_SHAPES = {"b32": ("b32", "b32"), "b16": ("b32", "b16"), "l14-336": ("l14", "l14-336"), "h14": ("h14", "h14")}
TINY_VISION = dict(hidden_size=64, intermediate_size=64, num_attention_heads=1, image_size=32, patch_size=16)


def text_config(family: Family, layers: int | None = None, **overrides) -> dict:
    config = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=family.width,
        intermediate_size=family.mlp,
        num_hidden_layers=layers or family.layers,
        num_attention_heads=family.heads,
        max_position_embeddings=77,
        projection_dim=family.projection_dim,
        hidden_act=family.hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=family.eos_token_id,
        pad_token_id=1,
    )
    return {**config, **overrides}


def randomize_norms_and_biases(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(0.02 * torch.randn(module.bias.shape, generator=generator))


def save_checkpoint(
    family: Family,
    folder: Path,
    layers: int | None = None,
    seed: int = 0,
    full_clip: bool | None = None,
    vision: str | None = None,
    vision_layers: int = 1,
    **overrides,
) -> Path:
    """A checkpoint of `family`'s shape (with `layers` layers, default all) in `folder`: config,
    weights and the tokenizer files the family ships, CLIP's BPE. A full CLIP's vision tower is
    VISION_SHAPES[vision] with `vision_layers` layers and its preprocessor_config.json (CLIP's
    preprocessing at its image size), or without `vision` a tiny one and no preprocessor file."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    text = text_config(family, layers, **overrides)
    if vision is not None or (family.full_clip if full_clip is None else full_clip):
        shape = VISION_SHAPES[vision] if vision else TINY_VISION
        config = CLIPConfig(
            text_config=text,
            vision_config={**shape, "num_hidden_layers": vision_layers},
            projection_dim=text["projection_dim"],
        )
        model: torch.nn.Module = CLIPModel(config)
        if vision is not None:
            side = shape["image_size"]
            CLIPImageProcessorPil(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            ).save_pretrained(folder)
    else:
        model = CLIPTextModelWithProjection(CLIPTextConfig(**text))
    randomize_norms_and_biases(model, torch.Generator().manual_seed(seed + 1))
    model.eval().save_pretrained(folder)
    write_tokenizer_files(folder, family.tokenizer_files)
    return folder


def write_tokenizer_files(folder: Path, kinds: tuple[str, ...]) -> None:
    """CLIP's BPE in HF's formats: vocab.json and merges.txt (CLIPTokenizer), tokenizer.json's
    BPE model (CLIPTokenizerFast)."""
    vocab, merges = clip_bpe()
    ids = {token: i for i, token in enumerate(vocab)}
    lines = [f"{a} {b}" for a, b in merges]
    if "vocab" in kinds:
        (folder / "vocab.json").write_text(json.dumps(ids), encoding="utf-8")
    if "merges" in kinds:
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    if "json" in kinds:
        model = {"type": "BPE", "vocab": ids, "merges": lines, "end_of_word_suffix": "</w>"}
        (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": model}), encoding="utf-8")
