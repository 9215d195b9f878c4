"""What the tests share besides fixtures (those are in conftest.py): where the repository is,
raw Triton requests with no project client in between, and the in-process references (HF
`get_text_features`, open_clip's tokenizer) the server is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip_triton import LocalTritonServer
from clip_triton.paths import REPO_ROOT
from clip_triton_build.repository import BUILT_REPOSITORY, read_build_info
from clip_triton_client.transport import text_tensor

__all__ = [
    "REPO_ROOT",
    "REPOSITORY",
    "build_info",
    "get_text_features",
    "inference_count",
    "open_clip_tokenizer_module",
    "text_array",
    "triton_infer",
    "url_of",
]

REPOSITORY = BUILT_REPOSITORY  # what the tests serve: the build output, not the source


def build_info() -> dict:
    try:
        return read_build_info(REPOSITORY)
    except FileNotFoundError:
        pytest.exit(f"{REPOSITORY} not built: run `python -m clip_triton_build` (scripts/test.sh does)", returncode=2)


def get_text_features(model, ids) -> np.ndarray:
    """CLIPModel.get_text_features as a [N, 512] array (transformers 5 wraps it in an output object)."""
    import torch

    with torch.no_grad():
        out = model.get_text_features(input_ids=torch.as_tensor(ids))
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


def open_clip_tokenizer_module():
    """open_clip's tokenizer.py, loaded from its file (importing the open_clip package would pull
    torchvision, which this environment does not need)."""
    import importlib.util

    package = Path(list(importlib.util.find_spec("open_clip").submodule_search_locations)[0])
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", package / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def triton_infer(protocol: str, url: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]):
    """One raw Triton request (no project client in between). BYTES for object arrays."""
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    module = grpc if protocol == "grpc" else http
    client = module.InferenceServerClient(url)
    try:
        tensors = []
        for name, array in inputs.items():
            tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer(model, tensors, outputs=[module.InferRequestedOutput(o) for o in outputs])
        return [result.as_numpy(o) for o in outputs]
    finally:
        client.close()


def inference_count(srv: LocalTritonServer, model: str) -> int:
    """How many texts (rows) `model` has served on `srv` so far: Triton's statistics API."""
    import tritonclient.http as http

    client = http.InferenceServerClient(srv.http_url)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]["inference_count"]
    finally:
        client.close()


def url_of(srv: LocalTritonServer, protocol: str) -> str:
    return srv.grpc_url if protocol == "grpc" else srv.http_url


def text_array(texts) -> np.ndarray:
    return text_tensor(texts)


def hf_image_features(reference, files: list[bytes]) -> np.ndarray:
    """HF `CLIPModel.get_image_features` of encoded files through the checkpoint's PIL image
    processor: what Jina's CLIPImageEncoder computed. `reference`: (model, processor)."""
    import io

    import torch
    from PIL import Image

    model, processor = reference
    pixels = processor(images=[Image.open(io.BytesIO(f)) for f in files], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
