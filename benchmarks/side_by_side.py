"""Side by side on this machine, same texts, same weights, one run:

  (1) the Jina executor's way: HF transformers in-process, `CLIPModel.get_text_features`,
      batches of 32 in input order, padded to the longest text of each batch (fast Rust tokenizer);
  (2) this project: the clip_text ensemble end to end over gRPC through CLIPClient
      (batch_size 32, `--concurrency` requests in flight), with and without the client's
      length-sorted requests.

Prints docs/s for each, the ratios to (1) and the max abs difference of the embeddings, and writes
a bar plot.    python -m benchmarks.side_by_side --texts 1024 --plot benchmarks/results/cpu_side_by_side.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_build.spec import TOKENIZER_FILE
from clip_triton_contract.names import TOKENIZER_MODEL
from clip_triton_ops.sample_texts import captions


def hf_baseline(texts: list[str], batch_size: int = 32):
    """The seed executor's computation, in-process. Returns (embeddings, seconds)."""
    import torch
    from tokenizers import Regex, Tokenizer, normalizers

    from clip_triton_build.repository import read_build_info
    from clip_triton_build.weights import reference_clip_model

    model = reference_clip_model(read_build_info()["reference_checkpoint"])
    # HF CLIPTokenizerFast's pipeline: NFC, whitespace collapse, lowercase, CLIP BPE, SOT/EOT,
    # truncation to 77, padding to the longest of the batch (pad = EOT, like openai's checkpoints).
    tok = Tokenizer.from_file(str(BUILT_REPOSITORY / TOKENIZER_MODEL / "1" / TOKENIZER_FILE))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    out = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            encodings = tok.encode_batch([t.strip() for t in texts[i : i + batch_size]], add_special_tokens=False)
            rows = [[sot] + e.ids[:75] + [eot] for e in encodings]
            longest = max(map(len, rows))
            ids = torch.tensor([r + [eot] * (longest - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows])
            features = model.get_text_features(input_ids=ids, attention_mask=mask)
            features = features if isinstance(features, torch.Tensor) else features.pooler_output
            out.append(features.numpy())
    return np.concatenate(out), time.perf_counter() - start


def server_run(url: str, texts: list[str], concurrency: int, sort_by_length: bool):
    from clip_triton_client import CLIPClient

    with CLIPClient(url, batch_size=32, concurrency=concurrency, sort_by_length=sort_by_length) as client:
        client.encode(texts[:64])  # connections, model info
        start = time.perf_counter()
        vectors = client.encode(texts)
        return vectors, time.perf_counter() - start


def main(argv=None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--url", default="", help="an already running server (default: start one on free ports)")
    parser.add_argument("--plot", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    texts = captions(args.texts, seed=42)

    server = None
    url = args.url
    if not url:
        from clip_triton import LocalTritonServer

        server = LocalTritonServer.on_free_ports().start()
        url = server.grpc_url
    try:
        hf_baseline(texts[:64])  # warm-up
        base_vectors, base_s = hf_baseline(texts)
        results = {"hf_in_process_batch32": base_s}
        sorted_vectors, results["server_grpc_sorted"] = server_run(url, texts, args.concurrency, True)
        plain_vectors, results["server_grpc_input_order"] = server_run(url, texts, args.concurrency, False)
    finally:
        if server:
            server.stop()

    n = len(texts)
    lengths = [len(t.split()) for t in texts]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {n} mixed texts "
        f"(words per text: median {int(np.median(lengths))}, max {max(lengths)})"
    )
    report = {"texts": n, "cores": os.cpu_count(), "docs_per_s": {}, "ratio_to_hf": {}}
    for name, seconds in results.items():
        report["docs_per_s"][name] = n / seconds
        report["ratio_to_hf"][name] = base_s / seconds
        print(f"  {name:<26} {n / seconds:8.1f} docs/s   {seconds:7.2f} s   x{base_s / seconds:.2f} vs HF in-process")
    for name, vectors in (("sorted", sorted_vectors), ("input order", plain_vectors)):
        print(f"  max |server ({name}) - HF|: {np.abs(vectors - base_vectors).max():.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = ["HF in-process\n(Jina way)", "Triton ensemble\ngRPC, sorted", "Triton ensemble\ngRPC, input order"]
        values = [report["docs_per_s"][k] for k in results]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        bars = ax.bar(labels, values, color=["#999999", "#2a7ab9", "#8fbde0"])
        for bar, name in zip(bars, results):
            ax.annotate(
                f"{report['docs_per_s'][name]:.0f}/s\nx{report['ratio_to_hf'][name]:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        ax.set_ylabel("docs/s (higher is better)")
        ax.set_title(f"CLIP text embeddings on {os.cpu_count()} CPU cores, {n} mixed texts")
        ax.set_ylim(0, max(values) * 1.3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
