"""CLIP BPE tokenizer assets, built offline from the vocabulary in the `open-clip-torch` wheel.

The result is a `tokenizers` (Rust) tokenizer in `tokenizer.json` that does CLIP's BPE on text
that was already cleaned the CLIP way (the `clip_tokenizer` Triton model does that cleaning in
Python first). Special tokens are not matched inside user text: a literal "<|endoftext|>" typed
by a user stays text and cannot cut the text short.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from ..spec import EOT_TOKEN, SOT_TOKEN, TOKENIZER_FILE, VOCAB_SIZE

VOCAB_FILE_IN_WHEEL = "bpe_simple_vocab_16e6.txt.gz"
# CLIP's word split (open_clip / OpenAI `SimpleTokenizer.pat`, without the special-token branch).
CLIP_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
N_MERGES = 49152 - 256 - 2


def open_clip_vocab_path() -> Path:
    """The BPE merges file inside the installed `open_clip` package, found without importing it
    (importing open_clip pulls torchvision, which the build does not need)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "open_clip is not installed: `pip install --no-deps open-clip-torch` provides the "
            "CLIP BPE vocabulary (MIT licensed)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / VOCAB_FILE_IN_WHEEL
    if not path.is_file():
        raise RuntimeError(f"CLIP vocabulary not found at {path}")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=2)  # read for the tokenizer files and for every checkpoint's check
def clip_bpe(vocab_path: Path | None = None) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """CLIP's BPE: the vocabulary (token i has id i) and the merges, in rank order."""
    lines = gzip.open(vocab_path or open_clip_vocab_path()).read().decode("utf-8").split("\n")
    merges = [(pair[0], pair[1]) for pair in (line.split() for line in lines[1 : N_MERGES + 1])]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"unexpected CLIP vocabulary size {len(vocab)}")
    return tuple(vocab), tuple(merges)


def build_tokenizer(vocab_path: Path | None = None) -> Tokenizer:
    vocab, merges = clip_bpe(vocab_path)
    bpe = models.BPE(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=list(merges),
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        fuse_unk=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tokenizer


def write_tokenizer(out_dir: Path, vocab_path: Path | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TOKENIZER_FILE
    build_tokenizer(vocab_path).save(str(path))
    return path
