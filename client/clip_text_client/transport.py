"""One Triton endpoint over gRPC or HTTP, with errors sorted into what the client acts on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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

# Triton's status -> what the client does: gRPC codes as tritonclient names them, HTTP statuses.
_REJECTED = {"StatusCode.INVALID_ARGUMENT", "400"}  # this request's content: isolate the bad item
_DENIED = {"StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED", "401", "403"}
_NOT_READY = {"StatusCode.NOT_FOUND", "404"}
_RETRYABLE = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.CANCELLED",
    "StatusCode.ABORTED",
    "408",
    "429",
    "502",
    "503",
    "504",
}
# Anything else (HTTP 500, gRPC INTERNAL/UNKNOWN, ...) is the server's fault: ServerError.


def text_tensor(texts) -> np.ndarray:
    """The ensemble's TEXT input: a [batch, 1] BYTES tensor of UTF-8 texts (str or bytes)."""
    return np.array([t.encode("utf-8") if isinstance(t, str) else t for t in texts], dtype=np.object_).reshape(-1, 1)


def classify(exc: BaseException) -> CLIPClientError:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, CLIPClientError):
        return exc
    if isinstance(exc, InferenceServerException):
        status, message = str(exc.status() or ""), exc.message() or str(exc)
        lowered = message.lower()
        # Where Triton 2.51's status says less than its message (documented in docs/reliability.md):
        if "restricted" in lowered:  # a missing key over gRPC comes back as UNAVAILABLE
            return AccessDeniedError(f"{message} (pass api_key=... to CLIPTextClient)")
        if "not healthy" in lowered or "stub process" in lowered:  # a dead backend process: INTERNAL,
            return RetryableError(message)  # but a restart or another instance serves
        if "request timeout expired" in lowered:  # UNAVAILABLE, but the request's own deadline passed
            return DeadlineExceededError(f"{message} (the request's queue_timeout passed before it ran)")
        if "unknown model" in lowered or "is not ready" in lowered:
            return ModelNotReadyError(message)
        if status in _DENIED:
            return AccessDeniedError(f"{message} (pass api_key=... to CLIPTextClient)")
        if status in _REJECTED:
            return RequestRejectedError(message)
        if status in _NOT_READY:
            return ModelNotReadyError(message)
        if status in _RETRYABLE or (not status and ("timed out" in lowered or "deadline" in lowered)):
            return RetryableError(message)
        return ServerError(f"{message} (status {status or 'none'})")
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
        texts: Sequence[str | bytes],
        priority: int = 0,
        queue_timeout_us: int | None = None,
    ) -> np.ndarray:
        """`priority`: Triton's priority level (0: the model's default); `queue_timeout_us`: how
        long the request may wait in the server's queue before it is dropped there."""
        batch = text_tensor(texts)
        tensor = self.module.InferInput(input_name, list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        outputs = [self.module.InferRequestedOutput(output_name)]
        options = {"outputs": outputs, "headers": self.headers, "priority": priority, "timeout": queue_timeout_us}
        if self.protocol == "grpc":
            options["client_timeout"] = self.timeout
        try:
            result = self._call(self.client.infer, model, [tensor], **options)
        except DeadlineExceededError as exc:
            if queue_timeout_us is None:  # the server's own queue timeout, not ours: it is overloaded
                raise RetryableError(f"{exc} (the server's queue timeout for its class)") from exc
            raise
        return result.as_numpy(output_name)

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass
