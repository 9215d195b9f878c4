"""When the deployment fails, the failure says what failed: the image that did not build, the
service that never turned healthy (with its last log lines), the port that was already taken.
Each is made to happen on the real engine, with the tests' own base image."""

from __future__ import annotations

import contextlib
import secrets
import socket

import pytest
import yaml

from docker_engine import CPU_COMPOSE, EngineError, Project, build_images


def test_an_image_that_does_not_build_is_named_with_the_build_s_last_lines(engine, tmp_path):
    _, base = engine
    (tmp_path / "Dockerfile").write_text(f"FROM {base}\nRUN echo 'the package index has no such thing' && exit 3\n")
    config = {
        "services": {
            "job": {"image": "clip-broken:test", "build": {"context": str(tmp_path), "dockerfile": "Dockerfile"}}
        }
    }
    with pytest.raises(EngineError, match=r"(?s)image clip-broken:test \(service job.*no such thing"):
        build_images(config)


def test_a_service_that_never_turns_healthy_is_named_with_its_last_log_lines(engine, tmp_path):
    _, base = engine
    sick = {
        "image": base,
        "command": ["sh", "-c", "echo 'the model would not load'; sleep 300"],
        "healthcheck": {"test": ["CMD", "false"], "interval": "1s", "timeout": "1s", "retries": 2},
    }
    (tmp_path / "compose.yml").write_text(yaml.safe_dump({"services": {"sick": sick}}))
    project = Project([tmp_path / "compose.yml"], f"cliptestsick{secrets.token_hex(3)}")
    project.compose("up", "-d")
    try:
        with pytest.raises(EngineError, match=r"(?s)service sick never turned healthy.*the model would not load"):
            project.wait_healthy("sick", timeout=60)
    finally:
        project.compose("down", "-v", "-t", "1")
    assert project.leftovers() == {"container": [], "network": [], "volume": []}


def test_a_port_already_taken_is_named_before_anything_starts(engine):
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project = Project([CPU_COMPOSE], "cliptestports", {"CLIP_HTTP_PORT": str(port)})
        with pytest.raises(EngineError, match=rf"port 127\.0\.0\.1:{port} \(CLIP_HTTP_PORT\) is already taken"):
            project.check_ports(["CLIP_HTTP_PORT"])
