"""Two classes of traffic, for a server that takes queries and bulk jobs at once (the encoder's and
the C++ tokenizer's configs spell the levels; the unit tests check that they agree).

- `interactive`: a user is waiting (one text, a few). Served first.
- `bulk`: a job over many texts (`clip-triton-embed`). Served in the room interactive requests leave.

They are Triton's request priorities (1 is served first) in the dynamic batchers of the encoder and
the C++ tokenizer: the ensemble hands a request's priority and deadline to its steps. The Python
tokenizer (texts the C++ one hands over; unbatched, so that a malformed request fails alone) takes
requests as they come. Each class has a bounded queue (the encoder's `priority_queue_policy`): a
request that finds its class's queue full is refused at once with UNAVAILABLE ("Exceeds maximum
queue size"), which the client retries with backoff. Every batch takes the queued interactive
requests first (at most the interactive queue's bound) and fills the rest of max_batch_size with
bulk ones, so bulk keeps a share of every batch and is never starved. A request that names no
class is `interactive` (the encoder's default_priority_level).
"""

from __future__ import annotations

INTERACTIVE = "interactive"
BULK = "bulk"
PRIORITY_LEVELS = {INTERACTIVE: 1, BULK: 2}  # Triton priority level of each class
DEFAULT_CLASS = INTERACTIVE


def priority_level(traffic: str) -> int:
    """Triton's priority level of a traffic class; ValueError names the classes."""
    try:
        return PRIORITY_LEVELS[traffic]
    except KeyError:
        raise ValueError(f"traffic must be one of {', '.join(PRIORITY_LEVELS)}, not {traffic!r}") from None
