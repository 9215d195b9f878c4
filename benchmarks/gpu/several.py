"""Several checkpoints in one tritonserver on the GPU: a repository built with `--model NAME=...`
for each and `--fp16` (one op library at its root for every model_fp16.pt), served with the GPU
default variant; each model's fp16 embeddings against its own model.onnx on the CPU, on the ids
of its own tokenizer, over the varied texts and 2,048 captions.

    python -m benchmarks.gpu.several --repository /tmp/several --json several.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from clip_triton import LocalTritonServer
from clip_triton_build.repository import read_config
from clip_triton_build.spec import ONNX_FILE
from clip_triton_contract.names import ENCODER_MODEL, ENSEMBLE_MODEL, SIBLINGS_PARAMETER, TOKENIZER_MODEL, model_names
from clip_triton_ops import verify


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--config-name", default="torchscript_fp16")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    any_ensemble = next(
        p
        for p in sorted(args.repository.iterdir())
        if (p / "config.pbtxt").is_file() and read_config(p / "config.pbtxt").platform == "ensemble"
    )
    names = read_config(any_ensemble / "config.pbtxt").parameters[SIBLINGS_PARAMETER].string_value.split(",")
    texts = verify.check_texts(2048, seed=7)
    results = {}
    with LocalTritonServer.on_free_ports(repository=args.repository, config_name=args.config_name) as server:
        for name in names:
            models = model_names(name)
            ids = verify.tokenize(server.grpc_url, texts, model=models[TOKENIZER_MODEL])
            reference = verify.onnx_embeddings(args.repository / models[ENCODER_MODEL] / "1" / ONNX_FILE, ids)
            result = verify.compare(verify.embed(server.grpc_url, texts, model=models[ENSEMBLE_MODEL]), reference)
            results[name] = {**result.__dict__, "dim": int(reference.shape[1])}
            print(
                f"{name} ({reference.shape[1]}-d) fp16 vs its CPU ONNX: min cosine {result.min_cosine:.6f}", flush=True
            )
    ok = all(r["finite"] and r["min_cosine"] >= args.min_cosine for r in results.values())
    if args.json:
        args.json.write_text(
            json.dumps({"config_name": args.config_name, "models": results, "ok": ok}, indent=2) + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
