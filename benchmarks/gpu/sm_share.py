"""How many SMs to leave free for queries beside bulk work (export.QUERY_SMS), in one process on
one GPU: a bulk thread runs large batches of a tower, continuously, through the `bulk` op
(native/cuda_ops/bulk_stream.cpp) with each reserve in turn (0: no split, the caller's stream);
a query thread sends one text at a time through the repository's own text model_fp16.pt (its
graph path on the urgent stream, as Triton runs it). Per bulk kind and reserve: the query's
p50/p99 beside the bulk work against idle, and the bulk work's rate with queries and alone,
against its rate alone on every SM.

    python -m benchmarks.gpu.sm_share --repository build/model_repository --reserves 0,4,12,28 \\
        --bulk l14-images:256,b32-texts:1024 --json sm_share.json

The bulk towers are HF's (seeded random weights, fp16, its default attention) of the named shape; the query is the
built repository's text encoder. Served numbers come from the traffic and image runs with
CLIP_QUERY_SMS=0 against the default (benchmarks/gpu/run.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from clip_triton_contract.names import CONTEXT_LENGTH, ENCODER_MODEL

VISION = {  # hidden, intermediate, layers, heads, patch
    "b32": (768, 3072, 12, 12, 32),
    "b16": (768, 3072, 12, 12, 16),
    "l14": (1024, 4096, 24, 16, 14),
}


def bulk_tower(kind: str, rows: int):
    """A closure running one batch of `rows` of the named tower to host memory."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    shape, what = kind.split("-")
    if what == "texts":
        model = CLIPTextModel(CLIPTextConfig()).half().cuda().eval()
        ids = torch.randint(1, 49000, (rows, 16), device="cuda")
        return lambda: model(input_ids=ids).pooler_output.cpu()
    hidden, inter, layers, heads, patch = VISION[shape]
    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
    )
    model = CLIPVisionModel(config).half().cuda().eval()
    pixels = torch.randn(rows, 3, 224, 224, device="cuda", dtype=torch.half)
    return lambda: model(pixel_values=pixels).pooler_output.cpu()


def query_loop(encoder, seconds: float) -> list[float]:
    """One 7-token text at a time through the served file, on a stream of its own (a Triton
    instance's), 2 ms apart: latencies in ms."""
    ids = torch.zeros(1, CONTEXT_LENGTH, dtype=torch.int64, device="cuda")
    ids[0, :7] = torch.tensor([49406, 320, 1125, 539, 320, 2368, 49407])
    latencies = []
    with torch.cuda.stream(torch.cuda.Stream()), torch.inference_mode():
        for _ in range(20):
            encoder(ids)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            encoder(ids)  # ends in host memory
            latencies.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.002)
    return latencies


def bulk_loop(run, rows: int, reserve: int, stop: threading.Event, done: list[int], split: list[bool]) -> None:
    like = torch.empty(1, device="cuda")
    with torch.cuda.stream(torch.cuda.Stream()), torch.inference_mode():
        own = torch.cuda.current_stream()
        torch.ops.clip_cuda_graphs.bulk(like, reserve)
        split.append(torch.cuda.current_stream() != own)
        while not stop.is_set():
            run()
            done[0] += rows


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def point(encoder, run, rows: int, reserve: int, seconds: float) -> dict:
    stop, done, split = threading.Event(), [0], []
    worker = threading.Thread(target=bulk_loop, args=(run, rows, reserve, stop, done, split))
    worker.start()
    time.sleep(2)  # the bulk loop's first batches: allocation, kernel selection
    start, before = time.perf_counter(), done[0]
    p50, p99 = percentiles(query_loop(encoder, seconds))
    with_queries = (done[0] - before) / (time.perf_counter() - start)
    start, before = time.perf_counter(), done[0]
    time.sleep(seconds / 2)
    alone = (done[0] - before) / (time.perf_counter() - start)
    stop.set()
    worker.join()
    return {
        "reserve": reserve,
        "split": bool(split and split[0]),
        "p50_ms": p50,
        "p99_ms": p99,
        "bulk_with_queries": with_queries,
        "bulk_alone": alone,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("build/model_repository"))
    parser.add_argument("--bulk", default="l14-images:256,b32-texts:1024,b32-images:256")
    parser.add_argument("--reserves", default="0,4,12,28")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from clip_triton_build.encoder import cuda_ops
    from clip_triton_build.repository import cuda_ops_library

    sys.setswitchinterval(1e-4)  # the two Python threads hand over the interpreter often
    cuda_ops.load(cuda_ops_library(args.repository))
    encoder = torch.jit.load(str(args.repository / ENCODER_MODEL / "1" / "model_fp16.pt"), map_location="cuda")
    props = torch.cuda.get_device_properties(0)
    report = {"device": props.name, "sms": props.multi_processor_count, "bulk": []}
    print(f"{props.name}, {props.multi_processor_count} SMs", flush=True)
    for spec in args.bulk.split(","):
        kind, rows = spec.split(":")
        run = bulk_tower(kind, int(rows))
        idle50, idle99 = percentiles(query_loop(encoder, args.seconds / 2))
        entry = {"bulk": spec, "idle_p50_ms": idle50, "idle_p99_ms": idle99, "points": []}
        print(f"{spec}: query idle p50 {idle50:.2f} / p99 {idle99:.2f} ms", flush=True)
        for reserve in (int(r) for r in args.reserves.split(",")):
            p = point(encoder, run, int(rows), reserve, args.seconds)
            entry["points"].append(p)
            full = entry["points"][0]["bulk_alone"]
            print(
                f"  {reserve:3d} SMs left ({'split' if p['split'] else 'no split'}): query p50 {p['p50_ms']:.2f} / "
                f"p99 {p['p99_ms']:.2f} ms (p99 x{p['p99_ms'] / idle99:.1f} idle); bulk {p['bulk_with_queries']:.0f}/s "
                f"with queries (x{p['bulk_with_queries'] / full:.2f} of every SM alone), {p['bulk_alone']:.0f}/s alone",
                flush=True,
            )
        report["bulk"].append(entry)
        del run
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
