"""clip_tokenizer: TEXT (UTF-8 strings) -> input_ids (CLIP BPE ids, fixed length).

CLIP's own cleaning runs in Python exactly as open_clip / OpenAI CLIP do it (ftfy fix, HTML
unescape twice, whitespace collapse, str.lower()); the BPE itself runs in the Rust `tokenizers`
library from `tokenizer.json`, which `build_scripts` writes next to this file.
Every request of a dynamic batch gets its own response, in order; a bad request gets its own
INVALID_ARG error and leaves the others untouched.
"""

import html
import json
from pathlib import Path

import ftfy
import numpy as np
import regex
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

_WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """open_clip's `_clean_lower`: whitespace_clean(basic_clean(text)).lower()."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


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
                f"{tokenizer_path} is missing: run `python -m clip_build` to build the repository's artifacts"
            )
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.sot_id = self.tokenizer.token_to_id(params["sot_token"])
        self.eot_id = self.tokenizer.token_to_id(params["eot_token"])
        self.pad_id = int(params["pad_id"])
        output = pb_utils.get_output_config_by_name(config, "input_ids")
        self.output_dtype = pb_utils.triton_string_to_numpy(output["data_type"])

    def _decode(self, request):
        texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
        if texts.ndim != 2 or texts.shape[1] != 1:
            raise InvalidInput(f"TEXT must have shape [batch, 1], got {list(texts.shape)}")
        decoded = []
        for index, item in enumerate(texts[:, 0]):
            if isinstance(item, str):
                decoded.append(item)
                continue
            if len(item) > self.max_text_bytes:
                raise InvalidInput(
                    f"TEXT[{index}] has {len(item)} bytes; the limit is {self.max_text_bytes} "
                    f"(CLIP reads only its first {self.context_length - 2} tokens anyway)"
                )
            try:
                decoded.append(item.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"TEXT[{index}] is not valid UTF-8: {exc}") from None
        return decoded

    def tokenize(self, texts):
        """[N] str -> [N, context_length] ids: <|startoftext|> tokens... <|endoftext|> pad...,
        truncated like open_clip (the first context_length - 2 tokens, EOT kept last)."""
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=self.output_dtype)
        keep = self.context_length - 2
        encodings = self.tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        for row, encoding in zip(ids, encodings):
            tokens = encoding.ids[:keep]
            row[0] = self.sot_id
            row[1 : 1 + len(tokens)] = tokens
            row[1 + len(tokens)] = self.eot_id
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
                responses[i] = self._respond(lambda: self.tokenize(texts[start:end]))
            return responses
        for i, start, end in spans:
            responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor("input_ids", ids[start:end])])
        return responses

    @staticmethod
    def _respond(compute):
        try:
            return pb_utils.InferenceResponse([pb_utils.Tensor("input_ids", compute())])
        except Exception as exc:
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"tokenization failed: {exc!r}", pb_utils.TritonError.INTERNAL)
            )
