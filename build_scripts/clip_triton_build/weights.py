"""Where the encoder's weights come from: a checkpoint (HF hub id or local folder) or, when none
can be loaded, the real ViT-B/32 architecture with seeded random weights, said loudly; and
the HF `CLIPModel` holding those weights, the in-process reference the tests and benchmarks
compare the server with."""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from clip_triton_contract.names import PRETRAINED, RANDOM_INIT

from . import servable
from .spec import DEFAULT_CHECKPOINT, RANDOM_INIT_SEED, VIT_B32_TEXT_CONFIG, VIT_B32_VISION_CONFIG

if TYPE_CHECKING:
    from transformers import CLIPTextModelWithProjection

log = logging.getLogger("clip_triton_build")


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
    """The text tower of `checkpoint` (HF hub id or local folder of a CLIPModel or
    CLIPTextModelWithProjection), checked by `servable` first (UnservableCheckpoint names what the
    build cannot serve); without a checkpoint, the real ViT-B/32 text architecture with seeded
    random weights, said loudly (or an error if require_weights)."""
    from transformers import CLIPTextModelWithProjection
    from transformers.utils import logging as transformers_logging

    attempts, reason = _attempts(checkpoint)
    for kwargs in attempts:
        try:
            text_config = checked_config(checkpoint, **kwargs)
        except servable.UnservableCheckpoint:
            raise
        except Exception as exc:  # offline, unknown id, missing files: all mean "no weights here"
            last_error = _first_line(exc)
            continue
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # a CLIPModel's vision weights, unused here
        try:
            loaded: Any = CLIPTextModelWithProjection.from_pretrained(
                checkpoint, config=text_config, output_loading_info=True, **kwargs
            )
            model, info = loaded
        except Exception as exc:
            last_error = _first_line(exc)
            continue
        finally:
            transformers_logging.set_verbosity(verbosity)
        servable.check_loaded(checkpoint, info)
        return LoadedEncoder(model.eval(), PRETRAINED, checkpoint)
    reason += last_error
    if require_weights:
        raise WeightsUnavailable(f"cannot load weights from {checkpoint!r} ({reason}) and --require-weights is set")
    banner = "!" * 78
    log.warning(
        "\n%s\n  NO PRETRAINED WEIGHTS: could not load %r\n  (%s).\n"
        "  Building the real ViT-B/32 architecture (both towers) with RANDOM weights (seed %d).\n"
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
        f"seed {RANDOM_INIT_SEED} ViT-B/32 architecture; {checkpoint} could not be loaded",
    )


def random_init_vision(seed: int = RANDOM_INIT_SEED):
    """The random-init fallback's vision tower: ViT-B/32's, seeded, with CLIP's preprocessing, so a
    repository built without weights serves both towers' shapes as a real one does."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .encoder.image_tower import LoadedVision, complete

    torch.manual_seed(seed + 1)
    config = CLIPVisionConfig(**VIT_B32_VISION_CONFIG)
    config._attn_implementation = "eager"  # the ONNX export traces the plain attention
    model = CLIPVisionModelWithProjection(config).eval()
    return LoadedVision(model, complete({}), int(VIT_B32_VISION_CONFIG["image_size"]))


def load_vision_tower(checkpoint: str):
    """The vision tower of `checkpoint` with its preprocessing (encoder.image_tower.LoadedVision),
    found where its text tower was, or None when it has none."""
    from .encoder.image_tower import load_vision

    *first, last = _attempts(checkpoint)[0]
    for kwargs in first:
        try:
            return load_vision(checkpoint, **kwargs)
        except servable.UnservableCheckpoint:
            raise
        except Exception:  # not in the local cache: the next attempt asks the hub
            continue
    return load_vision(checkpoint, **last)


def _attempts(checkpoint: str) -> tuple[list[dict[str, Any]], str]:
    """from_pretrained's keyword arguments to try, in order, and why the hub is not among them:
    the local folder or HF cache first; the hub only when it answers (an unreachable hub otherwise
    costs half a minute of retries before the fallback)."""
    attempts: list[dict[str, Any]] = [dict(local_files_only=True)]
    if Path(checkpoint).is_dir():
        return attempts, ""
    if not hub_reachable():
        return attempts, "the Hugging Face hub is not reachable from here; "
    return attempts + [{}], ""


# check_servable's answers, which load_encoder asks again in the same build (the build clears it first)
CHECKED: dict[tuple[str, tuple], Any] = {}


def checked_config(checkpoint: str, **kwargs: Any):
    """The checkpoint's text tower config, checked with its tokenizer files (servable); what
    PretrainedConfig raises when there is no config to read. Read and checked once per build."""
    from transformers import PretrainedConfig

    key = (checkpoint, tuple(sorted(kwargs.items())))
    if key not in CHECKED:
        config, _ = PretrainedConfig.get_config_dict(checkpoint, **kwargs)
        text = servable.text_config(checkpoint, config)
        servable.check_tokenizer_files(checkpoint, tokenizer_files(checkpoint, **kwargs))
        CHECKED[key] = text
    return CHECKED[key]


def check_servable(checkpoint: str) -> None:
    """UnservableCheckpoint if `checkpoint` can be read and the build cannot serve it: what the
    build checks for every checkpoint before it replaces its output."""
    for kwargs in _attempts(checkpoint)[0]:
        try:
            checked_config(checkpoint, **kwargs)
            return
        except servable.UnservableCheckpoint:
            raise
        except Exception:
            continue


def _first_line(exc: Exception) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"


def tokenizer_files(checkpoint: str, **kwargs: Any) -> dict[str, Path]:
    """The tokenizer files `checkpoint` ships (servable.TOKENIZER_FILES), as local paths."""
    from transformers.utils import cached_file

    found = {}
    for name in servable.TOKENIZER_FILES:
        path = cached_file(checkpoint, name, _raise_exceptions_for_missing_entries=False, **kwargs)
        if path is not None:
            found[name] = Path(path)
    return found


@functools.lru_cache(maxsize=None)  # asked for every checkpoint of a build: one probe answers them all
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
