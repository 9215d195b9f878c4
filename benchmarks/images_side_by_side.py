"""Images side by side on this machine's CPU, same JPEGs, same weights, one run:

  (1) the Jina image executor's way: HF transformers in-process, the checkpoint's PIL image
      processor (`CLIPImageProcessorPil`) and `get_image_features`, batches of 32 in input order;
  (2) this project: the clip_image ensemble end to end over gRPC through
      `CLIPClient.encode_images` (batch_size 32, `--concurrency` requests in flight).

Prints images/s for each and the ratio, the max abs difference of the embeddings, and the cost per
image of each stage: decode, resize/crop/normalize and the vision tower in-process, and the
server's own preprocessing model (decode through normalize) and vision tower, from Triton's
statistics. Writes JSON and a bar plot on request.

    python -m benchmarks.images_side_by_side --images 256 --json benchmarks/results/images_cpu.json \\
        --plot benchmarks/results/images_cpu.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_build.spec import PREPROCESSOR_FILE
from clip_triton_contract.names import IMAGE_ENCODER_MODEL, IMAGE_PREPROCESS_MODEL


def photos(count: int, width: int, height: int, seed: int = 0) -> list[bytes]:
    """JPEGs (quality 90) of smooth gradients, noise and edges: about a photo's size on disk."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    files = []
    for i in range(count):
        phase = rng.uniform(0, 6, 3)
        channels = [128 + 90 * np.sin(x / (9 + 4 * c) + y / (13 + 3 * c) + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 14, (height, width, 3))
        out = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=90)
        files.append(out.getvalue())
    return files


def reference_vision():
    """The server's vision tower as HF runs it: the build's checkpoint, or its random-init tower."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    from clip_triton_build.repository import read_build_info
    from clip_triton_build.weights import RANDOM_INIT, random_init_vision

    info = read_build_info()
    if info["weights"] == RANDOM_INIT:
        model = random_init_vision().model
    else:
        model = CLIPVisionModelWithProjection.from_pretrained(info["checkpoint"]).eval()
    config = json.loads((BUILT_REPOSITORY / IMAGE_PREPROCESS_MODEL / "1" / PREPROCESSOR_FILE).read_text())
    return model, CLIPImageProcessorPil(**config)


def hf_baseline(model, processor, files: list[bytes], batch_size: int = 32):
    """The Jina image executor's computation, in-process: (embeddings, seconds, seconds per stage)."""
    import torch
    from PIL import Image

    out, stages = [], {"decode": 0.0, "preprocess": 0.0, "tower": 0.0}
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            t0 = time.perf_counter()
            images = [Image.open(io.BytesIO(f)).convert("RGB") for f in files[i : i + batch_size]]
            t1 = time.perf_counter()
            pixels = processor(images=images, return_tensors="pt")["pixel_values"]
            t2 = time.perf_counter()
            out.append(model(pixel_values=pixels).image_embeds.numpy())
            t3 = time.perf_counter()
            stages["decode"] += t1 - t0
            stages["preprocess"] += t2 - t1
            stages["tower"] += t3 - t2
    return np.concatenate(out), time.perf_counter() - start, stages


def server_stage_ns(url: str) -> dict[str, tuple[int, int]]:
    """Triton's compute time and inference count so far of the preprocessing model and the tower."""
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    try:
        found = {}
        for stage, model in (
            ("preprocess (decode..normalize)", IMAGE_PREPROCESS_MODEL),
            ("tower", IMAGE_ENCODER_MODEL),
        ):
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            found[stage] = (
                int(stats["inference_stats"]["compute_infer"]["ns"]),
                int(stats.get("inference_count", 0)),
            )
        return found
    finally:
        client.close()


def server_run(url: str, files: list[bytes], concurrency: int):
    from clip_triton_client import CLIPClient

    with CLIPClient(url, batch_size=32, concurrency=concurrency) as client:
        client.encode_images(files[:64])  # connections, model info, warm-up
        before = server_stage_ns(url)
        start = time.perf_counter()
        vectors = client.encode_images(files)
        seconds = time.perf_counter() - start
        after = server_stage_ns(url)
    per_image = {
        stage: (after[stage][0] - before[stage][0]) / max(1, after[stage][1] - before[stage][1]) / 1e9
        for stage in after
    }
    return vectors, seconds, per_image


def main(argv=None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the JPEGs (default 640x480)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--url", default="", help="an already running server (default: start one on free ports)")
    parser.add_argument("--plot", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    files = photos(args.images, width, height)

    model, processor = reference_vision()
    server = None
    url = args.url
    if not url:
        from clip_triton import LocalTritonServer

        server = LocalTritonServer.on_free_ports().start()
        url = server.grpc_url
    try:
        hf_baseline(model, processor, files[:32])  # warm-up
        base_vectors, base_s, base_stages = hf_baseline(model, processor, files)
        vectors, served_s, served_stages = server_run(url, files, args.concurrency)
    finally:
        if server:
            server.stop()

    n = len(files)
    report = {
        "images": n,
        "size": args.size,
        "mean_file_bytes": int(np.mean([len(f) for f in files])),
        "cores": os.cpu_count(),
        "images_per_s": {"hf_in_process_batch32": n / base_s, "server_grpc": n / served_s},
        "ratio_to_hf": base_s / served_s,
        "max_abs_diff": float(np.abs(vectors - base_vectors).max()),
        "ms_per_image": {
            "hf_in_process": {k: 1e3 * v / n for k, v in base_stages.items()},
            "server": {k: 1e3 * v for k, v in served_stages.items()},
        },
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {n} JPEGs at {args.size} "
        f"({report['mean_file_bytes'] // 1024} KB mean)"
    )
    for name, rate in report["images_per_s"].items():
        print(f"  {name:<24} {rate:8.1f} images/s   {n / rate:7.2f} s")
    print(f"  ratio server / HF in-process: x{report['ratio_to_hf']:.2f}")
    print(f"  max |server - HF|: {report['max_abs_diff']:.2e}")
    for side, stages in report["ms_per_image"].items():
        print(f"  {side}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in stages.items()) + " per image")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (rate_ax, stage_ax) = plt.subplots(1, 2, figsize=(11, 4.4))
        labels = ["HF in-process\n(Jina way)", "Triton ensemble\ngRPC"]
        values = list(report["images_per_s"].values())
        bars = rate_ax.bar(labels, values, color=["#999999", "#2a7ab9"])
        for bar, value in zip(bars, values):
            rate_ax.annotate(
                f"{value:.0f}/s", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
            )
        rate_ax.set_ylabel("images/s (higher is better)")
        rate_ax.set_title(f"{n} JPEGs at {args.size} on {os.cpu_count()} CPU cores")
        rate_ax.set_ylim(0, max(values) * 1.3)
        left = 0.0
        hf = report["ms_per_image"]["hf_in_process"]
        for stage, colour in zip(hf, ("#c6dbef", "#6baed6", "#08519c")):
            stage_ax.barh(["HF in-process"], [hf[stage]], left=left, color=colour, label=stage)
            left += hf[stage]
        left = 0.0
        served = report["ms_per_image"]["server"]
        for stage, colour in zip(served, ("#9ecae1", "#08519c")):
            stage_ax.barh(["server (busy time)"], [served[stage]], left=left, color=colour, label=f"server {stage}")
            left += served[stage]
        stage_ax.set_xlabel("ms per image (server: each model's busy time; its stages run at once)")
        stage_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
