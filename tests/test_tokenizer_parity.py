"""The clip_tokenizer model, through a real server, gives open_clip SimpleTokenizer's ids."""

import time

import numpy as np
import pytest

from clip_triton_build.spec import CONTEXT_LENGTH
from hard_strings import ACCEPTED_MISMATCHES, HARD_STRINGS
from helpers import text_array, triton_infer, url_of


def server_ids(server, texts, protocol="grpc"):
    (ids,) = triton_infer(
        protocol, url_of(server, protocol), "clip_tokenizer", {"TEXT": text_array(texts)}, ["input_ids"]
    )
    return ids


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_hard_strings_match_open_clip(server, open_clip_tokenizer, protocol):
    assert len(set(HARD_STRINGS)) >= 100
    ids = server_ids(server, HARD_STRINGS, protocol)
    expected = open_clip_tokenizer(HARD_STRINGS, context_length=CONTEXT_LENGTH).numpy()
    assert ids.shape == (len(HARD_STRINGS), CONTEXT_LENGTH) and ids.dtype == np.int64
    mismatches = [(i, s) for i, s in enumerate(HARD_STRINGS) if not np.array_equal(ids[i], expected[i])]
    assert mismatches == [], "\n".join(f"{s!r}: {ids[i][:12]} vs {expected[i][:12]}" for i, s in mismatches)


def test_accepted_mismatches_are_exactly_the_documented_ones(server, open_clip_tokenizer):
    texts = list(ACCEPTED_MISMATCHES)
    ids = server_ids(server, texts)
    expected = open_clip_tokenizer(texts, context_length=CONTEXT_LENGTH).numpy()
    eot = open_clip_tokenizer.eot_token_id
    for row, ref in zip(ids, expected):
        assert not np.array_equal(row, ref)
        assert list(row).count(eot) == 1  # user text never produces a control token here


def test_truncation_keeps_eot_last(server, open_clip_tokenizer):
    (row,) = server_ids(server, ["photo " * 300])
    eot = open_clip_tokenizer.eot_token_id
    assert row[0] == open_clip_tokenizer.sot_token_id
    assert row[-1] == eot and (row[1:-1] != eot).all()


def test_empty_and_whitespace_give_sot_eot(server, open_clip_tokenizer):
    ids = server_ids(server, ["", "   ", "\n\t"])
    for row in ids:
        assert list(row[:2]) == [open_clip_tokenizer.sot_token_id, open_clip_tokenizer.eot_token_id]
        assert (row[2:] == 0).all()


def test_plain_ascii_texts_stay_in_cxx_and_the_rest_go_to_python_in_place(server, open_clip_tokenizer):
    """clip_tokenizer (C++) tokenizes plain-ASCII texts itself and hands every other text to
    clip_tokenizer_python: the Python model's statistics count exactly the handed-over texts, and
    each row, whichever path made it, is open_clip's and in its place."""
    import tritonclient.http as http

    from clip_triton_build.spec import PYTHON_TOKENIZER_MODEL

    def python_texts():
        client = http.InferenceServerClient(server.http_url)
        try:
            return client.get_inference_statistics(PYTHON_TOKENIZER_MODEL)["model_stats"][0]["inference_count"]
        finally:
            client.close()

    plain = ["a photo of a cat", "Two DOGS   playing\tin the\nsnow!", "it's 5 o'clock", ""]
    other = ["café crème", "fish &amp; chips", "a #nofilter 😍", "a photo of a cat " * 200]  # non-ASCII, &, emoji, long
    before = python_texts()
    assert np.array_equal(server_ids(server, plain), open_clip_tokenizer(plain, context_length=CONTEXT_LENGTH).numpy())
    mixed = [plain[0], other[0], plain[1], other[1], other[2], plain[2], other[3], plain[3]]
    expected = open_clip_tokenizer(mixed, context_length=CONTEXT_LENGTH).numpy()
    assert np.array_equal(server_ids(server, mixed), expected)
    # Triton records an execution's statistics after its responses go out: wait for them, then
    # check that nothing more came (the plain texts of either request would have)
    deadline = time.monotonic() + 10
    while python_texts() < before + len(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert python_texts() == before + len(other)
