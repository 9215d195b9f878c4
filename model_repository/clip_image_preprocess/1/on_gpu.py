"""clip_image_preprocess on a GPU (KIND_GPU instances): preprocessing.py's steps, pixels on the card.

1. Pillow has read every file's header on the CPU (model.py): format, mode, size and limits, no
   pixel decoded.
2. JPEGs in YCbCr or grayscale are decoded by nvJPEG (torchvision's `decode_jpeg` on the device),
   many in one call. Every other file (PNG, WebP, GIF, CMYK JPEGs, ...) is decoded and converted to
   RGB by Pillow as on the CPU (alpha composited onto white), then copied up. A JPEG nvJPEG refuses
   goes to Pillow too; only a file Pillow cannot decode either fails its request.
3. On the card, images of one size together: the shortest-edge resize with the configured filter,
   antialiased (torch's antialiased bilinear and bicubic follow Pillow's filters), in float32 over
   the uint8 values and rounded back to uint8 as Pillow's is; the center crop; rescale and
   normalize in float32; the output dtype (the GPU variant's fp16) last.

Traps, handled here:
- nvJPEG's hardware decoder writes when it is called, not when its stream reaches it (vision #9606,
  TorchCodec #1634), so memory the caching allocator hands a decode may still be read by work
  queued before it. The host waits for this instance's stream before every decode.
- Antialiased CUDA resizes refuse very large downscales (PyTorch #103589: too much shared
  memory). Such an image is first reduced by area averaging to twice its target size.
- EXIF orientation is not applied, as HF applies none (decode_jpeg's default).
- nvJPEG's colour conversion and chroma upsampling differ slightly from libjpeg-turbo's: the GPU
  run's parity gate measures the embeddings against the CPU path (docs/performance.md).

Memory: images go through in chunks of at most `chunk_pixels` source pixels (an image larger than
that alone), so a request of large images holds a bounded share of the card.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from preprocessing import InvalidImage, Preprocessing, decode, describe, to_rgb
from torchvision.io import ImageReadMode, decode_jpeg

NVJPEG_MODES = ("RGB", "L")  # JPEG modes nvJPEG decodes to RGB as Pillow's convert("RGB") does
FILTERS = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}


def nvjpeg_decodes(header: Image.Image, data: bytes) -> bool:
    """A whole JPEG (ending in its EOI marker) whose mode nvJPEG decodes as Pillow does. A truncated
    file goes to Pillow, which refuses it where nvJPEG would decode what is there."""
    return header.format == "JPEG" and header.mode in NVJPEG_MODES and data.rstrip(b"\0")[-2:] == b"\xff\xd9"


class OnGpu:
    def __init__(self, preprocess: Preprocessing, dtype: np.dtype, chunk_pixels: int, device: int):
        if preprocess.do_resize and preprocess.resample not in FILTERS:
            raise ValueError(
                f"resample {int(preprocess.resample)} ({preprocess.resample.name}): the GPU path resizes with "
                "bilinear (2) or bicubic (3); serve this checkpoint's images from config.pbtxt"
            )
        if not (preprocess.do_convert_rgb and preprocess.do_center_crop):
            raise ValueError("the GPU path serves CLIP's preprocessing: do_convert_rgb and do_center_crop")
        self.preprocess = preprocess
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self.stream = torch.cuda.current_stream(self.device)
        self.dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        self.chunk_pixels = chunk_pixels
        self.mean = torch.tensor(preprocess.mean, device=self.device).view(3, 1, 1)
        self.std = torch.tensor(preprocess.std, device=self.device).view(3, 1, 1)

    def __call__(self, files: list[bytes], headers: list[Image.Image], input_name: str) -> torch.Tensor:
        """Each file's pixel_values, [N, 3, crop height, crop width] on the card, complete (this
        instance's stream waited for: the server reads them from another process)."""
        names = [f"{input_name}[{index}]" for index in range(len(files))]
        if self.preprocess.do_resize:
            for image, name in zip(headers, names):  # refused before any pixel is decoded
                try:
                    self.preprocess.resized_size(image.width, image.height)
                except InvalidImage as exc:
                    raise InvalidImage(f"{describe(image, name)} cannot be preprocessed: {exc}") from None
        out = torch.empty((len(files), 3, *self.preprocess.crop), dtype=self.dtype, device=self.device)
        for chunk in self._chunks(headers):
            decoded = self._decode(chunk, files, headers, names)
            shapes: dict[tuple[int, ...], list[int]] = {}
            for index in chunk:
                shapes.setdefault(tuple(decoded[index].shape), []).append(index)
            for indices in shapes.values():
                pixels = self._pixels(torch.stack([decoded[index] for index in indices]))
                out.index_copy_(0, torch.tensor(indices, device=self.device), pixels)
        self.stream.synchronize()
        return out

    def _chunks(self, headers: list[Image.Image]) -> list[list[int]]:
        chunks: list[list[int]] = [[]]
        pixels = 0
        for index, image in enumerate(headers):
            if chunks[-1] and pixels + image.width * image.height > self.chunk_pixels:
                chunks.append([])
                pixels = 0
            chunks[-1].append(index)
            pixels += image.width * image.height
        return chunks

    def _decode(self, chunk: list[int], files: list[bytes], headers: list[Image.Image], names: list[str]) -> dict:
        """index -> [3, H, W] uint8 RGB on the card, for each index of `chunk`."""
        jpegs = [i for i in chunk if nvjpeg_decodes(headers[i], files[i])]
        others = sorted(set(chunk) - set(jpegs))
        decoded = {}
        if jpegs:
            data = [torch.frombuffer(bytearray(files[i]), dtype=torch.uint8) for i in jpegs]
            try:
                self.stream.synchronize()  # nvJPEG writes before the stream gets there: see above
                decoded.update(zip(jpegs, decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)))
            except RuntimeError:  # one of them nvJPEG refuses: each alone, and Pillow for those
                for index, one in zip(jpegs, data):
                    try:
                        self.stream.synchronize()
                        decoded[index] = decode_jpeg(one, mode=ImageReadMode.RGB, device=self.device)
                    except RuntimeError:
                        others.append(index)
        for index in others:
            rgb = np.array(to_rgb(decode(headers[index], names[index])))  # writable: torch shares it
            decoded[index] = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)
        return decoded

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """[n, 3, H, W] uint8 images of one size -> their pixel_values in the output dtype."""
        preprocess = self.preprocess
        pixels = images.float()
        if preprocess.do_resize:
            width, height = preprocess.resized_size(images.size(3), images.size(2))
            pixels = self._resize(pixels, height, width).round_().clamp_(0, 255)
        pixels = center_crop(pixels, *preprocess.crop)
        if preprocess.do_rescale:
            pixels = pixels * preprocess.rescale_factor
        if preprocess.do_normalize:
            pixels = (pixels - self.mean) / self.std
        return pixels.to(self.dtype)

    def _resize(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        mode = FILTERS[self.preprocess.resample]
        try:
            return F.interpolate(pixels, size=(height, width), mode=mode, antialias=True, align_corners=False)
        except RuntimeError:  # a downscale too large for the antialiased kernel (PyTorch #103589)
            reduced = F.interpolate(pixels, size=(2 * height, 2 * width), mode="area")
            return F.interpolate(reduced, size=(height, width), mode=mode, antialias=True, align_corners=False)


def center_crop(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[n, C, H, W] -> [n, C, height, width]: preprocessing.center_crop on the card (zero padding
    where the image is smaller)."""
    orig_height, orig_width = pixels.shape[-2:]
    top, left = (orig_height - height) // 2, (orig_width - width) // 2
    if top >= 0 and left >= 0:
        return pixels[..., top : top + height, left : left + width]
    new_height, new_width = max(height, orig_height), max(width, orig_width)
    top_pad, left_pad = -(-(new_height - orig_height) // 2), -(-(new_width - orig_width) // 2)
    padded = F.pad(
        pixels,
        (left_pad, new_width - orig_width - left_pad, top_pad, new_height - orig_height - top_pad),
    )
    top, left = top + top_pad, left + left_pad
    return padded[..., max(0, top) : min(new_height, top + height), max(0, left) : min(new_width, left + width)]
