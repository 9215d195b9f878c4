"""Images through OpenAI's embeddings API (python -m clip_openai) in front of the real image server,
called with the real `openai` SDK: texts and data-URI images in one `input` list, each checkpoint's
own two towers, HF's vectors, image URLs only from hosts the operator lists, and a bad image
refused in its own request, named by its place in `input`."""

from __future__ import annotations

import asyncio
import base64
import http.server
import threading

import numpy as np
import openai
import pytest
from images import embeddable, encoded, photo, refused

from clip_triton.openai_frontend import LocalOpenAIFrontend
from clip_triton_client import CLIPClient
from helpers import hf_image_features

TEXTS = ["a photo of a cat", "two dogs playing in the snow"]


def data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class Files(http.server.BaseHTTPRequestHandler):
    """Serves /photo.jpg, a redirect to another host, and a body over the frontend's size cap."""

    photo = embeddable()["jpeg"]

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = self.photo if self.path == "/photo.jpg" else b"\xff\xd8" + bytes(300_000)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def files_host():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def frontend(image_server):
    """Both checkpoints by name; URLs allowed from 127.0.0.1 only, at most 200 kB each."""
    options = ["--image-url-host", "127.0.0.1", "--image-url-max-bytes", "200000", "--max-images", "16"]
    with LocalOpenAIFrontend.on_free_ports(image_server.grpc_url, ["b32"], workers=1, options=options) as front:
        yield front


@pytest.fixture(scope="module")
def closed(image_server):
    """The default settings: no image URL is fetched."""
    with LocalOpenAIFrontend.on_free_ports(image_server.grpc_url, ["b32"], workers=1) as front:
        yield front


@pytest.fixture(scope="module")
def sdk(frontend):
    with openai.OpenAI(base_url=frontend.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.mark.parametrize("name", ["b32", "l14-336"])
def test_texts_and_images_in_one_list_get_each_towers_vectors_in_order(image_server, image_references, sdk, name):
    files = [embeddable()["jpeg"], embeddable()["rgba png"]]
    answer = sdk.embeddings.create(
        model=name, input=[TEXTS[0], data_uri(files[0], "jpeg"), TEXTS[1], data_uri(files[1])]
    )
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    with CLIPClient(image_server.grpc_url, model=name, normalize=True) as client:
        texts = client.encode(TEXTS)
    images = unit(hf_image_features(image_references[name], files))
    np.testing.assert_allclose(got[[0, 2]], texts, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[[1, 3]], images, atol=1e-4, rtol=0)
    assert [d.index for d in answer.data] == [0, 1, 2, 3]
    texts_alone = sdk.embeddings.create(model=name, input=TEXTS)
    assert answer.usage.prompt_tokens == texts_alone.usage.prompt_tokens  # images count no tokens


def test_modality_image_takes_data_uris_and_base64_answers_hold_the_same_floats(image_references, sdk):
    jpeg = embeddable()["progressive jpeg"]
    floats = sdk.embeddings.create(model="b32", input=[data_uri(jpeg, "jpeg")], extra_body={"modality": "image"})
    packed = sdk.embeddings.create(
        model="b32", input=[data_uri(jpeg, "jpeg")], encoding_format="base64", extra_body={"normalize": False}
    )
    np.testing.assert_allclose(
        floats.data[0].embedding, unit(hf_image_features(image_references["b32"], [jpeg]))[0], atol=1e-4
    )
    raw = np.frombuffer(base64.b64decode(packed.data[0].embedding), dtype="<f4")
    np.testing.assert_allclose(raw, hf_image_features(image_references["b32"], [jpeg])[0], atol=1e-4, rtol=0)


def test_a_data_uri_with_modality_text_is_embedded_as_text(sdk):
    uri = data_uri(embeddable()["1x1 png"])
    as_text = sdk.embeddings.create(model="b32", input=[uri], extra_body={"modality": "text"})
    as_image = sdk.embeddings.create(model="b32", input=[uri])
    assert as_text.usage.prompt_tokens > 2 and as_image.usage.prompt_tokens == 0
    assert not np.allclose(as_text.data[0].embedding, as_image.data[0].embedding)


def test_urls_come_only_from_listed_hosts_without_redirects_or_oversized_bodies(
    image_references, sdk, closed, files_host
):
    url = f"{files_host}/photo.jpg"
    answer = sdk.embeddings.create(model="b32", input=[url], extra_body={"modality": "image"})
    expected = unit(hf_image_features(image_references["b32"], [Files.photo]))[0]
    np.testing.assert_allclose(answer.data[0].embedding, expected, atol=1e-4, rtol=0)
    refusals = {
        f"{files_host}/redirect": "redirect",
        f"{files_host}/large.jpg": "over 200000 bytes",
        url.replace("127.0.0.1", "localhost"): "only from 127.0.0.1",
    }
    for bad, why in refusals.items():
        with pytest.raises(openai.BadRequestError, match=why):
            sdk.embeddings.create(model="b32", input=[bad], extra_body={"modality": "image"})
    with openai.OpenAI(base_url=closed.url, api_key="unused", max_retries=0) as default:
        with pytest.raises(openai.BadRequestError, match="not fetched by this server") as caught:
            default.embeddings.create(model="b32", input=[url], extra_body={"modality": "image"})
    assert caught.value.body["code"] == "image_url_not_allowed"


@pytest.mark.parametrize("kind", ["not an image", "truncated jpeg", "decompression bomb", "extreme aspect ratio"])
def test_a_bad_image_fails_its_request_alone_named_by_its_place_in_input(frontend, sdk, kind):
    data, why = refused(20_000_000)[kind]
    good = data_uri(encoded(photo(64, 64, seed=3), "PNG"))

    async def both():
        async with openai.AsyncOpenAI(base_url=frontend.url, api_key="unused", max_retries=0) as client:
            bad = client.embeddings.create(model="b32", input=[TEXTS[0], good, TEXTS[1], data_uri(data)])
            fine = client.embeddings.create(model="b32", input=[good, TEXTS[0]] * 4)
            return await asyncio.gather(bad, fine, return_exceptions=True)

    refusal, answer = asyncio.run(both())
    assert isinstance(refusal, openai.BadRequestError), refusal
    assert "input[3]" in refusal.message and why in refusal.message
    assert len(answer.data) == 8
    assert frontend.health()[0] == 200


def test_in_a_mixed_list_a_refused_item_is_named_by_its_own_place_in_input(sdk):
    """Texts and images go to different ensembles; each error still counts places in `input`."""
    not_an_image = data_uri(refused(20_000_000)["not an image"][0])
    with pytest.raises(openai.BadRequestError) as image_first:
        sdk.embeddings.create(model="b32", input=[not_an_image, TEXTS[0], TEXTS[1]])
    assert "input[0]" in image_first.value.message and "not an image" in image_first.value.message
    too_long = "word " * 250_000  # over the tokenizer's max_text_bytes
    with pytest.raises(openai.BadRequestError) as text_last:
        sdk.embeddings.create(model="b32", input=[data_uri(embeddable()["png"]), TEXTS[0], too_long])
    assert "input[2]" in text_last.value.message and "input[1]" not in text_last.value.message


def test_more_images_than_allowed_are_refused_before_any_work(sdk):
    with pytest.raises(openai.BadRequestError, match="at most 16 per request"):
        sdk.embeddings.create(model="b32", input=[data_uri(embeddable()["1x1 png"])] * 17)


def test_models_say_which_inputs_they_take(sdk):
    listed = {m.id: m for m in sdk.models.list().data}
    assert listed["b32"].modalities == ["text", "image"] and listed["l14-336"].modalities == ["text", "image"]
