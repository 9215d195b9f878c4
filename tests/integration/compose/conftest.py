"""The Docker engine and base image the compose tests share (tests/docker_engine.py)."""

from __future__ import annotations

import os

import pytest

from docker_engine import CPU_COMPOSE, Project, base_image, docker_engine, engine_within_reach


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """(work folder, base image) on an engine that answers; a dockerd started here stops after."""
    missing = engine_within_reach()
    if missing and not os.environ.get("CI"):  # CI runs as root: it installs and starts what is missing
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("docker")
    with docker_engine(work):
        # the compose file's own default base, where the engine has or can pull it
        default = Project([CPU_COMPOSE], "defaults").config()["services"]["tritonserver"]["build"]["args"]
        yield work, base_image(default["BASE_IMAGE"], work)
