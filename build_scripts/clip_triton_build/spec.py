"""The build's own constants: what it can serve of a CLIP text tower and the files it writes.

What the service shares with its callers (model, tensor and parameter names, the context length)
is clip_triton_contract's. The Triton configs (`model_repository/*/config.pbtxt`) repeat a few of
these numbers because protobuf text cannot import Python; the unit tests check that they agree.
"""

from typing import Any

from clip_triton_contract.names import CONTEXT_LENGTH

DEFAULT_CHECKPOINT = "openai/clip-vit-base-patch32"

# CONTEXT_LENGTH is CLIP's positional table: <|startoftext|> + 75 tokens + <|endoftext|>
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
# ... and its vision tower (the random-init fallback's image side): ViT-B/32 at 224 pixels
VIT_B32_VISION_CONFIG: dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=32,
    projection_dim=EMBED_DIM,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
RANDOM_INIT_SEED = 0

# The names the service shares with its clients, the frontend and the runtime (models, tensors,
# parameters) live in clip_triton_contract.names; the build writes them into the configs.
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"
# the checkpoint's image preprocessing (HF's file name), copied beside clip_image_preprocess's model.py
PREPROCESSOR_FILE = "preprocessor_config.json"
TORCHSCRIPT_FILE = "model.pt"
BUILD_INFO_FILE = "build_info.json"  # what the build loaded: weights, checkpoint, reference_checkpoint
TORCHSCRIPT_FP16_FILE = "model_fp16.pt"  # GPU only: half-precision compute, fp32 output
# GPU only: the ops model_fp16.pt calls (clip_triton_build.encoder.cuda_ops: its CUDA graphs and the
# fused add and layer norm), in the repository's root folder (one library for every encoder in it;
# Triton reads only folders there); tritonserver loads it with LD_PRELOAD
CUDA_OPS_LIBRARY = "libclip_cuda_ops.so"
# The tokenizer's backend (native/clip_bpe/clip_bpe_backend.cc), in its model folder, where Triton looks for a
# model's own backend: libtriton_<backend>.so
TOKENIZER_BACKEND = "clip_bpe"
TOKENIZER_BACKEND_LIBRARY = f"libtriton_{TOKENIZER_BACKEND}.so"
