"""The clip_text ensemble, through a real server, returns HF get_text_features for each text."""

import time

import numpy as np
import pytest

from clip_triton_build.spec import EMBED_DIM
from clip_triton_contract.names import CONTEXT_LENGTH
from clip_triton_ops.sample_texts import VARIED_64, captions
from helpers import get_text_features, inference_count, text_array, triton_infer, url_of


def embed(server, texts, protocol="grpc", model="clip_text"):
    (out,) = triton_infer(protocol, url_of(server, protocol), model, {"TEXT": text_array(texts)}, ["EMBEDDING"])
    return out


def tokenize(server, texts):
    (ids,) = triton_infer("grpc", server.grpc_url, "clip_tokenizer", {"TEXT": text_array(texts)}, ["input_ids"])
    return ids


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ensemble_equals_hf_get_text_features(server, hf_model, open_clip_tokenizer, protocol):
    out = embed(server, VARIED_64, protocol)
    assert out.shape == (64, EMBED_DIM) and out.dtype == np.float32
    # reference ids from open_clip's tokenizer, so the whole pipeline is checked end to end
    ids = open_clip_tokenizer(VARIED_64, context_length=CONTEXT_LENGTH).numpy()
    ref = get_text_features(hf_model, ids)
    assert np.abs(out - ref).max() <= 1e-4
    assert np.isfinite(out).all() and len({row.tobytes() for row in out}) > 50  # not one vector for all


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_python_tokenizer_first_variant_equals_hf_and_never_calls_the_cxx_tokenizer(
    hf_model, open_clip_tokenizer, protocol
):
    """--model-config-name=cpu_python_tokenizer: the ensemble's first step is the Python-backend
    tokenizer (the pipeline without the C++ one), with the same embeddings; the C++ tokenizer is
    loaded but tokenizes nothing."""
    from clip_triton import LocalTritonServer
    from clip_triton_build.repository import PYTHON_FIRST_SUFFIX
    from clip_triton_contract.names import PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL

    with LocalTritonServer.on_free_ports(config_name=f"cpu{PYTHON_FIRST_SUFFIX}") as srv:
        out = embed(srv, VARIED_64, protocol)
        ids = open_clip_tokenizer(VARIED_64, context_length=CONTEXT_LENGTH).numpy()
        assert np.abs(out - get_text_features(hf_model, ids)).max() <= 1e-4
        deadline = time.monotonic() + 10  # statistics are recorded after the responses go out
        while inference_count(srv, PYTHON_TOKENIZER_MODEL) < len(VARIED_64) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inference_count(srv, PYTHON_TOKENIZER_MODEL) == len(VARIED_64)
        assert inference_count(srv, TOKENIZER_MODEL) == 0


def test_same_embedding_alone_and_in_mixed_batch(server):
    texts = ["a", "a photo of a cat " * 3, "word " * 100, "", "\U0001f431 emoji", "a dog on the beach at sunset"]
    batch = embed(server, texts)
    for i, text in enumerate(texts):
        alone = embed(server, [text])
        assert np.abs(alone[0] - batch[i]).max() <= 1e-5, text


def test_over_77_tokens_is_truncated(server):
    base = "a photo of a cat " * 30  # far over 77 tokens
    a, b = embed(server, [base, base + " and then many other words that come after the cut"])
    assert np.abs(a - b).max() <= 1e-6
    ids = tokenize(server, [base])
    assert ids.shape == (1, CONTEXT_LENGTH)


def test_empty_and_whitespace_embed(server):
    out = embed(server, ["", "   ", "\t\n"])
    assert out.shape == (3, EMBED_DIM) and np.isfinite(out).all()
    assert np.abs(out[0] - out[1]).max() <= 1e-6  # whitespace cleans to empty


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_dtype_and_shape_are_refused_and_server_stays_up(server, protocol):
    from tritonclient.utils import InferenceServerException

    url = url_of(server, protocol)
    with pytest.raises(InferenceServerException, match=r"(?i)data ?type|dtype|TYPE_STRING|BYTES"):
        triton_infer(protocol, url, "clip_text", {"TEXT": np.zeros((2, 1), np.float32)}, ["EMBEDDING"])
    with pytest.raises(InferenceServerException, match=r"(?i)shape|dims"):
        triton_infer(protocol, url, "clip_text", {"TEXT": text_array(["a", "b"]).reshape(1, 2)}, ["EMBEDDING"])
    with pytest.raises(InferenceServerException, match=r"(?i)shape|dims"):
        triton_infer(protocol, url, "clip_text_encoder", {"input_ids": np.zeros((1, 10), np.int64)}, ["text_embeds"])
    with pytest.raises(InferenceServerException, match=r"(?i)UTF-8"):
        triton_infer(protocol, url, "clip_text", {"TEXT": text_array([b"\xff\xfe bad"])}, ["EMBEDDING"])
    assert server.is_ready()
    assert embed(server, ["still serving"], protocol).shape == (1, EMBED_DIM)


def test_dynamic_batching_joins_concurrent_requests(server):
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as http

    def stats():
        client = http.InferenceServerClient(server.http_url)
        try:
            s = client.get_inference_statistics("clip_text_encoder")["model_stats"][0]
            return s["inference_count"], s["execution_count"]
        finally:
            client.close()

    inferences0, executions0 = stats()
    texts = [f"concurrent request number {i}" for i in range(96)]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda t: embed(server, [t]), texts))
    # Triton records an execution's statistics after its responses go out: wait for the last ones
    deadline = time.monotonic() + 10
    while (inferences1 := stats()[0]) - inferences0 < len(texts) and time.monotonic() < deadline:
        time.sleep(0.05)
    inferences1, executions1 = stats()
    assert inferences1 - inferences0 == len(texts)
    assert executions1 - executions0 < len(texts), (inferences1 - inferences0, executions1 - executions0)
    # every concurrent request still got its own text's embedding
    serial = embed(server, texts)
    assert np.abs(np.concatenate(results) - serial).max() <= 1e-5


def test_torchscript_build_serves_the_onnx_embeddings(server, torchscript_server):
    onnx = embed(server, VARIED_64)
    torchscript = embed(torchscript_server, VARIED_64)
    assert np.abs(onnx - torchscript).max() <= 1e-4


def test_torchscript_length_buckets_keep_every_row(server, torchscript_server):
    """Batches over 64 rows run in length-sorted groups inside the TorchScript graph."""
    texts = captions(200, seed=3)
    assert np.abs(embed(server, texts) - embed(torchscript_server, texts)).max() <= 1e-4
