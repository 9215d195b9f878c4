"""POST /v1/embeddings' body, checked field by field as OpenAI documents it.

    {"input": "text" | ["text" or "data:image/png;base64,...", ...], "model": "NAME",
     "encoding_format": "float" | "base64", "dimensions": N, "user": "...",
     "service_tier": "auto" | "default" | "priority" | "flex", "normalize": true | false,
     "modality": "text" | "image"}

Texts and images mix in one `input` list, in one embedding space (images: images.py says
which items are images; `modality` is infinity's field).

`service_tier` is OpenAI's own name for how urgent a request is: "flex" (slower, for work that
can wait) is sent as bulk traffic, the others as interactive (clip_triton_contract.traffic); without
it a request gets the frontend's `traffic` setting.

`normalize` is this server's extension (OpenAI's vectors are always unit length). An empty string
is embedded as the Triton path embeds it (CLIP reads <|startoftext|><|endoftext|>), where OpenAI
refuses it. Token ids in
`input` are refused: OpenAI's clients send tiktoken's ids, which mean nothing to CLIP's BPE, so
embedding them would return vectors of the wrong text without an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from clip_triton_contract.traffic import BULK, INTERACTIVE

from .errors import bad_request
from .images import ImageInput, image_input

ENCODING_FORMATS = ("float", "base64")
MODALITIES = ("text", "image")
SERVICE_TIERS = {"auto": INTERACTIVE, "default": INTERACTIVE, "priority": INTERACTIVE, "flex": BULK}


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    texts: list[bytes]  # UTF-8, in input order
    encoding_format: str
    dimensions: int | None
    normalize: bool
    traffic: str  # clip_triton_contract.traffic's class
    images: tuple[ImageInput, ...] = ()  # the items that are images; `texts` holds the others
    size: int = 0  # items in `input`

    def text_rows(self) -> list[int]:
        """The position in `input` of each of `texts`."""
        taken = {image.index for image in self.images}
        return [row for row in range(self.size) if row not in taken]


def _kind(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def parse(
    body: bytes, max_inputs: int, normalize_default: bool, traffic_default: str = INTERACTIVE, max_images: int = 64
) -> EmbeddingsRequest:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise bad_request(f"the request body must be a JSON object, not {_kind(payload)}")

    model = payload.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", param="model")
    if not isinstance(model, str):
        raise bad_request(f"'model' must be a string, not {_kind(model)}", param="model")

    if "input" not in payload:
        raise bad_request("'input' is required: a string or an array of strings", param="input")
    modality = payload.get("modality")
    if modality is not None and modality not in MODALITIES:
        raise bad_request(
            f"'modality' must be one of {', '.join(map(repr, MODALITIES))}, not {modality!r}", param="modality"
        )
    texts, images, size = _inputs(payload["input"], max_inputs, modality)
    if len(images) > max_images:
        raise bad_request(
            f"'input' has {len(images)} images; at most {max_images} per request", param="input", code="too_many_inputs"
        )

    encoding_format = payload.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise bad_request(
            f"'encoding_format' must be one of {', '.join(map(repr, ENCODING_FORMATS))}, not {encoding_format!r}",
            param="encoding_format",
        )

    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise bad_request(f"'dimensions' must be an integer, not {_kind(dimensions)}", param="dimensions")

    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"'user' must be a string, not {_kind(user)}", param="user")

    normalize = payload.get("normalize", normalize_default)
    if not isinstance(normalize, bool):
        raise bad_request(f"'normalize' must be true or false, not {_kind(normalize)}", param="normalize")
    tier = payload.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise bad_request(
            f"'service_tier' must be one of {', '.join(map(repr, SERVICE_TIERS))}, not {tier!r}", param="service_tier"
        )
    traffic = traffic_default if tier is None else SERVICE_TIERS[tier]
    return EmbeddingsRequest(model, texts, encoding_format, dimensions, normalize, traffic, tuple(images), size)


def _inputs(value, max_inputs: int, modality: str | None) -> tuple[list[bytes], list[ImageInput], int]:
    token_ids = (
        "token ids are not accepted: this model reads text through CLIP's own tokenizer, and the ids "
        "an OpenAI client sends are tiktoken's. Send the texts (LangChain: check_embedding_ctx_length=False)"
    )
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise bad_request(f"'input' must be a string or an array of strings, not {_kind(value)}", param="input")
    if not value:
        raise bad_request("'input' must not be an empty array", param="input")
    if len(value) > max_inputs:
        raise bad_request(
            f"'input' has {len(value)} items; at most {max_inputs} per request", param="input", code="too_many_inputs"
        )
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise bad_request(f"'input' is an array of integers: {token_ids}", param="input")
    texts, images = [], []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            if isinstance(item, list):
                raise bad_request(f"input[{index}] is an array: {token_ids}", param="input")
            raise bad_request(f"input[{index}] must be a string, not {_kind(item)}", param="input")
        image = image_input(item, index, modality)
        if image is not None:
            images.append(image)
            continue
        try:
            texts.append(item.encode("utf-8"))
        except UnicodeEncodeError as exc:  # a lone surrogate escape (\ud800) decodes to str, not to UTF-8
            raise bad_request(
                f"input[{index}] is not valid Unicode ({exc.reason} at {exc.start})", param="input"
            ) from None
    return texts, images, len(value)
