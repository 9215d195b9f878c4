"""Image files of every kind a user sends, made here with Pillow (no network, deterministic):
the photos and odd formats CLIP must embed as HF would, and the files it must refuse."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients with noise and a few edges: enough structure that a resize or crop off by a
    pixel changes the embedding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        128 + 100 * np.sin(x / (7 + 3 * c) + y / (11 + 2 * c) + seed) + rng.normal(0, 12, (height, width))
        for c in range(3)
    ]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = (rng.integers(0, 255, 3)).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def embeddable() -> dict[str, bytes]:
    """Files that embed exactly as HF's PIL path does."""
    base = photo(320, 240, seed=1)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    frames = [photo(96, 64, seed=s) for s in (2, 3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    deep = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    return {
        "jpeg": encoded(base, "JPEG", quality=90),
        "progressive jpeg": encoded(photo(300, 400, seed=4), "JPEG", quality=85, progressive=True),
        "png": encoded(photo(200, 260, seed=5), "PNG"),
        "rgba png": encoded(rgba, "PNG"),
        "palette png with transparency": encoded(palette, "PNG", transparency=0),
        "grayscale png": encoded(base.convert("L"), "PNG"),
        "16-bit png": encoded(deep, "PNG"),
        "cmyk jpeg": encoded(base.convert("CMYK"), "JPEG"),
        "animated gif": gif.getvalue(),
        "webp": encoded(photo(250, 250, seed=6), "WEBP", quality=80),
        "1x1 png": encoded(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"),
        "wide 1000x20 png": encoded(photo(1000, 20, seed=7), "PNG"),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def refused(max_bytes: int) -> dict[str, tuple[bytes, str]]:
    """Files the service refuses, each with what its error must say."""
    jpeg = encoded(photo(320, 240, seed=8), "JPEG")
    return {
        "not an image": (b"%PDF-1.7 this is a document, not a picture", "not an image Pillow can open"),
        "zero bytes": (b"", "is empty"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "cannot be decoded"),
        "decompression bomb": (png_header_only(100_000, 100_000), "declares 100000x100000 pixels"),
        "over the byte limit": (b"\xff\xd8" + bytes(max_bytes), "bytes; the limit is"),
        "extreme aspect ratio": (encoded(Image.new("RGB", (200_000, 1)), "PNG"), "would resize to"),
    }
