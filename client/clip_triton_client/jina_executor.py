"""A drop-in for Jina's `CLIPTextEncoder` executor that calls the Triton server instead of running
CLIP in the Flow's process.

    from jina import Flow
    from clip_triton_client.jina_executor import CLIPTextEncoder

    f = Flow().add(uses=CLIPTextEncoder, uses_with={"url": "triton:8001", "batch_size": 32})

Same contract as the seed executor: Documents with `.text` get `.embedding` (512-d float32,
`get_text_features`, not normalised); documents without text are left untouched.
Kept parameters: `batch_size`, `access_paths` (and the older `traversal_paths`), `max_length`.
Dropped: `pretrained_model_name_or_path` and `device` (the server owns the model and the GPU).
New: `traffic` ("interactive" by default: a Flow's requests are queries; "bulk" for an indexing
Flow, which the server then serves after queries: clip_triton_contract.traffic).
"""

from __future__ import annotations

import warnings
from typing import Any

from docarray import DocList
from docarray.documents import TextDoc
from jina import Executor, requests

from clip_triton_contract.traffic import DEFAULT_CLASS

from .client import DEFAULT_MODEL, SERVER_CONTEXT_LENGTH, CLIPClient


def select_docs(docs, access_paths: str):
    """'@r' (the root documents, the default) or a docarray access path into nested documents."""
    if access_paths in ("@r", "r", "", None):
        return docs
    path = access_paths.lstrip("@")
    return list(docs.traverse_flat(path))


class CLIPTextEncoder(Executor):
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

    @requests
    def encode(self, docs: DocList[TextDoc], parameters: dict | None = None, **kwargs) -> DocList[TextDoc]:
        parameters = parameters or {}
        selected = select_docs(
            docs, parameters.get("access_paths", parameters.get("traversal_paths", self.access_paths))
        )
        self.client.encode(selected, on_error="skip")
        return docs

    def close(self) -> None:
        self.client.close()
        super().close()
