"""Check a deployment's embeddings before trusting it (FP16, TensorRT, a new GPU, a new release):
per text, over 64 varied texts and `--texts` caption-like ones, against either another deployment
(`--against`, e.g. the FP32 one) or the repository's ONNX file run in-process on the CPU
(`--against-onnx`, on the ids the deployment's own tokenizer gives). Exits 1 below a bar.

    python -m clip_triton_ops.verify --url gpu-host:8001 --against localhost:8001 --min-cosine 0.999
    python -m clip_triton_ops.verify --url gpu-host:8001 --max-abs-diff 1e-3 \\
        --against-onnx build/model_repository/clip_text_encoder/1/model.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from clip_triton_contract.names import EMBEDS_TENSOR, ENSEMBLE_MODEL, IDS_TENSOR, TEXT_INPUT, TOKENIZER_MODEL

from .sample_texts import VARIED_64, captions

REQUEST_TIMEOUT_S = 120.0  # one request of `tokenize`: a first call may wait for a cold instance


@dataclass
class Comparison:
    texts: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    finite: bool

    def passes(self, min_cosine: float, max_abs_diff: float | None = None) -> bool:
        return (
            self.finite
            and self.min_cosine >= min_cosine
            and (max_abs_diff is None or self.max_abs_diff <= max_abs_diff)
        )


def compare(test: np.ndarray, reference: np.ndarray) -> Comparison:
    """Row by row: the cosine of each text's two embeddings, and the largest element difference."""
    if test.shape != reference.shape:
        raise ValueError(f"shapes differ: {test.shape} vs {reference.shape}")
    cos = (test * reference).sum(1) / (np.linalg.norm(test, axis=1) * np.linalg.norm(reference, axis=1))
    cos = np.nan_to_num(cos, nan=-1.0)  # a zero or non-finite row counts as the worst agreement
    return Comparison(
        texts=len(test),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        max_abs_diff=float(np.abs(test - reference).max()),
        finite=bool(np.isfinite(test).all()),
    )


def check_texts(captions_count: int, seed: int = 11) -> list[str]:
    return VARIED_64 + captions(captions_count, seed=seed)


def embed(
    url: str, texts: list[str], model: str = ENSEMBLE_MODEL, concurrency: int = 8, batch_size: int = 32
) -> np.ndarray:
    """Through the project client over gRPC: requests of `batch_size` texts, `concurrency` in
    flight, so every encoder instance of a deployment takes batches."""
    from clip_triton_client import CLIPClient, RandomWeightsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        with CLIPClient(url, model=model, concurrency=concurrency, batch_size=batch_size) as client:
            return client.encode(texts)


def tokenize(url: str, texts: list[str], model: str = TOKENIZER_MODEL, batch: int = 256) -> np.ndarray:
    """The deployment's own token ids for `texts` (its tokenizer model, called directly)."""
    from clip_triton_client.transport import Transport

    transport = Transport(url, "grpc", timeout=REQUEST_TIMEOUT_S, headers=None)
    try:
        return np.concatenate(
            [transport.infer(model, TEXT_INPUT, IDS_TENSOR, texts[i : i + batch]) for i in range(0, len(texts), batch)]
        )
    finally:
        transport.close()


def onnx_embeddings(onnx_path: Path, ids: np.ndarray, batch: int = 256) -> np.ndarray:
    """The encoder file run in-process by ONNX Runtime on the CPU: the FP32 reference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run([EMBEDS_TENSOR], {IDS_TENSOR: ids[i : i + batch]})[0] for i in range(0, len(ids), batch)]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton_ops.verify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", required=True, help="the deployment under test (gRPC host:port)")
    parser.add_argument("--model", default=ENSEMBLE_MODEL)
    reference = parser.add_mutually_exclusive_group(required=True)
    reference.add_argument("--against", help="the reference deployment (gRPC host:port), e.g. FP32")
    reference.add_argument("--against-onnx", type=Path, help="the reference: this model.onnx on the CPU, in-process")
    parser.add_argument("--against-model", default=ENSEMBLE_MODEL)
    parser.add_argument("--tokenizer-model", default=TOKENIZER_MODEL, help="the deployment's (for --against-onnx)")
    parser.add_argument("--texts", type=int, default=1024, help="caption-like texts on top of 64 varied ones")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--max-abs-diff", type=float, default=None, help="also bound the largest difference")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args(argv)

    from clip_triton_client import CLIPClientError

    texts = check_texts(args.texts)
    try:  # an unknown model, or a server away: one line, before anything is written
        test = embed(args.url, texts, args.model)
        if args.against_onnx is not None:
            label = f"{args.against_onnx} (CPU, in-process)"
            ref = onnx_embeddings(args.against_onnx, tokenize(args.url, texts, args.tokenizer_model))
        else:
            label = f"{args.against}/{args.against_model}"
            ref = embed(args.against, texts, args.against_model)
    except CLIPClientError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    result = compare(test, ref)
    ok = result.passes(args.min_cosine, args.max_abs_diff)
    bars = f"min cosine {args.min_cosine}" + (f", max abs diff {args.max_abs_diff}" if args.max_abs_diff else "")
    print(
        f"{args.url}/{args.model} vs {label}: {result.texts} texts, min cosine {result.min_cosine:.6f}, "
        f"mean {result.mean_cosine:.6f}, max abs diff {result.max_abs_diff:.2e} -> {'OK' if ok else 'FAIL'} ({bars})"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({**asdict(result), "ok": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
