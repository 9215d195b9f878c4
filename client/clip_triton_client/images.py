"""What the client sends for an image: the bytes of one encoded image file, whatever form the
caller holds the image in. The server decodes and preprocesses it as the checkpoint's own image
processor does, so a file goes as it is, never re-encoded; only pixels the caller holds in memory
(a PIL image, an HWC uint8 array) are written as PNG, which keeps every pixel exactly.

An image item is one of:
- bytes: an encoded file (JPEG, PNG, WebP, GIF, BMP, TIFF: what Pillow opens);
- a path (str or os.PathLike) to such a file, or a `data:image/...;base64,` URI, or an http(s)
  URL, fetched here by the client (FETCH_TIMEOUT_S, at most MAX_FETCH_BYTES);
- a PIL image;
- an array of pixels: [H, W, 3] RGB, [H, W, 4] RGBA, [H, W] or [H, W, 1] gray, uint8;
- a document: docarray's ImageDoc (`bytes_`, `tensor`, `url`) or a Jina Document (`blob`,
  `tensor`, `uri`), the first of those that is set; a document with none is skipped.

Each item is turned into bytes when its request is about to be sent, so a list of a million paths
holds a million paths, not a million files, and one unreadable item fails alone.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.request
from typing import Any

import numpy as np

FETCH_TIMEOUT_S = 30.0  # an http(s) URL's whole fetch
MAX_FETCH_BYTES = 64 * 1024 * 1024  # larger than any server's per-image limit: its error is the clearer
# A request carries images up to this many bytes together (a single larger image goes alone):
# under the HTTP body limits of servers and proxies, and bounded memory per request in flight.
REQUEST_BYTES = 16 * 1024 * 1024
# The fields a document keeps its image in, the encoded file first: docarray's ImageDoc, then
# Jina's Document (docarray < 0.30)
DOCUMENT_FIELDS = (("bytes_", "tensor", "url"), ("blob", "tensor", "uri"))
PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})  # Pillow writes these to PNG as they are


class ImageItemError(ValueError):
    """This item cannot be sent as an image; the message says why."""


def document_image(doc: Any) -> Any | None:
    """The image a document holds (the first field of DOCUMENT_FIELDS that is set), or None."""
    for fields in DOCUMENT_FIELDS:
        for name in fields:
            value = getattr(doc, name, None)
            if value is not None and not (isinstance(value, (str, bytes)) and not value):
                return value
    return None


def is_document(item: Any) -> bool:
    return any(hasattr(item, name) for fields in DOCUMENT_FIELDS for name in fields) and hasattr(item, "embedding")


def image_bytes(item: Any) -> bytes:
    """The encoded file to send for `item` (see the module's list); ImageItemError says why not."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, os.PathLike):
        return read_file(os.fspath(item))
    if isinstance(item, str):
        if item.startswith("data:"):
            return data_uri_bytes(item)
        if item.startswith(("http://", "https://")):
            return fetch(item)
        return read_file(item)
    if type(item).__module__.startswith("PIL.") and hasattr(item, "save"):
        return png(item)
    if hasattr(item, "__array__") or isinstance(item, np.ndarray):
        return png(pixels_image(np.asarray(item)))
    raise ImageItemError(
        f"{type(item).__name__} is not an image: send encoded bytes, a path or URL, a PIL image or an HWC uint8 array"
    )


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise ImageItemError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a `data:[<type>][;base64],<data>` URI (RFC 2397); images come base64-encoded."""
    head, comma, data = uri.partition(",")
    if not comma or not head.endswith(";base64"):
        raise ImageItemError("a data URI must be data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageItemError(f"the data URI's base64 is not valid ({exc})") from None


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            body = response.read(MAX_FETCH_BYTES + 1)
    except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise ImageItemError(f"cannot fetch {url}: {exc}") from None
    if len(body) > MAX_FETCH_BYTES:
        raise ImageItemError(f"{url} is over {MAX_FETCH_BYTES} bytes")
    return body


def pixels_image(array: np.ndarray):
    """A PIL image of an [H, W(, C)] uint8 array, C = 1 (gray), 3 (RGB) or 4 (RGBA)."""
    from PIL import Image

    if array.dtype != np.uint8:
        raise ImageItemError(
            f"an image array must be uint8 pixels [H, W, 3] (RGB), not {array.dtype}; a preprocessed "
            "pixel_values tensor is not accepted: send the image itself, the server preprocesses it"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    mode = modes.get(array.ndim if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0)
    if mode is None or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageItemError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], not shape {list(array.shape)}")
    return Image.fromarray(np.ascontiguousarray(array), mode)


def png(image) -> bytes:
    """The image as PNG: lossless, so the server sees exactly these pixels (fast compression: the
    file lives only as long as its request)."""
    if image.mode not in PNG_MODES:  # CMYK, YCbCr, float...: to RGB, as HF's convert_rgb does
        image = image.convert("RGB")
    out = io.BytesIO()
    try:
        image.save(out, "PNG", compress_level=1)
    except (OSError, ValueError) as exc:
        raise ImageItemError(f"cannot write this {image.mode} image as PNG: {exc}") from None
    return out.getvalue()
