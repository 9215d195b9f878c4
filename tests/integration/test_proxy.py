"""The limits in front of Triton (deploy/proxy/nginx.conf.template), run with the real nginx in
front of a real tritonserver: what passes gets the server's answers, what breaks the limits is
stopped at the proxy, and the server behind it stays up."""

import os
import re
import shutil
import socket
import string
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from clip_triton.local import free_port
from clip_triton.openai_frontend import LocalOpenAIFrontend
from clip_triton_contract.names import ENSEMBLE_MODEL
from helpers import REPO_ROOT, text_array, triton_infer, url_of

TEMPLATE = REPO_ROOT / "deploy" / "proxy" / "nginx.conf.template"
HEADER_TIMEOUT_S = 10  # client_header_timeout in the template


def render(values: dict[str, str]) -> str:
    """What the nginx image's envsubst step does: ${VAR} from the environment, nginx's own
    $variables left alone."""
    return string.Template(TEMPLATE.read_text()).safe_substitute(values)


@pytest.fixture(scope="module")
def proxy(server, tmp_path_factory):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx missing: scripts/test.sh installs Debian's nginx")
        pytest.skip("nginx not installed")
    root = tmp_path_factory.mktemp("nginx")
    http_port, grpc_port, openai_port = free_port(), free_port(), free_port()
    # stopped however the fixture ends (a failed setup must not leave it running)
    with LocalOpenAIFrontend.on_free_ports(server.grpc_url, [ENSEMBLE_MODEL], workers=1) as frontend:
        snippet = render(
            {
                "PROXY_HTTP_PORT": f"127.0.0.1:{http_port}",
                "PROXY_GRPC_PORT": f"127.0.0.1:{grpc_port}",
                "PROXY_OPENAI_PORT": f"127.0.0.1:{openai_port}",
                "TRITON_HTTP_UPSTREAM": server.http_url,
                "TRITON_GRPC_UPSTREAM": server.grpc_url,
                "OPENAI_UPSTREAM": f"{frontend.host}:{frontend.port}",
            }
        )
        assert not re.search(r"\$\{[A-Z_]+\}", snippet), "a variable of the template is not filled here"
        # the image includes the snippet inside http {}; Debian's nginx gets the same around it
        (root / "nginx.conf").write_text(
            f"pid {root}/nginx.pid;\nerror_log {root}/error.log;\nworker_processes 1;\n"
            f"events {{ worker_connections 2048; }}\n"
            f"http {{\naccess_log off;\nclient_body_temp_path {root}/body;\nproxy_temp_path {root}/proxy;\n"
            f"fastcgi_temp_path {root}/f;\nuwsgi_temp_path {root}/u;\nscgi_temp_path {root}/s;\n{snippet}\n}}\n"
        )
        process = subprocess.Popen(
            [nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"nginx exited: {process.stdout.read().decode(errors='replace')}")
                time.sleep(0.1)
        yield type(
            "Proxy",
            (),
            {
                "http_url": f"127.0.0.1:{http_port}",
                "grpc_url": f"127.0.0.1:{grpc_port}",
                "http_port": http_port,
                "openai_url": f"http://127.0.0.1:{openai_port}/v1",
            },
        )
        process.terminate()
        process.wait(10)


def post(url: str, body: bytes, headers: dict | None = None) -> int:
    request = urllib.request.Request(
        f"http://{url}/v2/models/clip_text/infer",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def infer_body(texts) -> bytes:
    import json

    return json.dumps(
        {
            "inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}],
            "outputs": [{"name": "EMBEDDING"}],
        }
    ).encode()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_requests_through_the_proxy_get_the_servers_answers(server, proxy, protocol):
    texts = ["a photo of a cat", "a dog on a beach"]
    (via_proxy,) = triton_infer(
        protocol, url_of(proxy, protocol), "clip_text", {"TEXT": text_array(texts)}, ["EMBEDDING"]
    )
    (direct,) = triton_infer(
        protocol, url_of(server, protocol), "clip_text", {"TEXT": text_array(texts)}, ["EMBEDDING"]
    )
    assert np.array_equal(via_proxy, direct)


def test_a_body_over_the_limit_is_refused_at_the_proxy(server, proxy):
    assert post(proxy.http_url, infer_body(["x" * 1000] * 34_000)) == 413  # ~34 MB
    assert server.is_ready()


def test_a_grpc_message_over_the_limit_is_refused_at_the_proxy(server, proxy):
    with pytest.raises(InferenceServerException):
        triton_infer("grpc", proxy.grpc_url, "clip_text", {"TEXT": text_array(["y" * 160_000] * 256)}, ["EMBEDDING"])
    assert server.is_ready()


def test_chunked_bodies_are_reframed_by_the_proxy(server, proxy):
    """The CVE-2025-23310/23311 pattern (a body in tiny chunks) reaches Triton as one body."""
    body = infer_body(["chunked " * 2000])
    chunks = (
        b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 6]), body[i : i + 6]) for i in range(0, len(body), 6))
        + b"0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", proxy.http_port), timeout=60) as sock:
        sock.sendall(
            b"POST /v2/models/clip_text/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    assert server.is_ready()


def test_oversized_headers_are_refused_at_the_proxy(proxy):
    status = post(proxy.http_url, infer_body(["hi"]), headers={"X-Padding": "p" * 64_000})
    assert status in (400, 431, 494)


def test_idle_connections_are_closed_and_do_not_stall_anyone(server, proxy):
    idle = [socket.create_connection(("127.0.0.1", proxy.http_port), timeout=30) for _ in range(300)]
    try:
        assert post(proxy.http_url, infer_body(["still served"])) == 200
        time.sleep(HEADER_TIMEOUT_S + 2)
        closed = 0
        for sock in idle:
            sock.settimeout(5)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except socket.timeout:  # still open
                pass
        assert closed == len(idle)
        assert post(proxy.http_url, infer_body(["after the idle ones"])) == 200
    finally:
        for sock in idle:
            sock.close()


def test_openais_api_through_the_proxy_answers_and_keeps_the_body_limit(server, proxy):
    import openai

    with openai.OpenAI(base_url=proxy.openai_url, api_key="unused", max_retries=0) as client:
        answer = client.embeddings.create(model=ENSEMBLE_MODEL, input=["a photo of a cat", "a dog"])
        assert [d.index for d in answer.data] == [0, 1] and len(answer.data[0].embedding) == 512
        with pytest.raises(openai.APIStatusError) as refused:  # nginx's client_max_body_size: 32m
            client.embeddings.create(model=ENSEMBLE_MODEL, input=["w " * 500_000] * 34)
    assert refused.value.status_code == 413
