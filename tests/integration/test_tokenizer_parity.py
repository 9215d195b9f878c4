"""The clip_tokenizer model, through a real server, gives open_clip SimpleTokenizer's ids."""

import random
import time
import unicodedata

import numpy as np
import pytest

from clip_triton_build.repository import SOURCE_REPOSITORY, read_config
from clip_triton_contract.names import CONTEXT_LENGTH, PLAIN_SYMBOLS_PARAMETER, PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL
from hard_strings import ACCEPTED_MISMATCHES, HARD_STRINGS
from helpers import inference_count, open_clip_tokenizer_module, text_array, triton_infer, url_of


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


def python_texts(server) -> int:
    """How many texts clip_tokenizer_python has tokenized: what the C++ tokenizer handed over."""
    return inference_count(server, PYTHON_TOKENIZER_MODEL)


def wait_for_python_texts(server, count: int) -> int:
    """clip_tokenizer_python's count once it reaches `count` (or 10 s pass) and stays for 0.2 s:
    Triton records an execution's statistics after its responses go out."""
    deadline = time.monotonic() + 10
    while python_texts(server) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    return python_texts(server)


def test_plain_texts_stay_in_cxx_and_the_rest_go_to_python_in_place(server, open_clip_tokenizer):
    """clip_tokenizer (C++) tokenizes plain texts (ASCII, emoji) itself, of any length, and texts
    whose first unclean character comes after all the tokens CLIP reads; it hands every other
    text to clip_tokenizer_python: the Python model's statistics count exactly the handed-over
    texts, and each row, whichever path made it, is open_clip's and in its place."""
    plain = [
        "a photo of a cat",
        "Two DOGS   playing\tin the\nsnow!",
        "it's 5 o'clock",
        "",
        "a #nofilter 😍",
        "a photo of a cat " * 20_000,  # 340 KB
        "a photo of a cat " * 30 + "café &amp; crème",  # the unclean part comes after token 75
    ]
    # non-ASCII beside an emoji, &, a character outside plain_symbols, unclean before token 75
    other = ["café crème 😍", "fish &amp; chips", "a photo ✓ of 東京", "a photo of a cat " * 10 + "café"]
    before = python_texts(server)
    assert np.array_equal(server_ids(server, plain), open_clip_tokenizer(plain, context_length=CONTEXT_LENGTH).numpy())
    mixed = [plain[0], other[0], plain[1], other[1], other[2], plain[2], plain[4], other[3], plain[3], plain[6]]
    expected = open_clip_tokenizer(mixed, context_length=CONTEXT_LENGTH).numpy()
    assert np.array_equal(server_ids(server, mixed), expected)
    # nothing more than the other texts came (the plain texts of either request would have)
    assert wait_for_python_texts(server, before + len(other)) == before + len(other)


# -- the C++ tokenizer's non-ASCII characters: its config's plain_symbols -----------------------------


def plain_symbols() -> list[str]:
    """Every character clip_tokenizer's config lists in plain_symbols."""
    config = read_config(SOURCE_REPOSITORY / TOKENIZER_MODEL / "config.pbtxt")
    symbols = []
    for item in config.parameters[PLAIN_SYMBOLS_PARAMETER].string_value.split():
        first, _, last = item.partition("-")
        symbols += [chr(point) for point in range(int(first, 16), int(last or first, 16) + 1)]
    return symbols


def characters_named_by(pattern: str) -> set[str]:
    """The non-ASCII characters a regular expression's source names, alone or in a range."""
    named, i = set(), 0
    while i < len(pattern):
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and max(pattern[i], pattern[i + 2]) > "\x7f":
            named.update(map(chr, range(ord(pattern[i]), ord(pattern[i + 2]) + 1)))
            i += 3
            continue
        if pattern[i] > "\x7f":
            named.add(pattern[i])
        i += 1
    return named


def mixed_plain_texts(symbols: list[str], count: int, seed: int = 0) -> list[str]:
    """Captions with plain symbols among ASCII words, inside words, next to contractions and
    digits, in runs and alone, upper and lower case."""
    rng = random.Random(seed)
    pieces = ["a", "photo", "OF", "Cat", "it's", "we'll", "'d", "42", "#tag", "!!", "...", "\t", "\n", "  "]

    def piece() -> str:
        return rng.choice(symbols) if rng.random() < 0.4 else rng.choice(pieces)

    texts = []
    for _ in range(count):
        words = ["".join(piece() for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 14))]
        texts.append(" ".join(words))
    return texts


def test_clips_cleaning_leaves_plain_symbols_as_they_are():
    """What the config claims of each of its plain_symbols, checked against ftfy's and unicodedata's
    own tables. Then no ftfy fix can change a text of them and plain ASCII: its mojibake check
    (badness.BADNESS_RE: every alternative needs a character the pattern names) never fires, and its
    other fixes replace only characters in these tables; NFC leaves it (no decomposition, no
    combining class, no part of any composition); lower-casing too; and to CLIP's word split the
    symbols are neither letters, numbers nor spaces, like ASCII punctuation."""
    import regex
    from ftfy import badness, chardata

    symbols = plain_symbols()
    assert len(symbols) > 1800 and "\U0001f60d" in symbols and "\u200d" in symbols
    ftfy_tables = set(map(chr, set(chardata.CONTROL_CHARS) | set(chardata.LIGATURES) | set(chardata.WIDTH_MAP)))
    ftfy_tables |= {"\u2028", "\u2029", "\x85"} | set(map(chr, range(0x80, 0xA0)))  # line breaks, C1 controls
    named = characters_named_by(badness.BADNESS_RE.pattern)
    composed = {
        chr(int(part, 16))
        for point in range(0x110000)
        if (decomposition := unicodedata.decomposition(chr(point))) and not decomposition.startswith("<")
        for part in decomposition.split()
    }
    word_split = regex.compile(r"[\s\p{L}\p{N}]")
    wrong = {
        symbol: reason
        for symbol in symbols
        for reason, bad in {
            "unassigned": unicodedata.category(symbol) == "Cn",
            "an ftfy table's": symbol in ftfy_tables,
            "a curly quote": bool(chardata.SINGLE_QUOTE_RE.match(symbol) or chardata.DOUBLE_QUOTE_RE.match(symbol)),
            "in BADNESS_RE": symbol in named,
            "NFC changes": unicodedata.decomposition(symbol) != "" or unicodedata.combining(symbol) != 0,
            "composes": symbol in composed,
            "cased": symbol.lower() != symbol or symbol.casefold() != symbol,
            "a letter, number or space": bool(word_split.match(symbol) or symbol.isspace()),
        }.items()
        if bad
    }
    assert wrong == {}


def test_ftfy_and_open_clips_cleaning_change_nothing_in_texts_of_plain_symbols():
    """The claim itself, on texts: fix_text returns them as they are, and open_clip's basic_clean
    only strips them."""
    import ftfy

    module = open_clip_tokenizer_module()
    texts = mixed_plain_texts(plain_symbols(), 3000, seed=1)
    assert [t for t in texts if ftfy.fix_text(t) != t] == []
    assert [t for t in texts if module.basic_clean(t) != t.strip()] == []


def test_every_plain_symbol_is_tokenized_in_cxx_as_open_clip_does(server, open_clip_tokenizer):
    symbols = plain_symbols()
    texts = [f"Cat{s}dog {s}{s}'s {s}7 x{s}" for s in symbols] + mixed_plain_texts(symbols, 1000)
    before = python_texts(server)
    got = np.concatenate([server_ids(server, texts[i : i + 256]) for i in range(0, len(texts), 256)])
    expected = open_clip_tokenizer(texts, context_length=CONTEXT_LENGTH).numpy()
    wrong = [texts[i] for i in range(len(texts)) if not np.array_equal(got[i], expected[i])]
    assert wrong == []
    # none went to Python: after one text that does, its count is one more than before
    server_ids(server, ["café"])
    assert wait_for_python_texts(server, before + 1) == before + 1
