"""Errors as OpenAI's API sends them, and Triton's gRPC statuses sorted into them.

Every error a client sees is an `APIError`: an HTTP status and the body OpenAI's SDK parses,
`{"error": {"message", "type", "param", "code"}}`. The SDK raises by status (400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError, 5xx
InternalServerError) and retries 429 and 5xx itself.
"""

from __future__ import annotations

import random

import grpc
import orjson

from clip_triton_contract.statuses import Outcome, outcome

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})
        self.item: int | None = None  # item_error's: the index it names, and what is wrong with it
        self.detail = ""

    def renumbered(self, rows: list[int]) -> "APIError":
        """An item's 400 naming it by rows[item] (its place in `input`) instead; any other error as it is."""
        return self if self.item is None else item_error(rows[self.item], self.detail)

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def item_error(index: int, detail: str) -> APIError:
    """The 400 for input[index]: `detail` says what is wrong with it."""
    error = bad_request(f"input[{index}]: {detail}", param="input")
    error.item, error.detail = index, detail
    return error


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist", param="model", code="model_not_found")


def retry_headers() -> dict[str, str]:
    """When to come back: `Retry-After: 1` for every HTTP client, and `retry-after-ms`, which
    OpenAI's SDK reads first, drawn anew for each refusal. Clients refused in one burst then
    return spread over that second instead of in one burst again, which a small worker would
    refuse again for all but its few free places."""
    return {"retry-after": "1", "retry-after-ms": str(random.randint(100, 1000))}


def saturated(what: str) -> APIError:
    return APIError(
        Outcome.OVERLOADED.http_status,
        f"the server is saturated ({what}); retry after a short wait",
        "rate_limit_error",
        code="server_saturated",
        headers=retry_headers(),
    )


def unavailable(message: str) -> APIError:
    return APIError(
        Outcome.UNAVAILABLE.http_status, message, SERVER_ERROR, code="triton_unavailable", headers=retry_headers()
    )


def from_grpc(exc: grpc.aio.AioRpcError, model: str) -> APIError:
    """What a failed request to Triton means to the OpenAI client, by the service's one table
    (clip_triton_contract.statuses; REJECTED is the caller's: triton.py finds the item it names
    before it gets here)."""
    code, details = exc.code(), exc.details() or ""
    meant = outcome(code, details)
    if meant is Outcome.REJECTED:
        return bad_request(details, param="input")
    if meant is Outcome.OVERLOADED:
        return saturated(f"the inference server's queue is full: {details}")
    if meant is Outcome.NOT_READY:
        return unavailable(f"model `{model}` is not ready on the inference server: {details}")
    if meant in (Outcome.UNAVAILABLE, Outcome.BACKEND_DOWN):
        return unavailable(f"the inference server is not available: {details}")
    if meant is Outcome.QUEUE_DEADLINE:
        message = f"the request waited in the inference server's queue too long: {details}"
    elif meant is Outcome.HANDOVER_DEADLINE:
        message = f"the inference server dropped the request at a deadline: {details}"
    elif meant is Outcome.TIMEOUT:
        message = f"the inference server did not answer in time: {details}"
    elif meant is Outcome.DENIED:
        message = f"the frontend's key was refused by the inference server: {details}"
    else:
        message = f"the inference server failed: {code.name}: {details}"
    return APIError(meant.http_status, message, SERVER_ERROR, code="timeout" if meant.http_status == 504 else None)
