"""Where the encoder's weights come from: a checkpoint (HF hub id or local folder) or, when none
can be loaded, the real ViT-B/32 text architecture with seeded random weights, said loudly; and
the HF `CLIPModel` holding those weights, the in-process reference the tests and benchmarks
compare the server with."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from .spec import DEFAULT_CHECKPOINT, RANDOM_INIT_SEED, VIT_B32_TEXT_CONFIG

if TYPE_CHECKING:
    from transformers import CLIPTextModelWithProjection

log = logging.getLogger("clip_triton_build")

RANDOM_INIT = "random-init"
PRETRAINED = "pretrained"


@dataclass
class LoadedEncoder:
    model: CLIPTextModelWithProjection  # eval mode, fp32
    weights: str  # PRETRAINED or RANDOM_INIT
    source: str  # checkpoint id/path, or a description of the random init


class WeightsUnavailable(RuntimeError):
    pass


def random_init_encoder(seed: int = RANDOM_INIT_SEED) -> CLIPTextModelWithProjection:
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
    attempts: list[dict[str, Any]] = [dict(local_files_only=True)]
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
        banner,
        checkpoint,
        reason,
        RANDOM_INIT_SEED,
        banner,
    )
    return LoadedEncoder(
        random_init_encoder(),
        RANDOM_INIT,
        f"seed {RANDOM_INIT_SEED} ViT-B/32 text architecture; {checkpoint} could not be loaded",
    )


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
        tiny_vision = dict(
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=1,
            image_size=32,
            patch_size=16,
        )
        config = CLIPConfig(
            text_config=text.config.to_dict(), vision_config=tiny_vision, projection_dim=text.config.projection_dim
        )
        model = CLIPModel(config).eval()
        model.text_model.load_state_dict(text.text_model.state_dict())
        model.text_projection.load_state_dict(text.text_projection.state_dict())
        return model
