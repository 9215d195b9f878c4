"""The Jina drop-in executor in a real Jina 3.34 Deployment (its own virtualenv, .venv-jina)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO_ROOT, text_array, triton_infer

JINA_PYTHON = REPO_ROOT / ".venv-jina" / "bin" / "python"


@pytest.mark.skipif(not JINA_PYTHON.exists() and not os.environ.get("CI"), reason="scripts/setup_jina_venv.sh not run")
def test_clip_text_encoder_executor_in_a_jina_deployment(server, tmp_path):
    out = tmp_path / "jina.npy"
    env = dict(os.environ, JINA_MP_START_METHOD="spawn", JINA_LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [str(JINA_PYTHON), str(Path(__file__).with_name("jina_flow_check.py")), server.http_url, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sys.path.insert(0, str(Path(__file__).parent))
    from jina_flow_check import TEXTS

    got = np.load(out)
    assert got.shape == (len(TEXTS), 512)
    empty = [i for i, t in enumerate(TEXTS) if t == ""]
    assert np.isnan(got[empty]).all()  # documents without text are left untouched
    keep = [i for i, t in enumerate(TEXTS) if t]
    (expected,) = triton_infer(
        "grpc", server.grpc_url, "clip_text", {"TEXT": text_array([TEXTS[i] for i in keep])}, ["EMBEDDING"]
    )
    assert np.abs(got[keep] - expected).max() <= 1e-5
