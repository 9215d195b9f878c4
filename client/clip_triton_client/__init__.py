"""Python client for the CLIP text embedding Triton repository: documents in, embeddings out."""

from clip_triton_contract.traffic import BULK, INTERACTIVE

from .client import DEFAULT_MODEL, CLIPClient, ModelInfo, RandomWeightsWarning
from .errors import (
    AccessDeniedError,
    CLIPClientError,
    DeadlineExceededError,
    InvalidItemError,
    ModelNotReadyError,
    QueueFullError,
    ServerError,
    ServerUnavailableError,
)

__all__ = [
    "CLIPClient",
    "DEFAULT_MODEL",
    "ModelInfo",
    "RandomWeightsWarning",
    "AccessDeniedError",
    "CLIPClientError",
    "DeadlineExceededError",
    "InvalidItemError",
    "ModelNotReadyError",
    "QueueFullError",
    "ServerError",
    "ServerUnavailableError",
    "BULK",
    "INTERACTIVE",
]
