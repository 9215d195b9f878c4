"""Two classes of traffic on one encoder (clip_triton_contract.traffic): interactive requests are
answered ahead of queued bulk ones, a full queue refuses each extra request with its own error
(and a retrying client loses nothing), and a request's deadline in the queue is honoured.

A private server with one encoder instance, so that bulk requests queue behind one another. The
order is read from the order of completions, and "queued" from Triton's own statistics, never
from timing thresholds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient import grpc
from tritonclient.utils import InferenceServerException

from clip_triton import LocalTritonServer
from clip_triton_client import CLIPClient, DeadlineExceededError
from clip_triton_contract.names import ENCODER_MODEL, ENSEMBLE_MODEL, TOKENIZER_MODEL
from clip_triton_contract.traffic import BULK, INTERACTIVE, PRIORITY_LEVELS
from clip_triton_ops.deploy import model_config
from helpers import REPOSITORY, text_array

ROWS = 256  # the ensemble's max_batch_size: each bulk request fills one encoder batch alone
BULK_REQUESTS = 12


@pytest.fixture(scope="module")
def one_instance():
    with LocalTritonServer.on_free_ports(config_name="cpu", encoder_instances=1) as srv:
        yield srv


def bulk_texts(request: int) -> list[str]:
    return [f"bulk request {request}, caption {i}: a photo of a boat on a lake at dawn" for i in range(ROWS)]


def wait_tokenized(srv: LocalTritonServer, rows: int, timeout: float = 120) -> None:
    """Until the tokenizer has passed `rows` rows on (Triton's statistics): they are in the
    encoder's queue, or running."""
    deadline = time.monotonic() + timeout
    while rows_tokenized(srv) < rows:
        assert time.monotonic() < deadline, f"the tokenizer passed {rows_tokenized(srv)} of {rows} rows"
        time.sleep(0.01)


def rows_tokenized(srv: LocalTritonServer) -> int:
    client = grpc.InferenceServerClient(srv.grpc_url)
    try:
        stats = client.get_inference_statistics(TOKENIZER_MODEL, as_json=True, headers=srv.headers())
    finally:
        client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats["model_stats"])


class Requests:
    """Raw requests to the ensemble, each in its own thread and connection: what each got (its
    embeddings, or Triton's error) and the order they completed in."""

    def __init__(self, srv: LocalTritonServer):
        self.srv = srv
        self.order: list[str] = []
        self.results: dict = {}
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def send(self, name: str, texts: list[str], priority: int) -> None:
        thread = threading.Thread(target=self._infer, args=(name, texts, priority))
        thread.start()
        self.threads.append(thread)

    def send_bulk(self, count: int) -> None:
        for i in range(count):
            self.send(f"bulk{i}", bulk_texts(i), PRIORITY_LEVELS[BULK])

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def _infer(self, name: str, texts: list[str], priority: int) -> None:
        client = grpc.InferenceServerClient(self.srv.grpc_url)
        tensor = grpc.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(text_array(texts))
        try:
            out = client.infer(
                ENSEMBLE_MODEL, [tensor], outputs=[grpc.InferRequestedOutput("EMBEDDING")], priority=priority
            )
            self.results[name] = out.as_numpy("EMBEDDING")
        except InferenceServerException as exc:
            self.results[name] = exc
        finally:
            client.close()
            with self.lock:
                self.order.append(name)


def run_behind_a_bulk_queue(srv, single_priority: int) -> tuple[list[str], dict]:
    """BULK_REQUESTS bulk requests, then (once the tokenizer has passed all of them on to the
    encoder's queue) one single-text request at `single_priority`; the order they completed in."""
    requests = Requests(srv)
    before = rows_tokenized(srv)
    requests.send_bulk(BULK_REQUESTS)
    wait_tokenized(srv, before + BULK_REQUESTS * ROWS)  # all of them queued at the encoder
    requests.send("query", ["a query"], single_priority)
    requests.join()
    return requests.order, requests.results


def test_an_interactive_request_is_answered_ahead_of_queued_bulk_ones(one_instance, server):
    order, results = run_behind_a_bulk_queue(one_instance, PRIORITY_LEVELS[INTERACTIVE])
    overtaken = len(order) - 1 - order.index("query")
    print(f"\n[figure] interactive behind {BULK_REQUESTS} queued bulk requests: completed ahead of {overtaken}")
    # the encoder runs one bulk batch while the query arrives (and may have formed the next):
    # every other queued bulk request finishes after it
    assert overtaken >= BULK_REQUESTS - 2
    with CLIPClient(server.grpc_url) as reference:
        assert np.abs(results["query"] - reference.encode(["a query"])).max() <= 1e-5
        for i in (0, BULK_REQUESTS - 1):  # bulk was answered too, and right
            assert np.abs(results[f"bulk{i}"][:4] - reference.encode(bulk_texts(i)[:4])).max() <= 1e-5


def test_the_same_request_marked_bulk_waits_its_turn(one_instance):
    """The contrast: at bulk priority it is one more bulk request and finishes behind them."""
    order, results = run_behind_a_bulk_queue(one_instance, PRIORITY_LEVELS[BULK])
    assert order.index("query") >= BULK_REQUESTS - 2
    assert all(isinstance(v, np.ndarray) for v in results.values())


def test_a_full_bulk_queue_refuses_each_extra_request_and_a_retrying_client_loses_nothing(one_instance, server):
    config = model_config(REPOSITORY, ENCODER_MODEL, "cpu")
    config.instance_group[0].count = 1
    bound = config.dynamic_batching.priority_queue_policy[PRIORITY_LEVELS[BULK]].max_queue_size
    config.dynamic_batching.priority_queue_policy[PRIORITY_LEVELS[BULK]].max_queue_size = 2
    admin = grpc.InferenceServerClient(one_instance.grpc_url)
    headers = one_instance.admin_headers("grpc")
    admin.load_model(ENCODER_MODEL, config=json_format.MessageToJson(config), headers=headers)
    try:
        requests = Requests(one_instance)
        requests.send_bulk(BULK_REQUESTS)
        requests.join()
        results = requests.results
        refused = [name for name, value in results.items() if isinstance(value, InferenceServerException)]
        assert refused and len(refused) < BULK_REQUESTS
        for name in refused:  # each its own error, saying why
            assert "Exceeds maximum queue size" in str(results[name])
        texts = [t for i in range(BULK_REQUESTS) for t in bulk_texts(i)]
        with CLIPClient(
            one_instance.grpc_url, traffic=BULK, batch_size=ROWS, concurrency=BULK_REQUESTS, retries=30, backoff=0.2
        ) as client:
            out = client.encode(texts)
        assert out.shape == (len(texts), 512) and np.isfinite(out).all()
        sample = list(range(0, len(texts), 301))
        with CLIPClient(server.grpc_url) as reference:
            assert np.abs(out[sample] - reference.encode([texts[i] for i in sample])).max() <= 1e-5
    finally:
        config.dynamic_batching.priority_queue_policy[PRIORITY_LEVELS[BULK]].max_queue_size = bound
        admin.load_model(ENCODER_MODEL, config=json_format.MessageToJson(config), headers=headers)
        admin.close()


def test_a_request_past_its_queue_deadline_fails_alone_and_is_not_retried(one_instance):
    requests = Requests(one_instance)
    before = rows_tokenized(one_instance)
    requests.send_bulk(4)
    wait_tokenized(one_instance, before + 4 * ROWS)
    with CLIPClient(one_instance.grpc_url, traffic=BULK, queue_timeout=0.001, retries=5) as client:
        with pytest.raises(DeadlineExceededError, match="Request timeout expired"):
            client.encode(["too late"])
    requests.join()
    assert all(isinstance(v, np.ndarray) for v in requests.results.values())  # its neighbours were answered
