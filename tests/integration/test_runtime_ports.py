"""The local runtime's processes answer as themselves (clip_triton.ports): a port already taken
fails a start at once, naming the port and its holder, and readiness is read from the process
that was started, never from another server answering on its port."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clip_triton import LocalTritonServer, ServerFailed
from clip_triton import local as local_module
from clip_triton import openai_frontend as frontend_module
from clip_triton.errors import PortTaken
from clip_triton.local import free_port
from clip_triton.openai_frontend import LocalOpenAIFrontend
from clip_triton.paths import BUILT_REPOSITORY
from clip_triton_build.repository import ensembles

HOLD_A_PORT = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
    "print('listening', flush=True); time.sleep(120)"
)


@pytest.fixture
def held_port():
    """A port a separate process listens on, and that process."""
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_PORT, str(port)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "listening"
    yield port, holder
    holder.kill()
    holder.wait()


@pytest.fixture(scope="module")
def first_frontend(server):
    """The OpenAI frontend of a first local runtime, beside the session's server."""
    with LocalOpenAIFrontend.on_free_ports(server.grpc_url, ensembles(BUILT_REPOSITORY), workers=1) as frontend:
        yield frontend


def test_a_taken_port_fails_the_server_s_start_at_once_and_names_its_holder(held_port):
    port, holder = held_port
    srv = LocalTritonServer(http_port=free_port(), grpc_port=port, metrics_port=free_port())
    with pytest.raises(PortTaken) as taken:
        srv.start()
    assert f"port {port} (Triton gRPC) is already in use, held by pid {holder.pid}" in str(taken.value)
    assert srv.process is None  # nothing was started


def test_a_second_runtime_on_the_first_one_s_openai_port_refuses_to_serve(first_frontend):
    ports = [str(free_port()) for _ in range(4)]
    done = subprocess.run(
        [sys.executable, "-m", "clip_triton", "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port",
         ports[2], "--openai-port", str(first_frontend.port), "--openai-metrics-port", ports[3], "--exit-after-demo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {first_frontend.port} (--openai-port) is already in use" in done.stderr
    assert "-m clip_openai" in done.stderr  # the holder, by its program
    assert "ready" not in done.stdout
    assert "starting tritonserver" not in done.stdout  # refused before any server started


def test_a_frontend_never_takes_another_frontend_s_answer_for_its_own(first_frontend, server, monkeypatch):
    """Were the port free when checked and taken just after, the health answer on it is another
    frontend's: the start fails instead of reporting ready."""
    monkeypatch.setattr(frontend_module, "check_free", lambda host, ports: None)
    second = LocalOpenAIFrontend(server.grpc_url, ["clip_text"], port=first_frontend.port, metrics_port=free_port())
    with pytest.raises(ServerFailed, match="answers as another frontend|exited"):
        second.start()
    assert first_frontend.health()[0] == 200  # the first one serves on


def test_a_server_never_takes_another_server_s_answer_for_its_own(server, monkeypatch):
    monkeypatch.setattr(local_module, "check_free", lambda host, ports: None)
    second = LocalTritonServer(http_port=server.http_port, grpc_port=free_port(), metrics_port=free_port())
    with pytest.raises(ServerFailed, match="answers as another server|exited"):
        second.start()
    assert server.is_ready()
