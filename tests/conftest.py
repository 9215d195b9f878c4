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

import subprocess
import sys

import pytest
from checkpoints import FAMILIES, IMAGE_SHAPES, save_checkpoint

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


@pytest.fixture(scope="session")
def image_checkpoints(tmp_path_factory):
    """Local save_pretrained checkpoints with both towers, of IMAGE_SHAPES' shapes: name -> folder."""
    root = tmp_path_factory.mktemp("image-checkpoints")
    return {
        name: save_checkpoint(FAMILIES[text], root / name, layers=2, seed=i, vision=vision)
        for i, (name, (text, vision)) in enumerate(IMAGE_SHAPES.items())
    }


@pytest.fixture(scope="session")
def image_server(image_checkpoints, tmp_path_factory):
    """One repository with every image checkpoint under its name, both towers each, one tritonserver."""
    repository = tmp_path_factory.mktemp("images-repository")
    named = [a for name, folder in image_checkpoints.items() for a in ("--model", f"{name}={folder}")]
    command = [sys.executable, "-m", "clip_triton_build", "--format", "onnx", "--require-weights"]
    done = subprocess.run([*command, "--output", str(repository), *named], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with LocalTritonServer.on_free_ports(repository=repository, config_name="cpu") as srv:
        yield srv


@pytest.fixture(scope="session")
def image_references(image_checkpoints):
    """name -> (HF CLIPModel, CLIPImageProcessorPil) of each image checkpoint."""
    from transformers import CLIPImageProcessorPil, CLIPModel

    return {
        name: (CLIPModel.from_pretrained(folder).eval(), CLIPImageProcessorPil.from_pretrained(folder))
        for name, folder in image_checkpoints.items()
    }
