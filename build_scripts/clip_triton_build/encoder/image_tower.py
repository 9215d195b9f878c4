"""The CLIP vision tower as the repository's image models: clip_image_encoder's model.onnx
(pixel_values -> image_embeds, what HF `CLIPModel.get_image_features` returns), its fp16 GPU
file model_fp16.pt (`VisionTower` with CUDA-graph replay of small batches, `export_fp16`) and
the checkpoint's preprocessor_config.json, which clip_image_preprocess applies.

A checkpoint without a vision tower (a `CLIPTextModelWithProjection`) gives None: its repository
serves texts only, and the build says so. The random-init fallback has ViT-B/32's
(weights.random_init_vision)."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, cast

import torch
from torch import nn

from clip_triton_contract.names import IMAGE_EMBEDS_TENSOR, PIXELS_TENSOR

from ..servable import UnservableCheckpoint
from ..spec import PREPROCESSOR_FILE
from .export import _bucket, export_batched_onnx
from .text_tower import EncoderLayer

if TYPE_CHECKING:
    from transformers import CLIPVisionModelWithProjection

log = logging.getLogger("clip_triton_build")

# CLIPImageProcessor's defaults: what a preprocessor_config.json that leaves a field out means
CLIP_PREPROCESSING: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}


def complete(preprocessor: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's preprocessor_config.json with every field clip_image_preprocess reads: CLIP's
    defaults where it is silent, sizes in their dict forms (older files give ints)."""
    merged = {**CLIP_PREPROCESSING, **preprocessor}
    if isinstance(merged["size"], int):
        merged["size"] = {"shortest_edge": merged["size"]}
    if isinstance(merged["crop_size"], int):
        merged["crop_size"] = {"height": merged["crop_size"], "width": merged["crop_size"]}
    return merged


@dataclass
class LoadedVision:
    model: CLIPVisionModelWithProjection  # eval mode, fp32
    preprocessor: dict[str, Any]  # what clip_image_preprocess reads: every field (`complete`)
    image_size: int  # pixel_values' side

    @property
    def dim(self) -> int:
        return int(self.model.visual_projection.out_features)


def load_vision(checkpoint: str, **kwargs: Any) -> LoadedVision | None:
    """The vision tower of a CLIPModel checkpoint with its preprocessing, or None when the
    checkpoint has none. `kwargs` go to from_pretrained (local_files_only, as the text tower was
    found)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, PretrainedConfig
    from transformers.utils import cached_file

    config, _ = PretrainedConfig.get_config_dict(checkpoint, **kwargs)
    if config.get("model_type") != "clip" or not config.get("vision_config"):
        return None
    # the projection's size is the CLIPModel's projection_dim (the vision config's own field may
    # hold another default)
    vision_config = CLIPVisionConfig(**{**config["vision_config"], "projection_dim": config["projection_dim"]})
    model = CLIPVisionModelWithProjection.from_pretrained(
        checkpoint, config=vision_config, attn_implementation="eager", **kwargs
    ).eval()
    image_size = int(model.config.image_size)
    path = cached_file(checkpoint, PREPROCESSOR_FILE, _raise_exceptions_for_missing_entries=False, **kwargs)
    if path is None:  # CLIP's preprocessing at the vision tower's own image size
        preprocessor = complete({"size": image_size, "crop_size": image_size})
        log.info("%s ships no %s: CLIP's preprocessing at %d pixels", checkpoint, PREPROCESSOR_FILE, image_size)
    else:
        preprocessor = complete(json.loads(Path(path).read_text()))
    check_preprocessor(checkpoint, preprocessor, image_size)
    return LoadedVision(model, preprocessor, image_size)


def check_preprocessor(checkpoint: str, preprocessor: dict[str, Any], image_size: int) -> None:
    """UnservableCheckpoint unless the preprocessing is CLIP's: a shortest-edge resize and a center
    crop to the vision tower's image size. `preprocessor` is `complete`."""
    size, crop = preprocessor["size"], preprocessor["crop_size"]
    if preprocessor["do_resize"] and set(size) != {"shortest_edge"}:
        raise UnservableCheckpoint(checkpoint, "size", f"{size}: the image side serves CLIP's shortest_edge resize")
    if not preprocessor["do_center_crop"] or (crop.get("height"), crop.get("width")) != (
        image_size,
        image_size,
    ):
        raise UnservableCheckpoint(
            checkpoint, "crop_size", f"{crop}: the vision tower takes {image_size}x{image_size} pixels"
        )


class ImageFeatures(torch.nn.Module):
    """What model.onnx computes: get_image_features, the pooled vision tower through its projection."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).image_embeds


def export_onnx(vision: LoadedVision, path: Path, opset: int = 17) -> Path:
    example = torch.zeros(2, 3, vision.image_size, vision.image_size)
    with warnings.catch_warnings():
        # HF's check of the input size becomes a constant: the size is fixed by the config anyway
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return export_batched_onnx(
            ImageFeatures(vision.model), example, path, PIXELS_TENSOR, IMAGE_EMBEDS_TENSOR, opset
        )


# The fp16 GPU file replays batches of up to IMAGE_GRAPH_ROWS[-1] images as CUDA graphs, one per
# row bucket and Triton instance; a batch runs in the smallest bucket that holds it. Past 32 images
# even ViT-B/32's forward is GPU time, not launches, and each bucket holds its activations.
IMAGE_GRAPH_ROWS = (1, 2, 4, 8, 16, 32)


class VisionTower(nn.Module):
    """pixel_values [B, 3, S, S] -> image_embeds [B, projection_dim] in fp32: HF
    CLIPVisionModelWithProjection's forward (same weights, same result in fp32) with the text
    tower's GPU habits (text_tower): one QKV matmul a layer, PyTorch's fused attention, quick_gelu
    as one SiLU, each residual add with the layer norm that reads it as one op (`_add_norm`), and
    nothing in the traced graph naming a device. Only the class token goes through the final norm
    and the projection (HF pools it before them)."""

    # `model`: HF CLIPVisionModelWithProjection, read by its field names
    def __init__(self, model: Any):
        super().__init__()
        config, vision = model.config, model.vision_model
        embeddings = vision.embeddings
        self.patch_embedding = embeddings.patch_embedding
        self.class_embedding = embeddings.class_embedding
        self.position_embedding = embeddings.position_embedding
        self.pre_layernorm = vision.pre_layrnorm  # HF's spelling
        self.layers = nn.ModuleList(
            EncoderLayer(layer, config.num_attention_heads, config.hidden_act) for layer in vision.encoder.layers
        )
        self.post_layernorm = vision.post_layernorm
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        first = self.class_embedding.expand(patches.size(0), 1, -1)
        x = self.pre_layernorm(torch.cat([first, patches], 1) + self.position_embedding.weight)
        layers = [cast(EncoderLayer, layer) for layer in self.layers]
        normed = layers[0].layer_norm1(x)
        for i, layer in enumerate(layers):
            next_norm: Optional[nn.LayerNorm] = layers[i + 1].layer_norm1 if i + 1 < len(layers) else None
            x, following = layer.dense(x, normed, next_norm)
            if following is not None:
                normed = following
        return self.visual_projection(self.post_layernorm(x[:, 0])).float()


class _ScriptedImageGraphs(nn.Module):
    """The traced tower, and on a GPU a batch of up to IMAGE_GRAPH_ROWS[-1] images replays a CUDA
    graph of it instead of launching its ~200 kernels one by one from the interpreter (export's
    `_ScriptedGraphs` for texts says how the clip_cuda_graphs ops keep graphs per instance): the
    batch is staged, flat, into its bucket's fixed buffer, zero images filling the rows it lacks,
    and runs on the high-priority stream as the texts' small batches do. Embeddings come back in
    host memory, in one copy (export's `_ScriptedEncoder` says why)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.graph_rows: List[int] = list(IMAGE_GRAPH_ROWS)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        rows = pixel_values.size(0)
        if not pixel_values.is_cuda or rows > self.graph_rows[-1]:
            return self.inner(pixel_values).cpu()
        torch.ops.clip_cuda_graphs.urgent(pixel_values)  # a query's batch: ahead of large ones on the GPU
        bucket = _bucket(self.graph_rows, rows)
        flat = pixel_values.flatten(1)
        static = torch.ops.clip_cuda_graphs.stage(flat, bucket, flat.size(1), 0)
        if not torch.ops.clip_cuda_graphs.captured(static):
            torch.ops.clip_cuda_graphs.enter(static)  # the capture stream becomes current
            warmed = self._tower(static, pixel_values)  # eager, once: first-run set-up stays out of the graph
            torch.ops.clip_cuda_graphs.capture_begin(static, warmed)
            captured = self._tower(static, pixel_values)
            torch.ops.clip_cuda_graphs.capture_end(static, captured)
        return torch.ops.clip_cuda_graphs.replay(static)[:rows].cpu()

    def _tower(self, static: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The tower over a staged buffer, back in the images' shape."""
        return self.inner(static.view(static.size(0), like.size(1), like.size(2), like.size(3)))


def export_fp16(vision: LoadedVision, path: Path, device: str = "cuda", half: bool = True) -> Path:
    """clip_image_encoder's model_fp16.pt: `VisionTower` in fp16 on `device`, traced, with
    CUDA-graph replay of small batches (`_ScriptedImageGraphs`). It takes fp16 (or fp32) pixels and
    returns fp32 embeddings in host memory. Tracing and loading it need the encoder's ops
    registered (`cuda_ops.load`). `half=False` gives the same structure in fp32 on any device (the
    CPU tests' reference)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tower = VisionTower(copy.deepcopy(vision.model)).to(device, dtype).eval()
    example = torch.zeros(2, 3, vision.image_size, vision.image_size, device=device, dtype=dtype)
    with torch.no_grad():
        traced = torch.jit.trace(tower, (example,), check_trace=False)
        if "clip_kernels::add_layer_norm" not in str(traced.inlined_graph):
            raise RuntimeError("the trace lost the fused add and norm: the op ran as its parts")
        torch.jit.script(_ScriptedImageGraphs(traced)).save(str(path))
    return path
