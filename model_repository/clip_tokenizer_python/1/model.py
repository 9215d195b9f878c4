"""clip_tokenizer_python: TEXT (UTF-8 strings) -> input_ids (CLIP BPE ids, fixed length).

The served tokenizer, clip_tokenizer, is C++ (native/clip_bpe/): it tokenizes
plain texts itself and sends every other text here. This model tokenizes any text and can be
called directly; the `python_tokenizer` config variant makes it the ensemble's first step.

CLIP's own cleaning runs in Python exactly as open_clip / OpenAI CLIP do it (ftfy fix, HTML
unescape twice, whitespace collapse, str.lower()); the BPE itself runs in the Rust `tokenizers`
library from `tokenizer.json`, which `build_scripts` writes next to this file.
Every request Triton hands to execute() gets its own response, in order; a bad request gets its
own INVALID_ARG error and leaves the others untouched.

Most texts are plain ASCII captions, for which all of CLIP's cleaning reduces to whitespace
collapse and lower-casing (`is_plain_ascii`); only the others pay for ftfy.

The work per text is bounded by what CLIP reads: cleaning and BPE run only on the shortest prefix
that holds the text's first context_length - 1 words (`clean_prefix`), so a 1 MB text costs about
what a caption does, with the same ids as tokenizing all of it.
"""

import html
import json
import os
import re
from itertools import chain
from pathlib import Path

# The Rust BPE runs in the calling thread. Triton already runs one tokenizer per instance in
# parallel, and a thread pool in each of them (one thread per core) would oversubscribe the host.
# Even on a 2-core machine, in-process, the pool cost 3% of tokenize's time and 4% more CPU.
# An operator's own setting wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ftfy
import numpy as np
import regex
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

_WHITESPACE = regex.compile(r"\s+")


def _finish_cleaning(fixed: str) -> str:
    """The rest of open_clip's `_clean_lower` after ftfy.fix_text: HTML unescape twice, strip,
    whitespace runs to one space, lower-case."""
    text = html.unescape(html.unescape(fixed)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


# A word longer than this is cut here before BPE. The first 75 tokens of a word cover at most
# 75 x 32 characters (32: the longest CLIP token); BPE merges are local, so the ids of those tokens
# do not depend on text this far away (tests compare against whole-word BPE on adversarial words).
MAX_WORD_CHARS = 8192
FIRST_LOOK_CHARS = 2048  # how much text to clean first; grows x4 until it holds enough words


def clip_prefix(cleaned: str, split: "regex.Pattern", words: int) -> "str | None":
    """The shortest prefix of `cleaned` holding its first `words` words (CLIP's word split, the
    pre-tokenizer of tokenizer.json), or None when it holds fewer. BPE never merges across words
    and each word gives at least one token, so this prefix gives the first `words` tokens."""
    for count, match in enumerate(split.finditer(cleaned), 1):
        if match.end() - match.start() > MAX_WORD_CHARS:
            return cleaned[: match.start() + MAX_WORD_CHARS]
        if count >= words:
            return cleaned[: match.end()]
    return None


def _heads(text: str, boundary: str):
    """Ever longer prefixes of `text` that end just after a `boundary` character, then all of it."""
    limit = FIRST_LOOK_CHARS
    while limit < len(text):
        cut = text.find(boundary, limit) + 1
        if cut == 0:
            break
        yield text[:cut], False
        limit = cut * 4
    yield text, True


def clean_prefix(text: str, split: "regex.Pattern", words: int) -> str:
    """`clip_prefix` of the text cleaned as open_clip cleans it (ftfy.fix_text, then
    `_finish_cleaning`), computed from as little of `text` as it takes.

    Exact, not a heuristic: ftfy fixes a text line by line (its state only flows forward), so
    whole lines fix the same alone; HTML entities, whitespace runs and lower-casing never reach
    across a space, so a fixed text cut after a space cleans to a prefix of the whole, ending on a
    word boundary. A 1 MB text costs about what its first lines do."""
    for head, whole_text in _heads(text, "\n"):
        fixed = ftfy.fix_text(head)
        for part, whole_line in _heads(fixed, " "):
            cleaned = _finish_cleaning(part)
            prefix = clip_prefix(cleaned, split, words)
            if prefix is not None:
                return prefix
            if whole_line and whole_text:
                return cleaned
    raise AssertionError("unreachable: the last head is the whole text")


# Printable ASCII, space, tab and newline, but no '&'. On such a text ftfy.fix_text changes
# nothing: every one of its fixes needs a non-ASCII character (mojibake, C1 controls, ligatures,
# width, curly quotes, NFC), a control character (terminal escapes, \r line breaks, other
# controls) or '&' (HTML entities); html.unescape needs '&' too. So open_clip's cleaning of it is
# whitespace collapse and lower-casing alone.
_PLAIN_ASCII = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def is_plain_ascii(text: str) -> bool:
    """Whether open_clip's cleaning of `text` is whitespace collapse and lower-casing alone (see
    _PLAIN_ASCII), for a text short enough to split whole."""
    return len(text) <= FIRST_LOOK_CHARS and text.isascii() and _PLAIN_ASCII.fullmatch(text) is not None


def ascii_word_split(pattern: str) -> "re.Pattern":
    """CLIP's word split (tokenizer.json's pattern) for ASCII text, on the standard library's re:
    in ASCII the letters (\\p{L}) are a-zA-Z and the numbers (\\p{N}) 0-9. Several times
    faster than the same pattern on the regex module."""
    return re.compile(pattern.replace(r"\p{L}", "a-zA-Z").replace(r"\p{N}", "0-9"), re.ASCII)


class WordIds:
    """CLIP word -> BPE ids, each word run once through the Rust BPE and then looked up.
    Exact: tokenizer.json splits a text into these words (its pre-tokenizer) and runs BPE on each
    word alone, so a text's ids are its words' ids in order. For plain-ASCII texts only, where
    `split` (ascii_word_split) and the Rust pre-tokenizer cannot disagree on what a letter is.

    A plain text goes in lower-cased but not whitespace-collapsed: the split matches no
    whitespace, so runs of it and the ends give the same words as open_clip's collapsed text."""

    def __init__(self, tokenizer: Tokenizer, split: "re.Pattern", capacity: int = 100_000):
        self.tokenizer, self.split, self.capacity = tokenizer, split, capacity
        self.ids: dict = {}

    def __call__(self, texts: list, words: int) -> list:
        """The ids of each text's first `words` words."""
        split = [self.split.findall(text)[:words] for text in texts]
        missing = list(set().union(*split).difference(self.ids))
        if missing:
            if len(self.ids) + len(missing) > self.capacity:
                self.ids.clear()
            for word, encoding in zip(missing, self.tokenizer.encode_batch(missing, add_special_tokens=False)):
                self.ids[word] = encoding.ids
        lookup = self.ids.__getitem__
        return [list(chain.from_iterable(map(lookup, text))) for text in split]


class InvalidInput(ValueError):
    pass


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.max_text_bytes = int(params["max_text_bytes"])
        tokenizer_path = Path(args["model_repository"]) / args["model_version"] / params["tokenizer_file"]
        if not tokenizer_path.is_file():
            raise pb_utils.TritonModelException(
                f"{tokenizer_path} is missing: run `python -m clip_triton_build` to build the repository's artifacts"
            )
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # CLIP's word split, as tokenizer.json's pre-tokenizer defines it (one home: the build)
        split = json.loads(self.tokenizer.to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
        self.word_split = regex.compile(split)
        self.word_ids = WordIds(self.tokenizer, ascii_word_split(split))
        self.sot_id = self.tokenizer.token_to_id(params["sot_token"])
        self.eot_id = self.tokenizer.token_to_id(params["eot_token"])
        self.pad_id = int(params["pad_id"])
        # tensor names: this model's config.pbtxt is their home here (one input; the ids, then the
        # token counts, each sent only when requested)
        self.input_name = config["input"][0]["name"]
        self.output_name, self.count_name = config["output"][0]["name"], config["output"][1]["name"]
        output = pb_utils.get_output_config_by_name(config, self.output_name)
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])

    def _decode(self, request):
        try:
            texts = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        except Exception as exc:  # e.g. a BYTES length prefix past the data: this request's fault alone
            raise InvalidInput(f"{self.input_name} is not a well-formed BYTES tensor: {exc}") from None
        if texts.ndim != 2 or texts.shape[1] != 1:
            raise InvalidInput(f"{self.input_name} must have shape [batch, 1], got {list(texts.shape)}")
        decoded = []
        for index, item in enumerate(texts[:, 0]):
            if isinstance(item, str):
                decoded.append(item)
                continue
            if len(item) > self.max_text_bytes:
                raise InvalidInput(
                    f"{self.input_name}[{index}] has {len(item)} bytes; the limit is {self.max_text_bytes} "
                    f"(CLIP reads only its first {self.context_length - 2} tokens anyway)"
                )
            try:
                decoded.append(item.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{self.input_name}[{index}] is not valid UTF-8: {exc}") from None
        return decoded

    def tokenize(self, texts):
        """[N] str -> [N, context_length] ids: <|startoftext|> tokens... <|endoftext|> pad...,
        truncated like open_clip (the first context_length - 2 tokens, EOT kept last)."""
        keep = self.context_length - 2
        words = self.context_length - 1  # one more than fits: truncation below still sees the cut
        fast, slow = [], []
        for i, text in enumerate(texts):
            (fast if is_plain_ascii(text) else slow).append(i)
        found = self.word_ids([texts[i].lower() for i in fast], words)
        if slow:  # a call into the Rust BPE has a fixed cost even with nothing to do
            prefixes = [clean_prefix(texts[i], self.word_split, words) for i in slow]
            found += [encoding.ids for encoding in self.tokenizer.encode_batch(prefixes, add_special_tokens=False)]
        rows = np.array(fast + slow, dtype=np.int64)
        lengths = np.fromiter((min(len(f), keep) for f in found), dtype=np.int64, count=len(found))
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=self.output_dtype)
        ids[:, 0] = self.sot_id
        ids[rows, lengths + 1] = self.eot_id
        # every row's tokens in one assignment: row r's k-th token goes to column k + 1
        flat = np.fromiter(chain.from_iterable(f[:keep] for f in found), dtype=self.output_dtype, count=lengths.sum())
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[np.repeat(rows, lengths), np.arange(flat.size) - starts + 1] = flat
        return ids

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, spans = [], []
        for i, request in enumerate(requests):
            try:
                decoded = self._decode(request)
            except InvalidInput as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            spans.append((i, len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        try:
            ids = self.tokenize(texts)
        except Exception:  # never let one request's failure fail its neighbours: isolate it
            for i, start, end in spans:
                responses[i] = self._respond(requests[i], lambda: self.tokenize(texts[start:end]))
            return responses
        for i, start, end in spans:
            responses[i] = pb_utils.InferenceResponse(self._outputs(requests[i], ids[start:end]))
        return responses

    def _outputs(self, request, ids):
        """The outputs `request` asked for: the ids, each row's token count (SOT through EOT)."""
        wanted = request.requested_output_names()
        outputs = [pb_utils.Tensor(self.output_name, ids)] if self.output_name in wanted else []
        if self.count_name in wanted:
            counts = np.argmax(ids[:, 1:] == self.eot_id, axis=1).astype(np.int64) + 2
            outputs.append(pb_utils.Tensor(self.count_name, counts.reshape(-1, 1)))
        return outputs

    def _respond(self, request, compute):
        try:
            return pb_utils.InferenceResponse(self._outputs(request, compute()))
        except Exception as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"tokenization failed: {exc!r}", pb_utils.TritonError.INTERNAL)
            )
