"""OpenAI's embeddings API (python -m clip_openai) in front of a real tritonserver, called with the
real `openai` SDK and LangChain's OpenAIEmbeddings as their users call them: the Triton path's
vectors, OpenAI's errors with their statuses and bodies, the key, the limits, readiness."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from clip_openai.metrics import FLUSH_SECONDS
from clip_triton import LocalTritonServer
from clip_triton.openai_frontend import LocalOpenAIFrontend
from clip_triton_client import CLIPClient
from clip_triton_contract.names import CONTEXT_LENGTH, ENSEMBLE_MODEL

KEY = "openai-test-key"
TEXTS = ["a photo of a cat", "a dog on a skateboard", "Ünïcödé &amp; emoji 🐈", "x " * 200, ""]


@pytest.fixture(scope="module")
def keyed():
    """A tritonserver whose inference APIs need KEY (the same rule as any deployment's)."""
    with LocalTritonServer.on_free_ports(config_name="cpu", api_key=KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def frontend(keyed):
    with LocalOpenAIFrontend.on_free_ports(keyed.grpc_url, [ENSEMBLE_MODEL], workers=2, api_key=KEY) as front:
        yield front


@pytest.fixture(scope="module")
def tight(keyed):
    """One worker with small limits: 2 requests pending, 4 KiB bodies, 8 inputs."""
    options = ["--max-pending=2", "--max-body-bytes=4096", "--max-inputs=8"]
    with LocalOpenAIFrontend.on_free_ports(
        keyed.grpc_url, [ENSEMBLE_MODEL], workers=1, api_key=KEY, options=options
    ) as front:
        yield front


@pytest.fixture(scope="module")
def sdk(frontend):
    with openai.OpenAI(base_url=frontend.url, api_key=KEY, max_retries=0) as client:
        yield client


def triton_path(srv: LocalTritonServer, texts, normalize: bool) -> np.ndarray:
    with CLIPClient(srv.grpc_url, api_key=KEY, sort_by_length=False) as client:
        return client.encode(texts, normalize=normalize)


def post(front: LocalOpenAIFrontend, body: bytes | dict, path: str = "/embeddings", key: str | None = KEY, **headers):
    """(status, JSON body, headers) of one raw request."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{front.url}{path}", data=data, headers={"Content-Type": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def assert_openai_error(body: dict, *in_message: str, param=None) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    for fragment in in_message:
        assert fragment in body["error"]["message"]
    if param:
        assert body["error"]["param"] == param


def test_the_sdk_gets_the_triton_paths_vectors_unit_length_by_default(keyed, sdk):
    answer = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS, encoding_format="float")
    assert answer.object == "list" and answer.model == ENSEMBLE_MODEL
    assert [(d.object, d.index) for d in answer.data] == [("embedding", i) for i in range(len(TEXTS))]
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vectors, triton_path(keyed, TEXTS, normalize=True), atol=1e-6)


def test_normalize_false_gives_get_text_features_as_the_triton_path_does(keyed, sdk):
    answer = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS, extra_body={"normalize": False})
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_allclose(vectors, triton_path(keyed, TEXTS, normalize=False), atol=1e-6)


def test_base64_holds_the_float_vectors_little_endian_bytes(sdk):
    floats = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS, encoding_format="float")
    encoded = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS, encoding_format="base64")
    decoded = np.array([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in encoded.data])
    expected = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert np.array_equal(decoded, expected)
    # the SDK asks for base64 by itself when the caller names no format, and decodes it
    default = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS)
    assert np.array_equal(np.array([d.embedding for d in default.data], dtype=np.float32), expected)


def test_usage_counts_the_tokens_the_encoder_read(sdk, open_clip_tokenizer):
    answer = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS)
    expected = sum(min(len(open_clip_tokenizer.encode(t)), CONTEXT_LENGTH - 2) + 2 for t in TEXTS)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == expected
    long_text = sdk.embeddings.create(model=ENSEMBLE_MODEL, input="word " * 500)
    assert long_text.usage.prompt_tokens == CONTEXT_LENGTH  # truncated as CLIP truncates


def test_a_single_string_and_user_are_accepted(sdk):
    answer = sdk.embeddings.create(model=ENSEMBLE_MODEL, input="a photo of a cat", user="someone", dimensions=512)
    assert len(answer.data) == 1 and len(answer.data[0].embedding) == 512


def test_langchains_openai_embeddings_get_the_same_vectors(frontend, sdk):
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: otherwise LangChain sends tiktoken's ids (refused, see below)
    embeddings = OpenAIEmbeddings(
        model=ENSEMBLE_MODEL, base_url=frontend.url, api_key=KEY, check_embedding_ctx_length=False
    )
    vectors = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    expected = sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS, encoding_format="float")
    np.testing.assert_allclose(vectors, np.array([d.embedding for d in expected.data]), atol=1e-7)
    assert np.allclose(embeddings.embed_query(TEXTS[0]), vectors[0], atol=1e-7)


@pytest.mark.parametrize(
    "body, fragments, param",
    [
        ({"model": ENSEMBLE_MODEL, "input": []}, ["must not be an empty array"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": ["fine", 7, "fine"]}, ["input[1] must be a string, not integer"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": ["fine", None]}, ["input[1] must be a string, not null"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": ["x"] * 2049}, ["2049 items", "at most 2048"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": [1, 2, 3]}, ["token ids are not accepted", "tiktoken"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": [[1, 2]]}, ["input[0] is an array", "token ids"], "input"),
        ({"model": ENSEMBLE_MODEL, "input": "a", "encoding_format": "int8"}, ["'float', 'base64'"], "encoding_format"),
        ({"model": ENSEMBLE_MODEL, "input": "a", "dimensions": 256}, ["512 dimensions", "256"], "dimensions"),
        ({"model": ENSEMBLE_MODEL, "input": "a", "normalize": "yes"}, ["true or false"], "normalize"),
        ({"input": "a"}, ["you must provide a model"], "model"),
        ({"model": ENSEMBLE_MODEL}, ["'input' is required"], "input"),
        (b'{"model": "clip_text", "input": ["a"', ["not valid JSON"], None),
        (b'["a", "b"]', ["must be a JSON object"], None),
        ({"model": ENSEMBLE_MODEL, "input": ["ok", "x" * 1_000_001]}, ["input[1]:", "bytes"], "input"),
    ],
)
def test_bad_input_is_a_400_with_openais_body_naming_what_is_wrong(frontend, body, fragments, param):
    status, answer, _ = post(frontend, body)
    assert status == 400, answer
    assert_openai_error(answer, *fragments, param=param)
    assert answer["error"]["type"] == "invalid_request_error"


def test_the_sdk_raises_its_own_exceptions_for_them(sdk):
    with pytest.raises(openai.BadRequestError, match="empty array"):
        sdk.embeddings.create(model=ENSEMBLE_MODEL, input=[])
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.embeddings.create(model="no-such-model", input="a")


def test_an_unknown_model_is_a_404_for_embeddings_and_models(frontend):
    status, answer, _ = post(frontend, {"model": "text-embedding-3-small", "input": "a"})
    assert status == 404 and answer["error"]["code"] == "model_not_found"
    assert_openai_error(answer, "`text-embedding-3-small` does not exist", param="model")
    request = urllib.request.Request(f"{frontend.url}/models/nope", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 404 and json.loads(raised.value.read())["error"]["code"] == "model_not_found"


def test_an_unknown_path_is_a_404_and_a_wrong_method_a_405_both_in_openais_body(frontend):
    status, answer, _ = post(frontend, {"model": ENSEMBLE_MODEL, "input": "a"}, path="/completions")
    assert status == 404 and answer["error"]["code"] == "unknown_url"
    assert_openai_error(answer, "POST /v1/completions")
    request = urllib.request.Request(f"{frontend.url}/embeddings", headers={"Authorization": f"Bearer {KEY}"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 405 and raised.value.headers["allow"] == "POST"
    assert_openai_error(json.loads(raised.value.read()), "GET /v1/embeddings")


def test_models_are_listed_as_openai_lists_them(sdk):
    listed = sdk.models.list()
    assert [m.id for m in listed.data] == [ENSEMBLE_MODEL]
    model = sdk.models.retrieve(ENSEMBLE_MODEL)
    assert model.object == "model" and model.owned_by and model.created > 0
    assert model.model_extra["dimensions"] == 512


def test_a_missing_or_wrong_key_is_a_401_and_health_stays_open(frontend):
    for key, code in ((None, "missing_api_key"), ("wrong", "invalid_api_key")):
        status, answer, _ = post(frontend, {"model": ENSEMBLE_MODEL, "input": "a"}, key=key)
        assert status == 401 and answer["error"]["code"] == code
        assert_openai_error(answer)
    with openai.OpenAI(base_url=frontend.url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model=ENSEMBLE_MODEL, input="a")
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    assert frontend.health("live")[0] == 200 and frontend.health("ready")[0] == 200


def test_a_body_over_the_limit_is_a_413_declared_or_chunked(tight):
    too_big = json.dumps({"model": ENSEMBLE_MODEL, "input": ["y" * 5000]}).encode()
    status, answer, _ = post(tight, too_big)
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert_openai_error(answer, "over 4096 bytes")

    def chunks():
        yield too_big[:1000]
        yield too_big[1000:]

    request = urllib.request.Request(
        f"{tight.url}/embeddings",
        data=chunks(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}", "Transfer-Encoding": "chunked"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 413
    status, answer, _ = post(tight, {"model": ENSEMBLE_MODEL, "input": ["a"] * 9})  # --max-inputs=8
    assert status == 400 and "at most 8" in answer["error"]["message"]


def test_a_saturated_worker_answers_429_and_a_client_that_retries_loses_nothing(keyed, tight):
    texts = [f"saturation text number {i}" for i in range(48)]

    async def raw():
        import aiohttp

        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:

            async def one(text):
                async with session.post(f"{tight.url}/embeddings", json={"model": ENSEMBLE_MODEL, "input": text}) as r:
                    return r.status, await r.json(), (r.headers.get("retry-after"), r.headers.get("retry-after-ms"))

            return await asyncio.gather(*(one(t) for t in texts))

    answers = asyncio.run(raw())
    refused = [a for a in answers if a[0] == 429]
    assert refused and {a[0] for a in answers} == {200, 429}
    for _, body, (retry_after, retry_after_ms) in refused:
        assert body["error"]["code"] == "server_saturated" and retry_after == "1" and 100 <= int(retry_after_ms) <= 1000

    async def retrying():
        async with openai.AsyncOpenAI(base_url=tight.url, api_key=KEY, max_retries=20) as client:
            return await asyncio.gather(*(client.embeddings.create(model=ENSEMBLE_MODEL, input=t) for t in texts))

    done = asyncio.run(retrying())
    vectors = np.array([d.data[0].embedding for d in done], dtype=np.float32)
    np.testing.assert_allclose(vectors, triton_path(keyed, texts, normalize=True), atol=1e-6)


def test_ten_thousand_texts_sent_concurrently_each_get_their_own_vector_in_order(keyed, frontend):
    # 2,000 different texts, each 5 times, shuffled: every neighbour of a text is another text
    distinct = [
        f"caption {i}: a {['cat', 'dog', 'bus', 'tree'][i % 4]} number {i * 7919 % 10007}" for i in range(2_000)
    ]
    order = np.random.default_rng(0).permutation(np.repeat(np.arange(len(distinct)), 5))
    texts = [distinct[i] for i in order]

    async def send():
        async with openai.AsyncOpenAI(base_url=frontend.url, api_key=KEY, max_retries=5, timeout=600) as client:
            singles = [client.embeddings.create(model=ENSEMBLE_MODEL, input=t) for t in texts[:9_000]]
            batches = [
                client.embeddings.create(model=ENSEMBLE_MODEL, input=texts[i : i + 50])
                for i in range(9_000, 10_000, 50)
            ]
            return await asyncio.gather(*singles, *batches)

    answers = asyncio.run(send())
    rows = [d.embedding for a in answers for d in sorted(a.data, key=lambda d: d.index)]
    assert len(rows) == len(texts)
    expected = triton_path(keyed, distinct, normalize=True)[order]
    np.testing.assert_allclose(np.array(rows, dtype=np.float32), expected, atol=1e-5)


def test_one_clients_bad_request_fails_alone(keyed, frontend):
    texts = [f"neighbour {i}" for i in range(64)]

    async def mixed():
        async with openai.AsyncOpenAI(base_url=frontend.url, api_key=KEY, max_retries=0) as client:
            good = [client.embeddings.create(model=ENSEMBLE_MODEL, input=t) for t in texts]
            bad = [client.embeddings.create(model=ENSEMBLE_MODEL, input=["ok", "z" * 1_000_001]) for _ in range(8)]
            return await asyncio.gather(*good, *bad, return_exceptions=True)

    answers = asyncio.run(mixed())
    good, bad = answers[: len(texts)], answers[len(texts) :]
    assert all(isinstance(b, openai.BadRequestError) and "input[1]" in str(b) for b in bad)
    vectors = np.array([a.data[0].embedding for a in good], dtype=np.float32)
    np.testing.assert_allclose(vectors, triton_path(keyed, texts, normalize=True), atol=1e-6)


def test_metrics_count_requests_texts_and_tokens(frontend, sdk):
    """A worker adds its counts to the metrics endpoint's samples every FLUSH_SECONDS."""
    sdk.embeddings.create(model=ENSEMBLE_MODEL, input=TEXTS)
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model=ENSEMBLE_MODEL, input=["ok", "z" * 1_000_001])
    texts = f'clip_openai_texts_total{{model="{ENSEMBLE_MODEL}"}}'
    refused = 'clip_openai_requests_total{route="/v1/embeddings",status="400"}'
    deadline = time.monotonic() + 10 * FLUSH_SECONDS
    while True:
        with urllib.request.urlopen(f"http://{frontend.host}:{frontend.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("clip_openai_")
        }
        if (samples.get(texts, 0) >= len(TEXTS) and samples.get(refused, 0) >= 1) or time.monotonic() > deadline:
            break
        time.sleep(FLUSH_SECONDS / 4)
    assert samples[texts] >= len(TEXTS)
    assert samples[f'clip_openai_prompt_tokens_total{{model="{ENSEMBLE_MODEL}"}}'] > 0
    assert samples['clip_openai_requests_total{route="/v1/embeddings",status="200"}'] >= 1
    assert samples[refused] >= 1


def test_readiness_fails_while_inference_is_wedged_and_503_while_triton_is_down():
    with LocalTritonServer.on_free_ports(config_name="cpu") as srv:
        options = ["--ready-timeout-s=1", "--ready-cache-s=0", "--request-timeout-s=2"]
        with LocalOpenAIFrontend.on_free_ports(srv.grpc_url, [ENSEMBLE_MODEL], workers=1, options=options) as front:
            assert front.health("ready")[0] == 200
            os.kill(srv.started_process.pid, signal.SIGSTOP)  # alive, answering nothing
            try:
                status, body = front.health("ready")
                assert status == 503 and "did not answer within 1 s" in body["reason"]
                assert front.health("live")[0] == 200
                status, answer, _ = post(front, {"model": ENSEMBLE_MODEL, "input": "a"}, key=None)
                assert status == 504 and answer["error"]["code"] == "timeout"
            finally:
                os.kill(srv.started_process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while front.health("ready")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert front.health("ready")[0] == 200
            srv.stop()
            status, answer, headers = post(front, {"model": ENSEMBLE_MODEL, "input": "a"}, key=None)
            assert status == 503 and answer["error"]["code"] == "triton_unavailable"
            assert_openai_error(answer, "not available")
            assert front.health("ready")[0] == 503 and front.health("live")[0] == 200
