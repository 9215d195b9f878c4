"""Deterministic caption-like texts of mixed lengths: what `clip_triton_ops.verify` compares, and what
the tests and benchmarks send.

The mix follows what a text-embedding service sees: short search queries, COCO-style captions,
and some long product/alt-text descriptions that run past CLIP's 77 tokens.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "a cat",
    "two dogs",
    "an old man",
    "a little girl",
    "a red bus",
    "a bowl of ramen",
    "the Eiffel Tower",
    "a snowy mountain",
    "a laptop",
    "a bunch of bananas",
    "a surfer",
    "a vintage car",
    "a flock of birds",
    "a woman in a yellow raincoat",
    "three children",
    "a wooden sailboat",
    "a plate of sushi",
    "a giraffe",
]
ACTIONS = [
    "sitting on",
    "running across",
    "next to",
    "photographed from above",
    "in front of",
    "covered by",
    "floating over",
    "parked beside",
    "lit by the sunset over",
    "playing with a frisbee on",
    "walking along",
]
PLACES = [
    "a wooden table",
    "a crowded street",
    "the beach",
    "a green field",
    "a kitchen counter",
    "a frozen lake",
    "the city skyline at night",
    "a busy market in Marrakesh",
    "an empty parking lot",
    "a mossy forest path",
]
EXTRAS = [
    "",
    "",
    "",
    "in the style of a watercolor painting",
    "high resolution, 4k",
    "black and white photo",
    "with a shallow depth of field and soft bokeh in the background",
    "#nofilter \U0001f60d",
    "as seen on a rainy Tuesday afternoon in late autumn, with reflections on the wet pavement",
]
QUERIES = [
    "cat",
    "red shoes",
    "sunset beach",
    "kitchen ideas",
    "vintage car",
    "dog park",
    "mountain lake",
    "birthday cake",
    "office desk setup",
    "street food",
    "wedding dress",
    "night sky",
]
DETAILS = [
    "The photo shows",
    "In the background there is",
    "The lighting is",
    "Next to it you can see",
    "The colors are",
    "On the left side stands",
    "A small sign reads",
]
ADJECTIVES = ["warm", "soft", "bright", "muted", "vivid", "faded", "golden", "cold", "dramatic", "gentle"]


def caption(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} {rng.choice(EXTRAS)}".strip()


def long_description(rng: random.Random) -> str:
    parts = [caption(rng).capitalize() + "."]
    for _ in range(rng.randint(2, 7)):
        parts.append(f"{rng.choice(DETAILS)} {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(PLACES)}.")
    return " ".join(parts)


def captions(n: int, seed: int = 0, mix: tuple[float, float] = (0.3, 0.85)) -> list[str]:
    """n texts: ~30% short queries, ~55% captions, ~15% long descriptions (some over 77 tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        text = rng.choice(QUERIES) if r < mix[0] else caption(rng) if r < mix[1] else long_description(rng)
        if rng.random() < 0.05:
            text = text.upper()
        out.append(text)
    return out


def short_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [caption(rng) for _ in range(n)]


# The benchmarks' text kinds, by the name their reports use
KINDS = {"mixed": captions, "short": short_captions}


def texts(kind: str, n: int, seed: int = 0) -> list[str]:
    """n texts of a kind in KINDS."""
    return KINDS[kind](n, seed)


VARIED_64 = captions(52, seed=1) + [
    "",
    " ",
    "a",
    "\u732b\u306e\u5199\u771f",
    "\U0001f431\U0001f436",
    "fish &amp; chips",
    "caf\u00e9 cr\u00e8me",
    "word " * 120,
    "Don't panic!",
    "1234567890",
    "\u0444\u043e\u0442\u043e \u043a\u043e\u0448\u043a\u0438",
    "<p>html</p>",
]
assert len(VARIED_64) == 64
