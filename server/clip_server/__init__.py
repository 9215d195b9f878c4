"""Local runtime: the tritonserver bundled in `nvidia-pytriton`, serving this repository on CPU."""

from .local import LocalTritonServer, ServerFailed

__all__ = ["LocalTritonServer", "ServerFailed"]
