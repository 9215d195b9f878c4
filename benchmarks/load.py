"""Closed-loop load generator for the clip_text ensemble over gRPC.

Each of `concurrency` workers sends a request of `texts_per_request` caption-like texts, waits
for the answer, sends the next one. After `--warmup` seconds, it records for `--duration`
seconds and prints docs/s, requests/s and latency percentiles. Several processes (--processes)
spread the client's own CPU cost when the server is fast (GPU).

    python -m benchmarks.load --url 127.0.0.1:8001 --concurrency 16 --texts-per-request 32
    python -m benchmarks.load --sweep "1x1,64x1,16x32,8x256" --json out.json    # CxT list
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import time

import numpy as np

from clip_triton_client.transport import text_tensor
from clip_triton_contract.names import EMBEDDING_OUTPUT, ENSEMBLE_MODEL, IDS_TENSOR, TEXT_INPUT, TOKENIZER_MODEL
from clip_triton_ops.sample_texts import KINDS, texts


def make_batches(kind: str, texts_per_request: int, count: int = 512, seed: int = 0) -> list[np.ndarray]:
    pool = texts(kind, count * texts_per_request, seed)
    return [text_tensor(pool[i * texts_per_request : (i + 1) * texts_per_request]) for i in range(count)]


async def worker(client, module, model, output, batches, offset, stop_at, record_from, latencies, counts):
    i = offset
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        batch = batches[i % len(batches)]
        i += 1
        tensor = module.InferInput(TEXT_INPUT, list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        t0 = time.perf_counter()
        result = await client.infer(model, [tensor], outputs=[module.InferRequestedOutput(output)])
        t1 = time.perf_counter()
        if result.as_numpy(output).shape[0] != len(batch):
            raise RuntimeError("short answer")
        if t0 >= record_from and t1 <= stop_at:
            latencies.append(t1 - t0)
            counts[0] += len(batch)
            counts[1] += 1


async def run_process(url, model, output, concurrency, batches, warmup, duration, seed):
    import tritonclient.grpc.aio as module

    client = module.InferenceServerClient(url)
    latencies, counts = [], [0, 0]
    start = time.perf_counter()
    record_from, stop_at = start + warmup, start + warmup + duration
    await asyncio.gather(
        *(
            worker(
                client, module, model, output, batches, seed * 1000 + k * 17, stop_at, record_from, latencies, counts
            )
            for k in range(concurrency)
        )
    )
    await client.close()
    return latencies, counts


def process_main(args):
    url, model, output, concurrency, kind, tpr, warmup, duration, seed, queue = args
    batches = make_batches(kind, tpr, seed=seed)
    latencies, counts = asyncio.run(run_process(url, model, output, concurrency, batches, warmup, duration, seed))
    queue.put((latencies, counts))


def measure(
    url: str,
    model: str,
    concurrency: int,
    texts_per_request: int,
    *,
    processes: int = 1,
    warmup: float = 3.0,
    duration: float = 10.0,
    kind: str = "mixed",
    output: str = EMBEDDING_OUTPUT,
) -> dict:
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if p < concurrency % processes else 0) for p in range(processes)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=process_main, args=((url, model, output, c, kind, texts_per_request, warmup, duration, p, queue),)
        )
        for p, c in enumerate(shares)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = np.array([x for lat, _ in results for x in lat])
    docs = sum(c[0] for _, c in results)
    requests = sum(c[1] for _, c in results)
    if not len(latencies):
        raise RuntimeError("no request completed inside the measurement window")
    return {
        "model": model,
        "concurrency": concurrency,
        "texts_per_request": texts_per_request,
        "texts": kind,
        "duration_s": duration,
        "docs_per_s": docs / duration,
        "requests_per_s": requests / duration,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p90_ms": float(np.percentile(latencies, 90) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "requests": requests,
    }


def format_row(r: dict) -> str:
    return (
        f"{r['model']}: c={r['concurrency']:>3} x {r['texts_per_request']:>3} texts ({r['texts']}): "
        f"{r['docs_per_s']:>10.1f} docs/s {r['requests_per_s']:>9.1f} req/s  "
        f"p50 {r['p50_ms']:8.2f} ms  p90 {r['p90_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model", default=ENSEMBLE_MODEL)
    parser.add_argument(
        "--output", default=EMBEDDING_OUTPUT, help=f"output to request ({IDS_TENSOR} for {TOKENIZER_MODEL})"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--texts-per-request", type=int, default=32)
    parser.add_argument("--sweep", default="", help="comma list of CONCURRENCYxTEXTS, e.g. 1x1,64x1,16x32")
    parser.add_argument(
        "--texts",
        choices=sorted(KINDS),
        default="mixed",
        help="mixed: queries+captions+long descriptions; short: captions only",
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", default="", help="append results as JSON lines to this file")
    args = parser.parse_args(argv)
    points = [tuple(int(x) for x in p.split("x")) for p in args.sweep.split(",") if p] or [
        (args.concurrency, args.texts_per_request)
    ]
    for concurrency, tpr in points:
        result = measure(
            args.url,
            args.model,
            concurrency,
            tpr,
            processes=args.processes,
            warmup=args.warmup,
            duration=args.duration,
            kind=args.texts,
            output=args.output,
        )
        print(format_row(result), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
