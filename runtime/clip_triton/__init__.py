"""Local runtime: the tritonserver bundled in `nvidia-pytriton` with Triton's C++ backends, serving
this repository."""

__all__ = ["LocalTritonServer", "ServerFailed"]


def __getattr__(name):  # lazy, so `python -m clip_triton.cxx_backends` runs before anything imports it
    if name in __all__:
        from . import local

        return getattr(local, name)
    raise AttributeError(name)
