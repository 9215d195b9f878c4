"""python -m clip_triton_ops.verify, the check a deployment passes before it is trusted (an FP16 or
TensorRT variant, a new GPU, a new release), against a real server."""

import json

from clip_triton_build.encoder.export import export_onnx
from clip_triton_build.spec import ONNX_FILE
from clip_triton_build.weights import random_init_encoder
from clip_triton_contract.names import ENCODER_MODEL
from clip_triton_ops import verify
from helpers import REPOSITORY

ONNX = REPOSITORY / ENCODER_MODEL / "1" / ONNX_FILE


def run_verify(tmp_path, *args) -> tuple[int, dict]:
    out = tmp_path / "verify.json"
    code = verify.main([*args, "--texts", "192", "--json", str(out)])
    return code, json.loads(out.read_text())


def test_the_served_encoder_matches_its_own_onnx_file_run_in_process(server, tmp_path):
    code, result = run_verify(tmp_path, "--url", server.grpc_url, "--against-onnx", str(ONNX), "--max-abs-diff", "1e-4")
    assert (code, result["ok"], result["texts"]) == (0, True, 64 + 192)
    assert result["max_abs_diff"] <= 1e-4 and result["min_cosine"] > 0.99999


def test_two_deployments_of_the_same_build_agree(server, torchscript_server, tmp_path):
    """The ONNX Runtime and libtorch encoders of one build, compared through their servers."""
    code, result = run_verify(tmp_path, "--url", torchscript_server.grpc_url, "--against", server.grpc_url)
    assert code == 0 and result["min_cosine"] > 0.99999


def test_a_deployment_is_refused_against_other_weights(server, tmp_path):
    """What the check is for: embeddings that are not the reference's fail it, exit code 1."""
    other = export_onnx(random_init_encoder(seed=1), tmp_path / "other" / ONNX_FILE)
    code, result = run_verify(tmp_path, "--url", server.grpc_url, "--against-onnx", str(other))
    assert (code, result["ok"]) == (1, False)
    assert result["min_cosine"] < 0.9
