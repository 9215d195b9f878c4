"""Session fixtures: real tritonserver processes (the binary inside nvidia-pytriton) on free ports,
and the in-process references they are compared with.

tests/unit/ mirrors the packages (one folder each) and starts no server: the build's own code
in-process against HF and open_clip, the client's and the frontend's logic around their calls
(against an in-process fake of Triton's gRPC service where the grouping of calls is what is
checked). tests/integration/ talks to real tritonserver processes over HTTP and gRPC (server logs
are kept in .local/ and printed when a server fails to start), and compose/ to a real Docker
engine. Helpers the tests import are in helpers.py.
"""

from __future__ import annotations

import pytest

from clip_triton import LocalTritonServer
from helpers import build_info, open_clip_tokenizer_module


@pytest.fixture(scope="session")
def server():
    build_info()
    with LocalTritonServer.on_free_ports(config_name="cpu") as srv:
        yield srv


@pytest.fixture(scope="session")
def torchscript_server():
    with LocalTritonServer.on_free_ports(config_name="torchscript_cpu") as srv:
        yield srv


@pytest.fixture(scope="session")
def hf_model():
    """HF `CLIPModel` with the weights the repository was built from, for `get_text_features`
    in-process (the Jina executor's computation)."""
    from clip_triton_build.weights import reference_clip_model

    return reference_clip_model(build_info()["reference_checkpoint"])


@pytest.fixture(scope="session")
def open_clip_tokenizer():
    """open_clip's SimpleTokenizer."""
    return open_clip_tokenizer_module().SimpleTokenizer()
