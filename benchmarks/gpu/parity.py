"""The GPU run's gate: the served GPU variants against the CPU build's ONNX file, before anything
is measured. fp32 TorchScript on the GPU within 1e-3 of the CPU ONNX model, fp16 within cosine
0.999, over the varied texts and 2,048 captions, and the fp16 file's CUDA-graph replays alone.
Used by benchmarks/gpu/check.py; its numbers go into the same report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip_triton_build.spec import ONNX_FILE
from clip_triton_contract.names import ENCODER_MODEL
from clip_triton_ops import verify
from clip_triton_ops.sample_texts import VARIED_64


def parity(url: str, texts: list[str], reference: np.ndarray, report: dict, label: str) -> np.ndarray:
    """clip_triton_ops.verify's check of the deployment against the CPU ONNX reference (requests of 32
    texts, 8 in flight: every encoder instance, on every GPU, takes batches); returns its embeddings."""
    got = verify.embed(url, texts)
    result = verify.compare(got, reference)
    report[f"{label}_max_abs_diff_vs_cpu_onnx"] = result.max_abs_diff
    report[f"{label}_min_cosine_vs_cpu_onnx"] = result.min_cosine
    report[f"{label}_finite"] = result.finite
    print(
        f"{label} GPU vs CPU ONNX ({result.texts} texts): max abs diff {result.max_abs_diff:.2e}, "
        f"min cosine {result.min_cosine:.6f}",
        flush=True,
    )
    return got


def graph_parity(url: str, texts: list[str], reference: np.ndarray, report: dict) -> bool:
    """The fp16 deployment's CUDA graphs against the CPU ONNX reference: one request in flight of
    24, then 5 texts (the client sorts by length), so every encoder execution replays a graph,
    zero rows filling its 32- and 8-row buckets, over token buckets from short captions to long
    descriptions."""
    ok = True
    for batch in (24, 5):
        result = verify.compare(verify.embed(url, texts, concurrency=1, batch_size=batch), reference[: len(texts)])
        report[f"fp16_graphs_batch{batch}_min_cosine_vs_cpu_onnx"] = result.min_cosine
        ok = ok and result.finite and result.min_cosine >= 0.999
        print(
            f"fp16 CUDA graphs, {batch} texts a request, one in flight ({result.texts} texts): "
            f"min cosine {result.min_cosine:.6f} vs CPU ONNX",
            flush=True,
        )
    return ok


def check(url: str, repository: Path, instances, gpus, tokenizer_instances, server, report: dict) -> bool:
    """fp32 (the server's current variant), then `torchscript_fp16` loaded through the repository
    API, against the CPU ONNX reference; True when both pass. Leaves the fp16 variant loaded."""
    from clip_triton_ops.deploy import deploy

    onnx_file = repository / ENCODER_MODEL / "1" / ONNX_FILE
    texts = verify.check_texts(2048, seed=7)  # 64 varied texts, then 2,048 captions
    reference = verify.onnx_embeddings(onnx_file, verify.tokenize(url, texts))
    fp32 = parity(url, texts, reference, report, "fp32")
    ok = report["fp32_max_abs_diff_vs_cpu_onnx"] <= 1e-3
    deploy(url, repository, "torchscript_fp16", instances, gpus, tokenizer_instances, server.admin_headers())
    fp16 = parity(url, texts, reference, report, "fp16")
    ok = graph_parity(url, texts[: len(VARIED_64) + 512], reference, report) and ok
    varied = len(VARIED_64)
    report["fp16_min_cosine_vs_fp32_varied64"] = verify.compare(fp16[:varied], fp32[:varied]).min_cosine
    report["fp16_min_cosine_vs_fp32_captions2048"] = verify.compare(fp16[varied:], fp32[varied:]).min_cosine
    ok = ok and min(report["fp16_min_cosine_vs_fp32_varied64"], report["fp16_min_cosine_vs_fp32_captions2048"]) >= 0.999
    print(
        "fp16 vs fp32: min cosine %.6f (64 varied), %.6f (2,048 captions)"
        % (report["fp16_min_cosine_vs_fp32_varied64"], report["fp16_min_cosine_vs_fp32_captions2048"]),
        flush=True,
    )
    report["parity_ok"] = ok
    print("PARITY", "OK" if ok else "FAILED", "(fp32 <= 1e-3 vs CPU ONNX, fp16 cosine >= 0.999)", flush=True)
    return ok
