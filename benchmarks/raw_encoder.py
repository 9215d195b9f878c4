"""The exported TorchScript encoder alone, in-process, on the ids the server's tokenizer gives:
the ceiling the server is compared with (docs/performance.md), and the settings the libtorch
backend exposes (executor mode, group size, parallel instances).

    python -m benchmarks.raw_encoder --model build/model_repository/clip_text_encoder/1/model_fp16.pt \\
        --ids short=ids_short.npy --ids mixed=ids_mixed.npy --json raw.json

Every timing waits for the GPU (torch.cuda.synchronize) before it stops the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from clip_triton_build.encoder import cuda_ops
from clip_triton_build.repository import cuda_ops_library

# what the libtorch backend's model-config parameters switch, as the backend switches them: per
# thread (the setting is thread-local in libtorch; the backend sets it in every execution), so
# every caller thread below sets it again
EXECUTORS = {
    # DISABLE_OPTIMIZED_EXECUTION=true: no profiling, no specialisation per input shape
    "no-optimize": lambda: torch._C._set_graph_executor_optimize(False),
    # the backend's default: TorchScript's profiling executor, which re-specialises per shape
    "profiling": lambda: torch._C._set_graph_executor_optimize(True),
}


def load(model: Path, device: str, executor: str, group_rows: int | None, pass_cost: int | None = None):
    """The TorchScript file, with its length-group settings overridden where given (and the
    CUDA-graph ops a GPU build's file calls, at the root of its repository: model is
    <repository>/<encoder>/1/model_fp16.pt)."""
    library = cuda_ops_library(Path(model).resolve().parents[2])
    if device.startswith("cuda") and library.exists():
        cuda_ops.load(library)
    EXECUTORS[executor]()
    module = torch.jit.load(str(model), map_location=device).eval()
    if group_rows is not None:
        module.gpu_group_rows = group_rows
        module.cpu_group_rows = group_rows
    if pass_cost is not None:
        module.gpu_pass_cost = pass_cost
        module.cpu_pass_cost = pass_cost
    return module


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(
    module, ids: torch.Tensor, batch: int, seconds: float, device: str, threads: int = 1, executor: str = "no-optimize"
) -> dict:
    """docs/s with `threads` callers, each on its own CUDA stream (as Triton's instances are),
    running consecutive `batch`-row slices of `ids` for `seconds` after one warm pass."""
    batches = [ids[i : i + batch] for i in range(0, len(ids) - batch + 1, batch)] or [ids]
    with torch.no_grad():
        EXECUTORS[executor]()
        for b in batches:  # every shape once: first-use costs stay out of the clock
            module(b)
        sync(device)
        done = [0] * threads
        warm, go = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
        stop = [0.0]
        errors: list[BaseException] = []

        def caller(k):
            EXECUTORS[executor]()  # thread-local, as grad mode
            stream = torch.cuda.Stream() if device.startswith("cuda") else None
            on_stream = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with torch.no_grad(), on_stream:
                try:  # CUDA graphs belong to a thread and stream: each caller captures its own first
                    for b in batches[k : k + 64 * threads : threads]:
                        module(b)
                    sync(device)
                except BaseException as exc:  # reach the barriers anyway: a failed caller must not hang the run
                    errors.append(exc)
                warm.wait()
                go.wait()  # the clock starts for all callers at once
                if errors:
                    return
                i = k
                while time.perf_counter() < stop[0]:
                    module(batches[i % len(batches)])
                    if stream is not None:
                        stream.synchronize()
                    done[k] += len(batches[i % len(batches)])
                    i += threads

        workers = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        warm.wait()
        start = time.perf_counter()
        stop[0] = start + seconds
        go.wait()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise errors[0]
    return {"docs_per_s": sum(done) / elapsed, "batch": batch, "threads": threads}


def single_text_latency(module, ids: torch.Tensor, count: int, device: str) -> dict:
    """One text per call, `count` different texts, three passes: the first pays every first-use
    cost (a new shape, a kernel not yet loaded), the second shows the steady state back to back,
    the third the way a server calls at concurrency 1: the ids come from host memory, after the
    thread idled for a millisecond (the tokenizer's turn)."""
    host = ids[:count].cpu()
    passes = []
    with torch.no_grad():
        for gap in (0.0, 0.0, 1e-3):
            times = []
            for k in range(len(host)):
                if gap:
                    time.sleep(gap)
                    row = host[k : k + 1]
                else:
                    row = ids[k : k + 1]
                t0 = time.perf_counter()
                module(row.to(device))
                sync(device)
                times.append(time.perf_counter() - t0)
            passes.append(np.array(times) * 1e3)
    cold, warm, gapped = passes
    return {
        "cold_p50_ms": float(np.percentile(cold, 50)),
        "cold_p99_ms": float(np.percentile(cold, 99)),
        "cold_max_ms": float(cold.max()),
        "p50_ms": float(np.percentile(warm, 50)),
        "p99_ms": float(np.percentile(warm, 99)),
        "max_ms": float(warm.max()),
        "gap_p50_ms": float(np.percentile(gapped, 50)),
        "gap_p99_ms": float(np.percentile(gapped, 99)),
    }


def profile(module, ids: torch.Tensor, batch: int, passes: int, out: Path) -> dict:
    """Where one caller's time goes at `batch` rows (torch.profiler, CUDA): the wall time per
    pass against the GPU's kernel time per pass (the rest is the GPU waiting for the host:
    interpreter and kernel launches), kernel launches per pass, and the kernels by time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    rows = ids[:batch]
    with torch.no_grad():
        for _ in range(3):
            module(rows)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(passes):
                module(rows)
            torch.cuda.synchronize()
            wall = (time.perf_counter() - start) / passes
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_us = sum(e.self_device_time_total for e in kernels) / passes
    table = events.table(sort_by="self_device_time_total", row_limit=20)
    out.write_text(table)
    result = {
        "batch": batch,
        "wall_ms_per_pass": wall * 1e3,
        "gpu_kernel_ms_per_pass": kernel_us / 1e3,
        "gpu_busy": kernel_us / 1e3 / (wall * 1e3),
        "kernel_launches_per_pass": sum(e.count for e in kernels) / passes,
        "top_kernels_ms_per_pass": {
            e.key[:80]: e.self_device_time_total / 1e3 / passes
            for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:8]
        },
    }
    print(
        f"[profile] batch {batch}: {result['wall_ms_per_pass']:.2f} ms a pass, GPU kernels "
        f"{result['gpu_kernel_ms_per_pass']:.2f} ms ({result['gpu_busy']:.0%} busy), "
        f"{result['kernel_launches_per_pass']:.0f} kernel launches; table: {out}",
        flush=True,
    )
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--ids", action="append", required=True, metavar="KIND=FILE.npy")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--executors", default="no-optimize")
    parser.add_argument("--group-rows", default="", help="comma list; empty: the export's own")
    parser.add_argument("--pass-costs", default="", help="comma list (padded positions); empty: the export's own")
    parser.add_argument("--batches", default="256")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--latency-texts", type=int, default=200, help="0: skip the one-text latency")
    parser.add_argument("--profile", default="", help="comma list of batch sizes to profile (one caller, CUDA)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    corpora = {
        kind: torch.from_numpy(np.load(path)).to(args.device)
        for kind, path in (item.split("=", 1) for item in args.ids)
    }
    groups = [int(g) for g in args.group_rows.split(",") if g] or [None]
    pass_costs = [int(c) for c in args.pass_costs.split(",") if c] or [None]
    results = []
    for executor in args.executors.split(","):
        module = load(args.model, args.device, executor, None)
        if args.latency_texts:
            kind = next(iter(corpora))
            row = {
                "executor": executor,
                "kind": kind,
                **single_text_latency(module, corpora[kind], args.latency_texts, args.device),
            }
            results.append(row)
            print(
                f"[raw {executor}] 1 text: cold p50 {row['cold_p50_ms']:.2f} p99 {row['cold_p99_ms']:.2f} "
                f"max {row['cold_max_ms']:.1f} ms | warm p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} "
                f"max {row['max_ms']:.1f} ms | from host after 1 ms idle p50 {row['gap_p50_ms']:.2f} "
                f"p99 {row['gap_p99_ms']:.2f} ms",
                flush=True,
            )
        for group, pass_cost in ((g, c) for g in groups for c in pass_costs):
            module = load(args.model, args.device, executor, group, pass_cost)
            for kind, ids in corpora.items():
                for batch in (int(b) for b in args.batches.split(",")):
                    for threads in (int(t) for t in args.threads.split(",")):
                        row = {
                            "executor": executor,
                            "group_rows": group,
                            "pass_cost": pass_cost,
                            "kind": kind,
                            **throughput(module, ids, batch, args.seconds, args.device, threads, executor),
                        }
                        results.append(row)
                        print(
                            f"[raw {executor} group {group} pass cost {pass_cost}] {kind} batch {batch} x{threads}: "
                            f"{row['docs_per_s']:,.0f} docs/s",
                            flush=True,
                        )
    for batch in (int(b) for b in args.profile.split(",") if b):
        kind, ids = next(iter(corpora.items()))
        json_path = args.json or Path("raw_encoder.json")
        table = json_path.with_name(f"{json_path.stem}_profile_{kind}_{batch}.txt")
        try:
            row = profile(load(args.model, args.device, "no-optimize", None), ids, batch, 20, table)
        except Exception as exc:  # a profiler that cannot see the GPU must not cost the run its numbers
            print(f"[profile] batch {batch} failed: {exc!r}", flush=True)
            continue
        results.append({"kind": kind, "profile": row})
    report = {
        "model": str(args.model),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
