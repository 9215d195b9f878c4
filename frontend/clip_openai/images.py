"""The images of an embeddings request: which `input` items are images, and their bytes.

An item is an image when it is a `data:image/<type>;base64,<data>` string (NV-CLIP's convention:
texts and images mix in one list), or, in a request that says `"modality": "image"` (infinity's
field), any item: then a data URI or an http(s) URL.

URLs are fetched only from the hosts an operator lists (settings.image_url_hosts; empty, the
default: every URL is refused). A fetch is a request the server makes on a client's behalf, so it
could reach what only the server can reach (cloud metadata, internal services): hence the list,
exact host names, no redirects (a redirect could leave the list), a deadline and a size cap.
Triton decodes and checks the bytes; a file it refuses fails its request, naming the item.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import bad_request

DATA_PREFIX = "data:image/"
URL_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class ImageInput:
    index: int  # its position in `input`
    data: bytes | None  # the file's bytes (from a data URI), or None until `url` is fetched
    url: str | None = None


def data_uri_bytes(uri: str, index: int) -> bytes:
    head, comma, data = uri.partition(",")
    if not comma or not head.startswith(DATA_PREFIX) or not head.endswith(";base64"):
        raise bad_request(
            f"input[{index}] is not an image data URI: send data:image/<type>;base64,<data>", param="input"
        )
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"input[{index}]: the data URI's base64 is not valid ({exc})", param="input") from None


def image_input(item: str, index: int, modality: str | None) -> ImageInput | None:
    """The image `item` is, or None for a text."""
    if item.startswith(DATA_PREFIX) and modality != "text":
        return ImageInput(index, data_uri_bytes(item, index))
    if modality != "image":
        return None
    if item.startswith("data:"):
        return ImageInput(index, data_uri_bytes(item, index))
    if urllib.parse.urlsplit(item).scheme in URL_SCHEMES:
        return ImageInput(index, None, item)
    raise bad_request(
        f"input[{index}] is not an image: with modality 'image' each item is a data:image/<type>;base64 URI "
        "or an http(s) URL",
        param="input",
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch(url: str, index: int, hosts: tuple[str, ...], timeout: float, max_bytes: int) -> bytes:
    """The body at `url`, if its host is listed; a 400 naming the item otherwise."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not hosts:
        raise bad_request(
            f"input[{index}]: image URLs are not fetched by this server; send the image as a data URI",
            param="input",
            code="image_url_not_allowed",
        )
    if host not in hosts:
        raise bad_request(
            f"input[{index}]: this server fetches images only from {', '.join(hosts)}, not from {host or url!r}",
            param="input",
            code="image_url_not_allowed",
        )
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            body = response.read(max_bytes + 1)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts; a malformed URL
        raise bad_request(
            f"input[{index}]: cannot fetch {url}: {exc}", param="input", code="image_url_failed"
        ) from None
    if len(body) > max_bytes:
        raise bad_request(f"input[{index}]: {url} is over {max_bytes} bytes", param="input", code="image_url_failed")
    return body


async def resolve(images: list[ImageInput], hosts: tuple[str, ...], timeout: float, max_bytes: int) -> list[bytes]:
    """Every image's bytes, URLs fetched concurrently (each within `timeout` seconds)."""

    async def one(image: ImageInput) -> bytes:
        if image.data is not None:
            return image.data
        assert image.url is not None
        work = asyncio.to_thread(fetch, image.url, image.index, hosts, timeout, max_bytes)
        try:  # the whole fetch's deadline (urllib's timeout is per socket operation)
            return await asyncio.wait_for(work, timeout)
        except asyncio.TimeoutError:
            message = f"input[{image.index}]: {image.url} did not arrive within {timeout:g} s"
            raise bad_request(message, param="input", code="image_url_failed") from None

    return list(await asyncio.gather(*(one(image) for image in images)))
