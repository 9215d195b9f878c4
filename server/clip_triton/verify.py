"""Check one deployment's embeddings against another's before trusting it (FP16, TensorRT, a new
release): cosine similarity per text over varied and caption-like texts. Exits 1 below the bar.

    python -m clip_triton.verify --url gpu-host:8001 --against localhost:8001 --min-cosine 0.999
    python -m clip_triton.verify --url host:8001 --model clip_text --against host:8001 --against-model clip_text_fp32
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from .corpus import VARIED_64, captions


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "texts": len(a),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "finite": bool(np.isfinite(a).all()),
    }


def main(argv=None) -> int:
    from clip_text_client import CLIPTextClient, RandomWeightsWarning

    parser = argparse.ArgumentParser(
        prog="python -m clip_triton.verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the deployment under test (gRPC)")
    parser.add_argument("--model", default="clip_text")
    parser.add_argument("--against", required=True, help="the reference deployment (gRPC), e.g. FP32")
    parser.add_argument("--against-model", default="clip_text")
    parser.add_argument("--texts", type=int, default=1024, help="caption-like texts on top of 64 varied ones")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RandomWeightsWarning)
    texts = VARIED_64 + captions(args.texts, seed=11)
    with (
        CLIPTextClient(args.url, model=args.model) as test,
        CLIPTextClient(args.against, model=args.against_model) as ref,
    ):
        result = compare(test.encode(texts), ref.encode(texts))
    ok = result["finite"] and result["min_cosine"] >= args.min_cosine
    print(
        f"{args.url}/{args.model} vs {args.against}/{args.against_model}: {result['texts']} texts, "
        f"min cosine {result['min_cosine']:.6f}, mean {result['mean_cosine']:.6f}, "
        f"max abs diff {result['max_abs_diff']:.2e} -> {'OK' if ok else 'FAIL'} (bar {args.min_cosine})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
