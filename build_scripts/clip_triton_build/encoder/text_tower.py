"""CLIP's text tower + projection (`get_text_features`), written for export to ONNX and TorchScript.

Numerically the HF model (`CLIPTextModelWithProjection`, same weights, tested <= 1e-5), but:
- device-agnostic: nothing in the traced graph names a device. HF's forward creates its causal
  mask and pooling index with `device=hidden_states.device`, which a trace bakes in as a constant
  (a TorchScript file traced on cuda:0 then fails on cuda:1). Here the causal mask is SDPA's
  `is_causal` and pooling is a `gather`, so one file serves any device Triton loads it to;
- fewer, larger ops (a GPU forward of a few hundred rows is bound by kernel launches): one QKV
  matmul per layer instead of three; PyTorch's fused attention instead of
  matmul-mask-softmax-matmul; quick_gelu (OpenAI's checkpoints) as one SiLU, its 1.702 folded
  into fc1 and fc2 (x * sigmoid(1.702 x) = silu(1.702 x) / 1.702), one kernel instead of three;
  gelu (LAION's) as PyTorch's exact gelu, HF's;
- `PackedTextTower` (the fp16 GPU export) runs a batch as one sequence of its real tokens, no
  padding: every op but attention works token by token, and attention takes each text's extent
  from `cu_seqlens` (the varlen form of the memory-efficient kernel); each residual add and the
  layer norm that reads it run as one op (`_add_norm`);
- ids outside the vocabulary become the pad id before anything reads them (`in_vocabulary`).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from clip_triton_contract.names import CONTEXT_LENGTH

from ..spec import ACTIVATIONS, PAD_ID


def in_vocabulary(input_ids: torch.Tensor, vocab_size: int, pad_id: int = PAD_ID) -> torch.Tensor:
    """The encoder's contract for ids it did not get from our tokenizer (a direct caller's):
    anything outside [0, vocab_size) is read as the pad id. A graph cannot refuse one request of a
    dynamic batch (an error fails the whole batch), so a bad id gets a defined result instead of
    failing its batch-mates; and negative ids never wrap around to the end of the table."""
    valid = (input_ids >= 0) & (input_ids < vocab_size)
    return input_ids.masked_fill(~valid, pad_id)


def pooling_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Where HF's CLIP text transformer pools: the first EOT of each row. Checkpoints with the
    legacy eos_token_id == 2 (openai/*) take argmax(input_ids), which is the first EOT as well
    since EOT is the largest id; rows without any EOT then pool where HF pools them too."""
    if eos_token_id == 2:
        # int32 first (ids are < vocab_size): ONNX Runtime has no int64 ArgMax kernel
        return input_ids.int().argmax(dim=-1)
    return (input_ids == eos_token_id).int().argmax(dim=-1)


QUICK_GELU_SCALE = 1.702


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[batch, heads, length, head_dim] -> same; scale 1/sqrt(head_dim), as HF."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# How PackedTextTower attends: "efficient", the varlen memory-efficient kernel (CUDA); "masked",
# the same math on any device through a block-diagonal causal mask, quadratic in the batch's
# tokens (the CPU tests' reference)
PACKED_ATTENTION = ("efficient", "masked")


def _varlen_efficient_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_length: int
) -> torch.Tensor:
    return torch.ops.aten._efficient_attention_forward(
        q,
        k,
        v,
        None,
        cu_seqlens,
        cu_seqlens,
        max_length,
        max_length,
        0.0,
        1,  # 1: causal from top left
    )[0]


# The tracer rejects the kernel's SymInt arguments; scripted, they are plain ints, and the trace
# records (and inlines) a call to the scripted function. Compiled on first use, not at import.
_scripted_varlen: list = []


def _packed_causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, kernel: str
) -> torch.Tensor:
    """[1, tokens, heads, head_dim] -> same. Text i is tokens cu_seqlens[i]:cu_seqlens[i + 1]; a
    token attends to its own text's tokens up to itself. CONTEXT_LENGTH bounds every text (the
    kernels size their grids by it; a constant keeps the trace free of the batch's data)."""
    if kernel == "efficient":
        if not _scripted_varlen:
            _scripted_varlen.append(torch.jit.script(_varlen_efficient_attention))
        return _scripted_varlen[0](q, k, v, cu_seqlens, CONTEXT_LENGTH)
    if kernel != "masked":
        raise ValueError(f"packed attention is one of {PACKED_ATTENTION}, not {kernel!r}")
    index = torch.arange(q.size(1), device=q.device)
    text = torch.searchsorted(cu_seqlens[1:].long(), index, right=True)
    allowed = (text.unsqueeze(1) == text.unsqueeze(0)) & (index.unsqueeze(1) >= index.unsqueeze(0))
    return F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed
    ).transpose(1, 2)


def _add_norm(x: torch.Tensor, delta: torch.Tensor, norm: nn.LayerNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, norm(x + delta)) as one op, clip_kernels::add_layer_norm (native/cuda_ops/add_layer_norm.cu:
    the sum is written once instead of written and read back, and the norm runs near the card's
    bandwidth, where PyTorch's fp16 layer norm reaches about a third of it). The op must be
    registered where the tower is traced and loaded (`cuda_ops.load`); off a GPU it runs the two
    ATen ops."""
    total, normed = torch.ops.clip_kernels.add_layer_norm(x, delta, norm.weight, norm.bias, norm.eps)
    return total, normed


class EncoderLayer(nn.Module):
    """One pre-norm transformer layer of CLIP, either tower's: `forward` (the text tower's causal
    form), `packed` (texts packed, causal per text) and `dense` (every row the same length, each
    position attending to the whole row: the vision tower's patches)."""

    def __init__(self, layer: Any, heads: int, activation: str):  # HF CLIPEncoderLayer, config.hidden_act
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"CLIP's MLP is built for {' or '.join(ACTIVATIONS)}, not {activation!r}")
        self.quick_gelu = activation == "quick_gelu"
        scale = QUICK_GELU_SCALE if self.quick_gelu else 1.0
        attn = layer.self_attn
        self.heads = heads
        self.head_dim = attn.q_proj.out_features // heads
        self.layer_norm1 = layer.layer_norm1
        self.qkv = nn.Linear(attn.q_proj.in_features, 3 * attn.q_proj.out_features)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            self.qkv.bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        self.out_proj = attn.out_proj
        self.layer_norm2 = layer.layer_norm2
        self.fc1 = nn.Linear(layer.mlp.fc1.in_features, layer.mlp.fc1.out_features)
        self.fc2 = nn.Linear(layer.mlp.fc2.in_features, layer.mlp.fc2.out_features)
        with torch.no_grad():
            self.fc1.weight.copy_(layer.mlp.fc1.weight * scale)
            self.fc1.bias.copy_(layer.mlp.fc1.bias * scale)
            self.fc2.weight.copy_(layer.mlp.fc2.weight / scale)
            self.fc2.bias.copy_(layer.mlp.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Shapes from constants only (unflatten/flatten of the last dims): no size/divide ops for
        # the interpreter to run per layer, and batch and length stay free in the trace.
        qkv = self.qkv(self.layer_norm1(x)).unflatten(-1, (3, self.heads, self.head_dim))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head_dim]
        attended = _causal_attention(q, k, v)
        return self._mlp(x + self.out_proj(attended.transpose(1, 2).flatten(2)))

    def packed(
        self,
        x: torch.Tensor,
        normed: torch.Tensor,
        cu_seqlens: torch.Tensor,
        kernel: str,
        next_norm: Optional[nn.LayerNorm],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [1, tokens, width]: the batch's texts one after another (PackedTextTower), and
        `normed`, its layer_norm1. Returns the layer's output and, where `next_norm` is given (the
        next layer's layer_norm1), that norm of it: each residual add comes with the norm that
        reads it (_add_norm)."""
        qkv = self.qkv(normed).unflatten(-1, (3, self.heads, self.head_dim))
        q, k, v = qkv.unbind(2)  # each [1, tokens, heads, head_dim]
        attended = _packed_causal_attention(q, k, v, cu_seqlens, kernel)
        return self._residuals(x, attended.flatten(2), next_norm)

    def dense(
        self, x: torch.Tensor, normed: torch.Tensor, next_norm: Optional[nn.LayerNorm]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [batch, length, width], rows of one length (an image's class token and patches), and
        `normed`, its layer_norm1: as `packed`, but each position attends to its whole row (PyTorch's
        fused attention, not causal)."""
        qkv = self.qkv(normed).unflatten(-1, (3, self.heads, self.head_dim))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [batch, heads, length, head_dim]
        attended = F.scaled_dot_product_attention(q, k, v)
        return self._residuals(x, attended.transpose(1, 2).flatten(2), next_norm)

    def _residuals(
        self, x: torch.Tensor, attended: torch.Tensor, next_norm: Optional[nn.LayerNorm]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The layer after attention, each residual add with the norm that reads it (_add_norm):
        the output, and its `next_norm` where one is given."""
        x, normed = _add_norm(x, self.out_proj(attended), self.layer_norm2)
        mlp = self._feed_forward(normed)
        if next_norm is None:
            return x + mlp, None
        return _add_norm(x, mlp, next_norm)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._feed_forward(self.layer_norm2(x))

    def _feed_forward(self, normed: torch.Tensor) -> torch.Tensor:
        if self.quick_gelu:
            return self.fc2(F.silu(self.fc1(normed)))  # = fc2(quick_gelu(fc1(...))), 1.702 folded in
        return self.fc2(F.gelu(self.fc1(normed)))


class CLIPTextTower(nn.Module):
    """input_ids [B, L] (any L <= 77) -> text_embeds [B, projection_dim] in the weights' dtype."""

    # `model`: HF CLIPTextModelWithProjection, read by its field names (Any: nn.Module's attribute
    # types say nothing about them)
    def __init__(self, model: Any):
        super().__init__()
        config, text = model.config, model.text_model
        self.vocab_size = int(config.vocab_size)
        self.eos_token_id = int(config.eos_token_id)
        self.token_embedding = text.embeddings.token_embedding
        self.position_embedding = text.embeddings.position_embedding
        self.layers = nn.ModuleList(
            EncoderLayer(layer, config.num_attention_heads, config.hidden_act) for layer in text.encoder.layers
        )
        self.final_layer_norm = text.final_layer_norm
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.size(1)
        x = self.token_embedding(input_ids) + self.position_embedding.weight[:length]
        for layer in self.layers:
            x = layer(x)
        x = self.final_layer_norm(x)
        index = pooling_positions(input_ids, self.eos_token_id).view(-1, 1, 1).expand(-1, 1, x.size(-1))
        return self.text_projection(x.gather(1, index).squeeze(1))


class PackedTextTower(nn.Module):
    """The tower over a packed batch: tokens [T] and their positions [T] (every text's tokens up
    to its EOT, one text after another), cu_seqlens [B + 1] (int32: where each text starts, then
    T), last [B] (each text's EOT token) -> text_embeds [B, projection_dim] in fp32.

    Every op but attention works token by token, so the batch costs its real tokens instead of
    rows x its longest text, and runs in one pass whatever its lengths (no length groups). The
    final layer norm runs on the pooled tokens only: it is per token, so that is the same result."""

    def __init__(self, tower: CLIPTextTower, attention: str):
        super().__init__()
        if attention not in PACKED_ATTENTION:
            raise ValueError(f"packed attention is one of {PACKED_ATTENTION}, not {attention!r}")
        self.tower = tower
        self.attention = attention

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        tower = self.tower
        layers = [cast(EncoderLayer, layer) for layer in tower.layers]
        embedded = tower.token_embedding(tokens).unsqueeze(0), tower.position_embedding(positions).unsqueeze(0)
        x, normed = _add_norm(*embedded, layers[0].layer_norm1)
        for i, layer in enumerate(layers):
            next_norm = layers[i + 1].layer_norm1 if i + 1 < len(layers) else None
            x, following = layer.packed(x, normed, cu_seqlens, self.attention, next_norm)
            if following is not None:
                normed = following
        pooled = tower.final_layer_norm(x[0].index_select(0, last))
        return tower.text_projection(pooled).float()
