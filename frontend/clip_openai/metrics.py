"""The frontend's Prometheus metrics (names prefixed clip_openai_), beside Triton's own.

uvicorn runs several worker processes: each writes its samples into PROMETHEUS_MULTIPROC_DIR
(python -m clip_openai makes one) and the metrics endpoint of the main process adds them up.
"""

from __future__ import annotations

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
