"""The build writes the servable repository outside the source one, and replaces only what it wrote."""

import pytest

from clip_triton_build.repository import BUILT_MARKER, SOURCE_REPOSITORY, NotABuiltRepository, start_repository
from clip_triton_contract.names import ENCODER_MODEL


def test_the_build_refuses_to_empty_a_folder_it_did_not_write(tmp_path):
    output = tmp_path / "models"
    output.mkdir()
    (output / "someone_elses_model").mkdir()
    with pytest.raises(NotABuiltRepository):
        start_repository(SOURCE_REPOSITORY, output)
    assert (output / "someone_elses_model").is_dir()


def test_a_rebuild_replaces_everything_the_last_build_wrote(tmp_path):
    output = tmp_path / "models"
    start_repository(SOURCE_REPOSITORY, output)
    stale = output / ENCODER_MODEL / "1" / "model_fp16.pt"  # e.g. from a GPU build, not made this time
    stale.write_bytes(b"stale")
    start_repository(SOURCE_REPOSITORY, output)
    assert (output / BUILT_MARKER).is_file() and not stale.exists()
    assert sorted(p.name for p in output.iterdir() if p.is_dir()) == sorted(
        p.name for p in (SOURCE_REPOSITORY).iterdir() if (p / "config.pbtxt").is_file()
    )


def test_the_build_never_writes_into_its_source(tmp_path):
    with pytest.raises(NotABuiltRepository):
        start_repository(SOURCE_REPOSITORY, SOURCE_REPOSITORY / "built")
