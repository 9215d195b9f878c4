"""The one table of what Triton's answers mean (clip_triton_contract.statuses), and the client and
the frontend reading it the same way."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from clip_openai.errors import from_grpc
from clip_triton_client import errors
from clip_triton_client.transport import _ERRORS, classify
from clip_triton_contract.statuses import Outcome, outcome

# What Triton 2.51 says, over gRPC and HTTP, and what it means.
TRITON_SAYS = [
    ("StatusCode.INVALID_ARGUMENT", "TEXT[3] is not valid UTF-8", Outcome.REJECTED),
    ("400", "input 'TEXT' has shape [2] but the model expects [-1, 1]", Outcome.REJECTED),
    ("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header 'x-api-key'", Outcome.DENIED),
    ("403", "This API is restricted", Outcome.DENIED),
    ("StatusCode.PERMISSION_DENIED", "", Outcome.DENIED),
    ("StatusCode.UNAVAILABLE", "Request for unknown model: 'clip_txt' is not found", Outcome.NOT_READY),
    ("400", "Request for unknown model: 'clip_txt' is not found", Outcome.NOT_READY),
    ("StatusCode.UNAVAILABLE", "Request for unknown model: 'clip_text' version 1 is not ready", Outcome.NOT_READY),
    ("StatusCode.NOT_FOUND", "", Outcome.NOT_READY),
    ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", Outcome.OVERLOADED),
    ("StatusCode.RESOURCE_EXHAUSTED", "", Outcome.OVERLOADED),
    ("429", "Too Many Requests", Outcome.OVERLOADED),
    ("StatusCode.UNAVAILABLE", "Request timeout expired", Outcome.QUEUE_DEADLINE),
    (
        "StatusCode.UNAVAILABLE",
        "in ensemble 'clip_text', clip_tokenizer_python did not answer within the tokenizer hand-over deadline "
        "of 60000 ms: this request is dropped (the model's other texts are still served)",
        Outcome.HANDOVER_DEADLINE,
    ),
    (
        "StatusCode.INTERNAL",
        "Failed to process the request(s) for model 'x', message: Stub process is not healthy.",
        Outcome.BACKEND_DOWN,
    ),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", Outcome.TIMEOUT),
    ("504", "Gateway Time-out", Outcome.TIMEOUT),
    (None, "timed out", Outcome.TIMEOUT),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", Outcome.UNAVAILABLE),
    ("503", "Service Unavailable", Outcome.UNAVAILABLE),
    ("StatusCode.INTERNAL", "CUDA out of memory", Outcome.SERVER_ERROR),
    ("500", "onnx runtime error 6", Outcome.SERVER_ERROR),
    (None, "something else", Outcome.SERVER_ERROR),
]


@pytest.mark.parametrize("status, message, meant", TRITON_SAYS)
def test_each_answer_of_triton_has_one_meaning(status, message, meant):
    assert outcome(status, message) is meant


def test_a_status_reads_the_same_as_grpc_s_enum_its_name_or_tritonclient_s_spelling():
    for spelling in (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "StatusCode.INVALID_ARGUMENT"):
        assert outcome(spelling, "") is Outcome.REJECTED
    assert outcome(404, "") is Outcome.NOT_READY


@pytest.mark.parametrize("status, message, meant", TRITON_SAYS)
def test_the_client_raises_what_the_table_says(status, message, meant):
    error = classify(InferenceServerException(message, status=status))
    assert type(error) is _ERRORS[meant] and error.outcome is meant and message in str(error)


def test_every_outcome_has_a_client_error_and_retryable_ones_are_retried():
    assert set(_ERRORS) == set(Outcome)
    retried = (errors.RetryableError, errors.ModelNotReadyError, errors.ServerError)  # client._with_retries
    for meant, error in _ERRORS.items():
        assert issubclass(error, retried) == meant.retryable, meant


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize("status, message, meant", [t for t in TRITON_SAYS if str(t[0]).startswith("StatusCode.")])
def test_the_frontend_answers_the_tables_http_status(status, message, meant):
    error = from_grpc(FakeRpcError(getattr(grpc.StatusCode, status.removeprefix("StatusCode.")), message), "clip_text")
    assert error.status == meant.http_status
    assert (error.status in (429, 503)) == ("retry-after" in error.headers)
