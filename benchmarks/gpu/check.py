"""GPU run: KIND_GPU instances through the local runtime, parity with the CPU build, fp16 vs fp32,
the raw encoder in-process on the same texts, the load points of docs/performance.md next to it,
a latency breakdown of one text at concurrency 1 from Triton's trace API, and (--sweep) other
serving settings on the same server. Run by benchmarks/gpu/run.sh on a GPU machine; writes
gpu_report.json and a plot into --out.

    python -m benchmarks.gpu.check --out results/ [--quick] [--gpus 0] [--sweep 2:8:256:500,4:8:1024:0]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu import parity as gpu_parity
from benchmarks.gpu import trace_breakdown
from benchmarks.load import format_row, measure
from clip_triton.paths import BUILT_REPOSITORY, REPO_ROOT
from clip_triton_build.spec import TORCHSCRIPT_FP16_FILE
from clip_triton_client.transport import Transport
from clip_triton_contract.names import (
    EMBEDDING_OUTPUT,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    IDS_TENSOR,
    IMAGE_MODELS,
    TEXT_INPUT,
    TOKENIZER_MODEL,
)
from clip_triton_ops import sample_texts, verify
from clip_triton_ops.sample_texts import captions

POINTS = [(1, 1), (64, 1), (16, 32), (8, 256)]  # (concurrency, texts per request)


def infer(url, model, texts, output):
    """One request of its own connection, as a separate client's would be (the traced one-text requests)."""
    transport = Transport(url, "grpc", timeout=verify.REQUEST_TIMEOUT_S, headers=None)
    try:
        return transport.infer(model, TEXT_INPUT, output, texts)
    finally:
        transport.close()


def text_side(repository: Path, into: Path) -> Path:
    """A view of `repository` without its image models: links to every other entry. This check
    serves the fp32 `torchscript` variant first, which the image models lack (their GPU variant
    is fp16 only, measured by benchmarks.gpu.images), and their CPU fallback needs ONNX Runtime,
    which the GPU run does not build."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in repository.resolve().iterdir():
        if entry.name not in IMAGE_MODELS:
            (into / entry.name).symlink_to(entry)
    return into


def gpu_instances(log_path: Path) -> list[str]:
    return sorted(
        {
            line.split('"')[1]
            for line in log_path.read_text().splitlines()
            if f"TRITONBACKEND_ModelInstanceInitialize: {ENCODER_MODEL}" in line and "GPU" in line
        }
    )


def model_counts(url: str, model: str = ENCODER_MODEL) -> tuple[int, int, int]:
    """(requests, rows, executions) `model` has served so far: Triton's statistics API."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model).model_stats[0]
        return stats.inference_stats.success.count, stats.inference_count, stats.execution_count
    finally:
        client.close()


def run_points(
    url, label, quick, processes, results, kind="mixed", points=POINTS, model=ENSEMBLE_MODEL, output=EMBEDDING_OUTPUT
):
    for concurrency, tpr in points:
        _, rows, executions = model_counts(url)
        r = measure(
            url,
            model,
            concurrency,
            tpr,
            processes=min(processes, concurrency),
            warmup=2 if quick else 4,
            duration=4 if quick else 10,
            kind=kind,
            output=output,
        )
        _, rows_after, executions_after = model_counts(url)
        r["encoder_rows_per_execution"] = (rows_after - rows) / max(1, executions_after - executions)
        r["variant"] = label
        results.append(r)
        print(f"[{label}] {format_row(r)}  encoder rows/execution {r['encoder_rows_per_execution']:.1f}", flush=True)


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores so far (/proc/stat): the host's load over a point."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def perf_analyzer(
    url: str,
    concurrency: int,
    work: Path,
    label: str,
    texts_per_request: int = 1,
    kind: str = "mixed",
    model: str = ENSEMBLE_MODEL,
    protocol: str = "grpc",
    ids: Path | None = None,
    async_mode: bool = False,
    interval_ms: int = 5000,
) -> dict | None:
    """Triton's own C++ load generator: `texts_per_request` texts of `kind` per request (its batch
    size: perf_analyzer fills a batch from consecutive entries of the data file), to the ensemble
    or one of its models (the encoder takes the token ids in `ids`), over gRPC or HTTP. Its input
    data and raw output go to `work`; the result (with perf_analyzer's summary) is returned.
    Synchronous by default (one client thread per request in flight); `async_mode` keeps them in
    flight from a few threads, which leaves more of the host's cores to the server."""
    import shutil

    candidates = [Path(entry) / "perf_analyzer" / "bin" / "perf_analyzer" for entry in sys.path]
    binary = shutil.which("perf_analyzer") or next((str(p) for p in candidates if p.is_file()), None)
    if binary is None:
        return None
    if model == ENCODER_MODEL:
        assert ids is not None, "the encoder alone takes token ids"
        rows = np.load(ids)[:2048].tolist()
        data = work / f"perf_analyzer_input_ids_{kind}.json"
        data.write_text(json.dumps({"data": [{IDS_TENSOR: row} for row in rows]}))
        shape = f"{IDS_TENSOR}:{len(rows[0])}"
    else:
        data = work / f"perf_analyzer_input_{kind}.json"
        data.write_text(json.dumps({"data": [{TEXT_INPUT: [t]} for t in sample_texts.texts(kind, 2048, seed=5)]}))
        shape = f"{TEXT_INPUT}:1"
    mode = "async" if async_mode else "sync"
    name = f"perf_analyzer_{label}_{model}_{protocol}_{mode}_{kind}_c{concurrency}x{texts_per_request}"
    csv = work / f"{name}.csv"
    cmd = [
        binary,
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(data),
        "--shape",
        shape,
        "-b",
        str(texts_per_request),
        "--concurrency-range",
        str(concurrency),
        "--measurement-interval",
        str(interval_ms),
        "--max-trials",  # 3 stable windows in a row, or give up after 6 (bounded run time)
        "6",
        "-f",
        str(csv),
    ] + (["--async"] if async_mode else [])
    busy0, total0 = cpu_busy()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    busy1, total1 = cpu_busy()
    (work / f"{name}.txt").write_text(proc.stdout + proc.stderr)
    lines = csv.read_text().splitlines() if csv.exists() else []
    if proc.returncode != 0 or len(lines) < 2:
        print(f"perf_analyzer failed ({proc.returncode}): {proc.stderr[-500:]}", flush=True)
        return None
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    result = {
        "tool": "perf_analyzer",
        "variant": label,
        "model": model,
        "protocol": protocol,
        "client": mode,
        "concurrency": concurrency,
        "texts_per_request": texts_per_request,
        "kind": kind,
        "docs_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
        # all cores, server and perf_analyzer together, over the whole run (warm-up included)
        "host_cpu_busy": (busy1 - busy0) / max(1, total1 - total0),
        # perf_analyzer's own summary of the last window: the server's queue and compute times,
        # per composing model for the ensemble
        "summary": proc.stdout[proc.stdout.rfind("Request concurrency") :][:4000],
    }
    print(
        f"[{label}] perf_analyzer {model} over {protocol} ({mode}), c={concurrency:>3} x {texts_per_request} ({kind}): "
        f"{result['docs_per_s']:.1f} docs/s p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms, "
        f"host CPU {result['host_cpu_busy']:.0%} busy",
        flush=True,
    )
    return result


def raw_encoder(out: Path, model: Path, ids: dict[str, Path], threads: int, quick: bool) -> dict:
    """benchmarks.raw_encoder in its own process (its CUDA context gone when it ends), while the
    server idles: the encoder's ceiling on this GPU for these texts, one caller and `threads`."""
    json_path = out / "raw_encoder.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.raw_encoder",
        "--model",
        str(model),
        "--batches",
        "256,1024",
        "--threads",
        f"1,{threads}",
        "--seconds",
        "2" if quick else "5",
        "--json",
        str(json_path),
    ]
    for kind, path in ids.items():
        cmd += ["--ids", f"{kind}={path}"]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    return json.loads(json_path.read_text())


def raw_ceiling(raw: dict, kind: str, batch: int) -> float:
    return max(r["docs_per_s"] for r in raw["results"] if r.get("kind") == kind and r.get("batch") == batch)


def one_text_trace(server, url: str, count: int, trace_file: Path, index: int, concurrency: int) -> dict:
    """`count` one-text requests at `concurrency`, every one traced: the median breakdown.
    Triton numbers its trace files: this is the server's trace number `index`."""
    from concurrent.futures import ThreadPoolExecutor

    trace_breakdown.start(server.http_url, server.admin_headers("http"), count)
    texts = captions(count, seed=11 + concurrency)
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda text: infer(url, ENSEMBLE_MODEL, [text], EMBEDDING_OUTPUT), texts))
    records = trace_breakdown.read(trace_file, index)
    return trace_breakdown.breakdown(records, ENSEMBLE_MODEL, [TOKENIZER_MODEL, ENCODER_MODEL])


def measure_points(server, url: str, args, report: dict, repository: Path, scratch: Path, trace_file: Path) -> None:
    """The raw encoder, then the load points and perf_analyzer on the served default, each with
    the raw encoder's ceiling beside it, and one text's time per step from the trace API."""
    # the raw encoder on the texts the load generator sends, tokenized by this server
    ids = {}
    for kind in ("short", "mixed"):
        ids[kind] = args.out / f"ids_{kind}.npy"
        np.save(ids[kind], verify.tokenize(url, sample_texts.texts(kind, 8192)))
    instances = len(report["gpu_instances"]) or 1
    report["raw_encoder"] = raw_encoder(
        args.out, repository / ENCODER_MODEL / "1" / TORCHSCRIPT_FP16_FILE, ids, instances, args.quick
    )

    run_points(url, "fp16", args.quick, args.processes, report["load"])
    run_points(url, "fp16", args.quick, args.processes, report["load"], kind="short", points=[(8, 256)])
    one_text = next(r for r in report["raw_encoder"]["results"] if "p50_ms" in r)
    for row in report["load"]:
        if (row["concurrency"], row["texts_per_request"]) == (1, 1):
            row["raw_encoder_docs_per_s"] = 1e3 / one_text["p50_ms"]  # one text at a time, in-process
        if row["texts_per_request"] == 256:
            row["raw_encoder_docs_per_s"] = raw_ceiling(report["raw_encoder"], row["texts"], 256)
            row["of_raw_encoder"] = row["docs_per_s"] / row["raw_encoder_docs_per_s"]
            print(
                f"  {row['texts']} 8x256: {row['of_raw_encoder']:.0%} of the raw encoder "
                f"({row['raw_encoder_docs_per_s']:,.0f} docs/s at batch 256)",
                flush=True,
            )
    for index, (concurrency, key) in enumerate(((1, "one_text_breakdown"), (64, "one_text_breakdown_c64"))):
        report[key] = one_text_trace(server, url, 300 if args.quick else 1000, trace_file, index, concurrency)
        for part, value in report[key].items():
            print(
                f"  c={concurrency} one text, {part:>26}: p50 {value['p50_us']:8.0f} us  p99 {value['p99_us']:8.0f} us",
                flush=True,
            )
    for concurrency, texts_per_request, kind in (
        (1, 1, "mixed"),
        (64, 1, "mixed"),
        (8, 256, "short"),
        (8, 256, "mixed"),
    ):
        result = perf_analyzer(url, concurrency, scratch, "fp16", texts_per_request, kind)
        if result:
            report["load"].append(result)
    # what limits 64 single texts: the same point over HTTP, and each model of the ensemble alone
    for model, protocol in ((ENSEMBLE_MODEL, "http"), (TOKENIZER_MODEL, "grpc"), (ENCODER_MODEL, "grpc")):
        target = server.http_url if protocol == "http" else url
        result = perf_analyzer(target, 64, scratch, "fp16", 1, "mixed", model, protocol, ids["mixed"])
        if result:
            report["limits_c64"].append(result)


def sweep_point(url: str, repository: Path, gpus, server, args, report: dict, scratch: Path, setting: str) -> None:
    """One --sweep setting E:T:B:D, reloaded through the repository API on the same server, and
    the headline points again."""
    from clip_triton_ops.deploy import deploy

    enc, tok, batch, delay = (int(x) for x in setting.split(":"))
    deploy(
        url,
        repository,
        "torchscript_fp16",
        enc,
        gpus,
        tok,
        server.admin_headers(),
        encoder_max_batch_size=batch,
        encoder_queue_delay_us=delay,
    )
    label = f"fp16 enc{enc} tok{tok} max{batch} delay{delay}"
    rows: list[dict] = []
    run_points(url, label, args.quick, args.processes, rows, points=[(1, 1), (64, 1), (8, 256)])
    run_points(url, label, args.quick, args.processes, rows, kind="short", points=[(8, 256)])
    result = perf_analyzer(url, 64, scratch, f"fp16_e{enc}_t{tok}_b{batch}_d{delay}")
    if result:
        rows.append(result)
    for row in rows:
        row.update(
            encoder_instances=enc,
            tokenizer_instances=tok,
            encoder_max_batch_size=batch,
            encoder_queue_delay_us=delay,
        )
    report["sweep"] += rows


def main(argv=None) -> int:
    from clip_triton import LocalTritonServer
    from clip_triton_ops.deploy import gpu_ids

    # a time limit's SIGTERM unwinds like an exception: the server stops and the report so far is
    # written (the `finally` below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--repository",
        type=Path,
        default=BUILT_REPOSITORY,
        help="a repository built with --fp16 (default: the build's)",
    )
    parser.add_argument("--gpus", type=gpu_ids, default=[0])
    parser.add_argument("--instances", type=int, default=None, help="encoder instances per GPU (default: the config's)")
    parser.add_argument("--tokenizer-instances", type=int, default=None, help="default: the config's")
    parser.add_argument("--processes", type=int, default=8, help="load-generator processes")
    parser.add_argument(
        "--sweep",
        default="",
        metavar="E:T:B:D,...",
        help="after the headline points, each setting on the same server: E encoder instances "
        "per GPU, T tokenizer instances, B encoder max_batch_size, D encoder queue delay (us)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the tritonserver process, e.g. CUDA_MODULE_LOADING=EAGER",
    )
    parser.add_argument(
        "--parity-only", action="store_true", help="instances, parity and one bulk point (for a multi-GPU check)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gpus = args.gpus
    server_env = dict(item.split("=", 1) for item in args.server_env)
    report = {
        "gpus": gpus,
        "encoder_instances_per_gpu": args.instances,
        "tokenizer_instances": args.tokenizer_instances,
        "server_env": server_env,
        "load": [],
        "sweep": [],
        "limits_c64": [],
    }
    report["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    trace_file = args.out / "trace.json"
    # perf_analyzer's input files and raw output: the report keeps what matters of them, so --out
    # holds the report, its plot, the server's log and the raw encoder's results
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    repository = text_side(args.repository, scratch / "repository")
    server = LocalTritonServer.on_free_ports(
        repository=repository,
        config_name="torchscript",
        encoder_instances=args.instances,
        gpus=gpus,
        tokenizer_instances=args.tokenizer_instances,
        env=server_env,
        extra_args=trace_breakdown.server_flags(trace_file),
    )
    t0 = time.perf_counter()
    server.start(timeout=300)
    report["server_start_s"] = time.perf_counter() - t0
    try:
        url = server.grpc_url
        report["gpu_instances"] = gpu_instances(server.log_path)
        print("encoder instances:", report["gpu_instances"], flush=True)
        ok = gpu_parity.check(url, repository, args.instances, gpus, args.tokenizer_instances, server, report)
        if args.parity_only:
            run_points(url, "fp16", args.quick, args.processes, report["load"], kind="short", points=[(16, 256)])
            return 0 if ok else 1

        measure_points(server, url, args, report, repository, scratch, trace_file)
        for setting in filter(None, args.sweep.split(",")):
            sweep_point(url, repository, gpus, server, args, report, scratch, setting)
        return 0 if ok else 1
    finally:
        server.stop()
        (args.out / "tritonserver.log").write_text(server.log_path.read_text(errors="replace")[-200_000:])
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
        try:
            from benchmarks.gpu.plot import plot

            plot(report, str(args.out / "gpu_report.png"))
        except ImportError:  # a GPU machine without matplotlib: plot the JSON elsewhere
            print(
                f"no matplotlib here: python -m benchmarks.gpu.plot {args.out / 'gpu_report.json'} OUT.png", flush=True
            )


if __name__ == "__main__":
    sys.exit(main())
