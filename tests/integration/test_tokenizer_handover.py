"""The C++ tokenizer's hand-over to the Python tokenizer keeps a deadline (native/clip_bpe/fallback.h):
against a real tritonserver whose fallback model hangs without dying (models/hanging_tokenizer,
served in a copy of the built repository), a request that needs the fallback fails alone and by
its deadline, with an error that says so, and the tokenizer goes on serving plain texts."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from clip_triton import LocalTritonServer
from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_client import CLIPClient, DeadlineExceededError
from clip_triton_contract.names import (
    ENSEMBLE_MODEL,
    FALLBACK_PARAMETER,
    FALLBACK_TIMEOUT_PARAMETER,
    PYTHON_TOKENIZER_MODEL,
    TOKENIZER_MODEL,
)
from helpers import text_array

HANGING = "hanging_tokenizer"
DEADLINE_MS = 1500
PLAIN = "a photo of a cat"
NEEDS_FTFY = "caf\u00e9 cr\u00e8me"  # not plain (clip_bpe.h): only the Python tokenizer cleans it


def parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


@pytest.fixture(scope="module")
def hanging_fallback(tmp_path_factory):
    """A server whose clip_tokenizer hands over to a Python model that hangs until released."""
    repository = tmp_path_factory.mktemp("handover") / "repository"
    shutil.copytree(BUILT_REPOSITORY, repository, copy_function=os.symlink)  # the weights stay where they are
    config = repository / TOKENIZER_MODEL / "config.pbtxt"
    text = config.resolve().read_text()
    config.unlink()
    kept = [line for line in text.splitlines(keepends=True) if FALLBACK_PARAMETER not in line]
    config.write_text(
        "".join(kept) + parameter(FALLBACK_PARAMETER, HANGING) + parameter(FALLBACK_TIMEOUT_PARAMETER, str(DEADLINE_MS))
    )
    hanging = repository / HANGING
    (hanging / "1").mkdir(parents=True)
    python_config = (BUILT_REPOSITORY / PYTHON_TOKENIZER_MODEL / "config.pbtxt").read_text()
    (hanging / "config.pbtxt").write_text(python_config.replace(f'"{PYTHON_TOKENIZER_MODEL}"', f'"{HANGING}"'))
    shutil.copy(Path(__file__).parent / "models" / HANGING / "1" / "model.py", hanging / "1" / "model.py")
    srv = LocalTritonServer.on_free_ports(repository=repository, config_name="cpu")
    with srv:
        try:
            yield srv
        finally:
            (repository / "release").touch()  # so the stubs end and the server stops cleanly


def tokenize(srv, texts, timeout_us: int = 0):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(srv.grpc_url)
    try:
        tensor = grpcclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(text_array(texts))
        # the server's own deadline, not gRPC's: a hand-over without one would hang past 30 s
        result = client.infer(TOKENIZER_MODEL, [tensor], timeout=timeout_us or None, client_timeout=30)
        return result.as_numpy("input_ids")
    finally:
        client.close()


def test_a_text_only_python_can_clean_fails_by_the_deadline_and_says_so(hanging_fallback):
    with pytest.raises(InferenceServerException) as failed:
        tokenize(hanging_fallback, [PLAIN, NEEDS_FTFY])
    message = failed.value.message()
    assert failed.value.status() == "StatusCode.UNAVAILABLE"
    assert f"{HANGING} did not answer within the tokenizer hand-over deadline of {DEADLINE_MS} ms" in message


def test_the_request_s_own_timeout_is_the_hand_over_s_deadline(hanging_fallback):
    with pytest.raises(InferenceServerException) as failed:
        tokenize(hanging_fallback, [NEEDS_FTFY], timeout_us=400_000)
    assert "hand-over deadline of 400 ms" in failed.value.message()


def test_plain_texts_beside_a_stuck_hand_over_are_served(hanging_fallback):
    """Sent together, the two requests may share an execution: the stuck one fails alone."""
    with ThreadPoolExecutor(4) as pool:
        stuck = [pool.submit(tokenize, hanging_fallback, [NEEDS_FTFY]) for _ in range(2)]
        plain = [pool.submit(tokenize, hanging_fallback, [PLAIN, f"{PLAIN} {n}"]) for n in range(6)]
        for future in plain:
            assert future.result().shape == (2, 77)
        for future in stuck:
            with pytest.raises(InferenceServerException, match="hand-over deadline"):
                future.result()
    assert tokenize(hanging_fallback, [PLAIN]).shape == (1, 77)  # and after them


def test_the_client_raises_a_deadline_error_and_does_not_resend(hanging_fallback):
    with CLIPClient(hanging_fallback.grpc_url, model=ENSEMBLE_MODEL, retries=3) as client:
        assert client.encode([PLAIN]).shape[0] == 1
        with pytest.raises(DeadlineExceededError, match="hand-over deadline"):
            client.encode([NEEDS_FTFY])
