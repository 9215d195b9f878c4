"""The Python tokenizer model's own work per text, no server: `TritonPythonModel.tokenize` of the
shipped clip_tokenizer_python model.py (initialized from the built repository, as Triton
initializes it) next to other copies of model.py (an earlier commit's, say) on the same texts in
the same process, with each one's time relative to the first. Each copy's ids must equal the
first's, or the run fails.

    git show REV:model_repository/clip_tokenizer_python/1/model.py > /tmp/old_model.py
    python -m benchmarks.tokenizer_speed --model /tmp/old_model.py [--json out.json]

`--server` adds the served tokenizer (clip_tokenizer: the C++ backend, which hands texts that are
not plain, ASCII with or without emoji, to the Python model) on a local tritonserver (one
instance, one request in flight, the same batches over gRPC): its compute per text from Triton's
statistics API, next to the Python code in-process, with nothing else on the host competing for
the cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from clip_triton import corpus
from clip_triton.paths import BUILT_REPOSITORY, REPO_ROOT, pytriton_paths
from clip_triton_build.spec import PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL

SHIPPED = REPO_ROOT / "model_repository" / PYTHON_TOKENIZER_MODEL / "1" / "model.py"


def load(path: Path, name: str):
    """TritonPythonModel of `path`, initialized with the built repository's tokenizer config."""
    backend = pytriton_paths()[0] / "backends" / "python"  # triton_python_backend_utils, as the stub imports it
    if str(backend) not in sys.path:
        sys.path.append(str(backend))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = BUILT_REPOSITORY / PYTHON_TOKENIZER_MODEL
    config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_repository": str(folder),
            "model_version": "1",
        }
    )
    return model


def batched(texts: list, size: int) -> list:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def served_compute(texts: dict, batch: int, repeat: int) -> dict:
    """Seconds of tokenizer compute (inputs in, execute, outputs out) that one local tritonserver
    spends on each corpus kind's `texts`, in requests of `batch` texts one at a time to one
    instance: the best of `repeat` passes each."""
    import tritonclient.grpc as grpc

    from clip_triton import LocalTritonServer, verify

    server = LocalTritonServer.on_free_ports(config_name="cpu", tokenizer_instances=1)
    server.start(timeout=300)
    client = grpc.InferenceServerClient(server.grpc_url)
    headers = server.admin_headers()

    def compute_ns() -> int:
        stats = client.get_inference_statistics(TOKENIZER_MODEL, headers=headers).model_stats[0].inference_stats
        return stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns

    try:
        best = {kind: float("inf") for kind in texts}
        for kind, kind_texts in texts.items():
            for attempt in range(repeat + 1):  # the first pass warms the word cache
                before = compute_ns()
                verify.tokenize(server.grpc_url, kind_texts, batch=batch)
                if attempt:
                    best[kind] = min(best[kind], (compute_ns() - before) / 1e9)
        return best
    finally:
        client.close()
        server.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", default=[], help="another model.py to compare")
    parser.add_argument("--texts", default="short,mixed", help="corpus kinds (clip_triton.corpus)")
    parser.add_argument("--count", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=256, help="texts per tokenize call (a request's)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    parser.add_argument("--server", action="store_true", help="also the served tokenizer (see above)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    paths = [SHIPPED, *args.model]
    models = [load(path, f"tokenizer_model_{i}") for i, path in enumerate(paths)]
    rows = []
    for kind in args.texts.split(","):
        texts = corpus.texts(kind, args.count)
        batches = batched(texts, args.batch)
        reference = [models[0].tokenize(batch) for batch in batches]  # also warms each word cache
        times = []
        for path, model in zip(paths, models):
            assert all(np.array_equal(model.tokenize(b), r) for b, r in zip(batches, reference)), f"{path}: other ids"
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                for batch in batches:
                    model.tokenize(batch)
                best = min(best, time.perf_counter() - start)
            times.append(best)
            row = {
                "texts": kind,
                "model": str(path),
                "us_per_text": best / len(texts) * 1e6,
                "vs_first": best / times[0],
            }
            rows.append(row)
            print(f"{kind:>6} {row['us_per_text']:7.2f} us/text  x{row['vs_first']:.2f}  {path}", flush=True)
    if args.server:
        kinds = args.texts.split(",")
        served = served_compute({kind: corpus.texts(kind, args.count) for kind in kinds}, args.batch, args.repeat)
        for kind in kinds:
            best = served[kind] / args.count
            in_process = next(r for r in rows if r["texts"] == kind and r["model"] == str(SHIPPED))
            row = {
                "texts": kind,
                "model": f"served: {TOKENIZER_MODEL}",
                "us_per_text": best * 1e6,
                "vs_first": best * 1e6 / in_process["us_per_text"],
            }
            rows.append(row)
            print(f"{kind:>6} {row['us_per_text']:7.2f} us/text  x{row['vs_first']:.2f}  {row['model']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
