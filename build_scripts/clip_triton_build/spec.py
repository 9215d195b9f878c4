"""One source of truth for the constants that more than one place of the build needs.

The Triton configs (`model_repository/*/config.pbtxt`) repeat a few of these numbers because
protobuf text cannot import Python; `tests/test_repository_config.py` checks that they agree.
"""

from typing import Any

DEFAULT_CHECKPOINT = "openai/clip-vit-base-patch32"

CONTEXT_LENGTH = 77  # CLIP's positional table: <|startoftext|> + 75 tokens + <|endoftext|>
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
PAD_ID = 0  # open_clip pads with 0; CLIP pools at the EOT position, so padding never matters
EMBED_DIM = 512  # projection_dim of ViT-B/32: the size of get_text_features

# The ViT-B/32 text tower (HF CLIPTextConfig field names), used when no checkpoint can be loaded.
VIT_B32_TEXT_CONFIG: dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=CONTEXT_LENGTH,
    projection_dim=EMBED_DIM,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
RANDOM_INIT_SEED = 0

# Names the model repository uses (model folders and tensor names); the configs spell them too
# and tests/test_repository_config.py checks that they agree.
TOKENIZER_MODEL = "clip_tokenizer"  # C++ (backend clip_bpe): plain texts itself, the rest via:
PYTHON_TOKENIZER_MODEL = "clip_tokenizer_python"  # any text, with ftfy: its config's fallback_model
ENCODER_MODEL = "clip_text_encoder"
ENSEMBLE_MODEL = "clip_text"  # what clients call
# the load order: what a model calls before it (the ensemble's steps; the tokenizer's fallback)
MODELS = (PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL, ENCODER_MODEL, ENSEMBLE_MODEL)
FALLBACK_PARAMETER = "fallback_model"  # clip_tokenizer's config: the model it sends other texts to
PLAIN_SYMBOLS_PARAMETER = "plain_symbols"  # clip_tokenizer's config: the non-ASCII characters it cleans itself
TEXT_INPUT = "TEXT"  # the ensemble's and the tokenizer's input: [B, 1] BYTES
EMBEDDING_OUTPUT = "EMBEDDING"  # the ensemble's output: [B, 512] FP32
IDS_TENSOR = "input_ids"  # the tokenizer's output and the encoder's input: [B, 77] INT64
EMBEDS_TENSOR = "text_embeds"  # the encoder's output: [B, 512] FP32
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
BUILD_INFO_FILE = "build_info.json"  # what the build loaded: weights, checkpoint, reference_checkpoint
TORCHSCRIPT_FP16_FILE = "model_fp16.pt"  # GPU only: half-precision compute, fp32 output
# GPU only: the ops model_fp16.pt calls (clip_triton_build.encoder.cuda_ops: its CUDA graphs and the
# fused add and layer norm), next to it in the encoder's version folder; tritonserver loads it
# with LD_PRELOAD
CUDA_OPS_LIBRARY = "libclip_cuda_ops.so"
# The tokenizer's backend (csrc/clip_bpe_backend.cc), in its model folder, where Triton looks for a
# model's own backend: libtriton_<backend>.so
TOKENIZER_BACKEND = "clip_bpe"
TOKENIZER_BACKEND_LIBRARY = f"libtriton_{TOKENIZER_BACKEND}.so"
