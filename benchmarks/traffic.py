"""Queries while bulk jobs share the encoder (clip_text_client.traffic), side by side in one run:

- `idle`: one-text queries alone (QUERY_CLIENTS closed loops, one request in flight each);
- `bulk alone`: the bulk job alone (BULK_PROCESSES processes of CLIPTextClient.encode, 256-text
  requests, CONCURRENCY in flight each): its throughput is what the others are compared with;
- `priorities off`: the bulk job and the queries at once, the bulk job marked interactive (one
  class, first come first served: what a server without classes does);
- `priorities on`: the same, the bulk job marked bulk (what clip-text-embed sends).

For each: query p50/p99 and the bulk job's texts/s, and the ratios the goal is stated in (query
p99 under bulk over idle p99; bulk texts/s with queries over alone). With `--models A,B` (a
repository built with `--model A=... --model B=...`) the queries go to A and the bulk job to B:
two models sharing one GPU.

    python -m benchmarks.traffic --gpu --json traffic.json --plot traffic.png
    python -m benchmarks.traffic --repository /tmp/two --models b32,l14 --gpu --json two.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path

import numpy as np

from clip_text_client.traffic import BULK, INTERACTIVE, PRIORITY_LEVELS
from clip_triton_build.repository import BUILT_REPOSITORY
from clip_triton_build.spec import ENSEMBLE_MODEL

QUERY = ["a photo of a dog playing in the snow"]


def caption(i: int) -> str:
    words = ("a", "photo", "of", "two", "dogs", "on", "a", "beach", "at", "sunset", "with", "kites")
    return " ".join(words[: 4 + i % 8]) + f" {i}"


def bulk_process(url, model, traffic, batch, concurrency, duration, queue):
    from clip_text_client import CLIPTextClient

    texts = [caption(i) for i in range(batch * concurrency * 4)]
    done, started = 0, time.monotonic()
    with CLIPTextClient(url, model=model, traffic=traffic, batch_size=batch, concurrency=concurrency) as client:
        client.encode(texts[:batch])  # connected and warm
        started = time.monotonic()
        while time.monotonic() - started < duration:
            done += len(client.encode(texts))
    queue.put(done / (time.monotonic() - started))


def queries(url: str, model: str, clients: int, duration: float) -> list[float]:
    """Seconds of each one-text query: `clients` closed loops, interactive (the default class)."""
    from tritonclient import grpc

    from clip_text_client.transport import text_tensor

    latencies: list[float] = []
    lock = threading.Lock()

    def loop():
        client = grpc.InferenceServerClient(url)
        tensor = grpc.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(text_tensor(QUERY))
        outputs = [grpc.InferRequestedOutput("EMBEDDING")]
        client.infer(model, [tensor], outputs=outputs)
        mine = []
        end = time.monotonic() + duration
        while time.monotonic() < end:
            t0 = time.perf_counter()
            client.infer(model, [tensor], outputs=outputs, priority=PRIORITY_LEVELS[INTERACTIVE])
            mine.append(time.perf_counter() - t0)
            time.sleep(0.002)  # a user's pause: queries are not a load of their own
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def phase(args, name: str, with_queries: bool, bulk_traffic: str | None) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = []
    if bulk_traffic is not None:
        workers = [
            context.Process(
                target=bulk_process,
                args=(args.url, args.bulk_model, bulk_traffic, args.batch, args.concurrency, args.duration, queue),
            )
            for _ in range(args.bulk_processes)
        ]
        for w in workers:
            w.start()
        time.sleep(args.warmup)  # the bulk job at full speed before the queries start
    latencies = (
        queries(args.url, args.query_model, args.query_clients, args.duration - args.warmup) if with_queries else []
    )
    rates = [queue.get(timeout=args.duration + 300) for _ in workers]
    for w in workers:
        w.join()
    result = {"phase": name, "bulk_texts_per_s": float(sum(rates)) if workers else None}
    if latencies:
        ms = np.array(latencies) * 1000
        result |= {"queries": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items() if k != "phase")
    print(f"{name}: {shown}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=BUILT_REPOSITORY)
    parser.add_argument("--models", default=f"{ENSEMBLE_MODEL},{ENSEMBLE_MODEL}", help="QUERY_MODEL,BULK_MODEL")
    parser.add_argument("--gpu", action="store_true", help="serve the fp16 TorchScript encoder on GPU 0")
    parser.add_argument("--bulk-processes", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per bulk process")
    parser.add_argument("--batch", type=int, default=256, help="texts per bulk request")
    parser.add_argument("--query-clients", type=int, default=4)
    parser.add_argument(
        "--encoder-max-batch-size",
        type=int,
        default=None,
        help="rows the encoder joins per batch (default: its config's)",
    )
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    args.query_model, args.bulk_model = args.models.split(",")
    from clip_triton import LocalTritonServer

    # the variant's own instances (KIND_GPU on every visible GPU); a count override would need one
    # prefix per model of a several-model repository
    settings: dict = {"config_name": "torchscript_fp16" if args.gpu else "cpu"}
    if args.encoder_max_batch_size:
        settings["encoder_max_batch_size"] = args.encoder_max_batch_size
    with LocalTritonServer.on_free_ports(repository=args.repository, **settings) as server:
        args.url = server.grpc_url
        phases = [
            phase(args, "idle", True, None),
            phase(args, "bulk alone", False, BULK),
            phase(args, "priorities off", True, INTERACTIVE),
            phase(args, "priorities on", True, BULK),
        ]
    by = {p["phase"]: p for p in phases}
    ratios = {
        f"{name}: query p99 / idle p99": by[name]["p99_ms"] / by["idle"]["p99_ms"]
        for name in ("priorities off", "priorities on")
    } | {
        f"{name}: bulk / bulk alone": by[name]["bulk_texts_per_s"] / by["bulk alone"]["bulk_texts_per_s"]
        for name in ("priorities off", "priorities on")
    }
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot", "url", "repository")},
        "phases": phases,
        "ratios": ratios,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_queries = [p for p in report["phases"] if "p99_ms" in p]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [p["phase"] for p in with_queries]
    x = np.arange(len(names))
    left.bar(x - 0.2, [p["p50_ms"] for p in with_queries], 0.4, label="p50")
    left.bar(x + 0.2, [p["p99_ms"] for p in with_queries], 0.4, label="p99")
    left.set_xticks(x, names)
    left.set_ylabel("one-text query, ms")
    left.legend()
    bulk = [p for p in report["phases"] if p["bulk_texts_per_s"]]
    right.bar([p["phase"] for p in bulk], [p["bulk_texts_per_s"] for p in bulk])
    right.set_ylabel("bulk job, texts/s")
    fig.suptitle(
        f"queries ({report['settings']['query_model']}) beside a bulk job ({report['settings']['bulk_model']})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
