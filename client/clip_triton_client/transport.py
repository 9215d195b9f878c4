"""One Triton endpoint over gRPC or HTTP, with errors sorted into what the client acts on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clip_triton_contract.statuses import Outcome, outcome

from .errors import (
    AccessDeniedError,
    CLIPClientError,
    DeadlineExceededError,
    ModelNotReadyError,
    RequestRejectedError,
    RetryableError,
    ServerError,
    ServerUnavailableError,
)

# What the client raises for each outcome (RetryableError and ServerError are retried, and become
# ServerUnavailableError, QueueFullError or ServerError once the retries are spent: client.py)
_ERRORS: dict[Outcome, type[CLIPClientError]] = {
    Outcome.REJECTED: RequestRejectedError,  # isolate the bad item
    Outcome.DENIED: AccessDeniedError,
    Outcome.NOT_READY: ModelNotReadyError,
    Outcome.OVERLOADED: RetryableError,
    Outcome.QUEUE_DEADLINE: DeadlineExceededError,
    Outcome.HANDOVER_DEADLINE: DeadlineExceededError,
    Outcome.BACKEND_DOWN: RetryableError,
    Outcome.TIMEOUT: RetryableError,
    Outcome.UNAVAILABLE: RetryableError,
    Outcome.SERVER_ERROR: ServerError,
}
_HINTS = {
    Outcome.DENIED: " (pass api_key=... to CLIPClient)",
    Outcome.QUEUE_DEADLINE: " (the request's queue_timeout passed before it ran)",
}


def text_tensor(texts) -> np.ndarray:
    """The ensemble's TEXT input: a [batch, 1] BYTES tensor of UTF-8 texts (str or bytes); bytes
    go as they are (an image ensemble's IMAGE input: one encoded file a row)."""
    return np.array([t.encode("utf-8") if isinstance(t, str) else t for t in texts], dtype=np.object_).reshape(-1, 1)


def classify(exc: BaseException) -> CLIPClientError:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, CLIPClientError):
        return exc
    if isinstance(exc, InferenceServerException):
        message = exc.message() or str(exc)
        status = exc.status()
        meant = outcome(status, message)
        hint = f" (status {status or 'none'})" if meant is Outcome.SERVER_ERROR else _HINTS.get(meant, "")
        error = _ERRORS[meant](message + hint)
        error.outcome = meant
        return error
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return RetryableError(f"{type(exc).__name__}: {exc}")
    return CLIPClientError(f"{type(exc).__name__}: {exc}")


class Transport:
    def __init__(self, url: str, protocol: str, timeout: float, headers: dict | None, ssl: bool = False):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        self.url, self.protocol, self.timeout, self.headers = url, protocol, timeout, dict(headers or {})
        try:
            if protocol == "grpc":
                import tritonclient.grpc as module

                self.client = module.InferenceServerClient(url, ssl=ssl)
            else:
                import tritonclient.http as module

                self.client = module.InferenceServerClient(
                    url, ssl=ssl, connection_timeout=timeout, network_timeout=timeout
                )
        except Exception as exc:  # bad URL syntax and the like
            raise ServerUnavailableError(f"cannot open a {protocol} client for {url!r}: {exc}") from exc
        self.module = module

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise classify(exc) from exc

    def server_ready(self) -> bool:  # health needs no key, also on a restricted server
        try:
            return bool(self._call(self.client.is_server_ready, headers=self.headers))
        except CLIPClientError:
            return False

    def model_ready(self, model: str) -> bool:
        try:
            return bool(self._call(self.client.is_model_ready, model, headers=self.headers))
        except AccessDeniedError:
            raise
        except CLIPClientError:
            return False

    def model_config(self, model: str) -> dict:
        if self.protocol == "grpc":
            return self._call(self.client.get_model_config, model, headers=self.headers, as_json=True)["config"]
        return self._call(self.client.get_model_config, model, headers=self.headers)

    def infer(
        self,
        model: str,
        input_name: str,
        output_name: str,
        items: Sequence[str | bytes],
        priority: int = 0,
        queue_timeout_us: int | None = None,
    ) -> np.ndarray:
        """`items`: texts, or encoded image files for an image model; `priority`: Triton's priority
        level (0: the model's default); `queue_timeout_us`: how long the request may wait in the
        server's queue before it is dropped there."""
        batch = text_tensor(items)
        tensor = self.module.InferInput(input_name, list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        outputs = [self.module.InferRequestedOutput(output_name)]
        options = {"outputs": outputs, "headers": self.headers, "priority": priority, "timeout": queue_timeout_us}
        if self.protocol == "grpc":
            options["client_timeout"] = self.timeout
        try:
            result = self._call(self.client.infer, model, [tensor], **options)
        except DeadlineExceededError as exc:
            if queue_timeout_us is None and getattr(exc, "outcome", None) is Outcome.QUEUE_DEADLINE:
                # the server's own queue timeout, not ours: it is overloaded
                raise RetryableError(f"{exc} (the server's queue timeout for its class)") from exc
            raise
        return result.as_numpy(output_name)

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass
