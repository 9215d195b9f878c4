"""Bounded soak: `--concurrency` closed-loop gRPC workers against the CPU server for `--duration`
seconds; every `--window` seconds it records docs/s, p50/p99 latency, errors and the resident
memory (RSS) of tritonserver plus its Python-backend stubs. Stops by itself.

    python -m benchmarks.soak --duration 300 --concurrency 32 \\
        --json benchmarks/results/soak.json --plot benchmarks/results/soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from clip_triton_build.spec import EMBED_DIM
from clip_triton_client.transport import text_tensor
from clip_triton_contract.names import EMBEDDING_OUTPUT, ENSEMBLE_MODEL, TEXT_INPUT
from clip_triton_ops.sample_texts import captions


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


async def soak(url: str, concurrency: int, texts_per_request: int, duration: float, window: float, pids_fn):
    import tritonclient.grpc.aio as grpc

    client = grpc.InferenceServerClient(url)
    pool = captions(4096, seed=9)
    latencies: list[float] = []
    counters = {"docs": 0, "errors": 0}
    samples = []
    start = time.perf_counter()
    stop_at = start + duration

    async def worker(k: int):
        i = k * 131
        while time.perf_counter() < stop_at:
            texts = [pool[(i + j) % len(pool)] for j in range(texts_per_request)]
            i += texts_per_request
            batch = text_tensor(texts)
            tensor = grpc.InferInput(TEXT_INPUT, list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch)
            t0 = time.perf_counter()
            try:
                result = await client.infer(ENSEMBLE_MODEL, [tensor], client_timeout=60)
                if result.as_numpy(EMBEDDING_OUTPUT).shape != (len(texts), EMBED_DIM):
                    raise RuntimeError("wrong shape")
                latencies.append(time.perf_counter() - t0)
                counters["docs"] += len(texts)
            except Exception:
                counters["errors"] += 1

    async def sampler():
        last = start
        while time.perf_counter() < stop_at:
            await asyncio.sleep(window)
            now = time.perf_counter()
            lat = np.array(latencies) if latencies else np.array([np.nan])
            samples.append(
                {
                    "t_s": round(now - start, 1),
                    "docs_per_s": counters["docs"] / (now - last),
                    "p50_ms": float(np.percentile(lat, 50) * 1e3),
                    "p99_ms": float(np.percentile(lat, 99) * 1e3),
                    "errors": counters["errors"],
                    "rss_mb": rss_mb(pids_fn()),
                }
            )
            print(json.dumps(samples[-1]), flush=True)
            latencies.clear()
            counters["docs"] = 0
            last = now

    await asyncio.gather(sampler(), *(worker(k) for k in range(concurrency)))
    await client.close()
    return samples


def main(argv=None) -> int:
    from clip_triton import LocalTritonServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--window", type=float, default=10)
    parser.add_argument("--json", default="")
    parser.add_argument("--plot", default="")
    args = parser.parse_args(argv)
    with LocalTritonServer.on_free_ports() as srv:
        pids_fn = lambda: [srv.process.pid] + srv.stub_pids()  # noqa: E731
        samples = asyncio.run(
            soak(srv.grpc_url, args.concurrency, args.texts_per_request, args.duration, args.window, pids_fn)
        )
    errors = samples[-1]["errors"] if samples else 0
    steady = samples[1:] or samples
    summary = {
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "texts_per_request": args.texts_per_request,
        "errors": errors,
        "docs_per_s_mean": float(np.mean([s["docs_per_s"] for s in steady])),
        "p50_ms_median": float(np.median([s["p50_ms"] for s in steady])),
        "p99_ms_max": float(max(s["p99_ms"] for s in steady)),
        "rss_mb_first": steady[0]["rss_mb"],
        "rss_mb_last": steady[-1]["rss_mb"],
        "samples": samples,
    }
    print(
        f"soak: {args.duration:.0f}s at concurrency {args.concurrency}: {summary['docs_per_s_mean']:.1f} docs/s, "
        f"p50 {summary['p50_ms_median']:.0f} ms, worst p99 {summary['p99_ms_max']:.0f} ms, errors {errors}, "
        f"RSS {summary['rss_mb_first']:.0f} -> {summary['rss_mb_last']:.0f} MB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s["t_s"] for s in samples]
        fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
        axes[0].plot(t, [s["docs_per_s"] for s in samples])
        axes[0].set_ylabel("docs/s")
        axes[1].plot(t, [s["p50_ms"] for s in samples], label="p50")
        axes[1].plot(t, [s["p99_ms"] for s in samples], label="p99")
        axes[1].set_ylabel("latency ms")
        axes[1].legend()
        axes[2].plot(t, [s["rss_mb"] for s in samples])
        axes[2].set_ylabel("RSS MB")
        axes[2].set_xlabel("seconds")
        fig.suptitle(f"soak: concurrency {args.concurrency}, {errors} errors")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
