"""Python client for the CLIP text embedding Triton repository: documents in, embeddings out."""

from .client import DEFAULT_MODEL, CLIPTextClient, ModelInfo, RandomWeightsWarning
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
from .traffic import BULK, INTERACTIVE

__all__ = [
    "CLIPTextClient",
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
