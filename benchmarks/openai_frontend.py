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
                        answer = await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"{url}: HTTP {response.status}: {answer[:300]!r}")
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


def measure_target(url: str, target: str, batches: list, row: dict, args, front=None) -> dict:
    """One target at one point; for the frontend, where its time and CPU went, from its metrics."""
    metrics_url = f"http://{front.host}:{front.metrics_port}/metrics" if front else None
    before = frontend_samples(metrics_url) if metrics_url else None
    cpu0 = cpu_seconds(front.process.pid) if front else 0.0
    result = measure(
        url,
        bodies(target, batches),
        row["concurrency"],
        row["texts_per_request"],
        args.processes,
        args.warmup,
        args.duration,
    )
    if front and before is not None:
        result["frontend_cpu_s"] = cpu_seconds(front.process.pid) - cpu0
        after = frontend_samples(metrics_url)
        count = after["clip_openai_request_seconds_count"] - before["clip_openai_request_seconds_count"]
        inside = after["clip_openai_request_seconds_sum"] - before["clip_openai_request_seconds_sum"]
        waiting = after["clip_openai_triton_seconds_sum"] - before["clip_openai_triton_seconds_sum"]
        result["frontend_ms_per_request"] = 1000 * inside / max(count, 1)
        result["triton_wait_ms_per_request"] = 1000 * waiting / max(count, 1)
        result["frontend_cpu_ms_per_request"] = 1000 * result["frontend_cpu_s"] / max(count, 1)
    label = target + (f" {' '.join(front.options)}" if front and front.options else "")
    print(
        f"{row['point']:>13} {label:>14}: {result['docs_per_s']:>10,.0f} docs/s  "
        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms",
        flush=True,
    )
    return result


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
    parser.add_argument(
        "--frontend",
        action="append",
        default=[],
        metavar="OPTION=VALUE,...",
        help="also a frontend started with these clip_openai options (e.g. calls-in-flight=2), on the same server",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)

    settings = dict(config_name="torchscript_fp16", gpus=[0]) if args.gpu else dict(config_name="cpu")
    report: dict = {"gpu": args.gpu, "workers": args.workers, "cores": os.cpu_count(), "points": []}
    points = []
    for point in args.points.split(","):
        shape, kind = point.split(":")
        concurrency, per = map(int, shape.split("x"))
        pool = corpus(kind, 512 * per, seed=1)
        batches = [pool[i * per : (i + 1) * per] for i in range(512)]
        points.append(
            (
                {
                    "point": f"{concurrency} x {per} {kind}",
                    "concurrency": concurrency,
                    "texts_per_request": per,
                    "kind": kind,
                },
                batches,
            )
        )
        report["points"].append(points[-1][0])
    with LocalTritonServer.on_free_ports(repository=args.repository, **settings) as server:
        urls = {
            "triton-http": f"http://{server.http_url}/v2/models/{ENSEMBLE_MODEL}/infer",
            "triton-grpc": server.grpc_url,
        }
        for row, batches in points:
            for target in TARGETS[:2]:
                row[target] = measure_target(urls[target], target, batches, row, args)
        # the frontend as shipped, then each --frontend variant, each a fresh frontend on the same server
        for variant in ["", *args.frontend]:
            options = [f"--{option}" for option in filter(None, variant.split(","))]
            with LocalOpenAIFrontend.on_free_ports(
                server.grpc_url, [ENSEMBLE_MODEL], workers=args.workers, options=options
            ) as front:
                assert front.process is not None
                for row, batches in points:
                    for target in TARGETS[2:]:
                        label = f"{target} {variant}".strip()
                        row[label] = measure_target(f"{front.url}/embeddings", target, batches, row, args, front)
                        row[label]["ratio_to_triton"] = row[label]["docs_per_s"] / row[BASELINE]["docs_per_s"]
                        row[label]["ratio_to_grpc"] = row[label]["docs_per_s"] / row["triton-grpc"]["docs_per_s"]
        for row, _ in points:
            for target in TARGETS[:2]:
                row[target]["ratio_to_triton"] = row[target]["docs_per_s"] / row[BASELINE]["docs_per_s"]
    print(
        "\npoint            frontend                        /HTTP  /gRPC   "
        "in frontend (waiting on Triton), CPU per request"
    )
    for row in report["points"]:
        for label, result in row.items():
            if label.startswith("openai"):
                print(
                    f"{row['point']:<16} {label:<30} "
                    f"{result['ratio_to_triton']:>6.0%} {result['ratio_to_grpc']:>6.0%}   "
                    f"{result['frontend_ms_per_request']:.2f} ms ({result['triton_wait_ms_per_request']:.2f}), "
                    f"{result['frontend_cpu_ms_per_request']:.3f} ms"
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

    fig, axes = plt.subplots(1, len(report["points"]), figsize=(5 * len(report["points"]), 4.2), squeeze=False)
    for ax, row in zip(axes[0], report["points"]):
        labels = [label for label, value in row.items() if isinstance(value, dict)]
        values = [row[label]["docs_per_s"] for label in labels]
        ax.bar(range(len(labels)), values, color=["#555", "#888"] + ["#2a7", "#7b5"] * len(labels))
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        for i, label in enumerate(labels[1:], 1):
            ax.text(i, values[i], f"{row[label]['ratio_to_triton']:.0%}", ha="center", va="bottom")
        ax.set_title(row["point"])
        ax.set_ylabel("docs/s")
    fig.suptitle(f"OpenAI frontend vs Triton HTTP ({'GPU' if report['gpu'] else 'CPU'}, {report['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
