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
