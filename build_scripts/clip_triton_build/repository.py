"""The servable repository, assembled from the hand-written source one.

`model_repository/` (tracked) holds what people write: each model's config.pbtxt and the
tokenizer's model.py. The build never touches it. It writes a complete repository elsewhere
(`build/model_repository/` by default, `/models` in the compose build image): a copy of the source,
the exported artifacts, the build facts stamped into the encoder's config, and the config variants
Triton selects with `--model-config-name=NAME` (`configs/NAME.pbtxt`). The variants are derived
from `clip_text_encoder/config.pbtxt`, so a change to it (batch size, batching delay, parameters)
reaches every variant; a variant is written only when the file it serves was built.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clip_triton_contract.names import (
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    IMAGE_ENCODER_MODEL,
    IMAGE_PREPROCESS_MODEL,
    MODELS,
    PIXELS_TENSOR,
    PYTHON_TOKENIZER_MODEL,
    TOKENIZER_MODEL,
    model_names,
)

from .spec import (
    BUILD_INFO_FILE,
    CUDA_OPS_LIBRARY,
    ONNX_FILE,
    PREPROCESSOR_FILE,
    TOKENIZER_BACKEND_LIBRARY,
    TOKENIZER_FILE,
    TORCHSCRIPT_FILE,
    TORCHSCRIPT_FP16_FILE,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_REPOSITORY = REPO_ROOT / "model_repository"  # hand-written, tracked
BUILT_REPOSITORY = REPO_ROOT / "build" / "model_repository"  # what the build writes and Triton serves
BUILT_MARKER = ".clip_triton_build"  # in a built repository's root (Triton reads only its folders)
BUILT_FILES = (
    TOKENIZER_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    TORCHSCRIPT_FP16_FILE,
    BUILD_INFO_FILE,
    TOKENIZER_BACKEND_LIBRARY,
    PREPROCESSOR_FILE,
)

# name -> (backend, default_model_filename, instance kind or None to keep the source's)
ENCODER_VARIANTS = {
    "cpu": ("onnxruntime", ONNX_FILE, mc.ModelInstanceGroup.KIND_CPU),
    "torchscript": ("pytorch", TORCHSCRIPT_FILE, None),
    "torchscript_cpu": ("pytorch", TORCHSCRIPT_FILE, mc.ModelInstanceGroup.KIND_CPU),
    "torchscript_fp16": ("pytorch", TORCHSCRIPT_FP16_FILE, None),  # model_fp16.pt: builds with --fp16
    "tensorrt_fp16": ("onnxruntime", ONNX_FILE, None),  # + ONNX Runtime's TensorRT accelerator, below
}
TRT_ENGINE_CACHE = "/trt-cache"  # a volume in docker-compose.yml: engines survive restarts


def add_tensorrt_fp16(config: mc.ModelConfig) -> None:
    """ONNX Runtime's TensorRT execution accelerator in FP16, engine cache on a volume, one
    optimisation profile covering 1..max_batch_size rows of context-length ids. Check FP16
    against FP32 before trusting it: python -m clip_triton_ops.verify (cosine >= 0.999)."""
    name, dims = config.input[0].name, "x".join(str(d) for d in config.input[0].dims)
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
    accelerator.name = "tensorrt"
    settings = {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(4 << 30),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": TRT_ENGINE_CACHE,
        "trt_profile_min_shapes": f"{name}:1x{dims}",
        "trt_profile_opt_shapes": f"{name}:{max(1, config.max_batch_size // 4)}x{dims}",
        "trt_profile_max_shapes": f"{name}:{config.max_batch_size}x{dims}",
    }
    for key, value in settings.items():
        accelerator.parameters[key] = value


# ONNX Runtime on the CPU: every session of the server shares one intra-op thread pool of a thread
# per physical core, set where the server starts (`--backend-config=` ORT_SERVER_CONFIG: the
# local runtime and docker/server/start.sh pass it), so a built repository fits whatever host
# serves it and N instances never oversubscribe the cores. Per-session thread counts are then
# ignored, so the variant sets none. Sequential execution: a transformer is one chain of ops,
# parallel within each op, not across them.
ORT_SERVER_CONFIG = "onnxruntime,enable-global-threadpool=1"
ORT_CPU_PARAMETERS = {"execution_mode": "0"}
ORT_GRAPH_LEVEL_ALL = 0  # Triton's `optimization.graph.level`: 0 = ORT_ENABLE_ALL (-1 basic, 1 extended, 2 off)


def add_onnxruntime_cpu_settings(config: mc.ModelConfig) -> None:
    for key, value in ORT_CPU_PARAMETERS.items():
        config.parameters[key].string_value = value
    config.optimization.graph.level = ORT_GRAPH_LEVEL_ALL


# A model folder's `variants/` holds partial configs the build applies to some variants (they
# are not copied into the built repository): `gpu.pbtxt`, the settings of a GPU host, applied to
# the GPU TorchScript variants of every model that has one. The numbers and their reasons live
# there, in the config language Triton reads.
VARIANTS_FOLDER = "variants"
GPU_TUNING = "gpu.pbtxt"
# Every variant NAME gets a twin NAME + this suffix whose ensemble's first step is the Python
# tokenizer instead of the C++ one (which then stays idle): the pipeline as a Python-backend
# tokenizer chained into the encoder, served by `--model-config-name`.
PYTHON_FIRST_SUFFIX = "_python_tokenizer"


def serves_gpu_torchscript(backend: str, kind) -> bool:
    """The variants a model's variants/gpu.pbtxt tunes: libtorch, with the source's (GPU) kind."""
    return backend == "pytorch" and kind is None


def read_tuning(model_dir: Path, name: str = GPU_TUNING) -> str | None:
    """A source model folder's partial config `variants/NAME` (protobuf text, checked), or None
    when it has none."""
    path = model_dir / VARIANTS_FOLDER / name
    if not path.is_file():
        return None
    text = path.read_text()
    text_format.Parse(text, mc.ModelConfig())
    return text


def apply_tuning(config: mc.ModelConfig, tuning: str) -> None:
    """Every field the partial config `tuning` sets replaces `config`'s, a zero included (parsing
    it into `config` sets what it names; a protobuf merge would skip proto3 zeros); its instance
    groups set what they name of the group at their index instead of adding groups."""
    groups = list(config.instance_group)
    text_format.Merge(tuning, config)
    del config.instance_group[:]
    config.instance_group.extend(groups)
    for index, group in enumerate(text_format.Parse(tuning, mc.ModelConfig()).instance_group):
        config.instance_group[index].MergeFrom(group)


class NotABuiltRepository(RuntimeError):
    """The build was pointed at a folder it did not write; it never deletes those."""


def start_repository(source: Path, output: Path, copy_source: bool = True) -> None:
    """Make `output` a fresh copy of `source`'s hand-written files (configs, model.py), ready for
    the artifacts (only emptied and marked if not `copy_source`). An existing `output` is emptied
    first, if it is empty or the build wrote it."""
    source, output = source.resolve(), output.resolve()
    if output == source or source in output.parents:
        raise NotABuiltRepository(f"{output}: the build writes outside the source repository {source}")
    if output.exists():
        written_by_build = (output / BUILT_MARKER).is_file() or build_info_path(output).is_file()  # or older builds
        if any(output.iterdir()) and not written_by_build:
            raise NotABuiltRepository(
                f"{output} is not empty and was not written by the build: remove it or pick another --output"
            )
        for entry in output.iterdir():  # keep `output` itself: it may be a mounted volume
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    output.mkdir(parents=True, exist_ok=True)
    (output / BUILT_MARKER).write_text("written by python -m clip_triton_build; the next build replaces this folder\n")
    if not copy_source:
        return
    # artifacts a source checkout may still hold from older builds are never copied as if fresh
    ignore = shutil.ignore_patterns("__pycache__", ".gitkeep", "configs", VARIANTS_FOLDER, *BUILT_FILES)
    for model_dir in sorted(p for p in source.iterdir() if (p / "config.pbtxt").is_file()):
        shutil.copytree(model_dir, output / model_dir.name, ignore=ignore)


def build_info_path(repository: Path = BUILT_REPOSITORY, name: str | None = None) -> Path:
    """The build facts of the checkpoint called `name` (spec.model_names) in `repository`."""
    return Path(repository) / model_names(name)[ENCODER_MODEL] / "1" / BUILD_INFO_FILE


def cuda_ops_library(repository: Path = BUILT_REPOSITORY) -> Path:
    """Where a GPU build (--fp16) writes the ops every model_fp16.pt in the repository calls."""
    return Path(repository) / CUDA_OPS_LIBRARY


def read_build_info(repository: Path = BUILT_REPOSITORY, name: str | None = None) -> dict:
    """What the build loaded for the checkpoint called `name` (weights, checkpoint,
    reference_checkpoint, dim); FileNotFoundError when the repository was never built."""
    return json.loads(build_info_path(repository, name).read_text())


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


class UnknownName(ValueError):
    """A name given to a command names nothing in the repository: the message lists what does."""


def ensembles(repository: Path) -> list[str]:
    """The CLIP ensembles a built repository serves (one per checkpoint), by folder name."""
    names = []
    for config in sorted(Path(repository).glob("*/config.pbtxt")):
        if read_config(config).platform == "ensemble":
            names.append(config.parent.name)
    return names


def config_variants(repository: Path) -> list[str]:
    """The config variants a built repository holds (Triton's --model-config-name): every
    configs/NAME.pbtxt of its models."""
    return sorted({path.stem for path in Path(repository).glob("*/configs/*.pbtxt")})


def check_variant(repository: Path, variant: str | None) -> None:
    """Refuse a variant the repository lacks: Triton would serve config.pbtxt in its place, unsaid."""
    if variant and variant not in (known := config_variants(repository)):
        raise UnknownName(
            f"unknown config variant {variant!r}: {repository} has {', '.join(known) or 'none'} "
            "(or none: each model's config.pbtxt)"
        )


def check_ensemble(repository: Path, name: str) -> None:
    """Refuse a checkpoint's ensemble the repository does not serve."""
    if not (Path(repository) / name / "config.pbtxt").is_file():
        raise UnknownName(f"unknown model {name!r}: {repository} serves {', '.join(ensembles(repository)) or 'none'}")


def stamp_parameters(config_path: Path, values: dict[str, str]) -> None:
    """Set existing string parameters in place, keeping the file's comments and layout."""
    text = config_path.read_text()
    for key, value in values.items():
        pattern = re.compile(
            r'(parameters\s*\{\s*key:\s*"%s"\s*value:?\s*\{\s*string_value:\s*)"(?:[^"\\]|\\.)*"' % re.escape(key)
        )
        text, count = pattern.subn(lambda m: m.group(1) + json.dumps(value), text)
        if count != 1:
            raise ValueError(f"{config_path} must declare parameter {key!r} exactly once")
    config_path.write_text(text)
    read_config(config_path)  # still valid protobuf text


def stamp_dims(config_path: Path, name: str, dims: list[int]) -> None:
    """Set the dims of the config's input or output `name` in place, keeping the file's comments and
    layout: what the hand-written configs cannot know (the checkpoint's projection_dim, its image size)."""
    text = config_path.read_text()
    config = read_config(config_path)
    if [t.name for t in (*config.input, *config.output)].count(name) != 1:
        raise ValueError(f"{config_path} must declare tensor {name!r} exactly once")
    pattern = re.compile(r'(name:\s*"' + re.escape(name) + r'"[^}]*?dims:\s*\[)[^\]]*(\])', re.S)
    text, count = pattern.subn(lambda m: m.group(1) + " " + ", ".join(map(str, dims)) + " " + m.group(2), text)
    config_path.write_text(text)
    config = read_config(config_path)
    stamped = {t.name: list(t.dims) for t in (*config.input, *config.output)}
    if count != 1 or stamped[name] != list(dims):
        raise ValueError(f"{config_path}: could not set {name!r}'s dims to {dims}")


def _write_variant(path: Path, config: mc.ModelConfig, how: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        f"# Derived from ../config.pbtxt by `python -m clip_triton_build` (variant {path.stem!r}{how}); do not edit.\n"
        f"# Served with: tritonserver --model-config-name={path.stem}\n" + text_format.MessageToString(config)
    )
    return path


def encoder_variant(source: mc.ModelConfig, name: str, tuning: str | None) -> mc.ModelConfig:
    """The encoder's config for variant `name` (ENCODER_VARIANTS), from its config.pbtxt."""
    backend, filename, kind = ENCODER_VARIANTS[name]
    config = mc.ModelConfig()
    config.CopyFrom(source)
    config.backend = backend
    config.default_model_filename = filename
    if kind is not None:
        for group in config.instance_group:
            group.kind = kind
            del group.gpus[:]
    if name == "tensorrt_fp16":
        add_tensorrt_fp16(config)
    if name == "cpu":
        add_onnxruntime_cpu_settings(config)
    if backend == "pytorch":
        # TorchScript's profiling executor re-specialises for every new input shape; the encoder
        # sees a new sequence length with almost every batch (it trims to the longest text), so
        # optimised execution costs far more than it gains here.
        config.parameters["DISABLE_OPTIMIZED_EXECUTION"].string_value = "true"
        if tuning is not None and serves_gpu_torchscript(backend, kind):
            apply_tuning(config, tuning)
    return config


def with_layout(config: mc.ModelConfig, layout: tuple[int, int]) -> None:
    """An encoder layout (rows per execution, instances per GPU) over a config's own: its first
    instance group's count, and max_batch_size, which must hold the ensemble's largest request."""
    rows, instances = layout
    if rows < 1 or instances < 1:
        raise ValueError(f"an encoder layout needs at least 1 row and 1 instance, not {rows}x{instances}")
    config.max_batch_size = rows
    config.instance_group[0].count = instances


def write_variants(source: Path, repository: Path, encoder_layout: tuple[int, int] | None = None) -> list[Path]:
    """configs/NAME.pbtxt of every model, for each encoder variant whose model file was built:
    the encoder's (`encoder_variant`), each other model's where its variants/gpu.pbtxt tunes a GPU
    variant, and the Python-first twin of each (PYTHON_FIRST_SUFFIX). `--model-config-name`
    applies to every model, so a GPU variant's tokenizer instances come with the encoder's.
    `encoder_layout` (rows, instances) replaces variants/gpu.pbtxt's in the GPU variants' encoder."""
    encoder_dir = repository / ENCODER_MODEL
    encoder = read_config(encoder_dir / "config.pbtxt")
    names = [n for n, (_, filename, _) in ENCODER_VARIANTS.items() if (encoder_dir / "1" / filename).is_file()]
    tunings = {model: read_tuning(source / model) for model in MODELS}
    python_first = read_config(repository / ENSEMBLE_MODEL / "config.pbtxt")
    for step in python_first.ensemble_scheduling.step:
        if step.model_name == TOKENIZER_MODEL:
            step.model_name = PYTHON_TOKENIZER_MODEL
    written = []
    for name in names:
        backend, _, kind = ENCODER_VARIANTS[name]
        gpu = serves_gpu_torchscript(backend, kind)
        configs = {ENCODER_MODEL: encoder_variant(encoder, name, tunings[ENCODER_MODEL])}
        if gpu and encoder_layout is not None:
            with_layout(configs[ENCODER_MODEL], encoder_layout)
        for model in (TOKENIZER_MODEL, PYTHON_TOKENIZER_MODEL):
            tuning = tunings[model]
            if gpu and tuning is not None:
                configs[model] = read_config(repository / model / "config.pbtxt")
                apply_tuning(configs[model], tuning)
        how = {m: f", tuned by model_repository/{m}/{VARIANTS_FOLDER}/{GPU_TUNING}" if gpu else "" for m in configs}
        if gpu and encoder_layout is not None:
            how[ENCODER_MODEL] += ", layout {}x{} (--encoder-layout)".format(*encoder_layout)
        for model, config in configs.items():
            written.append(_write_variant(repository / model / "configs" / f"{name}.pbtxt", config, how[model]))
        # the twin: every config of this variant, and the ensemble's first step the Python tokenizer
        configs[ENSEMBLE_MODEL], how[ENSEMBLE_MODEL] = python_first, ""
        twin = f"{name}{PYTHON_FIRST_SUFFIX}"
        for model, config in configs.items():
            path = repository / model / "configs" / f"{twin}.pbtxt"
            written.append(_write_variant(path, config, f"{how[model]}, Python tokenizer first"))
    return written


# The image models on a GPU host: the GPU TorchScript fp16 variant (and its Python-first twin)
# serves them on the card, decoded, preprocessed and encoded there, wherever the build exported the
# vision tower's model_fp16.pt (--fp16). Every other variant serves them from config.pbtxt: Pillow
# and ONNX Runtime on the CPU.
IMAGE_GPU_VARIANT = "torchscript_fp16"
# Pixels cross from the preprocessing to the tower in fp16 on the card: half the bytes of fp32,
# and the tower's first op (the patch convolution) computes in fp16 anyway.
IMAGE_GPU_PIXELS = mc.TYPE_FP16
# Triton's CUDA memory pool per GPU (--cuda-memory-pool-byte-size) where the image GPU variant is
# served: it holds the pixels between the preprocessing and the tower, every request's from its
# preprocessing until its batch runs. Triton's default (64 MB) held four requests of 64 images at
# 224 pixels; past it Triton hands the Python backend a host buffer, which the 24.10 stub cannot
# fill from the card, and the request fails. 2 GB holds ~7,000 images at 224 pixels (~3,000 at 336).
IMAGE_GPU_POOL_BYTES = 2 << 30


def write_image_variants(source: Path, repository: Path) -> list[Path]:
    """configs/IMAGE_GPU_VARIANT.pbtxt (and its twin) of the image preprocessing and encoder, each
    its config.pbtxt tuned by its variants/gpu.pbtxt: the libtorch backend serving model_fp16.pt,
    the preprocessing on KIND_GPU instances (1/model.py's GPU path), fp16 pixels between them.
    None where the build exported no model_fp16.pt for the vision tower."""
    encoder_dir = repository / IMAGE_ENCODER_MODEL
    if not (encoder_dir / "1" / TORCHSCRIPT_FP16_FILE).is_file():
        return []
    configs = {}
    for model in (IMAGE_PREPROCESS_MODEL, IMAGE_ENCODER_MODEL):
        config = read_config(repository / model / "config.pbtxt")
        tuning = read_tuning(source / model)
        if tuning is None:
            path = source / model / VARIANTS_FOLDER / GPU_TUNING
            raise FileNotFoundError(f"{path} is missing: the image GPU variant's settings")
        apply_tuning(config, tuning)
        for tensor in (*config.input, *config.output):
            if tensor.name == PIXELS_TENSOR:
                tensor.data_type = IMAGE_GPU_PIXELS
        configs[model] = config
    encoder = configs[IMAGE_ENCODER_MODEL]
    encoder.backend, encoder.default_model_filename = "pytorch", TORCHSCRIPT_FP16_FILE
    # as the text encoder's (encoder_variant): no re-specialising for every new batch size
    encoder.parameters["DISABLE_OPTIMIZED_EXECUTION"].string_value = "true"
    how = {m: f", tuned by model_repository/{m}/{VARIANTS_FOLDER}/{GPU_TUNING}" for m in configs}
    written = []
    for name, twin in ((IMAGE_GPU_VARIANT, ""), (IMAGE_GPU_VARIANT + PYTHON_FIRST_SUFFIX, ", Python tokenizer first")):
        for model, config in configs.items():
            written.append(_write_variant(repository / model / "configs" / f"{name}.pbtxt", config, how[model] + twin))
    return written
