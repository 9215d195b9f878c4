"""One source of truth for the constants that more than one place of the build needs.

The Triton configs (`model_repository/*/config.pbtxt`) repeat a few of these numbers because
protobuf text cannot import Python; `tests/unit/test_repository_config.py` checks that they agree.
"""

from typing import Any

DEFAULT_CHECKPOINT = "openai/clip-vit-base-patch32"

CONTEXT_LENGTH = 77  # CLIP's positional table: <|startoftext|> + 75 tokens + <|endoftext|>
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID, EOT_ID = 49406, 49407  # their ids in CLIP's BPE vocabulary (the last two of VOCAB_SIZE)
PAD_ID = 0  # open_clip pads with 0; CLIP pools at the EOT position, so padding never matters
EMBED_DIM = 512  # projection_dim of ViT-B/32 (the default checkpoint): the size of get_text_features

# What the build can serve of a CLIP text tower (clip_triton_build.servable refuses anything else,
# naming the field): CLIP's BPE vocabulary and context, attention heads of HEAD_DIM (the fp16
# export's attention kernel and CUDA graphs are built and measured for it), either MLP activation
# (OpenAI's checkpoints: quick_gelu; LAION's: gelu) and either EOT convention of HF's configs (the
# legacy 2 pools at argmax(ids), 49407 at the first EOT id: the same position for CLIP's BPE ids).
VOCAB_SIZE = 49408
HEAD_DIM = 64
ACTIVATIONS = ("quick_gelu", "gelu")
EOS_TOKEN_IDS = (2, EOT_ID)

# The ViT-B/32 text tower (HF CLIPTextConfig field names), used when no checkpoint can be loaded.
VIT_B32_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=CONTEXT_LENGTH,
    projection_dim=EMBED_DIM,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=SOT_ID,
    eos_token_id=EOT_ID,
    pad_token_id=1,
)
RANDOM_INIT_SEED = 0

# Names the model repository uses (model folders and tensor names); the configs spell them too
# and tests/unit/test_repository_config.py checks that they agree.
TOKENIZER_MODEL = "clip_tokenizer"  # C++ (backend clip_bpe): plain texts itself, the rest via:
PYTHON_TOKENIZER_MODEL = "clip_tokenizer_python"  # any text, with ftfy: its config's fallback_model
ENCODER_MODEL = "clip_text_encoder"
ENSEMBLE_MODEL = "clip_text"  # what clients call
# the load order: what a model calls before it (the ensemble's steps; the tokenizer's fallback)
MODELS = (PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL, ENCODER_MODEL, ENSEMBLE_MODEL)
# The ensemble's parameters the build stamps: what its encoder was built from, and the names of
# every CLIP ensemble built into the same repository (comma-separated), so a client that knows one
# finds the others through the model-config API alone
WEIGHTS_PARAMETER = "weights"
CHECKPOINT_PARAMETER = "checkpoint"
SIBLINGS_PARAMETER = "models"
# A repository may hold several checkpoints, each under a name (python -m clip_triton_build --model
# NAME=CHECKPOINT): its ensemble is called NAME, its other models NAME + "_" + their name above.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def model_names(name: str | None = None) -> dict[str, str]:
    """Each model of MODELS -> its name in a repository where the checkpoint is called `name`
    (None or ENSEMBLE_MODEL: the names above)."""
    if name is None or name == ENSEMBLE_MODEL:
        return {model: model for model in MODELS}
    return {model: name if model == ENSEMBLE_MODEL else f"{name}_{model}" for model in MODELS}


FALLBACK_PARAMETER = "fallback_model"  # clip_tokenizer's config: the model it sends other texts to
PLAIN_SYMBOLS_PARAMETER = "plain_symbols"  # clip_tokenizer's config: the non-ASCII characters it cleans itself
TEXT_INPUT = "TEXT"  # the ensemble's and the tokenizer's input: [B, 1] BYTES
EMBEDDING_OUTPUT = "EMBEDDING"  # the ensemble's output: [B, projection_dim] FP32
# the tokenizers' second output and the ensemble's, each written only on request: [B, 1] INT64, the
# tokens of each text the encoder reads, <|startoftext|> through <|endoftext|> (at most CONTEXT_LENGTH)
TOKEN_COUNT_TENSOR = "token_count"
TOKEN_COUNT_OUTPUT = "TOKEN_COUNT"
IDS_TENSOR = "input_ids"  # the tokenizer's output and the encoder's input: [B, 77] INT64
EMBEDS_TENSOR = "text_embeds"  # the encoder's output: [B, projection_dim] FP32
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
BUILD_INFO_FILE = "build_info.json"  # what the build loaded: weights, checkpoint, reference_checkpoint
TORCHSCRIPT_FP16_FILE = "model_fp16.pt"  # GPU only: half-precision compute, fp32 output
# GPU only: the ops model_fp16.pt calls (clip_triton_build.encoder.cuda_ops: its CUDA graphs and the
# fused add and layer norm), in the repository's root folder (one library for every encoder in it;
# Triton reads only folders there); tritonserver loads it with LD_PRELOAD
CUDA_OPS_LIBRARY = "libclip_cuda_ops.so"
# The tokenizer's backend (csrc/clip_bpe_backend.cc), in its model folder, where Triton looks for a
# model's own backend: libtriton_<backend>.so
TOKENIZER_BACKEND = "clip_bpe"
TOKENIZER_BACKEND_LIBRARY = f"libtriton_{TOKENIZER_BACKEND}.so"
