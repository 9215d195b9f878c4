"""The CLIP text tower as the repository's encoder: load, wrap, export, verify.

`TrimmedTextEncoder` is what gets exported: input_ids [B, 77] -> text_embeds [B, 512], equal to
HF `get_text_features(input_ids)`. It first cuts the batch to its largest pooling position + 1.
CLIP's text transformer is causal and pools the hidden state at the EOT position, so positions
after the last EOT of the batch never reach the output; cutting them is exact and saves most of
the compute for caption-length texts (typically 10-20 of 77 positions).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import List
from urllib.parse import urlparse

import torch

from .spec import CONTEXT_LENGTH, DEFAULT_CHECKPOINT, RANDOM_INIT_SEED, VIT_B32_TEXT_CONFIG

log = logging.getLogger("clip_build")

RANDOM_INIT = "random-init"
BUCKET_ROWS = 64  # TorchScript export: batches larger than this run in length-sorted groups
PRETRAINED = "pretrained"


@dataclass
class LoadedEncoder:
    model: torch.nn.Module  # transformers CLIPTextModelWithProjection, eval mode, fp32
    weights: str  # PRETRAINED or RANDOM_INIT
    source: str  # checkpoint id/path, or a description of the random init


class WeightsUnavailable(RuntimeError):
    pass


def random_init_encoder(seed: int = RANDOM_INIT_SEED):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(**VIT_B32_TEXT_CONFIG)
    return CLIPTextModelWithProjection(config).eval()


def load_encoder(checkpoint: str = DEFAULT_CHECKPOINT, require_weights: bool = False) -> LoadedEncoder:
    """The text tower of `checkpoint` (HF hub id or local folder); without one, the real ViT-B/32
    text architecture with seeded random weights, said loudly (or an error if require_weights)."""
    from transformers import CLIPTextModelWithProjection

    reason = ""
    # Local folder or HF cache first; the hub only when it answers (an unreachable hub otherwise
    # costs half a minute of retries before the fallback).
    attempts = [dict(local_files_only=True)]
    if not Path(checkpoint).is_dir():
        if hub_reachable():
            attempts.append({})
        else:
            reason = "the Hugging Face hub is not reachable from here; "
    for kwargs in attempts:
        try:
            model = CLIPTextModelWithProjection.from_pretrained(checkpoint, **kwargs)
            return LoadedEncoder(model.eval(), PRETRAINED, checkpoint)
        except Exception as exc:  # offline, unknown id, missing files: all mean "no weights here"
            message = str(exc).strip().splitlines()
            last_error = f"{type(exc).__name__}: {message[0] if message else ''}"
    reason += last_error
    if require_weights:
        raise WeightsUnavailable(f"cannot load weights from {checkpoint!r} ({reason}) and --require-weights is set")
    banner = "!" * 78
    log.warning(
        "\n%s\n  NO PRETRAINED WEIGHTS: could not load %r\n  (%s).\n"
        "  Building the real ViT-B/32 text architecture with RANDOM weights (seed %d).\n"
        "  Embeddings will have the right shape and be deterministic, but carry NO meaning.\n"
        "  The encoder config is stamped weights=random-init; clients warn about it.\n"
        "  Pass --checkpoint <hub id or local folder> with real weights, or --require-weights.\n%s",
        banner, checkpoint, reason, RANDOM_INIT_SEED, banner,
    )
    return LoadedEncoder(random_init_encoder(), RANDOM_INIT,
                         f"seed {RANDOM_INIT_SEED} ViT-B/32 text architecture; {checkpoint} could not be loaded")


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((host.hostname, host.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def reference_clip_model(source: str):
    """HF `CLIPModel` holding the text weights of `source` (a full CLIP checkpoint, or the
    text-tower-only folder a random-init build saves), so `get_text_features` - the Jina
    executor's computation - can run in-process on the repository's exact weights."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextModelWithProjection

    try:
        return CLIPModel.from_pretrained(source, local_files_only=True).eval()
    except Exception:
        text = CLIPTextModelWithProjection.from_pretrained(source, local_files_only=True)
        tiny_vision = dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=1,
                           image_size=32, patch_size=16)
        config = CLIPConfig(text_config=text.config.to_dict(), vision_config=tiny_vision,
                            projection_dim=text.config.projection_dim)
        model = CLIPModel(config).eval()
        model.text_model.load_state_dict(text.text_model.state_dict())
        model.text_projection.load_state_dict(text.text_projection.state_dict())
        return model


def pooling_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Where HF's CLIPTextTransformer pools: the first EOT of each row. Checkpoints with the legacy
    eos_token_id == 2 (openai/*) take argmax(input_ids), which is the first EOT as well since EOT
    is the largest id; rows without any EOT then pool where HF pools them too."""
    if eos_token_id == 2:
        return input_ids.argmax(dim=-1)
    return (input_ids == eos_token_id).int().argmax(dim=-1)


class TrimmedTextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.eos_token_id = int(model.config.eos_token_id)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = pooling_positions(input_ids, self.eos_token_id).max() + 1
        keep = torch.arange(length, device=input_ids.device)  # traced as data-dependent, not a constant
        return self.model(input_ids=input_ids.index_select(1, keep)).text_embeds


def example_input_ids(batch: int = 2) -> torch.Tensor:
    ids = torch.zeros(batch, CONTEXT_LENGTH, dtype=torch.long)
    ids[:, 0] = VIT_B32_TEXT_CONFIG["bos_token_id"]
    ids[:, 1:5] = torch.tensor([320, 1125, 539, 320])
    ids[:, 5] = VIT_B32_TEXT_CONFIG["eos_token_id"]
    return ids


def export_onnx(model: torch.nn.Module, path: Path, opset: int = 17) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = TrimmedTextEncoder(model).eval()
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example_input_ids(),),
            str(path),
            input_names=["input_ids"],
            output_names=["text_embeds"],
            dynamic_axes={"input_ids": {0: "batch"}, "text_embeds": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path


def export_torchscript(model: torch.nn.Module, path: Path, device: str = "cpu", fp16: bool = False) -> Path:
    """TorchScript for Triton's libtorch (`pytorch`) backend. The trim is scripted (its length
    depends on the data); the transformer is traced at one length and runs at any length.

    Trace on the device that will serve it (`device="cuda"` for GPU instances). `fp16` computes
    in half precision and still takes int64 ids and returns fp32 embeddings."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = _ProjectedText(copy.deepcopy(model).to(device, torch.float16 if fp16 else torch.float32))
    with torch.no_grad():
        traced = torch.jit.trace(inner, (example_input_ids().to(device),), check_trace=False)
    scripted = torch.jit.script(_ScriptedTrim(traced, int(model.config.eos_token_id)))
    scripted.save(str(path))
    return path


class _ProjectedText(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).text_embeds.float()


class _ScriptedTrim(torch.nn.Module):
    """Trim, and for large batches bucket: rows are ordered by length and run in groups of
    `bucket_rows`, each group cut to its own longest text, so one long text in a big batch no
    longer makes every row pay for 77 positions. Each row's result is the same either way."""

    def __init__(self, inner, eos_token_id: int, bucket_rows: int = BUCKET_ROWS):
        super().__init__()
        self.inner = inner
        self.eos_token_id = eos_token_id
        self.bucket_rows = bucket_rows

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.eos_token_id == 2:
            positions = input_ids.argmax(dim=-1)
        else:
            positions = (input_ids == self.eos_token_id).int().argmax(dim=-1)
        rows = input_ids.size(0)
        if rows <= self.bucket_rows:
            length = int(positions.max().item()) + 1
            return self.inner(input_ids[:, :length])
        order = torch.argsort(positions)
        pieces: List[torch.Tensor] = []
        for start in range(0, rows, self.bucket_rows):
            index = order[start : start + self.bucket_rows]
            length = int(positions.index_select(0, index).max().item()) + 1
            pieces.append(self.inner(input_ids.index_select(0, index)[:, :length]))
        out = torch.empty_like(torch.cat(pieces))
        out[order] = torch.cat(pieces)
        return out
