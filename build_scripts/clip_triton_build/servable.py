"""What the build can serve of a checkpoint, decided before anything is exported: a CLIP text tower
of CLIP's BPE vocabulary and context, heads of spec.HEAD_DIM, either activation, either EOT
convention, with its projection. Anything else is refused here with the field that rules it out,
so no checkpoint builds and then fails at server load.

The text tower's config comes from `config.json`: a `CLIPModel`'s (model_type "clip": its
`text_config`, with the model's own `projection_dim`, the size its `text_projection` was saved
with) or a `CLIPTextModelWithProjection`'s ("clip_text_model")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clip_triton_contract.names import CONTEXT_LENGTH

from .spec import ACTIVATIONS, EOS_TOKEN_IDS, HEAD_DIM, VOCAB_SIZE

# The tokenizer files a checkpoint may ship (HF's CLIPTokenizer and CLIPTokenizerFast): when it
# ships any, their vocabulary and merges must be CLIP's BPE, which both served tokenizers apply.
VOCAB_JSON, MERGES_TXT, TOKENIZER_JSON = "vocab.json", "merges.txt", "tokenizer.json"
TOKENIZER_FILES = (VOCAB_JSON, MERGES_TXT, TOKENIZER_JSON)
PROJECTION_WEIGHT = "text_projection.weight"


class UnservableCheckpoint(ValueError):
    """The checkpoint loads, but the build cannot serve it; `field` names what rules it out."""

    def __init__(self, checkpoint: str, field: str, message: str):
        super().__init__(f"{checkpoint}: {field}: {message}")
        self.checkpoint, self.field = checkpoint, field


def text_config(checkpoint: str, config: dict[str, Any]):
    """The checkpoint's text tower as a checked `CLIPTextConfig`, from its config.json `config`."""
    from transformers import CLIPTextConfig

    model_type = config.get("model_type")
    if model_type == "clip":
        text = dict(config.get("text_config") or {})
        if "projection_dim" in config:
            text["projection_dim"] = config["projection_dim"]
    elif model_type == "clip_text_model":
        architectures = config.get("architectures") or []
        if architectures and "CLIPTextModelWithProjection" not in architectures:
            raise UnservableCheckpoint(
                checkpoint,
                "text_projection",
                f"the checkpoint has no text projection (a {', '.join(architectures)}): get_text_features "
                "needs a CLIPModel or CLIPTextModelWithProjection checkpoint",
            )
        text = dict(config)
    else:
        raise UnservableCheckpoint(
            checkpoint,
            "model_type",
            f"{model_type!r}: the build serves CLIP's text tower, a CLIPModel ('clip') or "
            "CLIPTextModelWithProjection ('clip_text_model') checkpoint (SigLIP and multilingual CLIP "
            "need another tokenizer and pooling)",
        )
    text.pop("model_type", None)
    checked = CLIPTextConfig(**text)
    check_text_config(checkpoint, checked)
    return checked


def check_text_config(checkpoint: str, config: Any) -> None:
    def refuse(field: str, message: str):
        raise UnservableCheckpoint(checkpoint, field, message)

    if config.vocab_size != VOCAB_SIZE:
        refuse("vocab_size", f"{config.vocab_size}, not CLIP's BPE vocabulary of {VOCAB_SIZE} (the served tokenizers')")
    if config.max_position_embeddings != CONTEXT_LENGTH:
        refuse(
            "max_position_embeddings",
            f"{config.max_position_embeddings}, not CLIP's context of {CONTEXT_LENGTH} tokens (the served tokenizers')",
        )
    width, heads = config.hidden_size, config.num_attention_heads
    if heads < 1 or width % heads or width // heads != HEAD_DIM:
        refuse(
            "num_attention_heads",
            f"hidden_size {width} in {heads} heads is not heads of {HEAD_DIM}, the only head size the "
            "fp16 export's attention kernel and CUDA graphs are built and measured for",
        )
    if config.hidden_act not in ACTIVATIONS:
        refuse("hidden_act", f"{config.hidden_act!r}: the text tower is built for {' or '.join(ACTIVATIONS)}")
    if config.eos_token_id not in EOS_TOKEN_IDS:
        refuse(
            "eos_token_id",
            f"{config.eos_token_id}: HF's CLIP pools at argmax(ids) for the legacy 2 and at the first "
            f"EOT id for 49407; the build serves {' or '.join(map(str, EOS_TOKEN_IDS))}",
        )
    if not isinstance(config.projection_dim, int) or config.projection_dim < 1:
        refuse("projection_dim", f"{config.projection_dim!r}: the size of get_text_features must be a positive int")


def check_loaded(checkpoint: str, loading_info: dict[str, Any]) -> None:
    """`from_pretrained(..., output_loading_info=True)`'s report: every weight of the tower and its
    projection came from the checkpoint (a missing one would be served as random numbers)."""
    missing = sorted(loading_info.get("missing_keys") or ())
    if PROJECTION_WEIGHT in missing:
        raise UnservableCheckpoint(
            checkpoint,
            "text_projection",
            "the checkpoint has no text projection (a CLIPTextModel?): get_text_features needs "
            "a CLIPModel or CLIPTextModelWithProjection checkpoint",
        )
    if missing:
        raise UnservableCheckpoint(checkpoint, missing[0], f"{len(missing)} weight(s) missing from the checkpoint")


def check_tokenizer_files(checkpoint: str, files: dict[str, Path]) -> None:
    """The checkpoint's own tokenizer files (name -> local path, for those it ships) against CLIP's
    BPE: the same token for every id, and the same merges in the same order."""
    from .tokenizer.assets import clip_bpe

    vocab, merges = clip_bpe()
    expected_vocab = {token: i for i, token in enumerate(vocab)}
    expected_merges = [f"{a} {b}" for a, b in merges]
    for name, path in sorted(files.items()):
        if name == VOCAB_JSON:
            _same_vocab(checkpoint, name, json.loads(path.read_text(encoding="utf-8")), expected_vocab)
        elif name == MERGES_TXT:
            lines = path.read_text(encoding="utf-8").split("\n")
            got = [line for line in lines if line and not line.startswith("#version")]
            _same_merges(checkpoint, name, got, expected_merges)
        elif name == TOKENIZER_JSON:
            model = json.loads(path.read_text(encoding="utf-8")).get("model") or {}
            if model.get("type") != "BPE":
                raise UnservableCheckpoint(checkpoint, name, f"a {model.get('type')!r} tokenizer, not CLIP's BPE")
            _same_vocab(checkpoint, name, model.get("vocab") or {}, expected_vocab)
            got = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
            _same_merges(checkpoint, name, got, expected_merges)


def _same_vocab(checkpoint: str, name: str, got: dict[str, int], expected: dict[str, int]) -> None:
    if got == expected:
        return
    if len(got) != len(expected):
        raise UnservableCheckpoint(checkpoint, name, f"{len(got)} tokens, not CLIP's BPE vocabulary of {len(expected)}")
    token = next(t for t in sorted(expected, key=expected.__getitem__) if got.get(t) != expected[t])
    raise UnservableCheckpoint(
        checkpoint, name, f"token {token!r} has id {got.get(token)}, not {expected[token]} as in CLIP's BPE vocabulary"
    )


def _same_merges(checkpoint: str, name: str, got: list[str], expected: list[str]) -> None:
    if got == expected:
        return
    if len(got) != len(expected):
        raise UnservableCheckpoint(checkpoint, name, f"{len(got)} merges, not CLIP's BPE's {len(expected)}")
    rank = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
    raise UnservableCheckpoint(
        checkpoint, name, f"merge {rank} is {got[rank]!r}, not {expected[rank]!r} as in CLIP's BPE merges"
    )
