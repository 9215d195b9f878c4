"""The frontend's calls to Triton (clip_openai.triton): requests grouped into shared calls, a
refused call split until the bad request is found, cancelled requests dropped, each answer in
order. Triton here is an in-process fake of its gRPC service (tritonclient's own protobuf
messages on a real grpc.aio server), so that the grouping, which a real server hides, can be
counted call by call; tests/integration/test_openai.py runs the same code against tritonserver."""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from clip_openai.errors import APIError
from clip_openai.settings import Settings
from clip_openai.triton import Triton
from clip_triton_contract.names import EMBEDDING_OUTPUT, SIBLINGS_PARAMETER, TEXT_INPUT, TOKEN_COUNT_OUTPUT
from clip_triton_contract.traffic import BULK, INTERACTIVE, PRIORITY_LEVELS

DIM = 4
MAX_BATCH = 8


def texts_of(request: service_pb2.ModelInferRequest) -> list[bytes]:
    raw, texts = request.raw_input_contents[0], []
    while raw:
        (length,) = struct.unpack_from("<I", raw)
        texts.append(raw[4 : 4 + length])
        raw = raw[4 + length :]
    return texts


def vector(text: bytes) -> list[float]:
    """What the fake embeds a text as: its length and first byte, so that rows can be told apart."""
    return [float(len(text)), float(text[0] if text else 0), 1.0, 0.0]


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """One CLIP ensemble, `clip_text`: texts that contain b"bad" are refused (INVALID_ARGUMENT,
    the whole call, as Triton refuses a batch); `gate` holds every call until it is set."""

    def __init__(self):
        self.calls: list[tuple[list[bytes], int]] = []  # (texts, priority) of each ModelInfer
        self.gate = asyncio.Event()
        self.gate.set()

    async def ModelConfig(self, request, context):
        config = model_config_pb2.ModelConfig(name=request.name, max_batch_size=MAX_BATCH)
        config.output.add(name=EMBEDDING_OUTPUT, dims=[DIM])
        config.output.add(name=TOKEN_COUNT_OUTPUT, dims=[1])
        config.parameters[SIBLINGS_PARAMETER].string_value = request.name
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context):
        texts = texts_of(request)
        assert request.inputs[0].name == TEXT_INPUT and list(request.inputs[0].shape) == [len(texts), 1]
        self.calls.append((texts, request.parameters["priority"].uint64_param))
        await self.gate.wait()
        bad = [i for i, t in enumerate(texts) if b"bad" in t]
        if bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"TEXT[{bad[0]}] is not a text this model takes")
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name=EMBEDDING_OUTPUT, datatype="FP32", shape=[len(texts), DIM])
        response.outputs.add(name=TOKEN_COUNT_OUTPUT, datatype="INT64", shape=[len(texts), 1])
        response.raw_output_contents.append(np.array([vector(t) for t in texts], dtype="<f4").tobytes())
        response.raw_output_contents.append(np.array([len(t) + 2 for t in texts], dtype="<i8").tobytes())
        return response


def run(scenario):
    """scenario(triton, fake) on a fresh event loop, against a fresh fake on a free port; returns
    (its result, the fake)."""

    async def main():
        fake = FakeTriton()
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        settings = Settings(triton_url=f"127.0.0.1:{port}", calls_in_flight=1, channels=1, request_timeout_s=10)
        triton = Triton(settings)
        try:
            return await scenario(triton, fake), fake
        finally:
            await triton.close()
            await server.stop(None)

    return asyncio.run(main())


def expected(texts: list[bytes]) -> np.ndarray:
    return np.array([vector(t) for t in texts], dtype=np.float32)


def behind_a_call(requests: list[list[bytes]], cancelled: tuple[int, ...] = ()):
    """Sends [b"first"], then each of `requests` while that call holds the one slot, cancels the
    requests at `cancelled` before the slot frees, then lets every call through. Returns (the first
    request's answer, each request's answer or exception), and the fake."""

    async def scenario(triton, fake):
        model = await triton.model("clip_text")
        fake.gate.clear()
        first = asyncio.ensure_future(triton.embed(model, [b"first"]))
        await asyncio.sleep(0.05)  # the first call is in flight: its one slot is taken
        waiting = [asyncio.ensure_future(triton.embed(model, texts)) for texts in requests]
        await asyncio.sleep(0.05)
        for index in cancelled:  # the caller went away while its request waited for a slot
            waiting[index].cancel()
        fake.gate.set()
        return await first, await asyncio.gather(*waiting, return_exceptions=True)

    return run(scenario)


def test_requests_that_arrive_while_a_call_is_in_flight_share_the_next_call():
    requests = [[b"t%d" % i, b"u%d" % i] for i in range(3)]
    (first, answers), fake = behind_a_call(requests)
    assert [texts for texts, _ in fake.calls] == [[b"first"], [b"t0", b"u0", b"t1", b"u1", b"t2", b"u2"]]
    np.testing.assert_array_equal(first[0], expected([b"first"]))
    assert first[1] == 7  # token counts: the fake's len + 2
    for texts, (vectors, tokens) in zip(requests, answers):
        np.testing.assert_array_equal(vectors, expected(texts))
        assert tokens == 2 * 4


def test_a_shared_call_never_carries_more_than_the_models_max_batch_size():
    requests = [[b"%d" % i] * 3 for i in range(5)]  # 15 texts behind the first
    (_, answers), fake = behind_a_call(requests)
    sizes = [len(texts) for texts, _ in fake.calls]
    assert sizes[0] == 1 and all(size <= MAX_BATCH for size in sizes) and sum(sizes) == 16
    for texts, (vectors, _) in zip(requests, answers):
        np.testing.assert_array_equal(vectors, expected(texts))


def test_a_refused_shared_call_fails_only_the_request_that_holds_the_bad_text():
    (_, (good, bad, after)), _ = behind_a_call([[b"good", b"fine"], [b"ok", b"ok", b"a bad one", b"ok"], [b"after"]])
    np.testing.assert_array_equal(good[0], expected([b"good", b"fine"]))
    np.testing.assert_array_equal(after[0], expected([b"after"]))
    assert isinstance(bad, APIError) and bad.status == 400 and bad.param == "input"
    assert bad.message.startswith("input[2]: ")  # bisected down to the text Triton refuses on its own


def test_a_cancelled_request_is_never_sent_and_its_neighbours_are_answered():
    (_, (gone, kept)), fake = behind_a_call([[b"gone"], [b"kept"]], cancelled=(0,))
    assert isinstance(gone, asyncio.CancelledError)
    np.testing.assert_array_equal(kept[0], expected([b"kept"]))
    assert [texts for texts, _ in fake.calls] == [[b"first"], [b"kept"]]


def test_more_texts_than_a_call_takes_are_split_and_answered_in_order():
    texts = [b"text %02d" % i for i in range(3 * MAX_BATCH + 1)]

    async def scenario(triton, fake):
        model = await triton.model("clip_text")
        return await triton.embed(model, texts)

    (vectors, tokens), fake = run(scenario)
    np.testing.assert_array_equal(vectors, expected(texts))
    assert tokens == sum(len(t) + 2 for t in texts)
    assert all(len(call) <= MAX_BATCH for call, _ in fake.calls)


def test_bulk_requests_travel_at_bulks_priority_in_calls_of_their_own():

    async def scenario(triton, fake):
        model = await triton.model("clip_text")
        fake.gate.clear()
        calls = [
            asyncio.ensure_future(triton.embed(model, [b"query"])),
            asyncio.ensure_future(triton.embed(model, [b"job"], BULK)),
        ]
        await asyncio.sleep(0.05)
        fake.gate.set()
        return await asyncio.gather(*calls)

    _, fake = run(scenario)
    assert sorted(fake.calls) == [([b"job"], PRIORITY_LEVELS[BULK]), ([b"query"], PRIORITY_LEVELS[INTERACTIVE])]
