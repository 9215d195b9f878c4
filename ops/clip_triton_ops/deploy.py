"""Load (or unload) a checkpoint's CLIP models (its text models, and its image models where it was
built with a vision tower) on a running Triton through its repository API, with per-deployment
instance counts and GPU ids, without editing any committed file.

For servers started with `--model-control-mode=explicit` (a shared fleet: other teams' models
live beside these). Each model's config is read from the repository (the `--variant`'s
`configs/NAME.pbtxt` where present, else `config.pbtxt`), its instance groups are rewritten,
and it is loaded with that config as Triton's `config` override.

    python -m clip_triton_ops.deploy --url 127.0.0.1:8001 --variant torchscript --encoder-instances 2 --gpus 0,1
    python -m clip_triton_ops.deploy --url 127.0.0.1:8001 --model clip-vit-l14 --encoder-max-batch-size 256
    python -m clip_triton_ops.deploy --url 127.0.0.1:8001 --unload

`--model NAME` picks one checkpoint of a repository built with several (`--model NAME=...` of
clip_triton_build), so that each gets its own layout on a GPU they share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from clip_triton_build.repository import BUILT_REPOSITORY, UnknownName, check_ensemble, check_variant
from clip_triton_contract.access import header_arguments
from clip_triton_contract.names import (
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    IMAGE_ENCODER_MODEL,
    IMAGE_PREPROCESS_MODEL,
    LOAD_ORDER,
    TOKENIZER_MODEL,
    all_model_names,
    model_names,
)


def gpu_ids(text: str) -> list[int]:
    """--gpus 0,1 -> [0, 1] (an argparse type)."""
    return [int(g) for g in text.split(",")]


def add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """The instance layout every CLI that loads the models takes (what `deploy` applies)."""
    parser.add_argument("--encoder-instances", type=int, default=None, help="encoder instances (per GPU listed)")
    parser.add_argument("--gpus", type=gpu_ids, default=None, help="comma-separated GPU ids for the encoder, e.g. 0,1")
    parser.add_argument("--tokenizer-instances", type=int, default=None)
    parser.add_argument("--image-encoder-instances", type=int, default=None, help="vision tower instances")
    parser.add_argument(
        "--image-preprocess-instances", type=int, default=None, help="image decode and preprocess instances"
    )


def model_config(repository: Path, model: str, variant: str | None) -> mc.ModelConfig:
    path = repository / model / "configs" / f"{variant}.pbtxt" if variant else None
    if path is None or not path.is_file():
        path = repository / model / "config.pbtxt"
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def with_instances(config: mc.ModelConfig, count: int | None, gpus: list[int] | None) -> mc.ModelConfig:
    if count is None and gpus is None:
        return config
    if not config.instance_group:
        raise ValueError(f"{config.name} has no instance_group to rewrite")
    group = mc.ModelInstanceGroup()
    group.CopyFrom(config.instance_group[0])
    if count is not None:
        group.count = count
    if gpus is not None:
        if group.kind != mc.ModelInstanceGroup.KIND_GPU:
            raise ValueError(
                f"--gpus applies to KIND_GPU instances; {config.name} is {mc.ModelInstanceGroup.Kind.Name(group.kind)}"
            )
        del group.gpus[:]
        group.gpus.extend(gpus)  # `count` instances on EACH listed GPU
    del config.instance_group[:]
    config.instance_group.append(group)
    return config


def _client(url: str):
    import tritonclient.grpc as grpc

    return grpc.InferenceServerClient(url)


def deploy(
    url: str,
    repository: Path = BUILT_REPOSITORY,
    variant: str | None = None,
    encoder_instances: int | None = None,
    gpus: list[int] | None = None,
    tokenizer_instances: int | None = None,
    headers: dict | None = None,
    prefix: str = "",
    encoder_max_batch_size: int | None = None,
    encoder_queue_delay_us: int | None = None,
    model: str | None = None,
    image_encoder_instances: int | None = None,
    image_preprocess_instances: int | None = None,
) -> dict[str, str]:
    """Load (or reload) the models of checkpoint `model` (a name given to the build; None: the
    default's), its image models too where the repository has them; `prefix` for a namespaced
    repository (clip_triton_build.namespace). `gpus` places both encoders' instances where they
    run on GPUs. `encoder_max_batch_size` above the ensemble's lets the encoder's batcher join
    several requests; `encoder_queue_delay_us` is how long that batcher waits for more."""
    names = all_model_names(model)
    check_variant(repository, variant)  # before anything loads
    check_ensemble(repository, prefix + names[ENSEMBLE_MODEL])
    client = _client(url)
    counts = {
        TOKENIZER_MODEL: (tokenizer_instances, None),
        ENCODER_MODEL: (encoder_instances, gpus),
        IMAGE_PREPROCESS_MODEL: (image_preprocess_instances, None),
        IMAGE_ENCODER_MODEL: (image_encoder_instances, gpus),
    }
    loaded = {}
    try:
        for role in LOAD_ORDER:
            name = prefix + names[role]
            if not (repository / name / "config.pbtxt").is_file():
                continue  # a checkpoint built without a vision tower has no image models
            config = model_config(repository, name, variant)
            count, placed = counts.get(role, (None, None))
            if role == IMAGE_ENCODER_MODEL and config.instance_group[0].kind != mc.ModelInstanceGroup.KIND_GPU:
                placed = None  # the vision tower runs on the CPU in this variant: --gpus is the text tower's
            config = with_instances(config, count, placed)
            if role == ENCODER_MODEL and encoder_max_batch_size:
                config.max_batch_size = encoder_max_batch_size
            if role == ENCODER_MODEL and encoder_queue_delay_us is not None:
                config.dynamic_batching.max_queue_delay_microseconds = encoder_queue_delay_us
            config_json = json_format.MessageToJson(config, preserving_proto_field_name=True)
            client.load_model(name, headers=headers, config=config_json)
            loaded[name] = "ready" if client.is_model_ready(name, headers=headers) else "not ready"
    finally:
        client.close()
    return loaded


def unload(url: str, headers: dict | None = None, prefix: str = "", model: str | None = None) -> None:
    names = all_model_names(model)
    client = _client(url)
    try:
        for role in reversed(LOAD_ORDER):
            client.unload_model(prefix + names[role], headers=headers)  # one never loaded: a no-op
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clip_triton_ops.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    parser.add_argument(
        "--repository",
        type=Path,
        default=BUILT_REPOSITORY,
        help="local copy of the repository the server serves (configs are read from it)",
    )
    parser.add_argument("--variant", default=None, help="config variant: cpu, torchscript, torchscript_fp16, ...")
    add_instance_arguments(parser)
    parser.add_argument(
        "--encoder-max-batch-size",
        type=int,
        default=None,
        help="rows per encoder execution (above the ensemble's 256: the batcher joins requests)",
    )
    parser.add_argument("--prefix", default="", help="model name prefix of a namespaced repository")
    parser.add_argument("--model", default=None, help="checkpoint name in a repository built with several")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="request header, e.g. the repository API key (repeatable)",
    )
    parser.add_argument("--unload", action="store_true")
    args = parser.parse_args(argv)
    try:
        headers = header_arguments(args.header) or None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        check_variant(args.repository, args.variant)
        check_ensemble(args.repository, args.prefix + model_names(args.model)[ENSEMBLE_MODEL])
    except UnknownName as exc:
        parser.error(str(exc))
    if args.unload:
        unload(args.url, headers, args.prefix, args.model)
        print("unloaded", ", ".join(args.prefix + m for m in all_model_names(args.model).values()))
        return 0
    for name, state in deploy(
        args.url,
        args.repository,
        args.variant,
        args.encoder_instances,
        args.gpus,
        args.tokenizer_instances,
        headers,
        args.prefix,
        args.encoder_max_batch_size,
        model=args.model,
        image_encoder_instances=args.image_encoder_instances,
        image_preprocess_instances=args.image_preprocess_instances,
    ).items():
        print(f"{name}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
