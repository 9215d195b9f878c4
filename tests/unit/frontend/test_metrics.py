"""A worker's metrics: counted in memory per request, added to the shared samples in batches."""

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from clip_openai import metrics

BUCKETS = (0.001, 0.002, 0.005, 1)


def samples(metric) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metric.collect()
        for s in family.samples
        if not s.name.endswith("_created")  # when the metric was made, not what it counted
    }


def test_a_flushed_histogram_holds_what_observing_each_value_would():
    """Values on a bucket's bound, between bounds and past the last one land where observe() puts them."""
    observed = Histogram("observed_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    tallied = Histogram("tallied_seconds", "x", buckets=BUCKETS, registry=CollectorRegistry())
    tally = metrics.Tally()
    for value in (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.5, 1, 7, 30):
        observed.observe(value)
        tally.observe(tallied, value)
    assert samples(tallied)[("tallied_seconds_count", ())] == 0  # nothing shared before the flush
    tally.flush()
    as_observed = {(name.replace("observed", "tallied"), labels): v for (name, labels), v in samples(observed).items()}
    assert samples(tallied) == as_observed


def test_counts_reach_their_labels_once_per_flush_and_start_afresh():
    counter = Counter("requests", "x", ["route", "status"], registry=CollectorRegistry())
    tally = metrics.Tally()
    tally.count(counter, "/v1/embeddings", "200")
    tally.count(counter, "/v1/embeddings", "200", amount=2)
    tally.count(counter, "/v1/models", "404")
    tally.flush()
    tally.flush()  # an empty flush adds nothing
    got = samples(counter)
    assert got[("requests_total", (("route", "/v1/embeddings"), ("status", "200")))] == 3
    assert got[("requests_total", (("route", "/v1/models"), ("status", "404")))] == 1


def test_a_running_worker_flushes_on_its_own_and_once_more_when_it_stops(monkeypatch):
    """Counts reach the shared samples while the worker runs and when it stops; the pending gauge
    is the worker's own count of requests in flight."""
    counter = Counter("texts", "x", registry=CollectorRegistry())
    tally = metrics.Tally()
    monkeypatch.setattr(metrics, "TALLY", tally)

    async def worker():
        async with metrics.flushing(lambda: 3, seconds=0.01):
            tally.count(counter, amount=5)
            await asyncio.sleep(0.2)
            seen = samples(counter)[("texts_total", ())]
            tally.count(counter, amount=1)
        return seen

    assert asyncio.run(worker()) == 5
    assert samples(counter)[("texts_total", ())] == 6
    assert samples(metrics.PENDING)[("clip_openai_pending_requests", ())] == 3  # the worker's own count
