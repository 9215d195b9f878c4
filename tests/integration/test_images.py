"""Images through the real server: each checkpoint's image pipeline gives HF's
`get_image_features` on the checkpoint's own preprocessing, scores against its texts as HF's
`logits_per_image` does, and refuses bad files one by one without harm to anything else."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from checkpoints import IMAGE_SHAPES
from images import embeddable, refused
from PIL import Image
from tritonclient.utils import InferenceServerException

from clip_triton_build.repository import read_config
from clip_triton_contract.names import (
    EMBEDDING_OUTPUT,
    IMAGE_INPUT,
    IMAGE_PREPROCESS_MODEL,
    TEXT_INPUT,
    image_ensemble_of,
    image_model_names,
    model_names,
)
from helpers import hf_image_features, open_clip_tokenizer_module, text_array, triton_infer, url_of

TEXTS = ["a photo of a cat", "a diagram", "two dogs playing in the snow", "a red square"]
SHAPES = list(IMAGE_SHAPES)


def image_array(files: list[bytes]) -> np.ndarray:
    return np.array([[f] for f in files], dtype=object)


def embed_images(srv, protocol: str, name: str, files: list[bytes]) -> np.ndarray:
    model = image_ensemble_of(name)
    inputs = {IMAGE_INPUT: image_array(files)}
    return triton_infer(protocol, url_of(srv, protocol), model, inputs, [EMBEDDING_OUTPUT])[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", SHAPES)
def test_every_kind_of_image_embeds_as_hf_does(image_server, image_references, name, protocol):
    files = embeddable()
    got = embed_images(image_server, protocol, name, list(files.values()))
    expected = hf_image_features(image_references[name], list(files.values()))
    assert got.shape == expected.shape
    for row, kind in enumerate(files):
        np.testing.assert_allclose(got[row], expected[row], atol=1e-4, rtol=0, err_msg=kind)


@pytest.mark.parametrize("name", SHAPES)
def test_the_vision_tower_takes_the_checkpoints_own_image_size(image_server, image_checkpoints, name):
    from transformers import CLIPConfig

    side = CLIPConfig.from_pretrained(image_checkpoints[name]).vision_config.image_size
    config = read_config(
        Path(image_server.repository) / image_model_names(name)[IMAGE_PREPROCESS_MODEL] / "config.pbtxt"
    )
    assert list(config.output[0].dims) == [3, side, side]


@pytest.mark.parametrize("name", SHAPES)
def test_texts_and_images_score_as_hfs_logits_per_image(image_server, image_references, name):
    import torch

    files = list(embeddable().values())[:4]
    images = embed_images(image_server, "grpc", name, files)
    texts = triton_infer(
        "grpc",
        image_server.grpc_url,
        model_names(name)["clip_text"],
        {TEXT_INPUT: text_array(TEXTS)},
        [EMBEDDING_OUTPUT],
    )[0]
    model, processor = image_references[name]
    normalize = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    ours = model.logit_scale.exp().item() * normalize(images) @ normalize(texts).T
    pixels = processor(images=[Image.open(io.BytesIO(f)) for f in files], return_tensors="pt")["pixel_values"]
    ids = open_clip_tokenizer_module().tokenize(TEXTS, context_length=77)
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels).logits_per_image.numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("kind", list(refused(20_000_000)))
def test_a_bad_file_fails_alone_and_says_why(image_server, image_references, kind):
    data, message = refused(20_000_000)[kind]
    good = embeddable()["jpeg"]
    with pytest.raises(InferenceServerException, match=message) as caught:
        embed_images(image_server, "grpc", "b32", [good, data])
    assert f"{IMAGE_INPUT}[1]" in str(caught.value)
    # the model still serves, and the good file embeds on its own
    got = embed_images(image_server, "http", "b32", [good])
    np.testing.assert_allclose(got[0], hf_image_features(image_references["b32"], [good])[0], atol=1e-4, rtol=0)
    assert image_server.is_ready()
