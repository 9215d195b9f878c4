"""CLIPClient.encode_images against the real server: every form a user holds an image in embeds as
HF's `get_image_features` of that image, documents are filled in place, and a bad item fails
alone, named, while its neighbours are embedded in order."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pytest
from images import embeddable, encoded, photo, refused
from PIL import Image

from clip_triton_client import CLIPClient, InvalidItemError
from helpers import hf_image_features, url_of


def client_for(srv, protocol: str = "grpc", model: str = "b32", **options) -> CLIPClient:
    return CLIPClient(url_of(srv, protocol), protocol=protocol, model=model, **options)


def png_of(image: Image.Image) -> bytes:
    return encoded(image, "PNG")


@dataclass
class JinaDocument:
    """The fields Jina's CLIPImageEncoder read (docarray < 0.30's Document, which needs Python < 3.12)."""

    blob: bytes | None = None
    tensor: np.ndarray | None = None
    uri: str | None = None
    embedding: np.ndarray | None = None


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_paths_bytes_uris_pil_images_and_arrays_embed_as_hf_does(image_server, image_references, tmp_path, protocol):
    files = embeddable()
    jpeg, png = files["jpeg"], files["png"]
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png)
    rgb = photo(120, 90, seed=11)
    rgba = photo(64, 80, seed=12).convert("RGBA")
    gray = np.asarray(photo(50, 70, seed=13).convert("L"))
    items = [
        str(tmp_path / "a.jpg"),
        tmp_path / "b.png",
        files["webp"],
        "data:image/png;base64," + base64.b64encode(png).decode(),
        Image.open(io.BytesIO(files["cmyk jpeg"])),
        rgba,
        np.asarray(rgb),
        gray,
        gray[:, :, None],
    ]
    same_as = [
        jpeg,
        png,
        files["webp"],
        png,
        png_of(Image.open(io.BytesIO(files["cmyk jpeg"])).convert("RGB")),
        png_of(rgba),
        png_of(rgb),
        png_of(Image.fromarray(gray)),
        png_of(Image.fromarray(gray)),
    ]
    with client_for(image_server, protocol) as client:
        got = client.encode_images(items)
    expected = hf_image_features(image_references["b32"], same_as)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_a_cmyk_pil_image_embeds_as_its_file_does(image_server):
    cmyk = embeddable()["cmyk jpeg"]
    with client_for(image_server) as client:
        from_file, from_image = client.encode_images([cmyk, Image.open(io.BytesIO(cmyk))])
    np.testing.assert_allclose(from_image, from_file, atol=1e-5, rtol=0)


def test_a_named_checkpoints_images_go_to_its_own_image_model(image_server, image_references):
    files = [embeddable()["jpeg"], embeddable()["progressive jpeg"]]
    with client_for(image_server, model="l14-336") as client:
        assert client.image_model == "l14-336_clip_image"
        got = client.encode_images(files, normalize=True)
    expected = hf_image_features(image_references["l14-336"], files)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_docarray_image_docs_are_filled_in_place_from_url_tensor_or_bytes(image_server, image_references, tmp_path):
    from docarray import DocList
    from docarray.documents import ImageDoc

    jpeg, png = embeddable()["jpeg"], embeddable()["png"]
    (tmp_path / "cat.jpg").write_bytes(jpeg)
    pixels = np.asarray(photo(100, 60, seed=21))
    docs = DocList[ImageDoc](
        [
            ImageDoc(url=str(tmp_path / "cat.jpg")),
            ImageDoc(tensor=pixels),
            ImageDoc(bytes_=png),
            ImageDoc(),  # nothing to embed: skipped, as Jina's encoders skip such documents
        ]
    )
    with client_for(image_server) as client:
        assert client.encode_images(docs) is docs
    expected = hf_image_features(image_references["b32"], [jpeg, png_of(Image.fromarray(pixels)), png])
    for doc, row in zip(docs[:3], expected):
        np.testing.assert_allclose(np.asarray(doc.embedding), row, atol=1e-4, rtol=0)
    assert docs[3].embedding is None


def test_jina_documents_with_blob_tensor_or_uri_are_filled_in_place(image_server, image_references, tmp_path):
    jpeg = embeddable()["jpeg"]
    (tmp_path / "dog.jpg").write_bytes(jpeg)
    pixels = np.asarray(photo(64, 64, seed=22))
    docs = [JinaDocument(blob=jpeg), JinaDocument(tensor=pixels), JinaDocument(uri=str(tmp_path / "dog.jpg"))]
    with client_for(image_server, "http") as client:
        client.encode_images(docs)
    expected = hf_image_features(image_references["b32"], [jpeg, png_of(Image.fromarray(pixels)), jpeg])
    for doc, row in zip(docs, expected):
        np.testing.assert_allclose(doc.embedding, row, atol=1e-4, rtol=0)


def test_a_bad_item_fails_alone_named_and_its_neighbours_embed_in_order(image_server, image_references, tmp_path):
    good = [embeddable()["jpeg"], embeddable()["png"], embeddable()["1x1 png"]]
    bad = {kind: why for kind, why in refused(20_000_000).items() if kind != "over the byte limit"}
    items: list = [
        good[0],
        *(data for data, _ in bad.values()),
        good[1],
        str(tmp_path / "missing.jpg"),
        np.zeros((4, 4, 3)),
        good[2],
    ]
    with client_for(image_server, batch_size=4) as client, pytest.raises(InvalidItemError) as caught:
        client.encode_images(items)
    errors, result = caught.value.errors, caught.value.result
    good_rows = [0, len(bad) + 1, len(items) - 1]
    assert sorted(errors) == [i for i in range(len(items)) if i not in good_rows]
    for index, (kind, (_, message)) in enumerate(bad.items(), start=1):
        assert message in errors[index], (kind, errors[index])
    assert "missing.jpg" in errors[len(bad) + 2] and "uint8" in errors[len(bad) + 3]
    np.testing.assert_allclose(result[good_rows], hf_image_features(image_references["b32"], good), atol=1e-4, rtol=0)
    assert np.isnan(result[[i for i in range(len(items)) if i not in good_rows]]).all()


def test_requests_are_cut_by_bytes_and_order_is_kept(image_server, image_references, monkeypatch):
    import clip_triton_client.client as module

    monkeypatch.setattr(module, "REQUEST_BYTES", 40_000)  # a few photos per request
    files = [encoded(photo(160, 120, seed=s), "JPEG", quality=95) for s in range(40)]
    with client_for(image_server, batch_size=16, concurrency=3) as client:
        got = client.encode_images(iter(files))  # an iterator works too
    np.testing.assert_allclose(got, hf_image_features(image_references["b32"], files), atol=1e-4, rtol=0)


def test_a_single_image_is_refused_with_how_to_send_it(image_server):
    with client_for(image_server) as client:
        for single in ("cat.jpg", b"\xff\xd8", np.zeros((8, 8, 3), np.uint8)):
            with pytest.raises(TypeError, match=r"encode_images\(\[image\]\)"):
                client.encode_images(single)
