"""The CLIP vision tower as the repository's image models: clip_image_encoder's model.onnx
(pixel_values -> image_embeds, what HF `CLIPModel.get_image_features` returns) and the
checkpoint's preprocessor_config.json, which clip_image_preprocess applies.

A checkpoint without a vision tower (a `CLIPTextModelWithProjection`, or the random-init
fallback) gives None: its repository serves texts only, and the build says so."""

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

if TYPE_CHECKING:
    from transformers import CLIPVisionModelWithProjection

log = logging.getLogger("clip_triton_build")

# CLIPImageProcessor's defaults, for a checkpoint that ships no preprocessor_config.json: OpenAI
# CLIP's preprocessing at the vision tower's own image size
DEFAULT_PREPROCESSOR: dict[str, Any] = {
    "do_resize": True,
    "resample": 3,
    "do_center_crop": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}


@dataclass
class LoadedVision:
    model: CLIPVisionModelWithProjection  # eval mode, fp32
    preprocessor: dict[str, Any]  # what clip_image_preprocess reads
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
    if path is None:
        preprocessor = {
            **DEFAULT_PREPROCESSOR,
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
        }
        log.info("%s ships no %s: CLIP's preprocessing at %d pixels", checkpoint, PREPROCESSOR_FILE, image_size)
    else:
        preprocessor = json.loads(Path(path).read_text())
    check_preprocessor(checkpoint, preprocessor, image_size)
    return LoadedVision(model, preprocessor, image_size)


def check_preprocessor(checkpoint: str, preprocessor: dict[str, Any], image_size: int) -> None:
    """UnservableCheckpoint unless the preprocessing is CLIP's: a shortest-edge resize and a center
    crop to the vision tower's image size."""
    size = preprocessor.get("size", {"shortest_edge": 224})
    size = {"shortest_edge": size} if isinstance(size, int) else size
    crop = preprocessor.get("crop_size", {"height": 224, "width": 224})
    crop = {"height": crop, "width": crop} if isinstance(crop, int) else crop
    if preprocessor.get("do_resize", True) and set(size) != {"shortest_edge"}:
        raise UnservableCheckpoint(checkpoint, "size", f"{size}: the image side serves CLIP's shortest_edge resize")
    if not preprocessor.get("do_center_crop", True) or (crop.get("height"), crop.get("width")) != (
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
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 3, vision.image_size, vision.image_size)
    with torch.no_grad(), warnings.catch_warnings():
        # HF's check of the input size becomes a constant: the size is fixed by the config anyway
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            ImageFeatures(vision.model).eval(),
            (example,),
            str(path),
            input_names=[PIXELS_TENSOR],
            output_names=[IMAGE_EMBEDS_TENSOR],
            dynamic_axes={PIXELS_TENSOR: {0: "batch"}, IMAGE_EMBEDS_TENSOR: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path
