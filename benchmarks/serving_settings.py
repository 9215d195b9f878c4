"""Serving settings side by side on one server, through perf_analyzer: each setting reloads the
models through the repository API (no file edited) and runs the same points, one text per request
at concurrency 64 (HTTP and gRPC), 256 texts per request at concurrency 8 (short and mixed) and one
text at concurrency 1. A setting is B:T:E:M[:F]: B the tokenizer with a dynamic batcher (on),
without (off), the C++ tokenizer taking plain ASCII only, every emoji text to Python (ascii: as it
was before plain_symbols), or the Python tokenizer in the ensemble's first step instead of the C++
one (python: the ensemble before the C++ tokenizer); T tokenizer instances, E encoder instances, M
encoder max_batch_size, and optionally F, the encoder's model file in its version folder (default:
the variant's), e.g. an export variant that benchmarks/lab_exports.py wrote there. Each setting
first checks its embeddings against the CPU ONNX reference with every encoder execution a
CUDA-graph replay (gpu_check.graph_parity). Run by benchmarks/gpu_run.sh (step `settings`) after
the build; writes serving_settings.json into --out.

    python -m benchmarks.serving_settings --out results/ --settings off:4:3:1024,python:4:3:1024
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from google.protobuf import json_format

from benchmarks.gpu_check import graph_parity, model_counts, perf_analyzer
from clip_triton import corpus, verify
from clip_triton.deploy import deploy, model_config, with_instances
from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_build.spec import (
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    ONNX_FILE,
    PLAIN_SYMBOLS_PARAMETER,
    PYTHON_TOKENIZER_MODEL,
    TOKENIZER_MODEL,
)

# (concurrency, texts per request, texts, protocol, perf_analyzer async)
POINTS = {
    "singles": [(64, 1, "mixed", "http", True), (64, 1, "mixed", "grpc", False)],
    "bulk": [(8, 256, "short", "grpc", False), (8, 256, "mixed", "grpc", False)],
    "one": [(1, 1, "mixed", "grpc", False)],
}
GPU_STATE = "clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active,memory.used"


def gpu_state() -> str:
    """The GPU's clocks, temperature, power, throttle reasons and memory in use (nvidia-smi)."""
    import subprocess

    query = ["nvidia-smi", f"--query-gpu={GPU_STATE}", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:  # no NVIDIA driver here
        return ""


def reload(url: str, headers: dict, config) -> None:
    """Load (or reload) the model `config` names, with that config."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    try:
        client.load_model(
            config.name, headers=headers, config=json_format.MessageToJson(config, preserving_proto_field_name=True)
        )
    finally:
        client.close()


def load_batched_tokenizer(url: str, headers: dict, variant: str, instances: int) -> None:
    """Reload clip_tokenizer with `instances` instances and a dynamic batcher (no queue delay: a
    request waits only while every instance is busy). The shipped config has none, so `deploy`
    alone gives the setting without one."""
    config = with_instances(model_config(BUILT_REPOSITORY, TOKENIZER_MODEL, variant), instances, None)
    config.dynamic_batching.max_queue_delay_microseconds = 0
    reload(url, headers, config)


def load_ascii_only_tokenizer(url: str, headers: dict, variant: str, instances: int) -> None:
    """Reload clip_tokenizer with no plain_symbols: it tokenizes plain ASCII itself and hands every
    text with an emoji to clip_tokenizer_python."""
    config = with_instances(model_config(BUILT_REPOSITORY, TOKENIZER_MODEL, variant), instances, None)
    config.parameters[PLAIN_SYMBOLS_PARAMETER].string_value = ""
    reload(url, headers, config)


def route_to_python_tokenizer(url: str, headers: dict, variant: str, instances: int) -> None:
    """The ensemble as it was before the C++ tokenizer: its first step is clip_tokenizer_python,
    with `instances` instances."""
    reload(
        url, headers, with_instances(model_config(BUILT_REPOSITORY, PYTHON_TOKENIZER_MODEL, variant), instances, None)
    )
    ensemble = model_config(BUILT_REPOSITORY, ENSEMBLE_MODEL, variant)
    for step in ensemble.ensemble_scheduling.step:
        if step.model_name == TOKENIZER_MODEL:
            step.model_name = PYTHON_TOKENIZER_MODEL
    reload(url, headers, ensemble)


def load_encoder_file(url: str, headers: dict, variant: str, instances: int, max_batch: int, filename: str) -> None:
    """Reload clip_text_encoder as `deploy` loads it, but serving `filename` from its version folder."""
    config = with_instances(model_config(BUILT_REPOSITORY, ENCODER_MODEL, variant), instances, None)
    config.max_batch_size = max_batch
    config.default_model_filename = filename
    reload(url, headers, config)


def main(argv=None) -> int:
    from clip_triton import LocalTritonServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default="torchscript_fp16", help="the encoder's config variant")
    parser.add_argument("--settings", default="off:4:3:1024,python:4:3:1024,off:4:2:1024", metavar="B:T:E:M,...")
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer's measurement window")
    parser.add_argument("--server-arg", action="append", default=[], help="more tritonserver flags")
    parser.add_argument("--points", default="singles,bulk,one", help=f"which of {', '.join(POINTS)}")
    parser.add_argument("--repeat", type=int, default=1, help="run each setting's points this many times")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="serving-settings-"))  # perf_analyzer's files: the report keeps their gist
    report: dict = {"variant": args.variant, "server_args": args.server_arg, "parity": {}, "points": []}
    # explicit model control (an instance count given): the models reload between settings
    server = LocalTritonServer.on_free_ports(
        config_name=args.variant, tokenizer_instances=4, extra_args=args.server_arg
    )
    server.start(timeout=300)
    report["gpu_start"] = gpu_state()
    try:
        url, http, headers = server.grpc_url, server.http_url, server.admin_headers()
        # varied texts and captions, then long descriptions: graph buckets from one token to 77 a row
        checked = verify.check_texts(512, seed=7) + corpus.texts("mixed", 512)
        onnx_file = BUILT_REPOSITORY / ENCODER_MODEL / "1" / ONNX_FILE
        reference = verify.onnx_embeddings(onnx_file, verify.tokenize(url, checked))
        for setting in args.settings.split(","):
            batching, tokenizers, encoders, max_batch, *model_file = setting.split(":")
            label = f"tok_{batching}_x{tokenizers}_enc_x{encoders}_max{max_batch}"
            label += "".join(f"_{f}" for f in model_file)
            deploy(
                url,
                BUILT_REPOSITORY,
                args.variant,
                int(encoders),
                None,
                int(tokenizers),
                headers,
                encoder_max_batch_size=int(max_batch),
            )
            if batching == "on":
                load_batched_tokenizer(url, headers, args.variant, int(tokenizers))
            if batching == "ascii":
                load_ascii_only_tokenizer(url, headers, args.variant, int(tokenizers))
            if batching == "python":
                route_to_python_tokenizer(url, headers, args.variant, int(tokenizers))
            if model_file:
                load_encoder_file(url, headers, args.variant, int(encoders), int(max_batch), model_file[0])
            parity: dict = {}
            parity["ok"] = graph_parity(url, checked, reference, parity)
            report["parity"][setting] = parity
            points = [p for name in args.points.split(",") for p in POINTS[name]] * args.repeat
            for concurrency, texts, kind, protocol, async_mode in points:
                before = {m: model_counts(url, m) for m in (TOKENIZER_MODEL, ENCODER_MODEL)}
                result = perf_analyzer(
                    http if protocol == "http" else url,
                    concurrency,
                    scratch,
                    label,
                    texts,
                    kind,
                    ENSEMBLE_MODEL,
                    protocol,
                    async_mode=async_mode,
                    interval_ms=args.interval_ms,
                )
                if result is None:
                    continue
                for model, (req0, rows0, ex0) in before.items():
                    req1, rows1, ex1 = model_counts(url, model)
                    result[f"{model}_requests_per_execution"] = (req1 - req0) / max(1, ex1 - ex0)
                    result[f"{model}_rows_per_execution"] = (rows1 - rows0) / max(1, ex1 - ex0)
                result.update(
                    tokenizer_batching=batching == "on",
                    tokenizer=PYTHON_TOKENIZER_MODEL if batching == "python" else TOKENIZER_MODEL,
                    tokenizer_instances=int(tokenizers),
                    encoder_instances=int(encoders),
                    encoder_max_batch_size=int(max_batch),
                    encoder_model_file=model_file[0] if model_file else None,
                    gpu_after=gpu_state(),
                )
                report["points"].append(result)
                print(
                    f"    tokenizer requests/execution {result[f'{TOKENIZER_MODEL}_requests_per_execution']:.1f}, "
                    f"encoder rows/execution {result[f'{ENCODER_MODEL}_rows_per_execution']:.1f}; "
                    f"GPU after: {result['gpu_after']}",
                    flush=True,
                )
        return 0
    finally:
        server.stop()
        (args.out / "tritonserver.log").write_text(server.log_path.read_text(errors="replace")[-100_000:])
        (args.out / "serving_settings.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
