"""clip_image_preprocess's steps on the CPU: the checkpoint's own preprocessing as HF's PIL-based
CLIP image processor (`CLIPImageProcessorPil`) applies its preprocessor_config.json, step by step:

1. open the file with Pillow (its first frame; no EXIF rotation, as HF does none);
2. to RGB: an image with alpha (or a transparent palette colour) is composited onto white, any
   other mode converted with `Image.convert("RGB")`;
3. resize the shortest side to `size["shortest_edge"]` (the other side `int(size * long / short)`)
   with the configured resample filter (3: bicubic), in Pillow, on uint8 pixels;
4. center crop to `crop_size` (top and left rounded down; zero padding where the image is smaller);
5. rescale (`rescale_factor`, 1/255, computed in float64 then cast to float32) and normalize with
   `image_mean` / `image_std` in float32;
6. channels first.

Limits are checked before any pixel is decoded: the file's bytes, then the pixels its header
declares, then the pixels the resize would make. on_gpu.py runs the same steps on the card.
"""

import io
import warnings

import numpy as np
from PIL import Image

# Pillow's own guard against decompression bombs is replaced by this model's limit, checked on the
# header before decoding (max_image_pixels); Pillow would only warn below twice its default.
Image.MAX_IMAGE_PIXELS = None


class InvalidImage(ValueError):
    pass


class Preprocessing:
    """One checkpoint's preprocessor_config.json, as the CLIP image processor reads it. The build
    writes every field (CLIP's defaults where the checkpoint's file is silent, sizes as dicts) and
    refuses what is not CLIP's preprocessing (clip_triton_build.encoder.image_tower)."""

    def __init__(self, config: dict, max_pixels: int):
        self.max_pixels = max_pixels  # of the resized image too: an extreme aspect ratio grows there
        self.do_resize = bool(config["do_resize"])
        self.shortest_edge = int(config["size"]["shortest_edge"])
        self.resample = Image.Resampling(int(config["resample"]))
        self.do_center_crop = bool(config["do_center_crop"])
        self.crop = (int(config["crop_size"]["height"]), int(config["crop_size"]["width"]))
        self.do_rescale = bool(config["do_rescale"])
        self.rescale_factor = float(config["rescale_factor"])
        self.do_normalize = bool(config["do_normalize"])
        self.mean = np.array(config["image_mean"], dtype=np.float32)
        self.std = np.array(config["image_std"], dtype=np.float32)
        self.do_convert_rgb = bool(config["do_convert_rgb"])

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shortest-edge resize, or InvalidImage past max_pixels."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        new_height, new_width = (new_long, new_short) if width <= height else (new_short, new_long)
        if new_height * new_width > self.max_pixels:
            raise InvalidImage(
                f"its {width}x{height} pixels would resize to {new_width}x{new_height}, past the limit of "
                f"{self.max_pixels} pixels (an aspect ratio of {long / short:.0f}:1)"
            )
        return new_width, new_height

    def __call__(self, image: Image.Image) -> np.ndarray:
        """A decoded image -> [3, crop height, crop width] float32."""
        if self.do_convert_rgb:
            image = to_rgb(image)
        pixels = np.array(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.do_resize:
            new_width, new_height = self.resized_size(pixels.shape[1], pixels.shape[0])
            resized = Image.fromarray(pixels.squeeze(-1) if pixels.shape[2] == 1 else pixels)
            pixels = np.array(resized.resize((new_width, new_height), resample=self.resample))
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
        pixels = np.moveaxis(pixels, -1, 0)  # channels first, as HF works
        if self.do_center_crop:
            pixels = center_crop(pixels, *self.crop)
        if self.do_rescale:
            pixels = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        elif not np.issubdtype(pixels.dtype, np.floating):
            pixels = pixels.astype(np.float32)
        if self.do_normalize:
            pixels = ((pixels.T - self.mean) / self.std).T
        return pixels.astype(np.float32, copy=False)


def to_rgb(image: Image.Image) -> Image.Image:
    """HF's convert_to_rgb: transparency composited onto white, every other mode converted."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, H, W] -> [C, height, width]: HF's center_crop (zero padding where the image is smaller)."""
    orig_height, orig_width = pixels.shape[-2:]
    top, left = (orig_height - height) // 2, (orig_width - width) // 2
    if top >= 0 and left >= 0:
        return pixels[:, top : top + height, left : left + width]
    new_height, new_width = max(height, orig_height), max(width, orig_width)
    padded = np.zeros_like(pixels, shape=(pixels.shape[0], new_height, new_width))
    top_pad, left_pad = -(-(new_height - orig_height) // 2), -(-(new_width - orig_width) // 2)
    padded[:, top_pad : top_pad + orig_height, left_pad : left_pad + orig_width] = pixels
    top, left = top + top_pad, left + left_pad
    return padded[:, max(0, top) : min(new_height, top + height), max(0, left) : min(new_width, left + width)]


def read_header(data: bytes, name: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """The file opened by Pillow, its header read and its limits checked, no pixel decoded yet;
    or InvalidImage saying why not."""
    if len(data) == 0:
        raise InvalidImage(f"{name} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InvalidImage(f"{name} has {len(data)} bytes; the limit is {max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:
        raise InvalidImage(f"{name} is not an image Pillow can open: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImage(f"{name} declares {width}x{height} pixels; the limit is {max_pixels} pixels")
    if width < 1 or height < 1:
        raise InvalidImage(f"{name} declares no pixels ({width}x{height})")
    return image


def decode(image: Image.Image, name: str) -> Image.Image:
    """`read_header`'s image with its first frame decoded, or InvalidImage saying why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a palette image with transparency bytes
            image.load()
    except Exception as exc:  # truncated or corrupt data
        raise InvalidImage(f"{name} cannot be decoded: {exc}") from None
    return image


def describe(image: Image.Image, name: str) -> str:
    """How an error names an image: its place, format, mode and size."""
    return f"{name} ({image.format or 'image'}, mode {image.mode}, {image.width}x{image.height})"
