"""Every config parses with Triton's own model-config protobuf, the ensemble's wiring agrees, and
the numbers the configs repeat agree with clip_build.spec (the one source of truth)."""

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from clip_build.repository import ENCODER_VARIANTS, TORCHSCRIPT_GPU, read_config, serves_gpu_torchscript
from clip_build.spec import (
    CONTEXT_LENGTH,
    EMBED_DIM,
    ENCODER_MODEL,
    ENSEMBLE_MODEL,
    EOT_TOKEN,
    PAD_ID,
    SOT_TOKEN,
    TOKENIZER_FILE,
    TOKENIZER_MODEL,
)

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
ALL_CONFIGS = sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))


def configs():
    return {p.parent.name: read_config(p) for p in REPOSITORY.glob("*/config.pbtxt")}


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_config_parses_and_names_its_folder(path):
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name


def test_ensemble_wiring_agrees():
    cfg = configs()
    ensemble = cfg[ENSEMBLE_MODEL]
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


def test_numbers_agree_with_spec():
    cfg = configs()
    tokenizer, encoder, ensemble = cfg[TOKENIZER_MODEL], cfg[ENCODER_MODEL], cfg[ENSEMBLE_MODEL]
    params = {k: v.string_value for k, v in tokenizer.parameters.items()}
    assert params["context_length"] == str(CONTEXT_LENGTH)
    assert (params["sot_token"], params["eot_token"], params["pad_id"]) == (SOT_TOKEN, EOT_TOKEN, str(PAD_ID))
    assert params["tokenizer_file"] == TOKENIZER_FILE
    assert list(tokenizer.output[0].dims) == [CONTEXT_LENGTH] == list(encoder.input[0].dims)
    assert list(encoder.output[0].dims) == [EMBED_DIM] == list(ensemble.output[0].dims)


def test_batching_and_instances():
    cfg = configs()
    assert cfg[ENCODER_MODEL].HasField("dynamic_batching")
    # one request per tokenizer execution: a malformed request must fail alone (config comment)
    assert not cfg[TOKENIZER_MODEL].HasField("dynamic_batching")
    assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg[ENCODER_MODEL].instance_group)
    assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in cfg[TOKENIZER_MODEL].instance_group)


def test_variants_differ_from_the_source_only_where_intended():
    source = read_config(REPOSITORY / ENCODER_MODEL / "config.pbtxt")
    for name, (backend, filename, kind) in ENCODER_VARIANTS.items():
        variant = read_config(REPOSITORY / ENCODER_MODEL / "configs" / f"{name}.pbtxt")
        assert (variant.backend, variant.default_model_filename) == (backend, filename)
        if kind is not None:
            assert all(g.kind == kind for g in variant.instance_group)
        for field in ("input", "output"):
            assert getattr(variant, field) == getattr(source, field), field
        for key, value in source.parameters.items():
            assert variant.parameters[key] == value, key
        if serves_gpu_torchscript(backend, kind):  # tuned on an H100
            assert variant.max_batch_size == TORCHSCRIPT_GPU["max_batch_size"]
            assert [g.count for g in variant.instance_group] == [TORCHSCRIPT_GPU["encoder_instances"]]
            assert variant.dynamic_batching.max_queue_delay_microseconds == TORCHSCRIPT_GPU["max_queue_delay_us"]
        else:
            assert variant.max_batch_size == source.max_batch_size
            assert variant.dynamic_batching == source.dynamic_batching


def test_gpu_variants_bring_their_tokenizer_instances():
    """`--model-config-name` applies to every model: a GPU variant's tokenizer config comes along."""
    source = read_config(REPOSITORY / TOKENIZER_MODEL / "config.pbtxt")
    for name in ("torchscript", "torchscript_fp16"):
        variant = read_config(REPOSITORY / TOKENIZER_MODEL / "configs" / f"{name}.pbtxt")
        assert [g.count for g in variant.instance_group] == [TORCHSCRIPT_GPU["tokenizer_instances"]]
        variant.ClearField("instance_group")
        expected = type(source)()
        expected.CopyFrom(source)
        expected.ClearField("instance_group")
        assert variant == expected  # nothing else differs: still no dynamic batching


def test_build_stamped_the_weights():
    """The served config says what the last build loaded (build_info.json exists only after a build)."""
    from helpers import build_info

    parameters = read_config(REPOSITORY / ENCODER_MODEL / "config.pbtxt").parameters
    info = build_info()
    assert parameters["weights"].string_value == info["weights"] and info["weights"] in ("pretrained", "random-init")
    assert parameters["checkpoint"].string_value == info["checkpoint"]
