"""Varied texts for the embedding tests and the benchmarks (deterministic)."""

import random

SUBJECTS = ["a cat", "two dogs", "an old man", "a little girl", "a red bus", "a bowl of ramen", "the Eiffel Tower",
            "a snowy mountain", "a laptop", "a bunch of bananas", "a surfer", "a vintage car", "a flock of birds"]
ACTIONS = ["sitting on", "running across", "next to", "photographed from above", "in front of", "covered by",
           "floating over", "parked beside", "lit by the sunset over"]
PLACES = ["a wooden table", "a crowded street", "the beach", "a green field", "a kitchen counter", "a frozen lake",
          "the city skyline at night", "a busy market in Marrakesh", "an empty parking lot"]
EXTRAS = ["", "", "in the style of a watercolor painting", "high resolution, 4k", "black and white photo",
          "with a shallow depth of field and soft bokeh in the background", "#nofilter \U0001f60d",
          "as seen on a rainy Tuesday afternoon in late autumn, with reflections on the wet pavement"]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} {rng.choice(EXTRAS)}".strip()
        if rng.random() < 0.1:
            text = (text + ". ") * rng.randint(3, 8)  # some long ones, past 77 tokens
        if rng.random() < 0.1:
            text = text.upper()
        out.append(text)
    return out


VARIED_64 = captions(52, seed=1) + [
    "", " ", "a", "\u732b\u306e\u5199\u771f", "\U0001f431\U0001f436", "fish &amp; chips", "caf\u00e9 cr\u00e8me",
    "word " * 120, "Don't panic!", "1234567890", "\u0444\u043e\u0442\u043e \u043a\u043e\u0448\u043a\u0438",
    "<p>html</p>",
]
assert len(VARIED_64) == 64
