"""What Triton's answers mean to a caller: one table for the client and the OpenAI frontend.

Triton 2.51 reports some failures under a status that says less than its message (a missing key
over gRPC is UNAVAILABLE, a dead Python-backend stub INTERNAL, a request dropped at its queue
deadline UNAVAILABLE, an unknown model over HTTP 400), so its own messages are read first, then
the status: a gRPC code as grpc and tritonclient name it (`StatusCode.NAME` or `NAME`) or an HTTP
status (`"404"`). Each outcome says what the client raises, what the frontend answers and whether
the same request is worth sending again.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    # name = (the frontend's HTTP status, worth sending again as is, what it means)
    REJECTED = (400, False, "the request's content was refused: find the bad item, never resend it")
    # the frontend's own key was refused: the operator's to fix, so 500 and not the caller's 401
    DENIED = (500, False, "the key is missing or wrong (Triton's restricted APIs)")
    NOT_READY = (503, True, "the model is not loaded or not ready")
    OVERLOADED = (429, True, "the server's queue for this class is full")
    QUEUE_DEADLINE = (504, False, "the request waited in the queue past its deadline and was dropped, never run")
    # the tokenizer's hand-over to its Python fallback (native/clip_bpe/fallback.h): the same
    # request again needs the same hand-over, which just failed to answer in time
    HANDOVER_DEADLINE = (504, False, "a model inside the server the request was handed to did not answer in time")
    BACKEND_DOWN = (503, True, "a backend process died; a restart or another instance serves")
    TIMEOUT = (504, True, "no answer in time")
    UNAVAILABLE = (503, True, "the server is not reachable or not serving")
    SERVER_ERROR = (500, True, "the server failed on a well-formed request")

    def __init__(self, http_status: int, retryable: bool, meaning: str):
        self.http_status, self.retryable, self.meaning = http_status, retryable, meaning


# Triton's own words, checked first and in this order (lowercased substrings of its message).
MESSAGES: tuple[tuple[str, Outcome], ...] = (
    ("restricted", Outcome.DENIED),
    ("not healthy", Outcome.BACKEND_DOWN),
    ("stub process", Outcome.BACKEND_DOWN),
    ("request timeout expired", Outcome.QUEUE_DEADLINE),
    ("hand-over deadline", Outcome.HANDOVER_DEADLINE),
    ("exceeds maximum queue size", Outcome.OVERLOADED),
    ("unknown model", Outcome.NOT_READY),
    ("is not ready", Outcome.NOT_READY),
)
STATUSES: dict[str, Outcome] = {
    "INVALID_ARGUMENT": Outcome.REJECTED,
    "400": Outcome.REJECTED,
    "UNAUTHENTICATED": Outcome.DENIED,
    "PERMISSION_DENIED": Outcome.DENIED,
    "401": Outcome.DENIED,
    "403": Outcome.DENIED,
    "NOT_FOUND": Outcome.NOT_READY,
    "404": Outcome.NOT_READY,
    "RESOURCE_EXHAUSTED": Outcome.OVERLOADED,
    "429": Outcome.OVERLOADED,
    "DEADLINE_EXCEEDED": Outcome.TIMEOUT,
    "408": Outcome.TIMEOUT,
    "504": Outcome.TIMEOUT,
    "UNAVAILABLE": Outcome.UNAVAILABLE,
    "CANCELLED": Outcome.UNAVAILABLE,
    "ABORTED": Outcome.UNAVAILABLE,
    "502": Outcome.UNAVAILABLE,
    "503": Outcome.UNAVAILABLE,
}
# A failure with no status at all (a transport error inside the client library) that says so
NO_STATUS_TIMEOUT_WORDS = ("timed out", "deadline")


def outcome(status: object, message: str) -> Outcome:
    """What a failed call to Triton means: `status` is a gRPC code (its enum, `StatusCode.NAME` or
    `NAME`), an HTTP status (int or str), or None/"" when there is none."""
    lowered = message.lower()
    for words, meant in MESSAGES:
        if words in lowered:
            return meant
    code = str(getattr(status, "name", status) or "").removeprefix("StatusCode.")
    if code in STATUSES:
        return STATUSES[code]
    if not code and any(words in lowered for words in NO_STATUS_TIMEOUT_WORDS):
        return Outcome.TIMEOUT
    return Outcome.SERVER_ERROR
