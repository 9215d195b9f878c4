"""Bad input, faults and cancellation against real tritonservers: clear errors, nothing lost."""

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from clip_triton import LocalTritonServer
from clip_triton_build.spec import PAD_ID, VIT_B32_TEXT_CONFIG
from clip_triton_client import CLIPClient, InvalidItemError, ServerUnavailableError
from helpers import text_array, triton_infer, url_of

VOCAB_SIZE = VIT_B32_TEXT_CONFIG["vocab_size"]

PROTOCOLS = ["grpc", "http"]


def embed(srv, texts, protocol="grpc"):
    (out,) = triton_infer(protocol, url_of(srv, protocol), "clip_text", {"TEXT": text_array(texts)}, ["EMBEDDING"])
    return out


def ids_for(srv, texts):
    (ids,) = triton_infer("grpc", srv.grpc_url, "clip_tokenizer", {"TEXT": text_array(texts)}, ["input_ids"])
    return ids


# -- bad input -----------------------------------------------------------------------------------
DEFINED_RESULTS = {
    "empty": "",
    "whitespace": " \t\n ",
    "nul bytes": "a\x00b\x00",
    "rtl override": "\u202eevil\u202c text",
    "noncharacters": "\ufffe\uffff\U0010ffff",
    "private use": "\ue000\uf8ff",
    "zalgo": "z" + "\u0300" * 500,
    "emoji zwj": "\U0001f469\u200d\U0001f4bb" * 50,
    "lone combining": "\u0301",
    "bidi mix": "abc \u05d0\u05d1\u05d2 123 \u0627\u0644\u0639",
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unusual_text_gets_a_defined_result(server, protocol):
    texts = list(DEFINED_RESULTS.values())
    out = embed(server, texts, protocol)
    assert out.shape == (len(texts), 512) and np.isfinite(out).all()
    for text, row in zip(texts, out):  # and the same answer alone
        assert np.abs(embed(server, [text], protocol)[0] - row).max() <= 1e-5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_100k_character_text_is_truncated_not_refused(server, protocol):
    long_text = ("a photo of a very long caption " * 4000)[:100_000]
    t0 = time.monotonic()
    out = embed(server, [long_text], protocol)
    assert time.monotonic() - t0 < 30
    prefix = embed(server, [long_text[:2000]], protocol)  # CLIP reads the first 75 tokens only
    assert np.abs(out - prefix).max() <= 1e-5


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "model,name,array,pattern",
    [
        ("clip_text", "TEXT", np.array([[b"ok"], [b"\xc3\x28 invalid"]], dtype=np.object_), r"TEXT\[1\].*UTF-8"),
        ("clip_tokenizer", "TEXT", np.array([[b"\xff"]], dtype=np.object_), r"UTF-8"),
        ("clip_text", "TEXT", np.zeros((2, 1), np.int32), r"(?i)data ?type|TYPE_STRING|BYTES"),
        ("clip_text", "TEXT", np.array([b"no batch dim"], dtype=np.object_), r"(?i)shape|dims"),
        ("clip_text", "TEXT", np.array([[b"a", b"b"]], dtype=np.object_), r"(?i)shape|dims"),
        ("clip_text", "TEXT", np.array([[b"x"]] * 257, dtype=np.object_), r"(?i)batch.?size|max"),
        ("clip_text_encoder", "input_ids", np.zeros((1, 76), np.int64), r"(?i)shape|dims"),
        ("clip_text_encoder", "input_ids", np.zeros((1, 77), np.float32), r"(?i)data ?type|INT64"),
    ],
)
def test_bad_requests_get_clear_errors_and_the_server_stays_up(server, protocol, model, name, array, pattern):
    output = {"clip_text": "EMBEDDING", "clip_tokenizer": "input_ids", "clip_text_encoder": "text_embeds"}[model]
    with pytest.raises(InferenceServerException, match=pattern):
        triton_infer(protocol, url_of(server, protocol), model, {name: array}, [output])
    assert server.is_ready()
    assert embed(server, ["still fine"], protocol).shape == (1, 512)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_empty_batch_is_refused_as_a_bad_request(server, protocol):
    with pytest.raises(InferenceServerException, match=r"string elements for inference input 'TEXT'") as info:
        embed(server, [], protocol)
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    assert server.is_ready()


def pad_ids(n: int = 1) -> np.ndarray:
    return np.full((n, 77), PAD_ID, np.int64)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("bad_id", [10**6, VOCAB_SIZE, -1, -VOCAB_SIZE, -(2**62)])
def test_encoder_reads_ids_outside_the_vocabulary_as_the_pad_id(server, protocol, bad_id):
    """The encoder is the ensemble's internal step; a direct caller's bad ids cannot be refused
    one request at a time (the C++ ORT backend fails a whole batch on an error), so the graph
    reads them as the pad id: a defined result, never a batch-mate's failure, never a wrap-around."""
    url = url_of(server, protocol)
    (expected,) = triton_infer(protocol, url, "clip_text_encoder", {"input_ids": pad_ids()}, ["text_embeds"])
    ids = ids_for(server, ["a photo of a cat"])
    ids_bad = ids.copy()
    ids_bad[0, 3] = bad_id
    ids_pad = ids.copy()
    ids_pad[0, 3] = PAD_ID
    (bad_row,) = triton_infer(
        protocol, url, "clip_text_encoder", {"input_ids": np.full((1, 77), bad_id, np.int64)}, ["text_embeds"]
    )
    (inner_bad, inner_pad) = [
        triton_infer(protocol, url, "clip_text_encoder", {"input_ids": a}, ["text_embeds"])[0]
        for a in (ids_bad, ids_pad)
    ]
    assert np.abs(bad_row - expected).max() <= 1e-6
    assert np.abs(inner_bad - inner_pad).max() <= 1e-6


@pytest.mark.parametrize(
    "model,bad",
    [
        ("clip_text", {"TEXT": np.array([[b"\xff\xfe broken"]], dtype=np.object_)}),
        ("clip_text_encoder", {"input_ids": np.full((1, 77), 10**6, np.int64)}),
    ],
)
def test_neighbours_of_a_bad_request_in_one_dynamic_batch_get_their_answers(server, model, bad):
    """Many good requests and bad ones at once: the batcher mixes them; the good ones all get
    their own answers. Bad text is refused request by request; bad ids get the pad id's result."""
    good_texts = [f"neighbour number {i}" for i in range(48)]
    expected = embed(server, good_texts)
    good_ids = ids_for(server, good_texts)
    results, errors, bad_results = {}, [], []

    def good(i):
        if model == "clip_text":
            results[i] = embed(server, [good_texts[i]])[0]
        else:
            (results[i],) = triton_infer(
                "grpc", server.grpc_url, model, {"input_ids": good_ids[i : i + 1]}, ["text_embeds"]
            )

    def bad_request():
        try:
            (out,) = triton_infer(
                "grpc", server.grpc_url, model, bad, ["EMBEDDING" if model == "clip_text" else "text_embeds"]
            )
            bad_results.append(out)
        except InferenceServerException as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=good, args=(i,)) for i in range(48)]
    threads += [threading.Thread(target=bad_request) for _ in range(6)]
    order = np.random.default_rng(0).permutation(len(threads))
    for k in order:
        threads[k].start()
    for t in threads:
        t.join()
    got = np.stack([np.asarray(results[i]).reshape(-1) for i in range(48)])
    assert np.abs(got - expected).max() <= 1e-5
    if model == "clip_text":
        assert len(errors) == 6 and all("UTF-8" in e for e in errors), errors
    else:
        (pad_result,) = triton_infer("grpc", server.grpc_url, model, {"input_ids": pad_ids()}, ["text_embeds"])
        assert not errors and len(bad_results) == 6
        assert max(np.abs(r - pad_result).max() for r in bad_results) <= 1e-5


# -- faults ------------------------------------------------------------------------------------------
@pytest.fixture
def private_server():
    srv = LocalTritonServer.on_free_ports()
    srv.start()
    yield srv
    srv.stop()


def encode_during(srv, texts, fault, **client_options):
    """Encode `texts` through the client while `fault` runs in a thread; (embeddings, seconds)."""
    thread = threading.Thread(target=fault)
    thread.start()
    t0 = time.monotonic()
    with CLIPClient(srv.grpc_url, batch_size=32, backoff=0.5, **client_options) as c:
        out = c.encode(texts)
    thread.join()
    return out, time.monotonic() - t0


def test_killed_tokenizer_stub_under_load_loses_nothing(private_server, server):
    srv = private_server
    srv.supervise(interval=0.5)
    texts = [f"document {i} about {['cats', 'dogs', 'cars'][i % 3]}" for i in range(3000)]
    stubs = [pid for pid in srv.stub_pids() if "clip_tokenizer" in open(f"/proc/{pid}/cmdline").read()]
    assert stubs

    def kill_soon():
        time.sleep(1.0)
        os.kill(stubs[0], signal.SIGKILL)

    out, seconds = encode_during(srv, texts, kill_soon, concurrency=8, retries=12)
    print(
        f"\n[figure] stub killed under load: {len(texts)} docs in {seconds:.1f}s, "
        f"server restarts {srv.restarts}, rows embedded {int(np.isfinite(out).all(axis=1).sum())}"
    )
    assert srv.restarts >= 1  # Triton 2.51 never restarts a dead stub itself: the supervisor did
    assert np.isfinite(out).all()
    sample = list(range(0, 3000, 150))
    assert np.abs(out[sample] - embed(server, [texts[i] for i in sample])).max() <= 1e-5


def test_server_restart_mid_run_every_document_once_in_order(private_server, server):
    srv = private_server
    texts = [f"restart test {i}: {'short' if i % 2 else 'a somewhat longer caption about a boat'}" for i in range(2500)]
    done = threading.Event()

    def restart_soon():
        time.sleep(1.5)
        srv.stop(timeout=10)
        time.sleep(2.0)
        srv.start()
        done.set()

    out, seconds = encode_during(srv, texts, restart_soon, concurrency=4, retries=15)
    print(
        f"\n[figure] server restarted mid-run: {len(texts)} docs in {seconds:.1f}s, "
        f"rows embedded {int(np.isfinite(out).all(axis=1).sum())}, distinct {len({r.tobytes() for r in out})}"
    )
    assert done.is_set()
    assert out.shape == (2500, 512) and np.isfinite(out).all()
    sample = list(range(0, 2500, 125)) + [2499]
    assert np.abs(out[sample] - embed(server, [texts[i] for i in sample])).max() <= 1e-5
    assert len({row.tobytes() for row in out}) == 2500  # one distinct embedding per document


def test_client_timeouts_fail_clearly_and_leave_nothing_hanging(server):
    before = threading.active_count()
    with CLIPClient(server.grpc_url, timeout=0.001, retries=1, backoff=0.01) as c:
        with pytest.raises(ServerUnavailableError, match=r"(?i)deadline|timed? ?out"):
            c.encode(["word " * 60] * 64)
    time.sleep(0.5)
    assert threading.active_count() <= before
    assert embed(server, ["after the timeouts"]).shape == (1, 512)


def test_cancelled_async_encode_leaves_nothing_hanging(server):
    before = threading.active_count()

    async def main():
        c = CLIPClient(server.grpc_url, batch_size=8, concurrency=2)
        task = asyncio.create_task(c.aencode([f"cancel me {i}" for i in range(2000)]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        c.close()

    asyncio.run(main())
    time.sleep(1.0)
    assert threading.active_count() <= before + 1
    assert embed(server, ["after the cancel"]).shape == (1, 512)


def test_invalid_items_through_the_client_keep_order(server):
    texts = ["one", "\ud800", "three", None, "five"]
    with CLIPClient(server.http_url, protocol="http") as c:
        with pytest.raises(InvalidItemError) as info:
            c.encode(texts)
    assert sorted(info.value.errors) == [1, 3]
    assert np.abs(info.value.result[[0, 2, 4]] - embed(server, ["one", "three", "five"])).max() <= 1e-5
