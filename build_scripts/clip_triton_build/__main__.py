"""python -m clip_triton_build: write a servable model repository from the hand-written one and a CLIP checkpoint.

    python -m clip_triton_build                                  # default checkpoint, ONNX + TorchScript
    python -m clip_triton_build --checkpoint /path/to/clip --format onnx --require-weights
    python -m clip_triton_build --output /models                 # anywhere (default build/model_repository)
    python -m clip_triton_build --model clip-vit-b32=openai/clip-vit-base-patch32 \
        --model clip-vit-l14=openai/clip-vit-large-patch14           # several checkpoints, one repository

The source (`model_repository/`) is only read; the output is replaced as a whole. With --model
NAME=CHECKPOINT (repeatable), each checkpoint's models are named after it (spec.model_names): its
ensemble, what clients call, is NAME.

--encoder-layout [NAME=]ROWSxINSTANCES sets the GPU variants' encoder layout (rows per execution,
instances per GPU) instead of model_repository/clip_text_encoder/variants/gpu.pbtxt's, for every
checkpoint or for NAME's: how checkpoints sharing a GPU split it, or 1024x3 for a GPU that runs bulk
jobs alone (docs/deploy.md, "A shared GPU fleet").
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from clip_triton_contract.names import (
    CHECKPOINT_PARAMETER,
    EMBEDDING_OUTPUT,
    EMBEDS_TENSOR,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    IMAGE_EMBEDS_TENSOR,
    IMAGE_ENCODER_MODEL,
    IMAGE_ENSEMBLE_MODEL,
    IMAGE_MODELS,
    IMAGE_PREPROCESS_MODEL,
    MODEL_NAME_PATTERN,
    PIXELS_TENSOR,
    PYTHON_TOKENIZER_MODEL,
    SIBLINGS_PARAMETER,
    TOKENIZER_MODEL,
    WEIGHTS_PARAMETER,
    all_model_names,
    model_names,
)

from .native import NativeBuildError
from .repository import (
    BUILT_REPOSITORY,
    REPO_ROOT,
    SOURCE_REPOSITORY,
    NotABuiltRepository,
    build_info_path,
    cuda_ops_library,
    read_config,
    stamp_dims,
    stamp_parameters,
    start_repository,
    write_image_variants,
    write_variants,
)
from .spec import DEFAULT_CHECKPOINT, ONNX_FILE, PREPROCESSOR_FILE, TORCHSCRIPT_FILE, TORCHSCRIPT_FP16_FILE
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
        "--model",
        action="append",
        type=named_checkpoint,
        metavar="NAME=CHECKPOINT",
        help="build CHECKPOINT (hub id or folder) as the model NAME; repeat for several in one repository "
        "(replaces --checkpoint)",
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
        "--encoder-layout",
        action="append",
        default=[],
        type=encoder_layout,
        metavar="[NAME=]ROWSxINSTANCES",
        help="the GPU variants' encoder layout, for every checkpoint or NAME's (repeatable), e.g. l14=256x1",
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
    args = parser.parse_args(argv)
    names = [name for name, _ in args.model or ()]
    served = [n for name in names for n in all_model_names(name).values()]
    if len(set(served)) != len(served):
        parser.error(f"--model names must be distinct and not one another's model names: {', '.join(names)}")
    args.encoder_layouts = dict(args.encoder_layout)
    unknown = set(args.encoder_layouts) - {None, *names}
    if unknown:
        valid = f"the --model names are {', '.join(names)}" if names else "no --model names one: give ROWSxINSTANCES"
        parser.error(f"--encoder-layout names no --model: {', '.join(sorted(unknown))} ({valid})")
    ensemble_rows = read_config(args.source / ENSEMBLE_MODEL / "config.pbtxt").max_batch_size
    for name, (rows, instances) in args.encoder_layouts.items():
        if rows < ensemble_rows:
            given = f"{name}={rows}x{instances}" if name else f"{rows}x{instances}"
            parser.error(
                f"--encoder-layout {given}: {rows} rows is below the {ensemble_rows} texts a request may carry"
            )
    return args


def encoder_layout(value: str) -> tuple[str | None, tuple[int, int]]:
    """`l14=256x1` -> ("l14", (256, 1)); `1024x3` -> (None, (1024, 3)): an argparse type."""
    name, sep, layout = value.rpartition("=")
    found = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", layout)
    if not found or (sep and not re.fullmatch(MODEL_NAME_PATTERN, name)):
        raise argparse.ArgumentTypeError(f"{value!r}: [NAME=]ROWSxINSTANCES, e.g. 256x3 or l14=256x1")
    return (name or None), (int(found.group(1)), int(found.group(2)))


def named_checkpoint(value: str) -> tuple[str, str]:
    name, sep, checkpoint = value.partition("=")
    if not sep or not checkpoint or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise argparse.ArgumentTypeError(
            f"{value!r}: NAME=CHECKPOINT, NAME of letters, digits, '_', '.', '-' (a Triton model name)"
        )
    return name, checkpoint


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="[clip_triton_build] %(levelname)s %(message)s")
    args = parse_args(argv)
    from .namespace import renamed
    from .servable import UnservableCheckpoint
    from .weights import CHECKED, WeightsUnavailable, check_servable

    CHECKED.clear()  # a checkpoint folder may have changed since an earlier build in this process

    started = time.perf_counter()
    repo = args.output.resolve()
    models: list[tuple[str | None, str]] = list(args.model or [(None, args.checkpoint)])
    siblings = ",".join(model_names(name)[ENSEMBLE_MODEL] for name, _ in models)
    try:
        for _, checkpoint in models:  # before the output is replaced
            check_servable(checkpoint)
        start_repository(args.source, repo, copy_source=args.model is None)  # named models: each in its staging
        with tempfile.TemporaryDirectory() as work:
            shared = shared_artifacts(repo, Path(work), args)
            for name, checkpoint in models:
                layout = args.encoder_layouts.get(name, args.encoder_layouts.get(None))
                if name is None:
                    build_checkpoint(args, checkpoint, repo, args.reference_dir, shared, siblings, layout)
                    continue
                staging = repo / f".staging-{name}"  # the same filesystem: the copies are hard links
                try:
                    build_checkpoint(args, checkpoint, staging, args.reference_dir / name, shared, siblings, layout)
                    renamed(staging, repo, all_model_names(name), f"{name!r}: named copy")
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    except (NotABuiltRepository, NativeBuildError, WeightsUnavailable) as exc:
        log.error("%s", exc)
        return 2
    except UnservableCheckpoint as exc:
        log.error("cannot serve %s", exc)
        return 2
    log.info("done in %.1fs: %s (%s)", time.perf_counter() - started, repo, siblings)
    return 0


def shared_artifacts(repo: Path, work: Path, args) -> dict[str, Path]:
    """What every checkpoint's models use, built once into `work`: tokenizer.json and the C++
    tokenizer's backend; and (--fp16) the encoder's ops library, at the repository's root, where
    every model_fp16.pt finds it preloaded."""
    from .tokenizer.assets import write_tokenizer

    shared = {"tokenizer": write_tokenizer(work)}
    shared["backend"] = tokenizer_backend.build(tokenizer_backend.library_path(work))
    log.info("tokenizer backend: %s", shared["backend"])
    if args.fp16:
        from .encoder import cuda_ops

        library = cuda_ops.build(cuda_ops_library(repo))
        cuda_ops.load(library)
        log.info("encoder ops: %s", library)
    return shared


def build_checkpoint(
    args,
    checkpoint: str,
    repo: Path,
    reference_dir: Path,
    shared: dict,
    siblings: str,
    layout: tuple[int, int] | None = None,
) -> None:
    """One checkpoint's models into `repo`, under their default names: the source's files, the
    shared tokenizer artifacts, the encoder's exports, its stamps and the config variants (the GPU
    ones' encoder in `layout`, when given); and its image side when it has a vision tower."""
    from .encoder.export import export_onnx, export_packed, export_torchscript
    from .weights import RANDOM_INIT, load_encoder, load_vision_tower, random_init_vision

    loaded = load_encoder(checkpoint, require_weights=args.require_weights)  # refuses before anything is written
    vision = random_init_vision() if loaded.weights == RANDOM_INIT else load_vision_tower(checkpoint)
    if repo != args.output.resolve():
        start_repository(args.source, repo)
    for model in (PYTHON_TOKENIZER_MODEL, TOKENIZER_MODEL):
        shutil.copyfile(shared["tokenizer"], repo / model / "1" / shared["tokenizer"].name)
    shutil.copyfile(shared["backend"], tokenizer_backend.library_path(repo))
    version_dir = repo / ENCODER_MODEL / "1"
    if args.format in ("onnx", "all"):
        log.info("onnx: %s", export_onnx(loaded.model, version_dir / ONNX_FILE, opset=args.opset))
    if args.format in ("torchscript", "all"):
        path = export_torchscript(loaded.model, version_dir / TORCHSCRIPT_FILE, device=args.torchscript_device)
        log.info("torchscript: %s", path)
    device = "cuda" if args.torchscript_device == "cpu" else args.torchscript_device
    if args.fp16:
        path = export_packed(loaded.model, version_dir / TORCHSCRIPT_FP16_FILE, device=device)
        log.info("torchscript fp16: %s", path)

    dim = int(loaded.model.text_projection.out_features)
    # image_size: the vision tower's input side, None when the checkpoint has none (texts only)
    info: dict = {
        "weights": loaded.weights,
        "checkpoint": loaded.source,
        "dim": dim,
        "image_size": vision.image_size if vision else None,
    }
    if loaded.weights == RANDOM_INIT:
        loaded.model.save_pretrained(reference_dir)
        info["reference_checkpoint"] = str(reference_dir.resolve())
    else:
        info["reference_checkpoint"] = checkpoint
    build_info_path(repo).write_text(json.dumps(info, indent=2) + "\n")
    stamps = {WEIGHTS_PARAMETER: loaded.weights, CHECKPOINT_PARAMETER: loaded.source}
    stamp_parameters(repo / ENCODER_MODEL / "config.pbtxt", stamps)
    stamp_parameters(repo / ENSEMBLE_MODEL / "config.pbtxt", {**stamps, SIBLINGS_PARAMETER: siblings})
    stamp_dims(repo / ENCODER_MODEL / "config.pbtxt", EMBEDS_TENSOR, [dim])
    stamp_dims(repo / ENSEMBLE_MODEL / "config.pbtxt", EMBEDDING_OUTPUT, [dim])
    variants = write_variants(args.source.resolve(), repo, layout)
    if vision is None:
        for model in IMAGE_MODELS:
            shutil.rmtree(repo / model, ignore_errors=True)
        log.info("%s: texts only, no %s (it has no vision tower)", checkpoint, IMAGE_ENSEMBLE_MODEL)
    else:
        write_image_side(repo, vision, stamps, siblings, args, device if args.fp16 else None)
        log.info("%s: images at %d pixels, %d-d embeddings", checkpoint, vision.image_size, vision.dim)
    log.info("config variants: %d files (configs/*.pbtxt)", len(variants))
    log.info("%s: weights=%s (%s), %d-d embeddings", checkpoint, loaded.weights, loaded.source, dim)
    if loaded.weights == RANDOM_INIT:
        log.warning("RANDOM-INIT WEIGHTS: this repository serves meaningless embeddings (see above)")


def write_image_side(
    repo: Path, vision, stamps: dict[str, str], siblings: str, args: argparse.Namespace, fp16_device: str | None
) -> None:
    """The image models' artifacts and stamps: the vision tower's model.onnx (and on `fp16_device`,
    model_fp16.pt with its GPU variant), the checkpoint's preprocessing beside the preprocess
    model, and the dims the checkpoint decides."""
    from .encoder.image_tower import export_fp16, export_onnx

    version_dir = repo / IMAGE_ENCODER_MODEL / "1"
    log.info("image onnx: %s", export_onnx(vision, version_dir / ONNX_FILE, opset=args.opset))
    if fp16_device is not None:
        log.info("image torchscript fp16: %s", export_fp16(vision, version_dir / TORCHSCRIPT_FP16_FILE, fp16_device))
    (repo / IMAGE_PREPROCESS_MODEL / "1" / PREPROCESSOR_FILE).write_text(json.dumps(vision.preprocessor, indent=2))
    pixels = [3, vision.image_size, vision.image_size]
    stamp_dims(repo / IMAGE_PREPROCESS_MODEL / "config.pbtxt", PIXELS_TENSOR, pixels)
    stamp_dims(repo / IMAGE_ENCODER_MODEL / "config.pbtxt", PIXELS_TENSOR, pixels)
    stamp_dims(repo / IMAGE_ENCODER_MODEL / "config.pbtxt", IMAGE_EMBEDS_TENSOR, [vision.dim])
    stamp_dims(repo / IMAGE_ENSEMBLE_MODEL / "config.pbtxt", EMBEDDING_OUTPUT, [vision.dim])
    stamp_parameters(repo / IMAGE_ENCODER_MODEL / "config.pbtxt", stamps)
    stamp_parameters(repo / IMAGE_ENSEMBLE_MODEL / "config.pbtxt", {**stamps, SIBLINGS_PARAMETER: siblings})
    write_image_variants(args.source.resolve(), repo)


if __name__ == "__main__":
    sys.exit(main())
