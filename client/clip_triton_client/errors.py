"""Exceptions the client raises. Every one says what to do next."""

from __future__ import annotations

from clip_triton_contract.statuses import Outcome


class CLIPClientError(RuntimeError):
    # what Triton's answer meant (clip_triton_contract.statuses), where the error came from one
    outcome: Outcome | None = None


class ServerUnavailableError(CLIPClientError):
    """No server answered at the URL (after the configured retries)."""


class QueueFullError(ServerUnavailableError):
    """The server stayed at capacity through the configured retries (Triton's "Exceeds maximum
    queue size" for this traffic class, gRPC RESOURCE_EXHAUSTED, a proxy's HTTP 429): try later, or
    with fewer requests in flight."""


class DeadlineExceededError(CLIPClientError, TimeoutError):
    """The request passed a deadline inside the server and was dropped: it waited in the queue
    past its `queue_timeout`, or a model it was handed to (the Python tokenizer) did not answer
    by the hand-over's deadline. Not retried: the deadline has passed."""


class AccessDeniedError(CLIPClientError, PermissionError):
    """The server requires an access key (Triton restricted APIs) and none or a wrong one was sent."""


class ModelNotReadyError(CLIPClientError):
    """The server answers, but the model is not loaded or not ready."""


class ServerError(CLIPClientError):
    """The server failed on a well-formed request (HTTP 500, gRPC INTERNAL/UNKNOWN: out of memory,
    a backend fault), after the configured retries. Never a verdict on the items sent."""


# Raised between the transport and the client; they never reach the caller.
class RetryableError(CLIPClientError):
    """Connection refused/reset, UNAVAILABLE, timeouts, overload: worth another try."""


class RequestRejectedError(CLIPClientError):
    """The server refused this request's content (HTTP 400, gRPC INVALID_ARGUMENT): not worth a
    retry as is; the client isolates the offending item instead."""


class InvalidItemError(CLIPClientError, ValueError):
    """Some input items could not be embedded. The others were embedded.

    `errors` maps each bad item's index in the input to the reason; `result` holds what the call
    would have returned, with the bad items left without an embedding (NaN rows for strings,
    `.embedding` untouched for documents)."""

    def __init__(self, errors: dict[int, str], result=None):
        self.errors = dict(sorted(errors.items()))
        self.result = result
        shown = "; ".join(f"item {i}: {msg}" for i, msg in list(self.errors.items())[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        super().__init__(
            f"{len(self.errors)} item(s) could not be embedded, the others were: {shown}{more}. "
            "The partial result is in `.result`; pass on_error='skip' to get it without an exception."
        )
