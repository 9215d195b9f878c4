"""Queries while bulk jobs share the encoder (clip_triton_contract.traffic), side by side in one run:

- `idle`: one-text queries alone (QUERY_CLIENTS closed loops, one request in flight each);
- `bulk alone`: the bulk job alone (BULK_PROCESSES processes of CLIPClient.encode, 256-text
  requests, CONCURRENCY in flight each): its throughput is what the others are compared with;
- `priorities off`: the bulk job and the queries at once, the bulk job marked interactive (one
  class, first come first served: what a server without classes does);
- `priorities on`: the same, the bulk job marked bulk (what clip-triton-embed sends).

For each: query p50/p99 and the bulk job's texts/s, the ratios the goal is stated in (query
p99 under bulk over idle p99; bulk texts/s with queries over alone), and, from Triton's
statistics, the mean time a request of either class queued in front of each tokenizer and encoder
(the share of a query's wait each queue holds) and the mean time each executed. With `--models A,B` (a
repository built with `--model A=... --model B=...`) the queries go to A and the bulk job to B:
two models sharing one GPU.

`--layouts` runs all of it once per encoder layout of the bulk model, `ROWSxINSTANCES` (the rows
its batcher joins per execution, its instances per GPU) or `default` (its config's), each on a
fresh server: the trade an operator makes between query latency and bulk throughput, with every
bulk rate also over the first layout's bulk alone.

    python -m benchmarks.traffic --gpu --layouts default,256x6 --json traffic.json --plot traffic.png
    python -m benchmarks.traffic --repository /tmp/two --models b32,l14 --gpu --json two.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bulk_job import BulkJob, Loop, run_loops
from clip_triton_build.__main__ import encoder_layout
from clip_triton_build.repository import BUILT_REPOSITORY
from clip_triton_contract.names import (
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    PYTHON_TOKENIZER_MODEL,
    TOKENIZER_MODEL,
    model_names,
)
from clip_triton_contract.traffic import BULK, INTERACTIVE, PRIORITY_LEVELS
from clip_triton_ops.deploy import deploy

QUERY = ["a photo of a dog playing in the snow"]


def caption(i: int) -> str:
    words = ("a", "photo", "of", "two", "dogs", "on", "a", "beach", "at", "sunset", "with", "kites")
    return " ".join(words[: 4 + i % 8]) + f" {i}"


def bulk_process(url, model, traffic, batch, concurrency, start, window, queue):
    """One process of the bulk job (benchmarks.bulk_job): `concurrency` closed loops on one
    CLIPClient, each encoding `batch` texts (one request) at a time, counting the texts of the
    requests that end in the window."""
    from clip_triton_client import CLIPClient

    texts = [caption(i) for i in range(batch * concurrency)]
    with CLIPClient(url, model=model, traffic=traffic, batch_size=batch, concurrency=concurrency) as client:

        def open_loop(k: int) -> Loop:
            mine = texts[k * batch : (k + 1) * batch]
            client.encode(mine)  # connected and warm
            return (lambda: len(client.encode(mine))), (lambda: None)

        queue.put(run_loops(concurrency, open_loop, start, window))


def queries(url: str, model: str, clients: int, duration: float) -> list[float]:
    """Seconds of each one-text query: `clients` closed loops, interactive (the default class)."""
    from tritonclient import grpc

    from clip_triton_client.transport import text_tensor

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


STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def stage_totals(url: str, models: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """Each model's (requests, nanoseconds) so far in each of STAGES (Triton's statistics)."""
    from tritonclient import grpc

    client = grpc.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(as_json=True)["model_stats"]
    finally:
        client.close()
    found = {}
    for model in stats:
        if model["name"] in models:
            inference = model["inference_stats"]
            found[model["name"]] = {
                stage: (int(inference.get(stage, {}).get("count", 0)), int(inference.get(stage, {}).get("ns", 0)))
                for stage in STAGES
            }
    return found


def stage_ms(before: dict, after: dict, stage: str = "queue") -> dict[str, float]:
    """Mean milliseconds a request spent in `stage` of each model between two `stage_totals` readings."""
    means = {}
    for model, stages in after.items():
        count, ns = stages[stage]
        earlier = before.get(model, {}).get(stage, (0, 0))
        if count - earlier[0]:
            means[model] = (ns - earlier[1]) / (count - earlier[0]) / 1e6
    return means


def phase(args, name: str, with_queries: bool, bulk_traffic: str | None) -> dict:
    queue_models = [
        model_names(m)[role]
        for m in sorted({args.query_model, args.bulk_model})
        for role in (TOKENIZER_MODEL, PYTHON_TOKENIZER_MODEL, ENCODER_MODEL)
    ]
    job = None
    if bulk_traffic is not None:
        job_args = (args.url, args.bulk_model, bulk_traffic, args.batch, args.concurrency)
        job = BulkJob(bulk_process, job_args, args.bulk_processes)
        # the bulk job at full speed before the queries start; it is counted while they run
        job.begin(args.duration - args.warmup, after=args.warmup)
        time.sleep(args.warmup)
    before = stage_totals(args.url, queue_models)
    latencies = (
        queries(args.url, args.query_model, args.query_clients, args.duration - args.warmup) if with_queries else []
    )
    rate = job.rate() if job is not None else None
    after = stage_totals(args.url, queue_models)
    waits, infers = stage_ms(before, after), stage_ms(before, after, "compute_infer")
    result = {"phase": name, "bulk_texts_per_s": rate}
    if latencies:
        ms = np.array(latencies) * 1000
        result |= {
            "queries": len(ms),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()),
        }
    result["queue_ms"], result["infer_ms"] = waits, infers
    shown = ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in result.items()
        if k not in ("phase", "queue_ms", "infer_ms")
    )
    shown += "; queued ms per request: " + ", ".join(f"{m} {v:.3f}" for m, v in waits.items())
    shown += "; executing: " + ", ".join(f"{m} {v:.3f}" for m, v in infers.items())
    print(f"{name}: {shown}", flush=True)
    return result


def layout(text: str) -> tuple[int, int] | None:
    """`1024x3` -> (1024, 3), read as the build's --encoder-layout reads it; `default` -> None (one
    item of --layouts)."""
    return None if text == "default" else encoder_layout(text)[1]


def load(server, repository: Path, names: set[str], bulk_model: str, bulk_layout: tuple[int, int] | None) -> None:
    """Every model of each checkpoint in `names` (ensemble names), the bulk model's encoder with
    `bulk_layout`: Triton's repository API with a config override (clip_triton_ops.deploy)."""
    for name in sorted(names):
        rows, count = bulk_layout if name == bulk_model and bulk_layout else (None, None)
        deploy(
            server.grpc_url,
            repository,
            server.config_name,
            encoder_instances=count,
            headers=server.admin_headers("grpc"),
            encoder_max_batch_size=rows,
            model=name,
        )


def phase_of(run: dict, name: str) -> dict:
    """The phase called `name` of one layout's run."""
    return next(p for p in run["phases"] if p["phase"] == name)


def run_layout(args, name: str, bulk_layout: tuple[int, int] | None) -> dict:
    from clip_triton import LocalTritonServer

    print(f"-- layout {name}", flush=True)
    # the variant's own instances (KIND_GPU on every visible GPU) except the bulk model's encoder
    # in a layout; every model is loaded through the repository API, explicit mode
    settings = {"config_name": "torchscript_fp16" if args.gpu else "cpu", "model_control_mode": "explicit"}
    with LocalTritonServer.on_free_ports(repository=args.repository, **settings) as server:
        load(server, args.repository, {args.query_model, args.bulk_model}, args.bulk_model, bulk_layout)
        args.url = server.grpc_url
        phases = [
            phase(args, "idle", True, None),
            phase(args, "bulk alone", False, BULK),
            phase(args, "priorities off", True, INTERACTIVE),
            phase(args, "priorities on", True, BULK),
        ]
    by = {p["phase"]: p for p in phases}
    ratios = {
        f"{shared}: query p99 / idle p99": by[shared]["p99_ms"] / by["idle"]["p99_ms"]
        for shared in ("priorities off", "priorities on")
    } | {
        f"{shared}: bulk / bulk alone": by[shared]["bulk_texts_per_s"] / by["bulk alone"]["bulk_texts_per_s"]
        for shared in ("priorities off", "priorities on")
    }
    return {"layout": name, "phases": phases, "ratios": ratios}


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
        "--layouts",
        default="default",
        help="comma-separated encoder layouts of the bulk model: ROWSxINSTANCES (e.g. 256x6) or default",
    )
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    args.query_model, args.bulk_model = args.models.split(",")
    names = args.layouts.split(",")
    runs = [run_layout(args, name, layout(name)) for name in names]
    reference = phase_of(runs[0], "bulk alone")["bulk_texts_per_s"]
    for run in runs:
        shared = phase_of(run, "priorities on")["bulk_texts_per_s"]
        run["ratios"][f"priorities on: bulk / {names[0]} bulk alone"] = shared / reference
        for key, value in run["ratios"].items():
            print(f"{run['layout']}: {key}: {value:.2f}")
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "plot", "url", "repository")},
        "runs": runs,
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

    runs = report["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(runs))
    for i, name in enumerate(("idle", "priorities off", "priorities on")):
        p99 = [phase_of(run, name)["p99_ms"] for run in runs]
        left.bar(x + (i - 1) * 0.27, p99, 0.27, label=name)
    left.set_xticks(x, [run["layout"] for run in runs])
    left.set_ylabel("one-text query p99, ms")
    left.set_xlabel("bulk model's encoder: rows x instances")
    left.legend()
    for i, name in enumerate(("bulk alone", "priorities on")):
        rate = [phase_of(run, name)["bulk_texts_per_s"] for run in runs]
        right.bar(x + (i - 0.5) * 0.4, rate, 0.4, label=name if name == "bulk alone" else "beside the queries")
    right.set_xticks(x, [run["layout"] for run in runs])
    right.set_ylabel("bulk job, texts/s")
    right.legend()
    settings = report["settings"]
    fig.suptitle(f"queries ({settings['query_model']}) beside a bulk job ({settings['bulk_model']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
