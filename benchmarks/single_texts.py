"""What limits one text per request at concurrency 64 (docs/benchmarks.md), on one server: the
tokenizer executing one request at a time (the shipped config) against the same tokenizer with a
dynamic batcher, each through perf_analyzer over gRPC and HTTP, synchronous and asynchronous
clients, next to each model of the ensemble alone. Run by benchmarks/gpu_run.sh (step `singles`)
after the build; writes single_texts.json into --out.

    python -m benchmarks.single_texts --out results/ [--variant torchscript_fp16]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
from google.protobuf import json_format

from benchmarks.gpu_check import perf_analyzer
from clip_triton import corpus, verify
from clip_triton.deploy import model_config, with_instances
from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_build.spec import ENCODER_MODEL, ENSEMBLE_MODEL, TOKENIZER_MODEL


def counts(url: str, model: str) -> tuple[int, int, int]:
    """(requests, rows, executions) `model` has served so far: Triton's statistics API."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model).model_stats[0]
        return stats.inference_stats.success.count, stats.inference_count, stats.execution_count
    finally:
        client.close()


def load_tokenizer(url: str, headers: dict, variant: str, instances: int, batching: bool) -> None:
    """Reload clip_tokenizer with `instances` instances, with or without a dynamic batcher (no
    queue delay: a request waits only while every instance is busy)."""
    import tritonclient.grpc as grpc

    config = with_instances(model_config(BUILT_REPOSITORY, TOKENIZER_MODEL, variant), instances, None)
    if batching:
        config.dynamic_batching.max_queue_delay_microseconds = 0
    else:
        config.ClearField("dynamic_batching")
    client = grpc.InferenceServerClient(url)
    try:
        client.load_model(
            TOKENIZER_MODEL, headers=headers, config=json_format.MessageToJson(config, preserving_proto_field_name=True)
        )
    finally:
        client.close()


def main(argv=None) -> int:
    from clip_triton import LocalTritonServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default="torchscript_fp16", help="the encoder's config variant")
    parser.add_argument("--settings", default="off:8,on:8,on:4", metavar="BATCHING:INSTANCES,...")
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's measurement window")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"variant": args.variant, "points": []}
    # explicit model control (an instance count given): the tokenizer reloads between settings
    server = LocalTritonServer.on_free_ports(config_name=args.variant, tokenizer_instances=8)
    server.start(timeout=300)
    try:
        url, http = server.grpc_url, server.http_url
        ids = args.out / "ids_mixed.npy"
        np.save(ids, verify.tokenize(url, corpus.texts("mixed", 4096)))

        def point(label, target_model, protocol, async_mode, concurrency=64, texts=1, kind="mixed", extra=None):
            watched = [TOKENIZER_MODEL, ENCODER_MODEL]
            before = {m: counts(url, m) for m in watched}
            result = perf_analyzer(
                http if protocol == "http" else url,
                concurrency,
                args.out,
                label,
                texts,
                kind,
                target_model,
                protocol,
                ids,
                async_mode=async_mode,
                interval_ms=args.interval_ms,
            )
            if result is None:
                return
            for m in watched:
                (req0, rows0, ex0), (req1, rows1, ex1) = before[m], counts(url, m)
                result[f"{m}_requests_per_execution"] = (req1 - req0) / max(1, ex1 - ex0)
                result[f"{m}_rows_per_execution"] = (rows1 - rows0) / max(1, ex1 - ex0)
            result.update(extra or {})
            report["points"].append(result)
            print(
                f"    tokenizer requests/execution {result[f'{TOKENIZER_MODEL}_requests_per_execution']:.1f}, "
                f"encoder rows/execution {result[f'{ENCODER_MODEL}_rows_per_execution']:.1f}",
                flush=True,
            )

        # the models alone: the ceiling each one puts on the ensemble
        point("encoder_alone", ENCODER_MODEL, "grpc", True)
        point("encoder_alone", ENCODER_MODEL, "http", True)
        for setting in args.settings.split(","):
            batching, instances = setting.split(":")
            on = batching == "on"
            load_tokenizer(url, server.admin_headers(), args.variant, int(instances), on)
            label = f"tokenizer_batching_{batching}_x{instances}"
            extra = {"tokenizer_batching": on, "tokenizer_instances": int(instances)}
            point(label, TOKENIZER_MODEL, "grpc", True, extra=extra)
            point(label, ENSEMBLE_MODEL, "grpc", False, extra=extra)
            point(label, ENSEMBLE_MODEL, "grpc", True, extra=extra)
            point(label, ENSEMBLE_MODEL, "http", True, extra=extra)
            point(label, ENSEMBLE_MODEL, "grpc", False, concurrency=1, extra=extra)
            point(label, ENSEMBLE_MODEL, "grpc", False, concurrency=8, texts=256, kind="short", extra=extra)
        return 0
    finally:
        server.stop()
        (args.out / "tritonserver.log").write_text(server.log_path.read_text(errors="replace")[-100_000:])
        (args.out / "single_texts.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
