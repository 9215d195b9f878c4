"""The client's own logic around its transport (clip_triton_client.client): what it retries, what
it raises once the retries are spent, and how a refused request is split to find the bad item.
The transport here is a stand-in that fails as scripted; tests/integration/test_client.py runs
the same paths against tritonserver."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from clip_triton_client import CLIPClient, InvalidItemError, QueueFullError, ServerError, ServerUnavailableError
from clip_triton_client.client import ModelInfo
from clip_triton_client.transport import classify


class ScriptedTransport:
    """infer() raises Triton's answers from `failures` in turn, then embeds each text as its length;
    a text containing "bad" is refused as Triton refuses a batch."""

    def __init__(self, failures=()):
        self.failures, self.calls = list(failures), []

    def infer(self, model, input_name, output_name, texts, priority=0, queue_timeout_us=None):
        self.calls.append(list(texts))
        if self.failures:
            status, message = self.failures.pop(0)
            raise classify(InferenceServerException(message, status=status))
        if any(b"bad" in t for t in texts):
            raise classify(InferenceServerException("TEXT[0] refused", status="StatusCode.INVALID_ARGUMENT"))
        return np.array([[len(t), 0.0] for t in texts], dtype=np.float32)


def client_with(transport: ScriptedTransport, **options) -> CLIPClient:
    client = CLIPClient("127.0.0.1:1", backoff=0.001, **options)
    client._info = ModelInfo("TEXT", "EMBEDDING", dim=2, max_batch_size=8, weights="pretrained")
    client._transport = lambda: transport  # type: ignore[method-assign]
    return client


def test_a_full_queue_is_retried_and_then_raised_as_queue_full():
    transport = ScriptedTransport([("StatusCode.UNAVAILABLE", "Exceeds maximum queue size")] * 3)
    with client_with(transport, retries=2) as client, pytest.raises(QueueFullError, match="at capacity"):
        client.encode(["a cat"])
    assert len(transport.calls) == 3


def test_a_full_queue_that_drains_within_the_retries_costs_nothing():
    transport = ScriptedTransport([("StatusCode.UNAVAILABLE", "Exceeds maximum queue size")] * 2)
    with client_with(transport, retries=2) as client:
        np.testing.assert_array_equal(client.encode(["a cat"]), [[5, 0]])


def test_a_server_fault_is_retried_and_then_raised_as_server_error():
    transport = ScriptedTransport([("StatusCode.INTERNAL", "CUDA out of memory")] * 2)
    with client_with(transport, retries=1) as client, pytest.raises(ServerError, match="2 time"):
        client.encode(["a cat"])


def test_no_server_is_raised_as_unavailable_after_the_retries():
    transport = ScriptedTransport([("StatusCode.UNAVAILABLE", "failed to connect to all addresses")] * 2)
    with client_with(transport, retries=1) as client, pytest.raises(ServerUnavailableError, match="2 attempt"):
        client.encode(["a cat"])


def test_a_refused_request_is_split_until_only_the_bad_item_fails():
    texts = ["one", "two", "a bad text", "four", "five"]
    with client_with(ScriptedTransport(), batch_size=8, sort_by_length=False) as client:
        with pytest.raises(InvalidItemError) as raised:
            client.encode(texts)
    assert list(raised.value.errors) == [2]
    result = raised.value.result
    np.testing.assert_array_equal(result[[0, 1, 3, 4]], [[3, 0], [3, 0], [4, 0], [4, 0]])
    assert np.isnan(result[2]).all()


def test_items_that_are_not_text_fail_alone_before_anything_is_sent():
    transport = ScriptedTransport()
    with client_with(transport) as client:
        result = client.encode(["a", 3, "bc"], on_error="skip")
    np.testing.assert_array_equal(result[[0, 2]], [[1, 0], [2, 0]])
    assert np.isnan(result[1]).all() and transport.calls == [[b"a", b"bc"]]
