"""Every config, hand-written or built, parses with Triton's own model-config protobuf; the
ensemble's wiring agrees; the numbers the configs repeat agree with clip_triton_build.spec (the one source
of truth); the build derives exactly what it should from the source."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clip_triton_build.repository import (
    BUILT_REPOSITORY,
    ENCODER_VARIANTS,
    IMAGE_GPU_VARIANT,
    PYTHON_FIRST_SUFFIX,
    SOURCE_REPOSITORY,
    read_config,
    read_tuning,
    serves_gpu_torchscript,
    write_image_variants,
    write_variants,
)
from clip_triton_build.spec import (
    EMBED_DIM,
    EOT_TOKEN,
    PAD_ID,
    SOT_TOKEN,
    TOKENIZER_BACKEND,
    TOKENIZER_FILE,
    TORCHSCRIPT_FP16_FILE,
)
from clip_triton_contract.names import (
    CONTEXT_LENGTH,
    EMBEDDING_OUTPUT,
    EMBEDS_TENSOR,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    FALLBACK_PARAMETER,
    FALLBACK_TIMEOUT_PARAMETER,
    IDS_TENSOR,
    IMAGE_EMBEDS_TENSOR,
    IMAGE_ENCODER_MODEL,
    IMAGE_ENSEMBLE_MODEL,
    IMAGE_INPUT,
    IMAGE_MODELS,
    IMAGE_PREPROCESS_MODEL,
    MODELS,
    PIXELS_TENSOR,
    PLAIN_SYMBOLS_PARAMETER,
    PYTHON_TOKENIZER_MODEL,
    TEXT_INPUT,
    TOKEN_COUNT_OUTPUT,
    TOKEN_COUNT_TENSOR,
    TOKENIZER_MODEL,
)
from clip_triton_contract.traffic import BULK, DEFAULT_CLASS, INTERACTIVE, PRIORITY_LEVELS

ALL_CONFIGS = [
    path
    for repository in (SOURCE_REPOSITORY, BUILT_REPOSITORY)
    for path in sorted(repository.glob("*/config.pbtxt")) + sorted(repository.glob("*/configs/*.pbtxt"))
]


def built_variants(model: str) -> set[str]:
    """The --model-config-name variants the build wrote for `model`, their Python-first twins aside."""
    names = {path.stem for path in (BUILT_REPOSITORY / model / "configs").glob("*.pbtxt")}
    return {name for name in names if not name.endswith(PYTHON_FIRST_SUFFIX)}


def configs():
    return {p.parent.name: read_config(p) for p in SOURCE_REPOSITORY.glob("*/config.pbtxt")}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(SOURCE_REPOSITORY.parent)))
def test_config_parses_and_names_its_folder(path):
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name


@pytest.mark.parametrize("name", [ENSEMBLE_MODEL, IMAGE_ENSEMBLE_MODEL])
def test_ensemble_wiring_agrees(name):
    cfg = configs()
    ensemble = cfg[name]
    tensors = {t.name: t for t in ensemble.input}  # name -> declaration, as data flows
    for step in ensemble.ensemble_scheduling.step:
        model = cfg[step.model_name]
        assert 0 < ensemble.max_batch_size <= model.max_batch_size
        inputs = {t.name: t for t in model.input}
        for model_input, ensemble_tensor in step.input_map.items():
            declared = tensors[ensemble_tensor]
            assert inputs[model_input].data_type == declared.data_type
            assert list(inputs[model_input].dims) == list(declared.dims)
        outputs = {t.name: t for t in model.output}
        for model_output, ensemble_tensor in step.output_map.items():
            tensors[ensemble_tensor] = outputs[model_output]
    for output in ensemble.output:
        assert tensors[output.name].data_type == output.data_type
        assert list(tensors[output.name].dims) == list(output.dims)


def test_names_agree_with_spec():
    cfg = configs()
    assert set(cfg) == {*MODELS, *IMAGE_MODELS} and all(cfg[name].name == name for name in cfg)
    tokenizer, encoder, ensemble = cfg[TOKENIZER_MODEL], cfg[ENCODER_MODEL], cfg[ENSEMBLE_MODEL]
    assert [t.name for t in ensemble.input] == [t.name for t in tokenizer.input] == [TEXT_INPUT]
    assert [t.name for t in ensemble.output] == [EMBEDDING_OUTPUT, TOKEN_COUNT_OUTPUT]
    assert [t.name for t in tokenizer.output] == [IDS_TENSOR, TOKEN_COUNT_TENSOR]
    assert [t.name for t in encoder.input] == [IDS_TENSOR]
    assert [t.name for t in encoder.output] == [EMBEDS_TENSOR]
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [TOKENIZER_MODEL, ENCODER_MODEL]
    images, preprocess, vision = cfg[IMAGE_ENSEMBLE_MODEL], cfg[IMAGE_PREPROCESS_MODEL], cfg[IMAGE_ENCODER_MODEL]
    assert [t.name for t in images.input] == [t.name for t in preprocess.input] == [IMAGE_INPUT]
    assert [t.name for t in images.output] == [EMBEDDING_OUTPUT]
    assert [t.name for t in preprocess.output] == [t.name for t in vision.input] == [PIXELS_TENSOR]
    assert [t.name for t in vision.output] == [IMAGE_EMBEDS_TENSOR]
    assert [step.model_name for step in images.ensemble_scheduling.step] == [
        IMAGE_PREPROCESS_MODEL,
        IMAGE_ENCODER_MODEL,
    ]


def test_the_clients_copies_of_the_service_facts_agree():
    from clip_triton_client.client import DEFAULT_MODEL, SERVER_CONTEXT_LENGTH
    from clip_triton_client.client import EMBEDDING_OUTPUT as CLIENT_EMBEDDING

    assert (DEFAULT_MODEL, SERVER_CONTEXT_LENGTH, CLIENT_EMBEDDING) == (
        ENSEMBLE_MODEL,
        CONTEXT_LENGTH,
        EMBEDDING_OUTPUT,
    )


def test_numbers_agree_with_spec():
    cfg = configs()
    tokenizer, encoder, ensemble = cfg[TOKENIZER_MODEL], cfg[ENCODER_MODEL], cfg[ENSEMBLE_MODEL]
    params = {k: v.string_value for k, v in tokenizer.parameters.items()}
    assert params["context_length"] == str(CONTEXT_LENGTH)
    assert (params["sot_token"], params["eot_token"], params["pad_id"]) == (SOT_TOKEN, EOT_TOKEN, str(PAD_ID))
    assert params["tokenizer_file"] == TOKENIZER_FILE
    assert list(tokenizer.output[0].dims) == [CONTEXT_LENGTH] == list(encoder.input[0].dims)
    assert list(encoder.output[0].dims) == [EMBED_DIM] == list(ensemble.output[0].dims)


def test_the_two_tokenizers_are_one_tokenizer_to_their_callers():
    """clip_tokenizer (C++) hands what it cannot clean to clip_tokenizer_python: same tensors, same
    limits and the same parameters, besides the fallback's name and deadline and the characters
    the C++ one cleans itself."""
    cfg = configs()
    cxx, python = cfg[TOKENIZER_MODEL], cfg[PYTHON_TOKENIZER_MODEL]
    assert (cxx.backend, python.backend) == (TOKENIZER_BACKEND, "python")
    assert cxx.parameters[FALLBACK_PARAMETER].string_value == PYTHON_TOKENIZER_MODEL
    assert (cxx.input, cxx.output, cxx.max_batch_size) == (python.input, python.output, python.max_batch_size)
    del cxx.parameters[FALLBACK_PARAMETER]
    del cxx.parameters[FALLBACK_TIMEOUT_PARAMETER]
    del cxx.parameters[PLAIN_SYMBOLS_PARAMETER]
    assert cxx.parameters == python.parameters


def test_batching_and_instances():
    cfg = configs()
    assert cfg[ENCODER_MODEL].HasField("dynamic_batching")
    # one request per Python execution: a malformed request must fail alone (config comment)
    assert not cfg[PYTHON_TOKENIZER_MODEL].HasField("dynamic_batching")
    assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg[ENCODER_MODEL].instance_group)
    for tokenizer in (TOKENIZER_MODEL, PYTHON_TOKENIZER_MODEL):
        assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in cfg[tokenizer].instance_group)


def test_every_encoder_config_serves_the_two_traffic_classes():
    """The source and every config the build writes (what compose, k8s, the fleet and the local
    runtime serve): interactive ahead of bulk (clip_triton_contract.traffic's levels), each class with
    a bounded queue and a timeout a client may shorten, and an interactive bound below
    max_batch_size, so that bulk keeps a share of every batch."""
    paths = [
        SOURCE_REPOSITORY / ENCODER_MODEL / "config.pbtxt",
        BUILT_REPOSITORY / ENCODER_MODEL / "config.pbtxt",
        *sorted((BUILT_REPOSITORY / ENCODER_MODEL / "configs").glob("*.pbtxt")),
    ]
    for path in paths:
        config = read_config(path)
        batching = config.dynamic_batching
        assert batching.priority_levels == len(PRIORITY_LEVELS), path
        assert batching.default_priority_level == PRIORITY_LEVELS[DEFAULT_CLASS], path
        assert set(batching.priority_queue_policy) == set(PRIORITY_LEVELS.values()), path
        for policy in batching.priority_queue_policy.values():
            assert policy.max_queue_size > 0 and policy.default_timeout_microseconds > 0, path
            assert policy.allow_timeout_override and policy.timeout_action == mc.ModelQueuePolicy.REJECT, path
        policies = {name: batching.priority_queue_policy[level] for name, level in PRIORITY_LEVELS.items()}
        assert policies[INTERACTIVE].max_queue_size < config.max_batch_size, path
        assert policies[INTERACTIVE].default_timeout_microseconds < policies[BULK].default_timeout_microseconds


def test_the_cxx_tokenizer_takes_interactive_requests_first_in_every_config():
    """The tokenizer queues too while its instances are busy: the same classes and default as the
    encoder, no bounds of its own (the encoder's hold), a client's deadline honoured. The Python
    tokenizer stays unbatched (its config says why) and takes requests as they come."""
    paths = [
        SOURCE_REPOSITORY / TOKENIZER_MODEL / "config.pbtxt",
        BUILT_REPOSITORY / TOKENIZER_MODEL / "config.pbtxt",
        *sorted((BUILT_REPOSITORY / TOKENIZER_MODEL / "configs").glob("*.pbtxt")),
    ]
    for path in paths:
        batching = read_config(path).dynamic_batching
        assert batching.priority_levels == len(PRIORITY_LEVELS), path
        assert batching.default_priority_level == PRIORITY_LEVELS[DEFAULT_CLASS], path
        assert batching.max_queue_delay_microseconds == 0, path
        assert batching.default_queue_policy.max_queue_size == 0, path
        assert batching.default_queue_policy.allow_timeout_override, path
    assert not read_config(SOURCE_REPOSITORY / PYTHON_TOKENIZER_MODEL / "config.pbtxt").HasField("dynamic_batching")


def test_the_build_writes_a_variant_for_each_model_file_it_built():
    """A CPU build exports model.onnx and model.pt, not model_fp16.pt (half precision needs CUDA):
    torchscript_fp16.pbtxt would point Triton at a missing file, so it is not written."""
    encoder = BUILT_REPOSITORY / ENCODER_MODEL
    built = {name for name, (_, filename, _) in ENCODER_VARIANTS.items() if (encoder / "1" / filename).is_file()}
    assert {"cpu", "torchscript", "torchscript_cpu", "tensorrt_fp16"} <= built
    assert built_variants(ENCODER_MODEL) == built


def test_variants_differ_from_the_source_only_where_intended():
    source = read_config(BUILT_REPOSITORY / ENCODER_MODEL / "config.pbtxt")
    for name in sorted(built_variants(ENCODER_MODEL)):
        backend, filename, kind = ENCODER_VARIANTS[name]
        variant = read_config(BUILT_REPOSITORY / ENCODER_MODEL / "configs" / f"{name}.pbtxt")
        assert (variant.backend, variant.default_model_filename) == (backend, filename)
        if kind is not None:
            assert all(g.kind == kind for g in variant.instance_group)
        for field in ("input", "output"):
            assert getattr(variant, field) == getattr(source, field), field
        for key, value in source.parameters.items():
            assert variant.parameters[key] == value, key
        if serves_gpu_torchscript(backend, kind):  # variants/gpu.pbtxt
            tuning = text_format.Parse(read_tuning(SOURCE_REPOSITORY / ENCODER_MODEL), mc.ModelConfig())
            assert variant.max_batch_size == tuning.max_batch_size == 256
            assert [g.count for g in variant.instance_group] == [g.count for g in tuning.instance_group] == [3]
            assert source.dynamic_batching.max_queue_delay_microseconds > 0  # the CPU variants' delay
            assert variant.dynamic_batching.max_queue_delay_microseconds == 0  # a zero that must win
        else:
            assert variant.max_batch_size == source.max_batch_size
            assert variant.dynamic_batching == source.dynamic_batching


def is_gpu_variant(name: str) -> bool:
    backend, _, kind = ENCODER_VARIANTS[name]
    return serves_gpu_torchscript(backend, kind)


def test_gpu_variants_bring_their_tokenizer_instances():
    """`--model-config-name` applies to every model: a GPU variant's tokenizer config comes along."""
    gpu_variants = {name for name in built_variants(ENCODER_MODEL) if is_gpu_variant(name)}
    assert "torchscript" in gpu_variants
    instances = {
        model: [
            g.count for g in text_format.Parse(read_tuning(SOURCE_REPOSITORY / model), mc.ModelConfig()).instance_group
        ]
        for model in (TOKENIZER_MODEL, PYTHON_TOKENIZER_MODEL)
    }
    assert instances == {TOKENIZER_MODEL: [4], PYTHON_TOKENIZER_MODEL: [8]}
    for tokenizer, name in ((t, n) for t in instances for n in sorted(gpu_variants)):
        assert built_variants(tokenizer) == gpu_variants
        source = read_config(SOURCE_REPOSITORY / tokenizer / "config.pbtxt")
        variant = read_config(BUILT_REPOSITORY / tokenizer / "configs" / f"{name}.pbtxt")
        assert [g.count for g in variant.instance_group] == instances[tokenizer]
        variant.ClearField("instance_group")
        expected = type(source)()
        expected.CopyFrom(source)
        expected.ClearField("instance_group")
        assert variant == expected  # nothing else differs: still no dynamic batching


def test_the_built_configs_are_the_source_with_what_the_build_loaded_stamped_in():
    """The served encoder and ensemble configs say what the last build loaded (build_info.json
    exists only after a build) and its embedding size; apart from those stamps, every built
    config.pbtxt is its source."""
    from helpers import build_info

    info = build_info()
    assert info["weights"] in ("pretrained", "random-init")
    stamps = {"weights": info["weights"], "checkpoint": info["checkpoint"]}
    for source_path in sorted(SOURCE_REPOSITORY.glob("*/config.pbtxt")):
        expected = read_config(source_path)
        if expected.name in IMAGE_MODELS and info.get("image_size") is None:  # a checkpoint without a vision tower
            assert not (BUILT_REPOSITORY / expected.name).exists()
            continue
        if expected.name in IMAGE_MODELS:
            continue  # the image side's stamps: tests/integration/test_images.py
        if expected.name in (ENCODER_MODEL, ENSEMBLE_MODEL):
            assert expected.parameters["weights"].string_value == ""  # the source is never served
            for key, value in {
                **stamps,
                **({"models": ENSEMBLE_MODEL} if expected.name == ENSEMBLE_MODEL else {}),
            }.items():
                expected.parameters[key].string_value = value
            expected.output[0].dims[:] = [info["dim"]]
        assert read_config(BUILT_REPOSITORY / expected.name / "config.pbtxt") == expected


def test_every_variant_has_a_twin_whose_first_step_is_the_python_tokenizer():
    """The pipeline as a Python-backend tokenizer chained into the encoder: NAME_python_tokenizer
    is NAME for every model, but the ensemble's first step is clip_tokenizer_python."""
    ensemble = read_config(BUILT_REPOSITORY / ENSEMBLE_MODEL / "config.pbtxt")
    for name in sorted(built_variants(ENCODER_MODEL)):
        twin = f"{name}{PYTHON_FIRST_SUFFIX}"
        for model in (ENCODER_MODEL, TOKENIZER_MODEL, PYTHON_TOKENIZER_MODEL):
            path = BUILT_REPOSITORY / model / "configs"
            if (path / f"{name}.pbtxt").is_file():
                assert read_config(path / f"{twin}.pbtxt") == read_config(path / f"{name}.pbtxt"), (model, name)
        first = read_config(BUILT_REPOSITORY / ENSEMBLE_MODEL / "configs" / f"{twin}.pbtxt")
        assert [step.model_name for step in first.ensemble_scheduling.step] == [
            PYTHON_TOKENIZER_MODEL if step.model_name == TOKENIZER_MODEL else step.model_name
            for step in ensemble.ensemble_scheduling.step
        ]
        first.ClearField("ensemble_scheduling")
        ensemble_rest = type(ensemble)()
        ensemble_rest.CopyFrom(ensemble)
        ensemble_rest.ClearField("ensemble_scheduling")
        assert first == ensemble_rest


def test_each_variant_file_says_what_it_is_and_what_tuned_it():
    """The header a Triton engineer reads first: the variant's name, and for a GPU variant the
    hand-written file its settings come from."""
    for path in sorted(BUILT_REPOSITORY.glob("*/configs/*.pbtxt")):
        header = path.read_text().splitlines()[0]
        variant = path.stem.removesuffix(PYTHON_FIRST_SUFFIX)
        assert header.startswith(
            f"# Derived from ../config.pbtxt by `python -m clip_triton_build` (variant {path.stem!r}"
        )
        tuned = is_gpu_variant(variant) and path.parent.parent.name != ENSEMBLE_MODEL
        tuning = f"tuned by model_repository/{path.parent.parent.name}/variants/gpu.pbtxt"
        assert (tuning in header) == tuned, header
        assert ("Python tokenizer first" in header) == path.stem.endswith(PYTHON_FIRST_SUFFIX), header
        assert "{" not in header, header


def test_an_encoder_layout_replaces_the_gpu_tuning_in_the_gpu_variants_only(tmp_path):
    """--encoder-layout (how checkpoints sharing a GPU split it, docs/deploy.md): the GPU variants'
    encoder and their twins get its rows and instances; every other config stays the default's."""
    for config in BUILT_REPOSITORY.glob("*/config.pbtxt"):
        (tmp_path / config.parent.name / "1").mkdir(parents=True)
        (tmp_path / config.parent.name / "config.pbtxt").write_text(config.read_text())
    for _, filename, _ in ENCODER_VARIANTS.values():  # write_variants looks only at which files exist
        (tmp_path / ENCODER_MODEL / "1" / filename).touch()
    written = write_variants(SOURCE_REPOSITORY, tmp_path, (1024, 2))
    laid_out = 0
    for path in written:
        config = read_config(path)
        variant = path.stem.removesuffix(PYTHON_FIRST_SUFFIX)
        if path.parent.parent.name == ENCODER_MODEL and is_gpu_variant(variant):
            assert (config.max_batch_size, [g.count for g in config.instance_group]) == (1024, [2]), path
            assert "layout 1024x2 (--encoder-layout)" in path.read_text()
            laid_out += 1
        elif variant != "torchscript_fp16":  # the CPU build this compares with has no fp16 export
            assert config == read_config(BUILT_REPOSITORY / path.relative_to(tmp_path)), path
    assert laid_out == 4  # torchscript and torchscript_fp16, each with its twin


def test_the_build_takes_encoder_layouts_per_checkpoint_and_refuses_what_cannot_load():
    from clip_triton_build.__main__ import encoder_layout, parse_args

    assert encoder_layout("l14=256x1") == ("l14", (256, 1))
    assert encoder_layout("1024x3") == (None, (1024, 3))
    args = parse_args(
        ["--model", "b32=x", "--model", "l14=y", "--encoder-layout", "1024x3", "--encoder-layout", "l14=256x1"]
    )
    assert args.encoder_layouts == {None: (1024, 3), "l14": (256, 1)}
    for wrong in (["--encoder-layout", "128x3"], ["--model", "b32=x", "--encoder-layout", "h14=256x1"]):
        with pytest.raises(SystemExit):
            parse_args(wrong)  # below the ensemble's 256 texts (Triton would refuse to load it); no such model
    for malformed in ("256", "0x3", "256x", "a b=256x1"):
        with pytest.raises(Exception, match="ROWSxINSTANCES"):
            encoder_layout(malformed)


def test_the_image_gpu_variant_keeps_decode_preprocessing_and_tower_on_the_card(tmp_path):
    """Where the build exported the vision tower's model_fp16.pt, the GPU variant (and its twin)
    serves it through libtorch on KIND_GPU instances, preprocesses on KIND_GPU instances (model.py's
    GPU path) and hands fp16 pixels between them; without that file no image variant is written
    (those models then serve from config.pbtxt, on the CPU)."""
    for model in (IMAGE_PREPROCESS_MODEL, IMAGE_ENCODER_MODEL):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "config.pbtxt").write_text((BUILT_REPOSITORY / model / "config.pbtxt").read_text())
    assert write_image_variants(SOURCE_REPOSITORY, tmp_path) == []
    (tmp_path / IMAGE_ENCODER_MODEL / "1" / TORCHSCRIPT_FP16_FILE).touch()
    written = write_image_variants(SOURCE_REPOSITORY, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        f"{model}/configs/{name}.pbtxt"
        for model in (IMAGE_PREPROCESS_MODEL, IMAGE_ENCODER_MODEL)
        for name in (IMAGE_GPU_VARIANT, IMAGE_GPU_VARIANT + PYTHON_FIRST_SUFFIX)
    )
    preprocess = read_config(tmp_path / IMAGE_PREPROCESS_MODEL / "configs" / f"{IMAGE_GPU_VARIANT}.pbtxt")
    encoder = read_config(tmp_path / IMAGE_ENCODER_MODEL / "configs" / f"{IMAGE_GPU_VARIANT}.pbtxt")
    source_encoder = read_config(BUILT_REPOSITORY / IMAGE_ENCODER_MODEL / "config.pbtxt")
    assert (encoder.backend, encoder.default_model_filename) == ("pytorch", TORCHSCRIPT_FP16_FILE)
    assert encoder.parameters["DISABLE_OPTIMIZED_EXECUTION"].string_value == "true"
    assert encoder.max_batch_size == source_encoder.max_batch_size  # one request's images a batch
    assert encoder.dynamic_batching.max_queue_delay_microseconds == 0
    for config in (preprocess, encoder):
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert [t.data_type for t in preprocess.output] == [t.data_type for t in encoder.input] == [mc.TYPE_FP16]
    assert [list(t.dims) for t in encoder.input] == [list(t.dims) for t in source_encoder.input]
    assert encoder.output == source_encoder.output
    assert int(preprocess.parameters["gpu_chunk_pixels"].string_value) > 0
    for key, value in source_encoder.parameters.items():  # the stamps (weights, checkpoint) come along
        assert encoder.parameters[key] == value, key
