"""clip_openai in-process: the request body's checks, OpenAI's error body, the settings' round trip
through the environment the workers read, and the command line built from the settings."""

import base64
import json

import pytest

from clip_openai.__main__ import parse_args
from clip_openai.errors import APIError, saturated, unavailable
from clip_openai.request import SERVICE_TIERS, parse
from clip_openai.settings import Settings
from clip_triton_contract.traffic import BULK, INTERACTIVE


def body(**fields) -> bytes:
    return json.dumps({"model": "clip_text", **fields}).encode()


def test_a_string_or_an_array_becomes_utf8_texts_in_order():
    assert parse(body(input="a cat"), 2048, True).texts == [b"a cat"]
    asked = parse(body(input=["b", "é", ""], encoding_format="base64", dimensions=512, user="u"), 2048, True)
    assert (asked.texts, asked.encoding_format, asked.dimensions, asked.normalize) == (
        [b"b", "é".encode(), b""],
        "base64",
        512,
        True,
    )
    assert parse(body(input="a", normalize=False), 2048, True).normalize is False
    assert parse(body(input="a"), 2048, False).normalize is False  # the server's default


def test_image_data_uris_mix_with_texts_and_modality_says_how_to_read_items():
    uri = "data:image/png;base64," + base64.b64encode(b"PNG bytes").decode()
    asked = parse(body(input=["a cat", uri, "a dog"]), 2048, True)
    assert (asked.texts, asked.text_rows(), asked.size) == ([b"a cat", b"a dog"], [0, 2], 3)
    assert [(i.index, i.data, i.url) for i in asked.images] == [(1, b"PNG bytes", None)]
    as_text = parse(body(input=[uri], modality="text"), 2048, True)
    assert (as_text.texts, as_text.images) == ([uri.encode()], ())
    url = parse(body(input=["https://example.com/cat.jpg"], modality="image"), 2048, True)
    assert [(i.index, i.data, i.url) for i in url.images] == [(0, None, "https://example.com/cat.jpg")]
    assert parse(body(input=["https://example.com/cat.jpg"]), 2048, True).texts == [b"https://example.com/cat.jpg"]


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"input": ["data:image/png;base64,@@@"]}, "input[0]: the data URI's base64 is not valid"),
        ({"input": ["a", "data:image/png,rawbytes"]}, "input[1] is not an image data URI"),
        ({"input": ["a cat"], "modality": "image"}, "input[0] is not an image"),
        ({"input": ["a"], "modality": "audio"}, "'modality' must be one of 'text', 'image'"),
        ({"input": ["data:image/png;base64,AAAA"] * 3}, "3 images; at most 2 per request"),
    ],
)
def test_bad_images_are_a_400_naming_the_item(fields, fragment):
    with pytest.raises(APIError) as caught:
        parse(body(**fields), 2048, True, max_images=2)
    assert caught.value.status == 400 and fragment in caught.value.message


def test_openais_service_tier_picks_the_traffic_class():
    """ "flex" (work that can wait) travels as bulk, every other tier as interactive; without one,
    the frontend's own setting."""
    tiers = {tier: parse(body(input="a", service_tier=tier), 2048, True).traffic for tier in SERVICE_TIERS}
    assert tiers == {"auto": INTERACTIVE, "default": INTERACTIVE, "priority": INTERACTIVE, "flex": BULK}
    assert parse(body(input="a"), 2048, True).traffic == INTERACTIVE
    assert parse(body(input="a"), 2048, True, BULK).traffic == BULK
    with pytest.raises(ValueError, match="interactive, bulk"):
        Settings(traffic="urgent")


@pytest.mark.parametrize(
    "raw, param, fragment",
    [
        (body(input=[]), "input", "empty array"),
        (body(input=["a", {"text": "b"}]), "input", "input[1] must be a string, not object"),
        (body(input=["a", True]), "input", "input[1] must be a string, not boolean"),
        (body(input=[3, 4]), "input", "array of integers: token ids are not accepted"),
        (body(input=["a"] * 5), "input", "at most 4"),
        (body(input="a", encoding_format="fp16"), "encoding_format", "'fp16'"),
        (body(input="a", dimensions="512"), "dimensions", "must be an integer"),
        (body(input="a", dimensions=True), "dimensions", "must be an integer"),
        (body(input="a", user=1), "user", "must be a string"),
        (body(input="a", service_tier="scale"), "service_tier", "'flex'"),
        (json.dumps({"input": "a", "model": 3}).encode(), "model", "must be a string"),
        (b"\xff", None, "not valid JSON"),
        (b'"\\ud800"', None, "not valid JSON"),
    ],
)
def test_each_bad_field_is_a_400_that_names_it(raw, param, fragment):
    with pytest.raises(APIError) as raised:
        parse(raw, 4, True)
    error = raised.value
    assert error.status == 400 and error.param == param and fragment in error.message
    assert json.loads(error.body()) == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": error.code}
    }


def test_settings_survive_the_environment_the_workers_read():
    settings = Settings(models=("a", "b"), api_key="k", max_pending=7, request_timeout_s=1.5, normalize=False)
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env({}) == Settings()


def test_every_setting_is_an_option_and_the_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FRONTEND_KEY", "secret")
    args, settings = parse_args(
        ["--model", "b32", "--model", "l14", "--max-pending=3", "--no-normalize", "--api-key-env", "FRONTEND_KEY"]
    )
    assert settings == Settings(models=("b32", "l14"), max_pending=3, normalize=False, api_key="secret")
    monkeypatch.setenv("EMPTY_KEY", "")
    assert parse_args(["--api-key-env", "EMPTY_KEY"])[1].api_key == ""  # set but empty: no key
    monkeypatch.delenv("UNSET_KEY", raising=False)
    with pytest.raises(SystemExit):
        parse_args(["--api-key-env", "UNSET_KEY"])


def test_every_option_the_help_names_exists():
    import re

    import clip_openai.__main__ as main

    named = set(re.findall(r"(--[a-z][a-z-]+)", main.__doc__ or ""))
    assert named, "the help names its options"
    parser_flags = {flag for action in main.build_parser()._actions for flag in action.option_strings}
    assert named <= parser_flags, named - parser_flags


def test_refusals_in_one_burst_are_told_to_come_back_at_different_moments_within_a_second():
    refusals = [saturated("2 requests pending") for _ in range(50)] + [unavailable("down") for _ in range(50)]
    assert {r.headers["retry-after"] for r in refusals} == {"1"}
    waits = [int(r.headers["retry-after-ms"]) for r in refusals]
    assert all(100 <= w <= 1000 for w in waits) and len(set(waits)) > 20
