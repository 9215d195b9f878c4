"""The Jina drop-in executor in a real Jina 3.34 Deployment (its own virtualenv, .venv-jina)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from images import embeddable, encoded, photo
from PIL import Image

from helpers import REPO_ROOT, hf_image_features, text_array, triton_infer

JINA_PYTHON = REPO_ROOT / ".venv-jina" / "bin" / "python"


needs_jina = pytest.mark.skipif(
    not JINA_PYTHON.exists() and not os.environ.get("CI"), reason="scripts/setup_jina_venv.sh not run"
)


def run_deployment(*args: str) -> np.ndarray:
    """jina_flow_check.py's embeddings, run in the Jina virtualenv."""
    out = Path(args[1])
    env = dict(os.environ, JINA_MP_START_METHOD="spawn", JINA_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [str(JINA_PYTHON), str(Path(__file__).with_name("jina_flow_check.py")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return np.load(out)


@needs_jina
def test_clip_text_encoder_executor_in_a_jina_deployment(server, tmp_path):
    got = run_deployment(server.http_url, str(tmp_path / "jina.npy"))
    sys.path.insert(0, str(Path(__file__).parent))
    from jina_flow_check import TEXTS

    assert got.shape == (len(TEXTS), 512)
    empty = [i for i, t in enumerate(TEXTS) if t == ""]
    assert np.isnan(got[empty]).all()  # documents without text are left untouched
    keep = [i for i, t in enumerate(TEXTS) if t]
    (expected,) = triton_infer(
        "grpc", server.grpc_url, "clip_text", {"TEXT": text_array([TEXTS[i] for i in keep])}, ["EMBEDDING"]
    )
    assert np.abs(got[keep] - expected).max() <= 1e-5


@needs_jina
def test_clip_image_encoder_executor_in_a_jina_deployment(image_server, image_references, tmp_path):
    """ImageDocs by url, bytes_ and tensor get HF's get_image_features; one without an image and one
    whose bytes are no image are left without an embedding."""
    jpeg, png = embeddable()["jpeg"], embeddable()["png"]
    pixels = np.asarray(photo(90, 70, seed=31))
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    (tmp_path / "photo.png").write_bytes(png)
    np.save(tmp_path / "pixels.npy", pixels)
    got = run_deployment(image_server.http_url, str(tmp_path / "jina.npy"), "b16", str(tmp_path))
    expected = hf_image_features(image_references["b16"], [jpeg, png, encoded(Image.fromarray(pixels), "PNG")])
    assert np.abs(got[:3] - expected).max() <= 1e-4
    assert np.isnan(got[3:]).all()
