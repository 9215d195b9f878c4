"""The frontend's Prometheus metrics (names prefixed clip_openai_), beside Triton's own.

uvicorn runs several worker processes: each writes its samples into PROMETHEUS_MULTIPROC_DIR
(python -m clip_openai makes one) and the metrics endpoint of the main process adds them up.

A request does not write them itself: each write to those shared files takes a lock and checks
the process id, and a request makes about ten of them, a tenth of a worker's CPU per single-text
request. Requests count into the worker's `TALLY` in memory instead, and the worker adds that to
the shared samples every FLUSH_SECONDS and when it stops (`flushing`): a sample reaches the
endpoint at most that late, well inside any scrape interval.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

REQUESTS = Counter("clip_openai_requests_total", "Requests answered, by route and HTTP status", ["route", "status"])
TEXTS = Counter("clip_openai_texts_total", "Texts embedded, by model", ["model"])
IMAGES = Counter("clip_openai_images_total", "Images embedded, by model", ["model"])
PROMPT_TOKENS = Counter("clip_openai_prompt_tokens_total", "Tokens the encoder read (usage.prompt_tokens)", ["model"])
LATENCY = Histogram(
    "clip_openai_request_seconds",
    "Time from the request's arrival to its answer, POST /v1/embeddings",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
)
TRITON_LATENCY = Histogram(
    "clip_openai_triton_seconds",
    "Time spent waiting on Triton, per request to /v1/embeddings",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60),
)
PENDING = Gauge("clip_openai_pending_requests", "Requests admitted and not yet answered", multiprocess_mode="livesum")
REJECTED = Counter("clip_openai_saturated_total", "Requests refused with 429 because max_pending was reached")


def registry() -> CollectorRegistry:
    """All workers' samples (the process must have PROMETHEUS_MULTIPROC_DIR set)."""
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


FLUSH_SECONDS = 1.0


class Tally:
    """One worker's counts since its last flush: counters by (metric, labels), histograms as
    counts per bucket and a sum."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[Counter, tuple[str, ...]], float] = defaultdict(float)
        self.observed: dict[Histogram, tuple[list[int], list[float]]] = {}

    def count(self, metric: Counter, *labels: str, amount: float = 1.0) -> None:
        self.counts[metric, labels] += amount

    def observe(self, metric: Histogram, seconds: float) -> None:
        found = self.observed.get(metric)
        if found is None:
            found = self.observed[metric] = ([0] * len(metric._upper_bounds), [0.0])
        buckets, total = found
        buckets[bisect.bisect_left(metric._upper_bounds, seconds)] += 1  # observe()'s: first bound >= it
        total[0] += seconds

    def flush(self) -> None:
        """Add what was counted to the shared samples; start counting afresh."""
        counts, self.counts = self.counts, defaultdict(float)
        observed, self.observed = self.observed, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)
        for histogram, (buckets, total) in observed.items():
            # prometheus_client's Histogram keeps a count per bucket (not cumulative) and a sum;
            # adding to them is what observe() does, once per observation
            for index, n in enumerate(buckets):
                if n:
                    histogram._buckets[index].inc(n)
            histogram._sum.inc(total[0])


TALLY = Tally()


@contextlib.asynccontextmanager
async def flushing(pending: Callable[[], int], seconds: float = FLUSH_SECONDS):
    """While the worker runs: TALLY reaches the shared samples every `seconds`, and once more at
    the end, with the worker's `pending()` requests as PENDING."""

    def flush() -> None:
        TALLY.flush()
        PENDING.set(pending())

    async def every() -> None:
        while True:
            await asyncio.sleep(seconds)
            flush()

    task = asyncio.get_running_loop().create_task(every())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        flush()
