"""python -m clip_openai: OpenAI's embeddings API in front of the CLIP ensemble, on uvicorn.

    python -m clip_openai --triton-url 127.0.0.1:8001 --port 9000 --workers 4
    curl http://127.0.0.1:9000/v1/embeddings -H 'Content-Type: application/json' \\
        -d '{"model": "clip_text", "input": ["a photo of a cat"]}'

Every field of clip_openai.settings.Settings is an option here (--max-pending, --calls-in-flight,
...); the workers read them from the environment this process hands them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile

from .settings import DEFAULT_METRICS_PORT, DEFAULT_PORT, INSTANCE_VARIABLE, Settings, default_workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clip_openai", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--metrics-host", default=None, help="address of the metrics endpoint (default: --host)")
    parser.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="0: no metrics endpoint")
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require 'Authorization: Bearer <key>' with the key in this environment variable, and send it "
        "to Triton as the inference APIs' key (the server's --api-key-env); empty: no key",
    )
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name == "api_key":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, tuple):
            parser.add_argument(
                "--model" if f.name == "models" else flag.rstrip("s"),
                dest=f.name,
                action="append",
                help=f"{f.name} (repeatable; default: {','.join(default) or 'none'})",
            )
        elif isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, dest=f.name, type=type(default), default=default, help="default: %(default)s")
    return parser


def parse_args(argv=None) -> tuple[argparse.Namespace, Settings]:
    parser = build_parser()
    defaults = Settings()
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if f.name != "api_key"}
    for f in dataclasses.fields(Settings):  # repeatable options: what was given, else the default
        if isinstance(getattr(defaults, f.name), tuple):
            values[f.name] = tuple(values[f.name] or getattr(defaults, f.name))
    if args.api_key_env:  # set but empty: no key, as tritonserver's rule is then none (compose's CLIP_API_KEY)
        if args.api_key_env not in os.environ:
            parser.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
        values["api_key"] = os.environ[args.api_key_env]
    return args, Settings(**values)


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    metrics_dir = tempfile.mkdtemp(prefix="clip-openai-metrics-")
    # before prometheus_client is imported, here and in every worker: each writes its own samples
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ.update(settings.to_env())
    os.environ.setdefault(INSTANCE_VARIABLE, secrets.token_hex(8))
    where = f"http://{args.metrics_host or args.host}:{args.metrics_port}/metrics" if args.metrics_port else "off"
    try:
        import uvicorn
        from prometheus_client import start_http_server

        from . import metrics

        if args.metrics_port:
            start_http_server(args.metrics_port, args.metrics_host or args.host, registry=metrics.registry())
        print(
            f"clip_openai: http://{args.host}:{args.port}/v1 -> Triton gRPC {settings.triton_url} "
            f"({args.workers} worker(s); metrics: "
            f"{where})",
            flush=True,
        )
        uvicorn.run(
            "clip_openai.app:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            backlog=4096,
            timeout_keep_alive=30,
        )
        return 0
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
