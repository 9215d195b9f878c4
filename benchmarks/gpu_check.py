"""GPU run: KIND_GPU instances through the local runtime, parity with the CPU build, fp16 vs fp32,
and the load points of docs/benchmarks.md. Run by benchmarks/gpu_run.sh on a GPU machine.

    python -m benchmarks.gpu_check --out results/ [--quick] [--gpus 0] [--instances 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.load import format_row, measure
from clip_server.corpus import VARIED_64, captions

REPO_ROOT = Path(__file__).resolve().parents[1]
POINTS = [(1, 1), (64, 1), (16, 32), (8, 256)]  # (concurrency, texts per request)


def infer(url, model, texts, output):
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    batch = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    tensor = grpc.InferInput("TEXT", list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch)
    try:
        return client.infer(model, [tensor], outputs=[grpc.InferRequestedOutput(output)]).as_numpy(output)
    finally:
        client.close()


def cpu_reference(ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(REPO_ROOT / "model_repository/clip_text_encoder/1/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(["text_embeds"], {"input_ids": ids})[0]


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def parity(url, varied, many, reference, report, label) -> np.ndarray:
    """Embeddings of `varied` and of `many` (sent 8 requests at a time, so every encoder instance,
    on every GPU, takes batches) against the CPU ONNX reference; returns the varied ones."""
    from concurrent.futures import ThreadPoolExecutor

    got = infer(url, "clip_text", varied, "EMBEDDING")
    with ThreadPoolExecutor(8) as pool:
        chunks = list(pool.map(lambda i: infer(url, "clip_text", many[i:i + 128], "EMBEDDING"), range(0, len(many), 128)))
    got_many = np.concatenate(chunks)
    diff = max(np.abs(got - reference["varied"]).max(), np.abs(got_many - reference["captions"]).max())
    cos = min(cosine(got, reference["varied"]).min(), cosine(got_many, reference["captions"]).min())
    report[f"{label}_max_abs_diff_vs_cpu_onnx"] = float(diff)
    report[f"{label}_min_cosine_vs_cpu_onnx"] = float(cos)
    report[f"{label}_finite"] = bool(np.isfinite(got_many).all() and np.isfinite(got).all())
    print(f"{label} GPU vs CPU ONNX ({len(varied)} varied + {len(many)} captions): max abs diff {diff:.2e}, "
          f"min cosine {cos:.6f}", flush=True)
    return got


def gpu_instances(log_path: Path) -> list[str]:
    return sorted({line.split('"')[1] for line in log_path.read_text().splitlines()
                   if "TRITONBACKEND_ModelInstanceInitialize: clip_text_encoder" in line and "GPU" in line})


def run_points(url, label, quick, processes, results, kind="mixed", points=POINTS, model="clip_text", output="EMBEDDING"):
    for concurrency, tpr in points:
        r = measure(url, model, concurrency, tpr, processes=min(processes, concurrency), warmup=2 if quick else 4,
                    duration=4 if quick else 10, kind=kind, output=output)
        r["variant"] = label
        results.append(r)
        print(f"[{label}] {format_row(r)}", flush=True)


def perf_analyzer(url: str, concurrency: int, out: Path, label: str) -> dict | None:
    """Triton's own C++ load generator, one caption per request, for the single-text points."""
    import shutil

    candidates = [Path(entry) / "perf_analyzer" / "bin" / "perf_analyzer" for entry in sys.path]
    binary = shutil.which("perf_analyzer") or next((str(p) for p in candidates if p.is_file()), None)
    if binary is None:
        return None
    data = out / "perf_analyzer_input.json"
    data.write_text(json.dumps({"data": [{"TEXT": [t]} for t in captions(1024, seed=5)]}))
    csv = out / f"perf_analyzer_{label}_c{concurrency}.csv"
    cmd = [binary, "-m", "clip_text", "-u", url, "-i", "grpc", "--input-data", str(data), "--shape", "TEXT:1",
           "-b", "1", "--concurrency-range", str(concurrency), "--measurement-interval", "5000", "-f", str(csv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    (out / f"perf_analyzer_{label}_c{concurrency}.txt").write_text(proc.stdout + proc.stderr)
    lines = csv.read_text().splitlines() if csv.exists() else []
    if proc.returncode != 0 or len(lines) < 2:
        print(f"perf_analyzer failed ({proc.returncode}): {proc.stderr[-500:]}", flush=True)
        return None
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    result = {"tool": "perf_analyzer", "variant": label, "concurrency": concurrency, "texts_per_request": 1,
              "docs_per_s": float(row["Inferences/Second"]), "p50_ms": float(row["p50 latency"]) / 1e3,
              "p99_ms": float(row["p99 latency"]) / 1e3}
    print(f"[{label}] perf_analyzer c={concurrency:>3} x 1: {result['docs_per_s']:.1f} docs/s "
          f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms", flush=True)
    return result


def main(argv=None) -> int:
    from clip_server import LocalTritonServer
    from clip_server.deploy import deploy

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpus", default="0")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--tokenizer-instances", type=int, default=8)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--only-fp16", action="store_true", help="parity, then the fp16 points only")
    parser.add_argument("--encoder-max-batch-size", type=int, default=None,
                        help="after the fp16 points, redeploy with this encoder max_batch_size and measure again")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the tritonserver process, e.g. CUDA_MODULE_LOADING=EAGER")
    parser.add_argument("--parity-only", action="store_true",
                        help="instances, fp32 parity and one bulk point (for a multi-GPU check)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gpus = [int(g) for g in args.gpus.split(",")]
    server_env = dict(item.split("=", 1) for item in args.server_env)
    report = {"gpus": gpus, "encoder_instances_per_gpu": args.instances, "tokenizer_instances": args.tokenizer_instances,
              "encoder_max_batch_size": args.encoder_max_batch_size, "server_env": server_env, "load": []}
    report["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                           "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    server = LocalTritonServer.on_free_ports(config_name="torchscript", encoder_instances=args.instances, gpus=gpus,
                                             tokenizer_instances=args.tokenizer_instances, env=server_env)
    t0 = time.perf_counter()
    server.start(timeout=300)
    report["server_start_s"] = time.perf_counter() - t0
    try:
        url = server.grpc_url
        report["gpu_instances"] = gpu_instances(server.log_path)
        print("encoder instances:", report["gpu_instances"], flush=True)
        many = captions(2048, seed=7)
        reference = {"varied": cpu_reference(infer(url, "clip_tokenizer", VARIED_64, "input_ids")),
                     "captions": cpu_reference(np.concatenate([infer(url, "clip_tokenizer", many[i:i + 256], "input_ids")
                                                               for i in range(0, 2048, 256)]))}
        fp32 = parity(url, VARIED_64, many, reference, report, "fp32")
        ok = report["fp32_max_abs_diff_vs_cpu_onnx"] <= 1e-3
        if not (args.parity_only or args.only_fp16):
            run_points(url, "fp32", args.quick, args.processes, report["load"])
            run_points(url, "fp32", args.quick, args.processes, report["load"], kind="short", points=[(8, 256)])
            run_points(url, "tokenizer-alone", args.quick, args.processes, report["load"], points=[(16, 32), (8, 256)],
                       model="clip_tokenizer", output="input_ids")
        deploy(server.grpc_url, REPO_ROOT / "model_repository", "torchscript_fp16", args.instances, gpus,
               args.tokenizer_instances, server.admin_headers())
        fp16 = parity(url, VARIED_64, many, reference, report, "fp16")
        report["fp16_min_cosine_vs_fp32_varied64"] = float(cosine(fp16, fp32).min())
        ok = ok and min(report["fp16_min_cosine_vs_cpu_onnx"], report["fp16_min_cosine_vs_fp32_varied64"]) >= 0.999
        print("fp16 vs fp32: min cosine %.6f (64 varied)" % report["fp16_min_cosine_vs_fp32_varied64"], flush=True)
        report["parity_ok"] = ok
        print("PARITY", "OK" if ok else "FAILED", "(fp32 <= 1e-3 vs CPU ONNX, fp16 cosine >= 0.999)", flush=True)
        if args.parity_only:
            run_points(url, "fp16", args.quick, args.processes, report["load"], kind="short", points=[(16, 256)])
            return 0 if ok else 1
        run_points(url, "fp16", args.quick, args.processes, report["load"])
        run_points(url, "fp16", args.quick, args.processes, report["load"], kind="short", points=[(8, 256)])
        # the small-batch points again, after every point above warmed the server: tells a
        # first-use cost (per-shape kernel selection, lazy module loading) from a steady one
        run_points(url, "fp16-again", args.quick, args.processes, report["load"], points=POINTS[:2])
        if args.encoder_max_batch_size:  # the same server, the encoder batching more rows per execution
            deploy(server.grpc_url, REPO_ROOT / "model_repository", "torchscript_fp16", args.instances, gpus,
                   args.tokenizer_instances, server.admin_headers(), encoder_max_batch_size=args.encoder_max_batch_size)
            label = f"fp16-max-batch-{args.encoder_max_batch_size}"
            run_points(url, label, args.quick, args.processes, report["load"], points=POINTS[1:])
            run_points(url, label, args.quick, args.processes, report["load"], kind="short", points=[(8, 256), (16, 256)])
        for concurrency in (() if args.only_fp16 else (1, 64)):
            result = perf_analyzer(url, concurrency, args.out, "fp16")
            if result:
                report["load"].append(result)
        return 0 if ok else 1
    finally:
        server.stop()
        (args.out / "tritonserver.log").write_text(server.log_path.read_text(errors="replace")[-200_000:])
        (args.out / "gpu_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
