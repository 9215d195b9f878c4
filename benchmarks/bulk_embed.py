"""clip-triton-embed on files of growing size, next to the client library's encode on the same texts
and the same server, one run: docs/s of each and the CLI process's peak resident memory.

    python -m benchmarks.bulk_embed --lines 10000,100000 [--url host:8001]
    python -m benchmarks.bulk_embed --lines 10000,100000,1000000 --config-name torchscript_fp16 \\
        --gpus 0 --json report.json     # a GPU host, the variant's own instance counts

Without --url it starts a local server (the README's runtime) with the given variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.soak import rss_mb
from clip_triton_ops.deploy import add_instance_arguments
from clip_triton_ops.sample_texts import captions


def peak_rss_mb(process: subprocess.Popen) -> float:
    """Polls the process's resident memory until it exits; returns the peak in MB."""
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, rss_mb([process.pid]))
        time.sleep(0.1)
    return peak


def run_cli(
    url: str, source: Path, out: Path, output_format: str, batch_size: int, concurrency: int
) -> tuple[float, float, str]:
    cmd = [
        sys.executable,
        "-m",
        "clip_triton_client.cli",
        str(source),
        "-o",
        str(out),
        "--format",
        output_format,
        "--url",
        url,
        "--no-progress",
        "--batch-size",
        str(batch_size),
        "--concurrency",
        str(concurrency),
    ]
    t0 = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = {"mb": 0.0}
    watcher = threading.Thread(target=lambda: peak.update(mb=peak_rss_mb(process)))
    watcher.start()
    _, err = process.communicate()
    watcher.join()
    seconds = time.perf_counter() - t0
    if process.returncode != 0:
        raise RuntimeError(f"clip-triton-embed failed ({process.returncode}): {err.decode()[-2000:]}")
    return seconds, peak["mb"], err.decode().strip().splitlines()[-1]


def main(argv=None) -> int:
    from clip_triton_client import CLIPClient

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", default="10000,100000")
    parser.add_argument("--url", default="", help="a running server's gRPC address (default: start one)")
    parser.add_argument("--config-name", default="cpu")
    add_instance_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--output",
        choices=["npy", "jsonl", "parquet"],
        default="npy",
        help="what the CLI writes (jsonl spends ~10 KB of text per embedding)",
    )
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.lines.split(",")]

    server = None
    url = args.url
    if not url:
        from clip_triton import LocalTritonServer

        server = LocalTritonServer.on_free_ports(
            config_name=args.config_name,
            encoder_instances=args.encoder_instances,
            gpus=args.gpus,
            tokenizer_instances=args.tokenizer_instances,
        )
        server.start(timeout=300)
        url = server.grpc_url
    report = {
        "url": url,
        "config_name": args.config_name,
        "output": args.output,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "points": [],
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                texts = captions(n, seed=11)
                source = Path(tmp) / f"captions-{n}.txt"
                source.write_text("".join(t.replace("\n", " ") + "\n" for t in texts))
                with CLIPClient(url, batch_size=args.batch_size, concurrency=args.concurrency) as client:
                    t0 = time.perf_counter()
                    client.encode(texts)
                    encode_s = time.perf_counter() - t0
                out = Path(tmp) / f"out-{n}.{args.output}"
                cli_s, rss, summary = run_cli(url, source, out, args.output, args.batch_size, args.concurrency)
                point = {
                    "lines": n,
                    "encode_docs_per_s": n / encode_s,
                    "cli_docs_per_s": n / cli_s,
                    "cli_vs_encode": encode_s / cli_s,
                    "cli_peak_rss_mb": rss,
                }
                report["points"].append(point)
                print(
                    f"{n:>9} lines: encode {point['encode_docs_per_s']:8.0f} docs/s | clip-triton-embed "
                    f"{point['cli_docs_per_s']:8.0f} docs/s (x{point['cli_vs_encode']:.2f}), peak RSS {rss:6.0f} MB"
                    f"   [{summary.removeprefix('clip-triton-embed: ')}]",
                    flush=True,
                )
                shutil.rmtree(out) if out.is_dir() else out.unlink()
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
