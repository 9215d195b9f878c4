"""python -m clip_triton: serve the model repository locally on CPU, with OpenAI's embeddings API in
front of it (python -m clip_openai), embed a few texts, keep serving.

Ctrl-C stops the server cleanly. --exit-after-demo stops it after the demo (for scripts).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from clip_triton_build.repository import UnknownName, check_variant, ensembles
from clip_triton_ops.deploy import add_instance_arguments

from .errors import PortTaken
from .local import LocalTritonServer, ServerFailed
from .openai_frontend import LocalOpenAIFrontend
from .paths import BUILT_REPOSITORY
from .ports import check_free

DEMO_TEXTS = [
    "a photo of a cat",
    "a photo of a kitten sleeping on a sofa",
    "a red double-decker bus in London",
    "Stock market closes higher as tech shares rally",
]


def demo(server: LocalTritonServer, frontend: LocalOpenAIFrontend | None) -> None:
    from clip_triton_client import CLIPClient

    for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        with CLIPClient(url, protocol=protocol, api_key=server.api_key) as client:
            vectors = client.encode(DEMO_TEXTS)
            info = client.model_info()
        print(
            f"\n[{protocol}] {url}: embedded {len(DEMO_TEXTS)} texts -> {vectors.shape} {vectors.dtype} "
            f"(weights: {info.weights})"
        )
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    if frontend is not None:
        openai_vectors = openai_demo(frontend, info.name, DEMO_TEXTS, server.api_key)
        print(
            f"\n[openai] {frontend.url}/embeddings: embedded {len(DEMO_TEXTS)} texts -> {openai_vectors.shape}, "
            f"unit length, max diff from the normalized Triton vectors {np.abs(openai_vectors - unit).max():.1e}"
        )
    sims = unit @ unit.T
    print("\ncosine similarity:")
    for i, text in enumerate(DEMO_TEXTS):
        print(f"  {' '.join(f'{s:+.3f}' for s in sims[i])}  {text}")
    image_demo(server, unit)
    if info.weights == "random-init":
        print(
            "\n  (random-init weights: the numbers are deterministic but meaningless; "
            "build with --checkpoint for real ones)"
        )
    if frontend is not None:
        print(openai_examples(frontend, info.name, bool(server.api_key)))


def demo_images() -> dict[str, bytes]:
    """Two small PNGs drawn here (the demo needs no files): name -> encoded file."""
    import io

    from PIL import Image, ImageDraw

    drawn = {}
    for name, (background, shape) in {"orange disc": ("white", "orange"), "blue square": ("gray", "navy")}.items():
        image = Image.new("RGB", (256, 192), background)
        draw = ImageDraw.Draw(image)
        box = (64, 32, 192, 160)
        if name.endswith("disc"):
            draw.ellipse(box, fill=shape)
        else:
            draw.rectangle(box, fill=shape)
        out = io.BytesIO()
        image.save(out, "PNG")
        drawn[name] = out.getvalue()
    return drawn


def image_demo(server: LocalTritonServer, texts: np.ndarray) -> None:
    """Two images through the image ensemble, scored against the demo texts (unit vectors)."""
    from clip_triton_client import CLIPClient

    images = demo_images()
    with CLIPClient(server.grpc_url, api_key=server.api_key) as client:
        vectors = client.encode_images(list(images.values()), normalize=True)
        model = client.image_model
    print(f"\n[grpc] {server.grpc_url}: embedded {len(images)} images via {model} -> {vectors.shape}")
    print("image x text cosine similarity (the same space):")
    for name, row in zip(images, vectors @ texts.T):
        print(f"  {' '.join(f'{s:+.3f}' for s in row)}  {name}")


def openai_demo(frontend: LocalOpenAIFrontend, model: str, texts: list[str], key: str | None) -> np.ndarray:
    """The demo texts through POST /v1/embeddings, with the standard library only."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{frontend.url}/embeddings",
        data=json.dumps({"model": model, "input": texts}).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    return np.array([item["embedding"] for item in body["data"]], dtype=np.float32)


def openai_examples(frontend: LocalOpenAIFrontend, model: str, keyed: bool) -> str:
    key = "$CLIP_API_KEY" if keyed else "unused"
    auth = f" -H 'Authorization: Bearer {key}'" if keyed else ""
    return f"""
OpenAI's embeddings API: {frontend.url}  (docs/openai.md)
  curl {frontend.url}/embeddings -H 'Content-Type: application/json'{auth} \\
      -d '{{"model": "{model}", "input": ["a photo of a cat", "a dog"]}}'
  .venv/bin/python -c 'from openai import OpenAI; c = OpenAI(base_url="{frontend.url}", api_key="{key}"); \\
      print(c.embeddings.create(model="{model}", input=["a photo of a cat"]).data[0].embedding[:4])'"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_triton", description=__doc__)
    parser.add_argument("--repository", type=Path, default=BUILT_REPOSITORY)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--config-name",
        default="cpu",
        help="--model-config-name for tritonserver ('cpu', 'torchscript_cpu'; '' for config.pbtxt)",
    )
    add_instance_arguments(parser)  # they load the models through the repository API
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require header x-api-key with the value of this environment variable (every API but health)",
    )
    parser.add_argument(
        "--admin-key-env",
        default=None,
        metavar="VAR",
        help="admin key (model repository, shared memory, trace, logging APIs) from this "
        "environment variable; default: a random one, saved to .local/admin-key-<port>",
    )
    parser.add_argument(
        "--no-supervise",
        action="store_true",
        help="do not restart the server when it exits or loses a Python-backend stub",
    )
    parser.add_argument(
        "--openai-port",
        type=int,
        default=LocalOpenAIFrontend.port,
        help="OpenAI's embeddings API (python -m clip_openai) on this port; 0: not started",
    )
    parser.add_argument("--openai-metrics-port", type=int, default=LocalOpenAIFrontend.metrics_port)
    parser.add_argument("--openai-workers", type=int, default=None, help="its processes (default: clip_openai's)")
    parser.add_argument("--no-demo", action="store_true", help="serve without embedding the demo texts")
    parser.add_argument("--exit-after-demo", action="store_true")
    parser.add_argument("--log-verbose", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        check_variant(args.repository, args.config_name)
    except UnknownName as exc:
        parser.error(str(exc))

    server = LocalTritonServer(
        repository=args.repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        config_name=args.config_name or None,
        log_verbose=args.log_verbose,
        encoder_instances=args.encoder_instances,
        tokenizer_instances=args.tokenizer_instances,
        image_encoder_instances=args.image_encoder_instances,
        image_preprocess_instances=args.image_preprocess_instances,
        gpus=args.gpus,
        api_key=os.environ[args.api_key_env] if args.api_key_env else None,
    )
    ports = {"--http-port": args.http_port, "--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port}
    if args.openai_port:
        ports.update({"--openai-port": args.openai_port, "--openai-metrics-port": args.openai_metrics_port})
    try:  # every port before anything starts; each process is checked as its own again as it starts
        check_free(args.host, ports)
    except PortTaken as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    if args.admin_key_env:
        server.admin_key = os.environ[args.admin_key_env]
    else:  # for the operator's own repository/logging calls; readable by this user only
        key_file = server.state_dir / f"admin-key-{server.http_port}"
        server.state_dir.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(server.admin_key + "\n")
        print(f"admin APIs (repository, shared memory, trace, logging) need header x-api-key: see {key_file}")
    print(f"starting tritonserver (log: {server.log_path}) ...", flush=True)
    try:
        server.start()
    except ServerFailed as exc:
        print(f"tritonserver failed to start: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if not args.no_supervise:
        server.supervise()
    frontend = None
    try:
        models = ensembles(args.repository)
        print(
            f"ready: HTTP http://{server.http_url}  gRPC {server.grpc_url}  "
            f"metrics http://{server.host}:{server.metrics_port}/metrics  models: {', '.join(models)}",
            flush=True,
        )
        if args.openai_port:
            frontend = LocalOpenAIFrontend(
                server.grpc_url,
                models,
                host=args.host,
                port=args.openai_port,
                metrics_port=args.openai_metrics_port,
                workers=args.openai_workers,
                api_key=server.api_key,
            )
            print(f"starting the OpenAI frontend (log: {frontend.log_path}) ...", flush=True)
            frontend.start()
            print(f"ready: OpenAI API {frontend.url}  metrics http://{args.host}:{args.openai_metrics_port}/metrics")
        if not args.no_demo:
            demo(server, frontend)
        if args.exit_after_demo:
            return 0
        print("\nserving; Ctrl-C to stop", flush=True)
        while not args.no_supervise or server.started_process.poll() is None:  # the supervisor restarts it
            time.sleep(0.5)
        print(f"tritonserver exited with {server.started_process.returncode}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except ServerFailed as exc:
        print(f"the OpenAI frontend failed to start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        if frontend is not None:
            frontend.stop()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
