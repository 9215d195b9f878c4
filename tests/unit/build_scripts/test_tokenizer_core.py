"""The C++ tokenizer core (native/clip_bpe/clip_bpe.h) on its own: its googletest
suite, built without any Triton header, on the hard strings and on texts whose first unclean
character sits at every distance from the 75th token, each with open_clip's ids.

The suite is cached under .local/ by the hash of the sources it compiles (googletest's
included), so only the first run pays for the compiler."""

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from clip_triton_build.repository import SOURCE_REPOSITORY, read_config
from clip_triton_build.tokenizer import backend
from clip_triton_build.tokenizer.assets import write_tokenizer
from clip_triton_build.triton_sources import googletest_source
from clip_triton_contract.names import PLAIN_SYMBOLS_PARAMETER, TOKENIZER_MODEL
from hard_strings import ACCEPTED_MISMATCHES, HARD_STRINGS
from helpers import REPO_ROOT

TOKENS = 75  # what CLIP reads: 77 positions less the start and end tokens

# characters whose cleaning ftfy, NFC, html.unescape or str.lower() change, or that CLIP's split
# reads differently: each is put right after plain text at every distance from the 75th token
UNCLEAN = [
    "\u0301",  # combining acute: NFC composes it with the letter before
    "\u0338",  # combining long solidus: NFC makes '=' + it one symbol
    "\uff45",  # fullwidth e: ftfy makes it 'e', which may continue a word or a contraction
    "\u00e9",  # é: a letter, continues a word
    "\u00c3\u00a9",  # mojibake of é
    "&amp;",  # an HTML entity
    "\u2019s",  # curly apostrophe: ftfy uncurls it into a contraction
    "\u00a0",  # no-break space: whitespace to the cleaning
    "\r\n",  # a control character
    "\u0130",  # İ: lower() gives i + combining dot
    "\u732b",  # a CJK letter
]


def core_suite() -> Path:
    gtest = googletest_source()
    if gtest is None:
        pytest.fail("googletest sources not found: apt-get install googletest (scripts/setup_backends.sh does)")
    digest = hashlib.sha256()
    for path in (backend.CORE, backend.CORE.with_suffix(".h"), backend.TESTS, gtest / "googletest/src/gtest-all.cc"):
        digest.update(path.read_bytes())
    binary = REPO_ROOT / ".local" / "clip-bpe-tests" / digest.hexdigest()[:16] / "clip_bpe_test"
    if not binary.is_file():
        backend.build_tests(binary.with_suffix(".tmp"))
        binary.with_suffix(".tmp").rename(binary)
    return binary


def boundary_texts(rng) -> list[str]:
    """Words of one token each, then a last word glued to (or a space before) an unclean
    character, the last word being CLIP's 74th, 75th or 76th token: where the core must hand the
    text over, and where it may keep it."""
    single = ["cat", "a", "photo", "of", "dog", "it", "red", "on"]  # one token each
    last_words = ["cat", "'r", "'", "=", "2", "!!", "it's", "\U0001f431"]
    texts = []
    for unclean in UNCLEAN:
        for before in (TOKENS - 2, TOKENS - 1, TOKENS):
            for last in last_words:
                head = " ".join(rng.choice(single, size=before).tolist())
                for glue in ("", " "):
                    texts.append(f"{head} {last}{glue}{unclean} tail words")
    return texts


def test_the_core_gives_open_clip_s_ids_and_hands_over_what_it_cannot_prove(open_clip_tokenizer, tmp_path):
    rng = np.random.default_rng(12)
    long_plain = " ".join(["a very long caption about a red bicycle"] * 8000)  # ~330 KB
    texts = [t for t in HARD_STRINGS if t not in ACCEPTED_MISMATCHES] + boundary_texts(rng) + [long_plain]
    symbols = read_config(SOURCE_REPOSITORY / TOKENIZER_MODEL / "config.pbtxt").parameters[PLAIN_SYMBOLS_PARAMETER]
    cases = tmp_path / "cases.tsv"
    with cases.open("w") as out:
        for text in texts:
            ids = open_clip_tokenizer.encode(text)[:TOKENS]
            plain = all(c in "\t\n" or (" " <= c <= "~" and c != "&") for c in text)
            out.write(f"{text.encode().hex()}\t{int(plain)}\t{' '.join(map(str, ids))}\n")
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    env = {
        **os.environ,
        "CLIP_BPE_TOKENIZER": str(tokenizer),
        "CLIP_BPE_SYMBOLS": symbols.string_value,
        "CLIP_BPE_CASES": str(cases),
    }
    done = subprocess.run([str(core_suite())], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "[  PASSED  ]" in done.stdout and "FAILED" not in done.stdout
