"""GPU run, image side: the GPU image path (configs/torchscript_fp16.pbtxt: nvJPEG decode, resize,
crop and normalise on the card, the fp16 vision tower through the libtorch backend) checked against
the CPU fp32 path and measured beside its parts, per CLIP vision shape, in one run:

- parity: every file of a varied set (tests/images.embeddable, and EXIF-rotated, grayscale, tiny,
  wide, 4k and 35-megapixel JPEGs) through clip_image on the GPU, against the CPU fp32 path
  (preprocessing.py's steps, which equal HF's PIL processor, then HF's get_image_features in fp32
  on the CPU). Gate: cosine mean >= 0.999 and min >= 0.995. Each refused file is refused alone;
- one 640x480 JPEG at a time: p50/p99 over gRPC;
- bulk: images/s at 640x480 and 1280x960 JPEG (processes x threads x images a request, gRPC);
- the parts in-process on the same card: nvJPEG decode alone, the GPU preprocessing alone
  (on_gpu.OnGpu: decode + resize + crop + normalise), the raw fp16 tower alone (model_fp16.pt);
- with --texts: one-text query p50/p99, idle and beside a saturating image bulk job, and with
  --beside-layouts again per vision tower layout (rows per execution x instances), reloaded on
  the same server;
- with --openai-url: another server's OpenAI-style image path (infinity-emb's `"modality":
  "image"`) with the same JPEGs: one image p50/p99 and images/s (benchmarks/gpu/run.sh's
  images-infinity step starts infinity on the same card).

Each shape gets a checkpoint of its real vision tower (seeded random weights, random norms and
biases, two text layers), built with --fp16 into its own repository.

    python -m benchmarks.gpu.images --shapes b32,b16,l14 --out DIR [--quick] [--texts]
    python -m benchmarks.gpu.images --openai-url http://127.0.0.1:7997 --openai-model clip --out DIR
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.bulk_job import BulkJob, Loop, run_loops
from clip_triton_contract.names import (
    EMBEDDING_OUTPUT,
    IMAGE_ENCODER_MODEL,
    IMAGE_ENSEMBLE_MODEL,
    IMAGE_INPUT,
    IMAGE_PREPROCESS_MODEL,
)
from tests import images as test_images
from tests.checkpoints import FAMILIES, VISION_SHAPES, save_checkpoint

VARIANT = "torchscript_fp16"
LAYERS = {"b32": 12, "b16": 12, "l14": 24, "l14-336": 24, "h14": 32}
GATE_MEAN, GATE_MIN = 0.999, 0.995
SIZES = {"640x480": (640, 480), "1280x960": (1280, 960)}


def parity_set() -> dict[str, bytes]:
    """What a user sends, the GPU path's own cases included: nvJPEG decodes the JPEGs among them."""
    files = dict(test_images.embeddable())
    photo, encoded = test_images.photo, test_images.encoded
    base = photo(640, 480, seed=11)
    exif = base.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 on display (HF, and so we, ignore it)
    files["exif-rotated jpeg"] = encoded(base, "JPEG", quality=90, exif=exif)
    files["grayscale jpeg"] = encoded(base.convert("L"), "JPEG", quality=90)
    files["tiny 8x8 jpeg"] = encoded(photo(8, 8, seed=12), "JPEG")
    files["wide 2000x120 jpeg"] = encoded(photo(2000, 120, seed=13), "JPEG")
    files["4k 3840x2160 jpeg"] = encoded(photo(3840, 2160, seed=14), "JPEG", quality=92)
    files["35 MP 7000x5000 jpeg"] = encoded(photo(7000, 5000, seed=15), "JPEG", quality=85)
    files["4:2:0 640x480 jpeg q75"] = encoded(photo(640, 480, seed=16), "JPEG", quality=75, subsampling=2)
    return files


def jpegs(size: str, count: int) -> list[bytes]:
    width, height = SIZES[size]
    return [test_images.encoded(test_images.photo(width, height, seed=s), "JPEG", quality=90) for s in range(count)]


def build(shape: str, work: Path, full_text: bool) -> tuple[Path, Path]:
    """A checkpoint of `shape`'s vision tower (every layer; its text tower's two layers, or all
    with `full_text`) and its --fp16 repository."""
    text = {"b32": "b32", "b16": "b32", "l14": "l14", "l14-336": "l14", "h14": "h14"}[shape]
    checkpoint = save_checkpoint(
        FAMILIES[text],
        work / f"ckpt-{shape}",
        layers=None if full_text else 2,
        vision=shape,
        vision_layers=LAYERS[shape],
    )
    repository = work / f"repo-{shape}"
    command = [sys.executable, "-m", "clip_triton_build", "--fp16", "--format", "onnx", "--require-weights"]
    done = subprocess.run(
        [*command, "--checkpoint", str(checkpoint), "--output", str(repository)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return checkpoint, repository


def limits(repository: Path) -> dict[str, int]:
    """The GPU variant's preprocessing limits (max_image_bytes, max_image_pixels, gpu_chunk_pixels):
    its config is their home."""
    from clip_triton_build.repository import read_config

    config = read_config(repository / IMAGE_PREPROCESS_MODEL / "configs" / f"{VARIANT}.pbtxt")
    keys = ("max_image_bytes", "max_image_pixels", "gpu_chunk_pixels")
    return {key: int(config.parameters[key].string_value) for key in keys}


def reference(
    checkpoint: Path, repository: Path, files: dict[str, bytes], limit: dict[str, int]
) -> dict[str, np.ndarray]:
    """The CPU fp32 path: preprocessing.py's steps (HF's PIL processor's), HF's tower in fp32."""
    import torch

    from clip_triton_build.weights import load_vision_tower

    sys.path.insert(0, str(repository / IMAGE_PREPROCESS_MODEL / "1"))
    from preprocessing import Preprocessing, decode, read_header

    vision = load_vision_tower(str(checkpoint))
    steps = Preprocessing(vision.preprocessor, limit["max_image_pixels"])
    out = {}
    with torch.no_grad():
        for name, data in files.items():
            header = read_header(data, name, limit["max_image_bytes"], limit["max_image_pixels"])
            pixels = steps(decode(header, name))
            out[name] = vision.model(pixel_values=torch.from_numpy(pixels)[None]).image_embeds[0].numpy()
    return out


def infer(client, files: list[bytes], priority: int = 0):
    import tritonclient.grpc as grpc

    batch = np.array(files, dtype=object).reshape(-1, 1)
    tensor = grpc.InferInput(IMAGE_INPUT, list(batch.shape), "BYTES")
    tensor.set_data_from_numpy(batch)
    result = client.infer(
        IMAGE_ENSEMBLE_MODEL, [tensor], outputs=[grpc.InferRequestedOutput(EMBEDDING_OUTPUT)], priority=priority
    )
    return result.as_numpy(EMBEDDING_OUTPUT)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def parity(url: str, files: dict[str, bytes], expected: dict[str, np.ndarray], max_bytes: int, report: dict) -> bool:
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    cosines = {}
    for name, data in files.items():
        ours = infer(client, [data])[0]
        ref = expected[name]
        cosines[name] = cosine(ours, ref)
    batched = infer(client, list(files.values()))  # the same files in one request: same rows, in order
    in_batch = [
        float(b @ expected[n] / (np.linalg.norm(b) * np.linalg.norm(expected[n]))) for n, b in zip(files, batched)
    ]
    refused = {}
    for name, (data, says) in test_images.refused(max_bytes).items():
        if name == "over the byte limit":
            continue  # 20 MB of zeros: the CPU path's test covers it
        try:
            infer(client, [data])
            refused[name] = "embedded (should be refused)"
        except Exception as exc:
            refused[name] = "refused" if says in str(exc) else f"refused, but said: {str(exc)[:200]}"
    client.close()
    values = np.array(list(cosines.values()))
    ok = values.mean() >= GATE_MEAN and values.min() >= GATE_MIN and min(in_batch) >= GATE_MIN
    ok = ok and all(v == "refused" for v in refused.values())
    report["parity"] = {
        "cosine_per_file": cosines,
        "mean": float(values.mean()),
        "min": float(values.min()),
        "min_in_one_request": min(in_batch),
        "refused": refused,
        "gate": f"mean >= {GATE_MEAN}, min >= {GATE_MIN}",
        "pass": bool(ok),
    }
    print(
        f"parity: mean {values.mean():.5f} min {values.min():.5f} ({min(cosines, key=cosines.get)}), "
        f"in one request min {min(in_batch):.5f}; refused: {refused}; {'PASS' if ok else 'FAIL'}",
        flush=True,
    )
    return bool(ok)


def _bulk_process(url, files, batch, threads, priority, start, window, queue):
    """`threads` closed loops of `batch` images a request in one process of a BulkJob
    (benchmarks.bulk_job), counting the images of requests that end in the window."""
    import tritonclient.grpc as grpc

    def open_loop(k: int) -> Loop:
        client = grpc.InferenceServerClient(url)
        infer(client, files[:batch], priority)  # connected and warm
        first = itertools.count(k * batch, batch)

        def step() -> int:
            i = next(first)
            infer(client, [files[(i + j) % len(files)] for j in range(batch)], priority)
            return batch

        return step, client.close

    queue.put(run_loops(threads, open_loop, start, window))


def bulk(url, files, batch, processes, threads, seconds, priority=0) -> float:
    """Images/s of `processes` x `threads` closed loops of `batch` images a request, over `seconds`."""
    job = BulkJob(_bulk_process, (url, files, batch, threads, priority), processes)
    job.begin(seconds)
    return job.rate()


def one_image(url: str, data: bytes, count: int) -> dict:
    import tritonclient.grpc as grpc

    client = grpc.InferenceServerClient(url)
    for _ in range(10):
        infer(client, [data])
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        infer(client, [data])
        times.append(time.perf_counter() - t0)
    client.close()
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def timed(fn, seconds: float) -> float:
    """Calls of fn per second (fn synchronises the card itself), after one warm call."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def parts(repository: Path, files: dict[str, list[bytes]], limit: dict[str, int], seconds: float) -> dict:
    """The GPU decode, the GPU preprocessing and the raw tower alone, in this process on GPU 0."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from benchmarks.raw_encoder import throughput
    from clip_triton_build.encoder import cuda_ops
    from clip_triton_build.repository import cuda_ops_library, read_config

    sys.path.insert(0, str(repository / IMAGE_PREPROCESS_MODEL / "1"))
    from on_gpu import OnGpu
    from preprocessing import Preprocessing, read_header

    encoder = read_config(repository / IMAGE_ENCODER_MODEL / "configs" / f"{VARIANT}.pbtxt")
    instances = sum(group.count for group in encoder.instance_group)
    config = json.loads((repository / IMAGE_PREPROCESS_MODEL / "1" / "preprocessor_config.json").read_text())
    steps = OnGpu(Preprocessing(config, limit["max_image_pixels"]), np.dtype(np.float16), limit["gpu_chunk_pixels"], 0)
    out: dict = {}
    for size, batch in files.items():
        batch = batch[:64]
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch]

        def decode_only():
            decode_jpeg(tensors, mode=ImageReadMode.RGB, device="cuda")
            torch.cuda.synchronize()

        def preprocess():
            headers = [read_header(b, "x", limit["max_image_bytes"], limit["max_image_pixels"]) for b in batch]
            steps(batch, headers, IMAGE_INPUT)

        out[f"nvjpeg_decode_{size}_img_per_s"] = timed(decode_only, seconds) * len(batch)
        out[f"gpu_preprocess_{size}_img_per_s"] = timed(preprocess, seconds) * len(batch)
    cuda_ops.load(cuda_ops_library(repository))
    tower = torch.jit.load(str(repository / IMAGE_ENCODER_MODEL / "1" / "model_fp16.pt"), map_location="cuda")
    side = int(config["crop_size"]["height"])
    pixels = torch.randn(256, 3, side, side, device="cuda", dtype=torch.float16)
    # as the server runs it (no-optimize executor, a stream per caller): one image, then 256-image
    # batches from one caller and from as many as the GPU variant has instances
    out["raw_tower_1_img_per_s"] = throughput(tower, pixels[:1], 1, seconds, "cuda")["docs_per_s"]
    for callers in sorted({1, instances}):
        rate = throughput(tower, pixels, 256, seconds, "cuda", threads=callers)["docs_per_s"]
        out[f"raw_tower_256x{callers}_img_per_s"] = rate
    print("parts:", ", ".join(f"{k} {v:,.0f}" for k, v in out.items()), flush=True)
    return out


def texts_beside_images(server, repository: Path, files: list[bytes], args, report: dict) -> None:
    """One-text queries idle and beside a saturating image bulk job (the text side of the same
    repository), in the served layout and then in each of --beside-layouts, the vision tower
    reloaded on the same server for each."""
    from benchmarks.traffic import STAGES, queries, stage_ms, stage_totals
    from clip_triton_contract.names import ENCODER_MODEL, ENSEMBLE_MODEL, TOKENIZER_MODEL

    url = server.grpc_url
    seconds = 8 if args.quick else 15
    models = [TOKENIZER_MODEL, ENCODER_MODEL, IMAGE_PREPROCESS_MODEL, IMAGE_ENCODER_MODEL]
    idle = np.array(queries(url, ENSEMBLE_MODEL, 4, seconds)) * 1000
    for layout in [None, *args.beside_layouts]:
        if layout:
            reload_image_encoder(server, repository, layout)
        job = BulkJob(_bulk_process, (url, files, 64, 4, 0), args.processes)
        job.begin(seconds, after=1)  # counted while the queries run
        time.sleep(1)
        before = stage_totals(url, models)
        beside = np.array(queries(url, ENSEMBLE_MODEL, 4, seconds)) * 1000
        after = stage_totals(url, models)
        rate = job.rate()
        result = {
            "idle_p50_ms": float(np.percentile(idle, 50)),
            "idle_p99_ms": float(np.percentile(idle, 99)),
            "beside_images_p50_ms": float(np.percentile(beside, 50)),
            "beside_images_p99_ms": float(np.percentile(beside, 99)),
            "image_bulk_img_per_s": rate,
        }
        result["p99_over_idle"] = result["beside_images_p99_ms"] / result["idle_p99_ms"]
        # where a request's time went while both ran: each model's mean ms per request in each stage
        stages = {stage: stage_ms(before, after, stage) for stage in STAGES}
        label = "x".join(map(str, layout)) if layout else "served"
        if layout:
            report.setdefault("texts_beside_layouts", {})[label] = result | {"stage_ms": stages}
        else:
            report["texts_beside_images"] = result | {"stage_ms": stages}
        print(f"texts beside images ({label}):", ", ".join(f"{k} {v:.2f}" for k, v in result.items()), flush=True)
        for stage, means in stages.items():
            print(f"  {stage} ms per request:", ", ".join(f"{m} {v:.2f}" for m, v in means.items()), flush=True)


def reload_image_encoder(server, repository: Path, layout: tuple[int, int]) -> None:
    """The served vision tower reloaded as ROWSxINSTANCES (the server runs in explicit mode)."""
    import tritonclient.grpc as grpcclient
    from google.protobuf import json_format

    from clip_triton_ops.deploy import model_config

    config = model_config(repository, IMAGE_ENCODER_MODEL, VARIANT)
    config.max_batch_size, config.instance_group[0].count = layout
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        as_json = json_format.MessageToJson(config, preserving_proto_field_name=True)
        client.load_model(IMAGE_ENCODER_MODEL, headers=server.admin_headers(), config=as_json)
    finally:
        client.close()


def run_shape(shape: str, args, work: Path) -> dict:
    from clip_triton import LocalTritonServer

    report: dict = {"shape": shape, **VISION_SHAPES[shape], "layers": LAYERS[shape]}
    t0 = time.perf_counter()
    checkpoint, repository = build(shape, work, args.texts)
    report["build_s"] = time.perf_counter() - t0
    files = parity_set()
    limit = limits(repository)
    expected = reference(checkpoint, repository, files, limit)
    bulk_files = {size: jpegs(size, 64) for size in SIZES}
    if args.image_layout:
        with_image_layout(repository, args.image_layout)
        report["image_encoder_layout"] = "x".join(map(str, args.image_layout))
    # explicit model control (an instance count given) where --beside-layouts reloads the tower
    instances = read_config_count(repository) if args.beside_layouts else None
    server = LocalTritonServer.on_free_ports(
        repository=repository, config_name=VARIANT, image_encoder_instances=instances
    )
    server.start(timeout=300)
    seconds = 5 if args.quick else 12
    try:
        url = server.grpc_url
        report["parity"] = {}
        ok = parity(url, files, expected, limit["max_image_bytes"], report)
        report["one_image"] = one_image(url, bulk_files["640x480"][0], 100 if args.quick else 300)
        print(f"[{shape}] one image: {report['one_image']}", flush=True)
        report["bulk"] = {}
        for size, batch_files in bulk_files.items():
            for batch, processes, threads in args.points:
                rate = bulk(url, batch_files, batch, processes, threads, seconds)
                report["bulk"][f"{size} {processes}x{threads}x{batch}"] = rate
                print(
                    f"[{shape}] {size} JPEG, {processes}x{threads} clients x {batch} images: {rate:,.0f} img/s",
                    flush=True,
                )
        if args.texts:
            texts_beside_images(server, repository, bulk_files["640x480"], args, report)
    finally:
        server.stop()
        (args.out / f"tritonserver-{shape}.log").write_text(server.log_path.read_text(errors="replace")[-100_000:])
    report["parts"] = parts(repository, bulk_files, limit, 3 if args.quick else 6)
    report["pass"] = ok
    return report


async def _openai_loop(session, url, model, uris, batch, end, counts, latencies):
    i = 0
    while time.monotonic() < end:
        chunk = [uris[(i + j) % len(uris)] for j in range(batch)]
        t0 = time.perf_counter()
        async with session.post(url, json={"model": model, "input": chunk, "modality": "image"}) as response:
            body = await response.json()
        if response.status != 200 or len(body["data"]) != batch:
            raise RuntimeError(f"{response.status}: {str(body)[:300]}")
        latencies.append(time.perf_counter() - t0)
        counts.append(batch)
        i += batch


async def _openai(url, model, uris, batch, concurrency, seconds):
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await _openai_loop(session, url, model, uris, batch, time.monotonic() + 1, [], [])  # warm
        counts: list[int] = []
        latencies: list[float] = []
        start = time.monotonic()
        loops = [
            _openai_loop(session, url, model, uris, batch, start + seconds, counts, latencies)
            for _ in range(concurrency)
        ]
        await asyncio.gather(*loops)
        return sum(counts) / (time.monotonic() - start), latencies


def openai_images(args) -> int:
    """Another server's OpenAI-style image path with the JPEGs the shapes' bulk points send."""
    url = args.openai_url.rstrip("/") + "/embeddings"
    report: dict = {"server": args.openai_url, "model": args.openai_model}
    seconds = 8 if args.quick else 15
    for size in SIZES:
        uris = ["data:image/jpeg;base64," + base64.b64encode(b).decode() for b in jpegs(size, 64)]
        if size == "640x480":
            _, latencies = asyncio.run(_openai(url, args.openai_model, uris, 1, 1, seconds))
            ms = np.array(latencies) * 1000
            report["one_image"] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
            print(f"[openai] one image: {report['one_image']}", flush=True)
        for batch, concurrency in ((32, 8), (32, 32)):  # infinity takes at most 32 images a request
            rate, _ = asyncio.run(_openai(url, args.openai_model, uris, batch, concurrency, seconds))
            report[f"{size} {concurrency}x{batch}"] = rate
            print(f"[openai] {size} JPEG, {concurrency} requests of {batch} in flight: {rate:,.1f} img/s", flush=True)
    (args.out / "openai_images.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def with_image_layout(repository: Path, layout: tuple[int, int]) -> None:
    """The vision tower's rows per execution and instances in the GPU variant, over variants/gpu.pbtxt's."""
    from google.protobuf import text_format

    from clip_triton_build.repository import read_config

    for path in (repository / IMAGE_ENCODER_MODEL / "configs").glob(f"{VARIANT}*.pbtxt"):
        config = read_config(path)
        config.max_batch_size, config.instance_group[0].count = layout
        path.write_text(text_format.MessageToString(config))


def read_config_count(repository: Path) -> int:
    """The served vision tower's instance count (its GPU variant's)."""
    from clip_triton_ops.deploy import model_config

    return model_config(repository, IMAGE_ENCODER_MODEL, VARIANT).instance_group[0].count


def point(text: str) -> tuple[int, int, int]:
    batch, processes, threads = (int(x) for x in text.split("x"))
    return batch, processes, threads


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="b32,b16,l14")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--texts", action="store_true", help="queries beside an image bulk job (first shape)")
    parser.add_argument("--processes", type=int, default=4, help="load processes of the image bulk job")
    parser.add_argument(
        "--points",
        default="32x4x4,64x4x4",
        help="bulk points, IMAGESxPROCESSESxTHREADS each (images a request, load processes, threads each)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-images"))
    parser.add_argument("--image-layout", help="ROWSxINSTANCES of the vision tower (default: variants/gpu.pbtxt's)")
    parser.add_argument(
        "--beside-layouts",
        default="",
        metavar="ROWSxINSTANCES,...",
        help="with --texts: the queries beside the image job again with the vision tower reloaded in each",
    )
    parser.add_argument("--openai-url", help="measure this OpenAI-style server's image path instead")
    parser.add_argument("--openai-model", default="clip")
    args = parser.parse_args(argv)
    args.points = [point(p) for p in args.points.split(",")]
    args.image_layout = tuple(int(x) for x in args.image_layout.split("x")) if args.image_layout else None
    layouts = filter(None, args.beside_layouts.split(","))
    args.beside_layouts = [tuple(int(x) for x in layout.split("x")) for layout in layouts]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.openai_url:
        return openai_images(args)
    args.work.mkdir(parents=True, exist_ok=True)
    results, ok = [], True
    for i, shape in enumerate(args.shapes.split(",")):
        texts = args.texts
        args.texts = texts and i == 0
        try:
            result = run_shape(shape, args, args.work)
        except Exception as exc:  # the next shape still runs; the report says what failed
            import traceback

            traceback.print_exc()
            result = {"shape": shape, "error": repr(exc)[:2000], "pass": False}
        args.texts = texts
        results.append(result)
        ok = ok and result["pass"]
        (args.out / "images.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
