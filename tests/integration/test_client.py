"""The Python client against the real server: documents in, embeddings out, nothing lost."""

import asyncio
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from clip_triton import LocalTritonServer
from clip_triton.local import free_port
from clip_triton_client import CLIPClient, InvalidItemError, RandomWeightsWarning, ServerUnavailableError
from helpers import build_info, text_array, triton_infer, url_of


def raw_embed(server, texts):
    (out,) = triton_infer("grpc", server.grpc_url, "clip_text", {"TEXT": text_array(texts)}, ["EMBEDDING"])
    return out


@pytest.fixture(params=["grpc", "http"])
def client(request, server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with CLIPClient(url_of(server, request.param), protocol=request.param) as c:
            c.model_info()
            yield c


@dataclass
class PlainDoc:
    text: object
    embedding: object = None


def test_strings_give_an_array_in_order(client, server):
    texts = ["a photo of a cat", "", "a dog", "word " * 100]
    out = client.encode(texts)
    assert out.shape == (4, 512) and out.dtype == np.float32
    assert np.abs(out - raw_embed(server, texts)).max() <= 1e-5


def test_generator_input(client):
    assert client.encode(f"text {i}" for i in range(5)).shape == (5, 512)


def test_doclist_filled_in_place_and_empty_docs_skipped(client, server):
    from docarray import DocList
    from docarray.documents import TextDoc

    docs = DocList[TextDoc]([TextDoc(text="a cat"), TextDoc(text=""), TextDoc(), TextDoc(text="a dog")])
    returned = client.encode(docs)
    assert returned is docs
    assert docs[1].embedding is None and docs[2].embedding is None
    expected = raw_embed(server, ["a cat", "a dog"])
    assert np.abs(np.asarray(docs[0].embedding) - expected[0]).max() <= 1e-5
    assert np.abs(np.asarray(docs[3].embedding) - expected[1]).max() <= 1e-5
    assert np.asarray(docs[0].embedding).shape == (512,)


def test_plain_objects_with_text(client, server):
    docs = [PlainDoc("first"), PlainDoc(None), PlainDoc(""), PlainDoc("second")]
    client.encode(docs)
    assert docs[1].embedding is None and docs[2].embedding is None
    expected = raw_embed(server, ["first", "second"])
    assert np.abs(docs[0].embedding - expected[0]).max() <= 1e-5
    assert np.abs(docs[3].embedding - expected[1]).max() <= 1e-5


def test_bare_string_is_a_helpful_error(client):
    with pytest.raises(TypeError, match=r"encode\(\[text\]\)"):
        client.encode("a photo of a cat")


def test_bad_items_fail_alone(client, server):
    texts = ["good one", "bad \ud800 surrogate", "good two", 42, "good three"]
    with pytest.raises(InvalidItemError) as info:
        client.encode(texts)
    assert sorted(info.value.errors) == [1, 3]
    result = info.value.result
    assert np.isnan(result[[1, 3]]).all()
    expected = raw_embed(server, ["good one", "good two", "good three"])
    assert np.abs(result[[0, 2, 4]] - expected).max() <= 1e-5
    partial = client.encode(texts, on_error="skip")
    assert np.array_equal(np.isnan(partial).any(axis=1), [False, True, False, True, False])


def test_server_rejected_item_is_isolated_and_neighbours_embedded(server):
    huge = "x" * 1_000_001  # over the tokenizer's max_text_bytes: the server refuses this request
    texts = [f"neighbour {i}" for i in range(20)]
    texts.insert(13, huge)
    with CLIPClient(server.grpc_url, batch_size=8) as c:
        with pytest.raises(InvalidItemError) as info:
            c.encode(texts)
    assert list(info.value.errors) == [13]
    assert "limit" in info.value.errors[13]
    good = [t for t in texts if t is not huge]
    result = np.delete(info.value.result, 13, axis=0)
    assert np.abs(result - raw_embed(server, good)).max() <= 1e-5


def test_normalize(client):
    out = client.encode(["a", "b"], normalize=True)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_async(server):
    async def main():
        with CLIPClient(server.grpc_url) as c:
            return await asyncio.gather(c.aencode(["one", "two"]), c.aencode(["three"]))

    a, b = asyncio.run(main())
    assert np.abs(np.concatenate([a, b]) - raw_embed(server, ["one", "two", "three"])).max() <= 1e-5


def test_model_info_and_random_weights_warning(server):
    weights = build_info()["weights"]
    with CLIPClient(server.http_url, protocol="http") as c:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = c.model_info()
    assert (info.input_name, info.output_name, info.dim, info.max_batch_size) == ("TEXT", "EMBEDDING", 512, 256)
    assert info.weights == weights
    assert any(issubclass(w.category, RandomWeightsWarning) for w in caught) == (weights == "random-init")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ten_thousand_texts_concurrently_each_gets_its_own_embedding(server, protocol):
    texts = [f"{['red', 'blue', 'green', 'tiny'][i % 4]} {i}" for i in range(10_000)]  # short: 3-5 tokens
    with CLIPClient(url_of(server, protocol), protocol=protocol, batch_size=32, concurrency=8) as c:
        bulk = c.encode(texts)
    assert bulk.shape == (10_000, 512) and np.isfinite(bulk).all()
    # single-text requests: the reference for each text, independent of any batch it was in
    sample = list(range(0, 10_000, 97)) + [9_999]
    with CLIPClient(server.grpc_url, batch_size=1, concurrency=16) as c:
        single = c.encode([texts[i] for i in sample])
    assert np.abs(bulk[sample] - single).max() <= 1e-5
    # and no row is a copy of another (no mix-ups, nothing duplicated or dropped)
    assert len({row.tobytes() for row in bulk}) == 10_000


def test_retry_succeeds_when_the_server_becomes_ready_late():
    srv = LocalTritonServer.on_free_ports()
    starter = threading.Timer(2.0, srv.start)
    starter.start()
    try:
        t0 = time.monotonic()
        with CLIPClient(srv.grpc_url, retries=10, backoff=0.5, wait_ready=0) as c:
            out = c.encode(["late but fine"])
        assert out.shape == (1, 512)
        assert time.monotonic() - t0 >= 2.0
    finally:
        starter.join()
        srv.stop()


def test_wait_ready_times_out_clearly_when_no_server():
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnavailableError, match="no Triton server"):
        CLIPClient(url, wait_ready=1.0)


def test_clear_error_when_no_server():
    url = f"127.0.0.1:{free_port()}"
    for protocol in ("grpc", "http"):
        t0 = time.monotonic()
        with CLIPClient(url, protocol=protocol, retries=1, backoff=0.1, timeout=5) as c:
            with pytest.raises(ServerUnavailableError, match=url):
                c.encode(["nobody home"])
        assert time.monotonic() - t0 < 30


# -- what each server answer means to the client --------------------------------------------------
@pytest.mark.parametrize(
    "status,message,expected",
    [
        ("400", "in ensemble 'clip_text', TEXT[0] is not valid UTF-8", "RequestRejectedError"),
        ("StatusCode.INVALID_ARGUMENT", "TEXT[0] is not valid UTF-8", "RequestRejectedError"),
        ("500", "CUDA out of memory", "ServerError"),  # never a verdict on the items: no bisection
        ("StatusCode.INTERNAL", "CUDA out of memory", "ServerError"),
        ("StatusCode.UNKNOWN", "something broke", "ServerError"),
        ("503", "server is busy", "RetryableError"),
        ("StatusCode.UNAVAILABLE", "failed to connect", "RetryableError"),
        ("StatusCode.RESOURCE_EXHAUSTED", "too many requests", "RetryableError"),
        ("403", "This API is restricted", "AccessDeniedError"),
        ("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header", "AccessDeniedError"),
        ("StatusCode.INTERNAL", "Stub process 'clip_tokenizer_0_0' is not healthy.", "RetryableError"),
        ("400", "Request for unknown model: 'nope' is not found", "ModelNotReadyError"),
        ("StatusCode.NOT_FOUND", "model not found", "ModelNotReadyError"),
    ],
)
def test_server_answers_are_classified_by_status(status, message, expected):
    from tritonclient.utils import InferenceServerException

    from clip_triton_client.transport import classify

    assert type(classify(InferenceServerException(message, status=status))).__name__ == expected


def test_an_unknown_model_is_model_not_ready_over_both_protocols(server):
    from clip_triton_client import ModelNotReadyError

    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        with CLIPClient(url, protocol=protocol, model="no_such_model", retries=0) as client:
            with pytest.raises(ModelNotReadyError):
                client.encode(["x"])
