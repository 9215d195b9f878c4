"""The local runtime's commands refuse names they do not know before they build or write anything."""

import pytest

from clip_triton import cxx_backends


@pytest.mark.parametrize("asked", ["pytorh", "onnxruntime,pytorh", ","])
def test_an_unknown_backend_is_refused_with_the_valid_names_and_nothing_is_built(asked, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cxx_backends.main(["--backends", asked, "--dest", str(tmp_path / "out")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "choose from onnxruntime, pytorch" in error
    assert not (tmp_path / "out").exists()


def a_repository(tmp_path):
    """The shape of a built repository (configs only): an ensemble, a model with two variants."""
    ensemble, encoder = tmp_path / "repo" / "clip_text", tmp_path / "repo" / "clip_text_encoder"
    (encoder / "configs").mkdir(parents=True)
    ensemble.mkdir()
    (ensemble / "config.pbtxt").write_text('name: "clip_text"\nplatform: "ensemble"\n')
    (encoder / "config.pbtxt").write_text('name: "clip_text_encoder"\n')
    for variant in ("cpu", "torchscript"):
        (encoder / "configs" / f"{variant}.pbtxt").write_text('name: "clip_text_encoder"\n')
    return tmp_path / "repo"


def test_an_unknown_variant_is_refused_before_a_server_starts(tmp_path, capsys):
    """Triton serves config.pbtxt for a --model-config-name it lacks, and says nothing."""
    from clip_triton import LocalTritonServer, ServerFailed
    from clip_triton import __main__ as runtime

    repository = a_repository(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        runtime.main(["--repository", str(repository), "--config-name", "cpuu", "--openai-port", "0"])
    assert stopped.value.code == 2
    assert "unknown config variant 'cpuu'" in capsys.readouterr().err
    srv = LocalTritonServer(repository=repository, config_name="torchscript_fp16", state_dir=tmp_path / "state")
    with pytest.raises(ServerFailed, match="has cpu, torchscript "):
        srv.start()
    assert srv.process is None


@pytest.mark.parametrize(
    "option, value, says", [("--variant", "gpu", "has cpu, torchscript"), ("--model", "l14", "serves clip_text")]
)
def test_deploy_refuses_an_unknown_variant_or_model_before_it_loads_anything(option, value, says, tmp_path, capsys):
    from clip_triton_ops import deploy

    repository = a_repository(tmp_path)
    with pytest.raises(SystemExit) as stopped:  # no server at --url: nothing was called
        deploy.main(["--url", "127.0.0.1:1", "--repository", str(repository), option, value])
    assert stopped.value.code == 2
    assert says in capsys.readouterr().err
