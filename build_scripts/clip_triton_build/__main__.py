"""python -m clip_triton_build: write a servable model repository from the hand-written one and a CLIP checkpoint.

    python -m clip_triton_build                                  # default checkpoint, ONNX + TorchScript
    python -m clip_triton_build --checkpoint /path/to/clip --format onnx --require-weights
    python -m clip_triton_build --output /models                 # anywhere (default build/model_repository)

The source (`model_repository/`) is only read; the output is replaced as a whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from .repository import (
    BUILT_REPOSITORY,
    REPO_ROOT,
    SOURCE_REPOSITORY,
    NotABuiltRepository,
    build_info_path,
    cuda_ops_library,
    stamp_parameters,
    start_repository,
    write_variants,
)
from .spec import (
    DEFAULT_CHECKPOINT,
    ENCODER_MODEL,
    ONNX_FILE,
    PYTHON_TOKENIZER_MODEL,
    TOKENIZER_MODEL,
    TORCHSCRIPT_FILE,
    TORCHSCRIPT_FP16_FILE,
)
from .tokenizer import backend as tokenizer_backend

log = logging.getLogger("clip_triton_build")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton_build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="Hugging Face model id or local folder of a CLIP (or CLIP text) checkpoint",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=SOURCE_REPOSITORY,
        help="the hand-written repository: configs and model.py (default: model_repository/)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BUILT_REPOSITORY,
        help="where the servable repository is written (default: build/model_repository/)",
    )
    parser.add_argument(
        "--format",
        choices=["onnx", "torchscript", "all"],
        default="all",
        help="encoder export(s) to write (default: all; ONNX is what config.pbtxt serves)",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 loads in ONNX Runtime >= 1.14)")
    parser.add_argument(
        "--torchscript-device",
        default="cpu",
        help="device to trace the TorchScript export on: 'cuda' for GPU instances (default cpu)",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also export model_fp16.pt (half-precision TorchScript, GPU) for the torchscript_fp16 variant, "
        "with the ops it calls (libclip_cuda_ops.so: needs a CUDA toolkit, headers and nvcc, and a C++ compiler)",
    )
    parser.add_argument(
        "--require-weights",
        action="store_true",
        help="fail instead of falling back to random weights when the checkpoint cannot be loaded",
    )
    parser.add_argument(
        "--reference-dir",
        type=Path,
        default=REPO_ROOT / "build" / "reference_checkpoint",
        help="where random-init weights are saved (HF format) so tests can compare against HF",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[clip_triton_build] %(levelname)s %(message)s")
    args = parse_args(argv)
    from .encoder.export import export_onnx, export_packed, export_torchscript
    from .tokenizer.assets import write_tokenizer
    from .weights import RANDOM_INIT, WeightsUnavailable, load_encoder

    started = time.perf_counter()
    repo = args.output.resolve()
    try:
        start_repository(args.source, repo)
    except NotABuiltRepository as exc:
        log.error("%s", exc)
        return 2
    # both tokenizers read the same tokenizer.json: the C++ one for plain texts, the Python one for the rest
    tokenizer_path = write_tokenizer(repo / PYTHON_TOKENIZER_MODEL / "1")
    shutil.copyfile(tokenizer_path, repo / TOKENIZER_MODEL / "1" / tokenizer_path.name)
    log.info("tokenizer: %s", tokenizer_path)
    try:
        log.info("tokenizer backend: %s", tokenizer_backend.build(tokenizer_backend.library_path(repo)))
    except tokenizer_backend.TokenizerBackendBuildError as exc:
        log.error("%s", exc)
        return 2

    try:
        loaded = load_encoder(args.checkpoint, require_weights=args.require_weights)
    except WeightsUnavailable as exc:
        log.error("%s", exc)
        return 2
    encoder_dir = repo / ENCODER_MODEL
    version_dir = encoder_dir / "1"
    if args.format in ("onnx", "all"):
        log.info("onnx: %s", export_onnx(loaded.model, version_dir / ONNX_FILE, opset=args.opset))
    if args.format in ("torchscript", "all"):
        log.info(
            "torchscript: %s",
            export_torchscript(loaded.model, version_dir / TORCHSCRIPT_FILE, device=args.torchscript_device),
        )
    if args.fp16:
        from .encoder import cuda_ops

        device = "cuda" if args.torchscript_device == "cpu" else args.torchscript_device
        library = cuda_ops.build(cuda_ops_library(repo))
        cuda_ops.load(library)
        log.info("encoder ops: %s", library)
        log.info(
            "torchscript fp16: %s", export_packed(loaded.model, version_dir / TORCHSCRIPT_FP16_FILE, device=device)
        )

    info = {"weights": loaded.weights, "checkpoint": loaded.source}
    if loaded.weights == RANDOM_INIT:
        loaded.model.save_pretrained(args.reference_dir)
        info["reference_checkpoint"] = str(args.reference_dir.resolve())
    else:
        info["reference_checkpoint"] = args.checkpoint
    build_info_path(repo).write_text(json.dumps(info, indent=2) + "\n")
    stamp_parameters(encoder_dir / "config.pbtxt", {"weights": loaded.weights, "checkpoint": loaded.source})
    variants = write_variants(args.source.resolve(), repo)
    log.info("config variants: %d files (configs/*.pbtxt)", len(variants))
    log.info("done in %.1fs: %s, weights=%s (%s)", time.perf_counter() - started, repo, loaded.weights, loaded.source)
    if loaded.weights == RANDOM_INIT:
        log.warning("RANDOM-INIT WEIGHTS: this repository serves meaningless embeddings (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
