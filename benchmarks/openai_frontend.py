"""OpenAI's embeddings API (python -m clip_openai) against Triton's own HTTP endpoint, side by side
in one run: the same texts, the same closed-loop load generator (aiohttp in several processes,
each request's whole answer read), one server.

    python -m benchmarks.openai_frontend                        # CPU: the built repository, ONNX
    python -m benchmarks.openai_frontend --gpu --workers 8      # GPU 0, the fp16 default
    python -m benchmarks.openai_frontend --json out.json --plot out.png

Points (--points): 64 concurrent single texts, and 8 concurrent requests of 256 texts. Triton is called as
tritonclient calls it (JSON request, binary EMBEDDING); the frontend with base64 (what the openai
SDK asks for by default) and with float. Where the frontend's time goes comes from its own
metrics (time in the frontend vs time waiting on Triton) and its processes' CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

from clip_openai.triton import text_contents
from clip_triton_contract.names import EMBEDDING_OUTPUT, ENSEMBLE_MODEL, TEXT_INPUT
from clip_triton_ops.sample_texts import texts as corpus

POINTS = "64x1:mixed,8x256:short"  # concurrency x texts per request : corpus kind
TARGETS = ("triton-http", "triton-grpc", "openai-base64", "openai-float")
BASELINE = "triton-http"  # the ratios' denominator; triton-grpc is shown beside it


def bodies(target: str, batches: list[list[str]]) -> list[tuple[bytes, dict[str, str]]]:
    """Each request's body and headers. Triton's as tritonclient.http sends them: a JSON header
    and the texts as one binary BYTES tensor, EMBEDDING asked for as binary."""
    if target == "triton-grpc":  # a ModelInferRequest, as the frontend builds its own
        from tritonclient.grpc import service_pb2

        out = []
        for batch in batches:
            request = service_pb2.ModelInferRequest(model_name=ENSEMBLE_MODEL)
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = TEXT_INPUT, "BYTES"
            tensor.shape.extend((len(batch), 1))
            request.raw_input_contents.append(text_contents([t.encode() for t in batch]))
            request.outputs.add().name = EMBEDDING_OUTPUT
            out.append((request.SerializeToString(), {}))
        return out
    if target == "triton-http":
        out = []
        for batch in batches:
            data = text_contents([t.encode() for t in batch])
            header = json.dumps(
                {
                    "inputs": [
                        {
                            "name": TEXT_INPUT,
                            "shape": [len(batch), 1],
                            "datatype": "BYTES",
                            "parameters": {"binary_data_size": len(data)},
                        }
                    ],
                    "outputs": [{"name": EMBEDDING_OUTPUT, "parameters": {"binary_data": True}}],
                }
            ).encode()
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
            out.append((header + data, headers))
        return out
    encoding = target.split("-")[1]
    return [
        (
            json.dumps({"model": ENSEMBLE_MODEL, "input": b, "encoding_format": encoding}).encode(),
            {"Content-Type": "application/json"},
        )
        for b in batches
    ]


async def closed_loop(url: str, payloads: list, concurrency: int, warmup: float, duration: float, per: int):
    import aiohttp
    import grpc

    latencies: list[float] = []
    done = [0]
    start = time.perf_counter()
    record_from, stop_at = start + warmup, start + warmup + duration
    connector = aiohttp.TCPConnector(limit=0)
    channel = None
    if not url.startswith("http"):  # Triton's gRPC: the serialized requests, sent as they are
        channel = grpc.aio.insecure_channel(url, options=[("grpc.max_receive_message_length", -1)])
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop(offset: int):
            i = offset
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                body, headers = payloads[i % len(payloads)]
                if channel is not None:
                    await infer(body)  # raw bytes out and in: no client-side protobuf work
                else:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"{url}: HTTP {response.status}")
                t1 = time.perf_counter()
                i += concurrency
                if t0 >= record_from and t1 <= stop_at:
                    latencies.append(t1 - t0)
                    done[0] += per

        await asyncio.gather(*(loop(k) for k in range(concurrency)))
    if channel is not None:
        await channel.close()
    return done[0], latencies


def process_main(args):
    url, payloads, concurrency, warmup, duration, per, queue = args
    queue.put(asyncio.run(closed_loop(url, payloads, concurrency, warmup, duration, per)))


def measure(
    url: str, payloads: list[bytes], concurrency: int, per: int, processes: int, warmup: float, duration: float
):
    processes = max(1, min(processes, concurrency))
    context = mp.get_context("spawn")
    queue = context.Queue()
    shares = [concurrency // processes + (1 if k < concurrency % processes else 0) for k in range(processes)]
    workers = [
        context.Process(target=process_main, args=((url, payloads[k::processes], n, warmup, duration, per, queue),))
        for k, n in enumerate(shares)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=warmup + duration + 300) for _ in workers]
    for w in workers:
        w.join()
    docs = sum(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[1])
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    return {"docs_per_s": docs / duration, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "requests": len(latencies)}


def frontend_samples(metrics_url: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    wanted = ("clip_openai_request_seconds_sum", "clip_openai_request_seconds_count", "clip_openai_triton_seconds_sum")
    return {name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1)) for name in wanted}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the frontend's workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main(argv=None) -> int:
    from clip_triton import LocalTritonServer
    from clip_triton.openai_frontend import LocalOpenAIFrontend
    from clip_triton.paths import BUILT_REPOSITORY

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=BUILT_REPOSITORY)
    parser.add_argument("--gpu", action="store_true", help="serve the fp16 TorchScript encoder on GPU 0")
    parser.add_argument("--workers", type=int, default=None, help="frontend processes (default: clip_openai's)")
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--points", default=POINTS, help="CONCURRENCYxTEXTS:KIND,... (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)

    settings = dict(config_name="torchscript_fp16", gpus=[0]) if args.gpu else dict(config_name="cpu")
    report: dict = {"gpu": args.gpu, "workers": args.workers, "cores": os.cpu_count(), "points": []}
    with LocalTritonServer.on_free_ports(repository=args.repository, **settings) as server:
        with LocalOpenAIFrontend.on_free_ports(server.grpc_url, [ENSEMBLE_MODEL], workers=args.workers) as front:
            assert front.process is not None
            metrics_url = f"http://{front.host}:{front.metrics_port}/metrics"
            urls = {
                "triton-http": f"http://{server.http_url}/v2/models/{ENSEMBLE_MODEL}/infer",
                "triton-grpc": server.grpc_url,
                "openai-base64": f"{front.url}/embeddings",
                "openai-float": f"{front.url}/embeddings",
            }
            for point in args.points.split(","):
                shape, kind = point.split(":")
                concurrency, per = map(int, shape.split("x"))
                point = f"{concurrency} x {per} {kind}"
                pool = corpus(kind, 512 * per, seed=1)
                batches = [pool[i * per : (i + 1) * per] for i in range(512)]
                row: dict = {"point": point, "concurrency": concurrency, "texts_per_request": per, "kind": kind}
                for target in TARGETS:
                    before = frontend_samples(metrics_url) if target.startswith("openai") else None
                    cpu0 = cpu_seconds(front.process.pid)
                    result = measure(
                        urls[target],
                        bodies(target, batches),
                        concurrency,
                        per,
                        args.processes,
                        args.warmup,
                        args.duration,
                    )
                    result["frontend_cpu_s"] = cpu_seconds(front.process.pid) - cpu0
                    if before is not None:
                        after = frontend_samples(metrics_url)
                        count = after["clip_openai_request_seconds_count"] - before["clip_openai_request_seconds_count"]
                        inside = after["clip_openai_request_seconds_sum"] - before["clip_openai_request_seconds_sum"]
                        waiting = after["clip_openai_triton_seconds_sum"] - before["clip_openai_triton_seconds_sum"]
                        result["frontend_ms_per_request"] = 1000 * inside / max(count, 1)
                        result["triton_wait_ms_per_request"] = 1000 * waiting / max(count, 1)
                        result["frontend_cpu_ms_per_request"] = 1000 * result["frontend_cpu_s"] / max(count, 1)
                    row[target] = result
                    print(
                        f"{point:>13} {target:>14}: {result['docs_per_s']:>10,.0f} docs/s  "
                        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms",
                        flush=True,
                    )
                for target in TARGETS:
                    row[target]["ratio_to_triton"] = row[target]["docs_per_s"] / row[BASELINE]["docs_per_s"]
                report["points"].append(row)
    print("\npoint            base64/HTTP  base64/gRPC  float/HTTP  float/gRPC   in frontend (waiting on Triton), CPU")
    for row in report["points"]:
        b64, flt, grpc_rate = row["openai-base64"], row["openai-float"], row["triton-grpc"]["docs_per_s"]
        print(
            f"{row['point']:<16} {b64['ratio_to_triton']:>11.0%} {b64['docs_per_s'] / grpc_rate:>12.0%} "
            f"{flt['ratio_to_triton']:>11.0%} {flt['docs_per_s'] / grpc_rate:>11.0%}   "
            f"base64 {b64['frontend_ms_per_request']:.2f} ms ({b64['triton_wait_ms_per_request']:.2f}), "
            f"{b64['frontend_cpu_ms_per_request']:.2f} ms CPU; "
            f"float {flt['frontend_ms_per_request']:.2f} ms ({flt['triton_wait_ms_per_request']:.2f}), "
            f"{flt['frontend_cpu_ms_per_request']:.2f} ms CPU"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report["points"]), figsize=(5 * len(report["points"]), 3.6))
    for ax, row in zip(axes, report["points"]):
        values = [row[t]["docs_per_s"] for t in TARGETS]
        ax.bar(TARGETS, values, color=["#555", "#888", "#2a7", "#7b5"])
        for i, t in enumerate(TARGETS[1:], 1):
            ax.text(i, values[i], f"{row[t]['ratio_to_triton']:.0%}", ha="center", va="bottom")
        ax.set_title(row["point"])
        ax.set_ylabel("docs/s")
    fig.suptitle(f"OpenAI frontend vs Triton HTTP ({'GPU' if report['gpu'] else 'CPU'}, {report['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
