"""Checkpoints of each CLIP family's text-tower shape (tests/checkpoints.py: saved locally, two
layers, random norms and biases), built with --require-weights and served by the real server:
each equal to HF get_text_features on its own checkpoint, several in one server by name."""

import base64
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from checkpoints import FAMILIES, save_checkpoint
from images import encoded, photo

from clip_triton import LocalTritonServer
from clip_triton_build.repository import read_build_info, read_config
from clip_triton_build.weights import reference_clip_model
from clip_triton_client import CLIPClient
from clip_triton_client.errors import CLIPClientError
from clip_triton_contract.names import CONTEXT_LENGTH, ENCODER_MODEL, model_names
from clip_triton_ops.sample_texts import VARIED_64
from helpers import get_text_features, inference_count, url_of

SERVED = ("b32", "l14", "h14")  # OpenAI B/32 (CLIPModel), OpenAI L/14 (text tower only), LAION H/14 (gelu, EOT 49407)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: save_checkpoint(FAMILIES[name], root / name, layers=2, seed=i) for i, name in enumerate(SERVED)}


def build(output, *args) -> None:
    command = [
        sys.executable,
        "-m",
        "clip_triton_build",
        "--format",
        "onnx",
        "--require-weights",
        "--output",
        str(output),
    ]
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def several(checkpoints, tmp_path_factory):
    """One repository with every checkpoint under its name, served by one tritonserver."""
    repository = tmp_path_factory.mktemp("several")
    build(repository, *(a for name in SERVED for a in ("--model", f"{name}={checkpoints[name]}")))
    with LocalTritonServer.on_free_ports(repository=repository, config_name="cpu") as srv:
        yield srv


@pytest.fixture(scope="module")
def references(checkpoints):
    return {name: reference_clip_model(str(folder)) for name, folder in checkpoints.items()}


@pytest.fixture(scope="module")
def ids(open_clip_tokenizer):
    return open_clip_tokenizer(VARIED_64, context_length=CONTEXT_LENGTH).numpy()


def test_the_l14_shape_builds_from_its_folder_and_serves_768_d_vectors_equal_to_hf(
    checkpoints, references, ids, tmp_path
):
    """One checkpoint folder with --checkpoint, as a new user builds one: every config follows its
    projection_dim, and the server loads and serves it."""
    build(tmp_path, "--checkpoint", checkpoints["l14"])
    assert read_build_info(tmp_path)["dim"] == 768
    assert list(read_config(tmp_path / ENCODER_MODEL / "configs" / "cpu.pbtxt").output[0].dims) == [768]
    with LocalTritonServer.on_free_ports(repository=tmp_path, config_name="cpu") as srv:
        with CLIPClient(srv.grpc_url) as client:
            assert client.model_info().dim == 768
            assert client.model_info().checkpoint == str(checkpoints["l14"])
            out = client.encode(VARIED_64)
    assert np.abs(out - get_text_features(references["l14"], ids)).max() <= 1e-4


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("name", SERVED)
def test_each_checkpoint_is_served_by_its_name_equal_to_its_own_hf_model(several, references, ids, name, protocol):
    with CLIPClient(url_of(several, protocol), protocol=protocol, model=name) as client:
        out = client.encode(VARIED_64)
    assert out.shape == (len(VARIED_64), FAMILIES[name].projection_dim)
    assert np.abs(out - get_text_features(references[name], ids)).max() <= 1e-4


def test_a_client_that_knows_one_model_finds_every_model_with_its_dim_and_checkpoint(several, checkpoints):
    with CLIPClient(several.grpc_url, model="l14") as client:
        found = {info.name: (info.dim, info.weights, info.checkpoint) for info in client.models()}
    assert found == {name: (FAMILIES[name].projection_dim, "pretrained", str(checkpoints[name])) for name in SERVED}


def test_the_cli_lists_the_models_and_embeds_with_the_one_it_is_given(
    several, references, tmp_path, open_clip_tokenizer
):
    cli = [sys.executable, "-m", "clip_triton_client.cli", "--url", several.grpc_url]
    listed = subprocess.run([*cli, "--model", "h14", "--list-models"], capture_output=True, text=True, check=True)
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        ["b32", "512"],
        ["l14", "768"],
        ["h14", "1024"],
    ]
    (tmp_path / "in.txt").write_text("a photo of a cat\nein Hund im Schnee\n")
    subprocess.run([*cli, "--model", "h14", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy")], check=True)
    ids = open_clip_tokenizer(["a photo of a cat", "ein Hund im Schnee"], context_length=CONTEXT_LENGTH).numpy()
    assert np.abs(np.load(tmp_path / "out.npy") - get_text_features(references["h14"], ids)).max() <= 1e-4


def test_each_model_batches_on_its_own_encoder(several):
    """A request to one model runs on that model's encoder only (Triton's statistics)."""
    encoders = {name: model_names(name)[ENCODER_MODEL] for name in SERVED}
    before = {name: inference_count(several, encoder) for name, encoder in encoders.items()}
    with CLIPClient(several.grpc_url, model="l14", batch_size=8) as client:
        client.encode([f"text {i}" for i in range(40)])
    # a backend's statistics are recorded when its execution ends, which may be just after the response
    for _ in range(50):
        after = {name: inference_count(several, encoder) for name, encoder in encoders.items()}
        if after["l14"] - before["l14"] >= 40:
            break
        time.sleep(0.1)
    assert {name: after[name] - before[name] for name in SERVED} == {"b32": 0, "l14": 40, "h14": 0}


def test_a_model_that_fails_to_load_leaves_the_others_serving(checkpoints, references, ids, tmp_path):
    repository = tmp_path / "repository"
    build(repository, "--model", f"b32={checkpoints['b32']}", "--model", f"l14={checkpoints['l14']}")
    broken = repository / model_names("l14")[ENCODER_MODEL] / "1" / "model.onnx"
    broken.write_bytes(b"not an onnx file")
    server = LocalTritonServer.on_free_ports(
        repository=repository, config_name="cpu", extra_args=("--exit-on-error=false", "--strict-readiness=false")
    )
    with server as srv:
        with CLIPClient(srv.grpc_url, model="b32") as client:
            assert np.abs(client.encode(VARIED_64) - get_text_features(references["b32"], ids)).max() <= 1e-4
        with CLIPClient(srv.grpc_url, model="l14", retries=0) as client:
            with pytest.raises(CLIPClientError, match="l14"):
                client.encode(["a cat"])
    shutil.rmtree(repository)


def test_a_fleet_s_namespaced_copy_renames_every_checkpoint_s_models_and_their_list(several, tmp_path):
    from clip_triton_build.namespace import namespaced

    names = namespaced(several.repository, tmp_path, "team_")
    assert names[-3:] == ["team_b32", "team_h14", "team_l14"]  # the ensembles load last
    ensemble = read_config(tmp_path / "team_l14" / "config.pbtxt")
    assert ensemble.parameters["models"].string_value == "team_b32,team_l14,team_h14"
    assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [
        "team_l14_clip_tokenizer",
        "team_l14_clip_text_encoder",
    ]
    tokenizer = read_config(tmp_path / "team_l14_clip_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["fallback_model"].string_value == "team_l14_clip_tokenizer_python"


def test_deploy_gives_one_checkpoint_its_own_encoder_layout_on_a_server_shared_with_another(several, references, ids):
    """A shared GPU's rule (docs/deploy.md, "Two models on one GPU"): on a server with explicit
    model control, `clip_triton_ops.deploy --model NAME` loads one checkpoint of a several-model
    repository with its own encoder layout, and unloads it while the other keeps serving."""
    from tritonclient import grpc

    from clip_triton_ops.deploy import deploy, unload

    server = LocalTritonServer.on_free_ports(
        repository=several.repository, config_name="cpu", model_control_mode="explicit"
    )
    with server as srv:
        headers = srv.admin_headers("grpc")
        deploy(srv.grpc_url, several.repository, "cpu", headers=headers, model="b32")
        loaded = deploy(
            srv.grpc_url,
            several.repository,
            "cpu",
            encoder_instances=2,
            headers=headers,
            encoder_max_batch_size=512,
            model="l14",
        )
        assert loaded == {model: "ready" for model in model_names("l14").values()}
        client = grpc.InferenceServerClient(srv.grpc_url)
        try:
            layouts = {}
            for name in ("b32", "l14"):
                config = client.get_model_config(model_names(name)[ENCODER_MODEL], headers=headers).config
                layouts[name] = (config.max_batch_size, [g.count for g in config.instance_group])
            source = read_config(several.repository / model_names("b32")[ENCODER_MODEL] / "configs" / "cpu.pbtxt")
            assert layouts == {
                "b32": (source.max_batch_size, [g.count for g in source.instance_group]),
                "l14": (512, [2]),
            }
            assert not client.is_model_ready("h14", headers=headers)
            for name in ("b32", "l14"):
                with CLIPClient(srv.grpc_url, model=name) as clip:
                    expected = get_text_features(references[name], ids)
                    assert np.abs(clip.encode(VARIED_64) - expected).max() <= 1e-4, name
            unload(srv.grpc_url, headers, model="l14")
            assert not any(client.is_model_ready(m, headers=headers) for m in model_names("l14").values())
            with CLIPClient(srv.grpc_url, model="b32") as clip:
                assert clip.encode(["a photo of a cat"]).shape == (1, FAMILIES["b32"].projection_dim)
        finally:
            client.close()


def test_openais_api_serves_every_checkpoint_by_its_name_equal_to_its_hf_model(several, references, ids):
    """The frontend started with one model's name finds the others, lists them with their dims,
    and embeds with the one each request names (unit length by default, get_text_features with
    normalize false)."""
    import openai

    from clip_triton.openai_frontend import LocalOpenAIFrontend

    with LocalOpenAIFrontend.on_free_ports(several.grpc_url, ["l14"], workers=1) as front:
        with openai.OpenAI(base_url=front.url, api_key="unused", max_retries=0) as client:
            listed = {m.id: m.model_extra["dimensions"] for m in client.models.list().data}
            assert listed == {name: FAMILIES[name].projection_dim for name in SERVED}
            for name in SERVED:
                raw = client.embeddings.create(model=name, input=VARIED_64, extra_body={"normalize": False})
                assert raw.model == name
                vectors = np.array([d.embedding for d in raw.data], dtype=np.float32)
                assert np.abs(vectors - get_text_features(references[name], ids)).max() <= 1e-4
                unit = client.embeddings.create(model=name, input=VARIED_64[:4]).data[0].embedding
                assert np.isclose(np.linalg.norm(unit), 1.0, atol=1e-6)


def test_the_openai_api_says_which_checkpoints_take_images_and_refuses_images_for_a_text_tower(several):
    """l14 is a text tower alone: its requests with an image are refused, the others embed both."""
    import openai

    from clip_triton.openai_frontend import LocalOpenAIFrontend

    image = "data:image/png;base64," + base64.b64encode(encoded(photo(48, 40), "PNG")).decode()
    with LocalOpenAIFrontend.on_free_ports(several.grpc_url, ["b32"], workers=1) as front:
        with openai.OpenAI(base_url=front.url, api_key="unused", max_retries=0) as sdk:
            listed = {m.id: m.modalities for m in sdk.models.list().data}
            assert listed == {"b32": ["text", "image"], "l14": ["text"], "h14": ["text", "image"]}
            with pytest.raises(openai.BadRequestError, match="embeds texts only") as caught:
                sdk.embeddings.create(model="l14", input=["a cat", image])
            assert caught.value.body["param"] == "input"
            answer = sdk.embeddings.create(model="h14", input=["a cat", image])
            assert [len(d.embedding) for d in answer.data] == [1024, 1024]
