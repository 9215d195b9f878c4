"""`docker-compose -f docker-compose.cpu.yml up`, for real: a Docker engine (installed and started
where missing, tests/docker_engine.py), the four images built from the compose file's own build
definitions on a Debian base, the build job writing the repository volume, tritonserver, the
OpenAI frontend and the proxy brought up and waited on. Clients reach them only through ports
published on 127.0.0.1, and every answer is compared with the local runtime's (the `server`
fixture): the same build code on the same checkpoint.

The tests run in file order: the last one takes the deployment down and looks for anything left.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from images import embeddable
from tritonclient import grpc, http
from tritonclient.utils import InferenceServerException

from clip_triton.local import free_port
from clip_triton_build.triton_sources import mirror_path
from clip_triton_client import CLIPClient
from clip_triton_contract.access import key_headers
from docker_engine import CPU_COMPOSE, EngineError, Project, build_images, reachable, torch_index
from helpers import REPO_ROOT

pytestmark = pytest.mark.timeout(2400)  # the first test builds four images on a bare engine

SOURCES_FOR_IMAGES = REPO_ROOT / "docker" / "triton-sources"  # docker/triton-sources/README.md
PORTS = ("CLIP_HTTP_PORT", "CLIP_GRPC_PORT", "CLIP_OPENAI_PORT", "CLIP_METRICS_PORT", "CLIP_OPENAI_METRICS_PORT")
SERVICES = ("build", "tritonserver", "openai", "proxy")  # in the order they start
TEXTS = ["a photo of a cat", "", "Ünïcödé ☃ ✓ 𝔘", "a diagram of a neural network " * 20, "two dogs on a beach"]
TOLERANCE = 1e-6
PHOTO_URI = "data:image/jpeg;base64," + base64.b64encode(embeddable()["jpeg"]).decode()
REPORT: dict[str, float] = {}


@contextlib.contextmanager
def sources_for_the_images():
    """The Triton source mirror this checkout builds from (if any) copied into the images' build
    context, and removed again; without one the images fetch from GitHub."""
    mirror = mirror_path()
    if mirror is None or any(p.name != "README.md" for p in SOURCES_FOR_IMAGES.iterdir()):
        yield
        return
    subprocess.run(
        [sys.executable, "-m", "clip_triton.cxx_backends", "--export-sources", str(SOURCES_FOR_IMAGES)],
        check=True,
        capture_output=True,
    )
    try:
        yield
    finally:
        for item in SOURCES_FOR_IMAGES.iterdir():
            if item.name != "README.md":
                shutil.rmtree(item) if item.is_dir() else item.unlink()


def url(project: Project, variable: str) -> str:
    return f"127.0.0.1:{project.env[variable]}"


def wait_answering(address: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not reachable(f"http://{address}/v2/health/ready", timeout=2):
        if time.monotonic() > deadline:
            raise EngineError(f"the proxy at {address} does not answer after {timeout:.0f}s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def deployment(engine):
    work, base = engine
    torch_pin = re.search(r"torch==([\w.+]+)", (REPO_ROOT / "docker" / "build" / "cpu.Dockerfile").read_text())[1]
    with sources_for_the_images(), torch_index(torch_pin, work) as index:
        env = {variable: str(free_port()) for variable in PORTS}
        env |= {
            "CLIP_BASE_IMAGE": base,
            "CLIP_PROXY_BASE_IMAGE": base if base.startswith("clip-") else "nginx:1.27-bookworm",
            "CLIP_TORCH_INDEX_URL": index,
            "CLIP_ADMIN_KEY": secrets.token_hex(16),
            "CLIP_OPENAI_WORKERS": "1",
        }
        project = Project([CPU_COMPOSE], f"cliptest{secrets.token_hex(4)}", env)
        project.check_ports(list(PORTS))
        started = time.monotonic()
        REPORT.update({f"build {image}": s for image, s in build_images(project.config()).items()})
        up = time.monotonic()
        try:
            project.up(list(SERVICES))
            for service in ("tritonserver", "openai"):
                project.wait_healthy(service, timeout=300)
            wait_answering(url(project, "CLIP_HTTP_PORT"), timeout=60)
            REPORT["up until healthy"] = time.monotonic() - up
            REPORT["images + up"] = time.monotonic() - started
            yield project
        finally:
            project.compose("down", "-v", "--remove-orphans", what="docker-compose down -v")


def test_every_service_is_up_and_the_build_job_wrote_the_repository(deployment):
    assert deployment.inspect("build", "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    for service in ("tritonserver", "openai"):
        assert deployment.inspect(service, "{{.State.Health.Status}}") == "healthy"
    assert deployment.inspect("proxy", "{{.State.Status}}") == "running"
    print("\n[figure] compose CPU flavour: " + ", ".join(f"{k} {v:.0f}s" for k, v in REPORT.items()))


def test_only_ports_on_127_0_0_1_are_published(deployment):
    published = set()
    for service in SERVICES[1:]:
        for bindings in json.loads(deployment.inspect(service, "{{json .NetworkSettings.Ports}}")).values():
            for binding in bindings or []:
                assert binding["HostIp"] == "127.0.0.1", f"{service} publishes {binding}"
                published.add(binding["HostPort"])
    assert published == {deployment.env[v] for v in PORTS}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embeddings_through_the_proxy_equal_the_local_runtime_s(deployment, server, protocol):
    address = url(deployment, "CLIP_HTTP_PORT" if protocol == "http" else "CLIP_GRPC_PORT")
    with CLIPClient(address, protocol) as deployed, CLIPClient(server.grpc_url) as local:
        assert (deployed.model_info().weights, deployed.model_info().checkpoint) == (
            local.model_info().weights,
            local.model_info().checkpoint,
        )
        got, want = deployed.encode(TEXTS), local.encode(TEXTS)
        photos = list(embeddable().values())
        got_images, want_images = deployed.encode_images(photos), local.encode_images(photos)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOLERANCE
    assert got_images.shape == want_images.shape  # both towers by default
    assert np.abs(got_images - want_images).max() <= TOLERANCE


def test_openai_api_through_the_proxy_answers_with_the_same_vectors(deployment, server):
    request = urllib.request.Request(
        f"http://{url(deployment, 'CLIP_OPENAI_PORT')}/v1/embeddings",
        data=json.dumps({"model": "clip_text", "input": [*TEXTS, PHOTO_URI]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        answer = json.load(resp)
    got = np.array([item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])])
    with CLIPClient(server.grpc_url, normalize=True) as local:
        want = np.concatenate([local.encode(TEXTS), local.encode_images([embeddable()["jpeg"]])])
    assert np.abs(got - want).max() <= TOLERANCE
    assert answer["usage"]["prompt_tokens"] > len(TEXTS)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_admin_apis_refuse_a_caller_without_the_key(deployment, protocol):
    module = http if protocol == "http" else grpc
    client = module.InferenceServerClient(url(deployment, "CLIP_HTTP_PORT" if protocol == "http" else "CLIP_GRPC_PORT"))
    try:
        with pytest.raises(InferenceServerException, match=r"(?i)restricted|permission|403|unauthenticated"):
            client.get_model_repository_index()
        admin = key_headers(deployment.env["CLIP_ADMIN_KEY"], protocol)
        assert client.get_model_repository_index(headers=admin)
    finally:
        client.close()


def test_a_killed_tritonserver_comes_back_and_a_retrying_client_loses_nothing(deployment, server):
    restarts = int(deployment.inspect("tritonserver", "{{.RestartCount}}"))
    pid = int(deployment.inspect("tritonserver", "{{.State.Pid}}"))  # tritonserver itself: start.sh execs it
    texts = [f"restart test {i}: {'short' if i % 2 else 'a somewhat longer caption about a boat'}" for i in range(4000)]
    killed = threading.Event()

    def kill_soon():
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would: no clean stop
        killed.set()

    thread = threading.Thread(target=kill_soon)
    thread.start()
    t0 = time.monotonic()
    with CLIPClient(url(deployment, "CLIP_GRPC_PORT"), batch_size=32, retries=15, backoff=0.5) as client:
        out = client.encode(texts)
    seconds = time.monotonic() - t0
    thread.join()
    assert killed.is_set() and seconds > 1.0  # the kill came while the client was at work
    assert int(deployment.inspect("tritonserver", "{{.RestartCount}}")) == restarts + 1
    deployment.wait_healthy("tritonserver", timeout=120)
    print(f"\n[figure] tritonserver killed mid-run: {len(texts)} docs in {seconds:.1f}s through the restart")
    assert out.shape[0] == len(texts) and np.isfinite(out).all()
    sample = list(range(0, len(texts), 97))
    with CLIPClient(server.grpc_url) as local:
        assert np.abs(out[sample] - local.encode([texts[i] for i in sample])).max() <= TOLERANCE


def test_down_leaves_no_container_network_or_volume(deployment):
    deployment.compose("down", "-v", "--remove-orphans", what="docker-compose down -v")
    assert deployment.leftovers() == {"container": [], "network": [], "volume": []}
