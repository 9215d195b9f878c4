"""The CLIP vision tower as the repository's image models: clip_image_encoder's model.onnx
(pixel_values -> image_embeds, what HF `CLIPModel.get_image_features` returns) and the
checkpoint's preprocessor_config.json, which clip_image_preprocess applies.

A checkpoint without a vision tower (a `CLIPTextModelWithProjection`) gives None: its repository
serves texts only, and the build says so. The random-init fallback has ViT-B/32's
(weights.random_init_vision)."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clip_triton_contract.names import IMAGE_EMBEDS_TENSOR, PIXELS_TENSOR

from ..servable import UnservableCheckpoint
from ..spec import PREPROCESSOR_FILE
from .export import export_batched_onnx

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
