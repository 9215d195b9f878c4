"""Drop-ins for Jina's `CLIPTextEncoder` and `CLIPImageEncoder` executors that call the Triton
server instead of running CLIP in the Flow's process.

    from jina import Flow
    from clip_triton_client.jina_executor import CLIPImageEncoder, CLIPTextEncoder

    f = Flow().add(uses=CLIPTextEncoder, uses_with={"url": "triton:8001", "batch_size": 32})
    f = Flow().add(uses=CLIPImageEncoder, uses_with={"url": "triton:8001"})

Same contract as Jina's executors: Documents with `.text` (CLIPTextEncoder) or an image
(CLIPImageEncoder: ImageDoc's `url`, `tensor` or `bytes_`; clip_triton_client.images) get
`.embedding` (float32, `get_text_features` / `get_image_features` of one checkpoint, not
normalised, in one space); documents without one are left untouched, and so is a document whose
image cannot be read or decoded (the error is logged; its neighbours are embedded).
Kept parameters: `batch_size`, `access_paths` (and the older `traversal_paths`), `max_length`.
Dropped: `pretrained_model_name_or_path` and `device` (the server owns the model and the GPU), and
`use_default_preprocessing=False` (the server applies the checkpoint's own preprocessing: send
images, not preprocessed tensors).
New: `traffic` ("interactive" by default: a Flow's requests are queries; "bulk" for an indexing
Flow, which the server then serves after queries: clip_triton_contract.traffic).

The request methods' annotations are real types (no `from __future__ import annotations`): Jina
reads them to pick the documents' schema, and with a string it falls back to its legacy Document,
which has no ImageDoc `bytes_`.
"""

import warnings
from typing import Any

from docarray import DocList
from docarray.documents import ImageDoc, TextDoc
from jina import Executor, requests

from clip_triton_contract.traffic import DEFAULT_CLASS

from .client import DEFAULT_MODEL, SERVER_CONTEXT_LENGTH, CLIPClient


def select_docs(docs, access_paths: str):
    """'@r' (the root documents, the default) or a docarray access path into nested documents."""
    if access_paths in ("@r", "r", "", None):
        return docs
    path = access_paths.lstrip("@")
    return list(docs.traverse_flat(path))


class _ServerEncoder(Executor):
    """What both drop-ins share: the client to the server, and which documents a request selects."""

    def __init__(
        self,
        url: str = "localhost:8001",
        protocol: str = "grpc",
        model: str = DEFAULT_MODEL,
        batch_size: int = 32,
        access_paths: str = "@r",
        traversal_paths: str | None = None,
        max_length: int = SERVER_CONTEXT_LENGTH,
        concurrency: int = 4,
        headers: dict[str, str] | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        wait_ready: float = 0.0,
        traffic: str = DEFAULT_CLASS,
        *args: Any,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if max_length != SERVER_CONTEXT_LENGTH:
            raise ValueError(
                f"max_length={max_length}: the server tokenizes to CLIP's fixed context of "
                f"{SERVER_CONTEXT_LENGTH} tokens (longer texts are truncated there); leave max_length at 77"
            )
        if traversal_paths is not None:
            warnings.warn("traversal_paths is deprecated, use access_paths", DeprecationWarning, stacklevel=2)
            access_paths = traversal_paths
        self.access_paths = access_paths
        self.client = CLIPClient(
            url,
            protocol=protocol,
            model=model,
            batch_size=batch_size,
            concurrency=concurrency,
            headers=headers,
            api_key=api_key,
            timeout=timeout,
            wait_ready=wait_ready,
            traffic=traffic,
        )

    def selected(self, docs, parameters: dict | None):
        parameters = parameters or {}
        return select_docs(docs, parameters.get("access_paths", parameters.get("traversal_paths", self.access_paths)))

    def close(self) -> None:
        self.client.close()
        super().close()


class CLIPTextEncoder(_ServerEncoder):
    @requests
    def encode(self, docs: DocList[TextDoc], parameters: dict | None = None, **kwargs) -> DocList[TextDoc]:
        self.client.encode(self.selected(docs, parameters), on_error="skip")
        return docs


class CLIPImageEncoder(_ServerEncoder):
    def __init__(self, *args: Any, use_default_preprocessing: bool = True, **kwargs: Any):
        if not use_default_preprocessing:
            raise ValueError(
                "use_default_preprocessing=False: the server applies the checkpoint's own preprocessing to "
                "the images it receives; send images (url, tensor of pixels or bytes_), not pixel_values"
            )
        super().__init__(*args, **kwargs)

    @requests
    def encode(self, docs: DocList[ImageDoc], parameters: dict | None = None, **kwargs) -> DocList[ImageDoc]:
        self.client.encode_images(self.selected(docs, parameters), on_error="skip")
        return docs
