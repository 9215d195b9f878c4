"""The names a served CLIP repository answers to: what a client calls and reads back, and what
its models call each other. The build writes them into the configs; clients read the rest (input
and output dims, max_batch_size) from the served configs at run time."""

from __future__ import annotations

ENSEMBLE_MODEL = "clip_text"  # what clients call: TEXT in, EMBEDDING out
TOKENIZER_MODEL = "clip_tokenizer"  # C++ (backend clip_bpe): plain texts itself, the rest via:
PYTHON_TOKENIZER_MODEL = "clip_tokenizer_python"  # any text, with ftfy: the C++ one's fallback_model
ENCODER_MODEL = "clip_text_encoder"
# the load order: what a model calls before it (the ensemble's steps; the tokenizer's fallback)
MODELS = (PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL, ENCODER_MODEL, ENSEMBLE_MODEL)
# The image side, built for a checkpoint with a vision tower: clients call IMAGE_ENSEMBLE_MODEL
IMAGE_ENSEMBLE_MODEL = "clip_image"  # IMAGE in, EMBEDDING out (the text side's space)
IMAGE_PREPROCESS_MODEL = "clip_image_preprocess"  # the checkpoint's preprocessing (Python, Pillow)
IMAGE_ENCODER_MODEL = "clip_image_encoder"  # the vision tower and its projection
IMAGE_MODELS = (IMAGE_PREPROCESS_MODEL, IMAGE_ENCODER_MODEL, IMAGE_ENSEMBLE_MODEL)  # load order
# Every model a checkpoint may have, in load order (a model after those it calls): the text
# ensemble, a checkpoint's bare name when it has one, last
LOAD_ORDER = (*MODELS[:-1], *IMAGE_MODELS, ENSEMBLE_MODEL)
# A repository may hold several checkpoints, each under a name: its ensemble is called NAME, its
# other models NAME + "_" + their name above.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def model_names(name: str | None = None) -> dict[str, str]:
    """Each model of MODELS -> its name in a repository where the checkpoint is called `name`
    (None or ENSEMBLE_MODEL: the names above)."""
    if name is None or name == ENSEMBLE_MODEL:
        return {model: model for model in MODELS}
    return {model: name if model == ENSEMBLE_MODEL else f"{name}_{model}" for model in MODELS}


def image_model_names(name: str | None = None) -> dict[str, str]:
    """Each model of IMAGE_MODELS -> its name where the checkpoint is called `name`: NAME + "_" +
    its name above (None or ENSEMBLE_MODEL: the names above)."""
    if name is None or name == ENSEMBLE_MODEL:
        return {model: model for model in IMAGE_MODELS}
    return {model: f"{name}_{model}" for model in IMAGE_MODELS}


def all_model_names(name: str | None = None) -> dict[str, str]:
    """model_names and image_model_names together, in LOAD_ORDER."""
    names = {**model_names(name), **image_model_names(name)}
    return {model: names[model] for model in LOAD_ORDER}


def image_ensemble_of(text_model: str) -> str:
    """The image ensemble of the checkpoint whose text ensemble is called `text_model`: the default
    checkpoint's, namespaced or not (PREFIX + ENSEMBLE_MODEL -> PREFIX + IMAGE_ENSEMBLE_MODEL), or a
    named one's (NAME -> NAME_clip_image)."""
    if text_model.endswith(ENSEMBLE_MODEL):
        return text_model[: -len(ENSEMBLE_MODEL)] + IMAGE_ENSEMBLE_MODEL
    return image_model_names(text_model)[IMAGE_ENSEMBLE_MODEL]


# Tensors
TEXT_INPUT = "TEXT"  # the ensemble's and the tokenizers' input: [B, 1] BYTES (UTF-8)
EMBEDDING_OUTPUT = "EMBEDDING"  # the ensemble's output: [B, projection_dim] FP32
# The ensemble's second output, written only on request: [B, 1] INT64, the tokens of each text
# the encoder reads, <|startoftext|> through <|endoftext|> (at most CONTEXT_LENGTH)
TOKEN_COUNT_OUTPUT = "TOKEN_COUNT"
TOKEN_COUNT_TENSOR = "token_count"  # the same, as the tokenizers' second output
IDS_TENSOR = "input_ids"  # the tokenizers' output and the encoder's input: [B, CONTEXT_LENGTH] INT64
EMBEDS_TENSOR = "text_embeds"  # the encoder's output: [B, projection_dim] FP32
IMAGE_INPUT = "IMAGE"  # the image ensemble's input: [B, 1] BYTES, one encoded image file a row
PIXELS_TENSOR = "pixel_values"  # preprocessed images: [B, 3, image_size, image_size] FP32
IMAGE_EMBEDS_TENSOR = "image_embeds"  # the vision encoder's output: [B, projection_dim] FP32

CONTEXT_LENGTH = 77  # tokens the served tokenizer keeps: longer texts are truncated there

# Parameters the build stamps into the ensemble's config (string values)
WEIGHTS_PARAMETER = "weights"  # one of WEIGHTS below
CHECKPOINT_PARAMETER = "checkpoint"  # the hub id or folder the encoder was built from
# the names of every CLIP ensemble built into the same repository (comma-separated), so a client
# that knows one finds the others through the model-config API alone
SIBLINGS_PARAMETER = "models"
PRETRAINED, RANDOM_INIT = "pretrained", "random-init"
WEIGHTS = (PRETRAINED, RANDOM_INIT)

# Parameters of the C++ tokenizer's config
FALLBACK_PARAMETER = "fallback_model"  # the model it sends the texts it cannot prove plain to
FALLBACK_TIMEOUT_PARAMETER = "fallback_timeout_ms"  # how long that hand-over may take
PLAIN_SYMBOLS_PARAMETER = "plain_symbols"  # the non-ASCII characters it cleans itself
