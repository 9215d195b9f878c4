"""docker-compose.yml, the Dockerfiles and the Kubernetes manifests, checked offline (no engine,
no cluster here): schema validation, lint, and the settings the fleet relies on."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clip_text_client.access import ADMIN_APIS, CLIENT_APIS
from clip_triton import LocalTritonServer
from clip_triton_build.repository import cuda_ops_library
from helpers import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILES = sorted((REPO_ROOT / "docker").glob("*/Dockerfile"))
MANIFESTS = sorted((REPO_ROOT / "deploy" / "k8s").glob("*.yaml"))
REQUIRE_TOOLS = bool(os.environ.get("CI"))


def compose_config(env: dict | None = None) -> dict:
    tool = shutil.which("docker-compose")
    if tool is None:
        if REQUIRE_TOOLS:
            pytest.fail("docker-compose missing: scripts/test.sh installs Debian's docker-compose")
        pytest.skip("docker-compose not installed")
    result = subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def published(service: dict) -> set[tuple[str, int]]:
    """(host address, container port) of each published port, in either of compose's forms."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add((port["host_ip"], int(port["target"])))
        else:  # "127.0.0.1:8000:8000/tcp"
            host, _, target = port.split("/")[0].rsplit(":", 2)
            ports.add((host, int(target)))
    return ports


def test_compose_validates_and_binds_loopback_by_default():
    services = compose_config()["services"]
    # HTTP and gRPC only through the proxy; Triton publishes metrics alone
    assert published(services["proxy"]) == {("127.0.0.1", 8000), ("127.0.0.1", 8001), ("127.0.0.1", 9000)}
    assert published(services["tritonserver"]) == {("127.0.0.1", 8002)}
    assert published(services["openai"]) == {("127.0.0.1", 9001)}  # its metrics; the API through the proxy


def test_compose_proxy_serves_the_one_template():
    proxy = compose_config()["services"]["proxy"]
    assert any(
        "deploy/proxy/nginx.conf.template:/etc/nginx/templates/" in str(v)
        or (isinstance(v, dict) and v.get("source", "").endswith("deploy/proxy/nginx.conf.template"))
        for v in proxy["volumes"]
    )
    assert proxy["environment"]["TRITON_HTTP_UPSTREAM"] == "tritonserver:8000"
    assert proxy["environment"]["TRITON_GRPC_UPSTREAM"] == "tritonserver:8001"
    assert proxy["depends_on"]["tritonserver"]["condition"] == "service_healthy"
    assert proxy["environment"]["OPENAI_UPSTREAM"] == "openai:9000"


def test_compose_openai_frontend_settings():
    """The frontend calls Triton's gRPC with the inference APIs' key, and finds the repository's
    models from the first name of CLIP_CHECKPOINTS (clip_text without it)."""
    config = compose_config({"CLIP_API_KEY": "k", "CLIP_CHECKPOINTS": "b32=openai/clip-vit-base-patch32,l14=x"})
    frontend = config["services"]["openai"]
    command = " ".join(frontend["entrypoint"])
    assert "--triton-url=tritonserver:8001" in command and "--api-key-env=CLIP_API_KEY" in command
    assert frontend["environment"]["CLIP_API_KEY"] == "k"
    assert frontend["depends_on"]["tritonserver"]["condition"] == "service_healthy"
    script = frontend["entrypoint"][-1]
    for checkpoints, model in (("b32=openai/clip-vit-base-patch32,l14=x", "b32"), ("", "clip_text")):
        shown = subprocess.run(
            ["sh", "-c", script.replace("$$", "$").replace("exec python -m clip_openai", "echo")],
            env={"CLIP_CHECKPOINTS": checkpoints, "CLIP_OPENAI_WORKERS": "4", "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"--model={model} " in shown and "--workers=4" in shown


def test_compose_server_settings():
    config = compose_config({"CLIP_GPU_COUNT": "2", "CLIP_BIND": "0.0.0.0"})
    server, build = config["services"]["tritonserver"], config["services"]["build"]
    devices = server["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and str(devices["count"]) == "2" and "gpu" in devices["capabilities"]
    assert build["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert server["depends_on"]["build"]["condition"] == "service_completed_successfully"
    assert "/v2/health/ready" in " ".join(server["healthcheck"]["test"])
    assert server["restart"] == "unless-stopped"
    assert str(server["shm_size"]).lower() in ("2gb", "2147483648")
    assert any("hf-cache" in str(v) for v in build["volumes"])
    assert any(":/models" in str(v) for v in server["volumes"])
    assert {ip for ip, _ in published(config["services"]["proxy"])} == {"0.0.0.0"}


PATCHED_RELEASE = "26.10"  # README "Which Triton release": past the published 2025/2026 Triton CVEs


def test_compose_k8s_and_dockerfiles_pin_one_patched_release():
    text = COMPOSE.read_text()
    assert f"TRITON_RELEASE:-{PATCHED_RELEASE}" in text and "TRITON_RELEASE:-24" not in text
    for dockerfile in DOCKERFILES:  # the images built on NGC's; the OpenAI frontend's holds no Triton
        if dockerfile.parent.name != "openai":
            assert f"ARG TRITON_RELEASE={PATCHED_RELEASE}" in dockerfile.read_text()
    images = re.findall(r"image: \S+/clip-text-\S+:(\S+)", " ".join(m.read_text() for m in MANIFESTS))
    assert len(images) == 3 and set(images) == {PATCHED_RELEASE}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_lint_clean(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(os.sys.prefix) / "bin" / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate():
    tool = str(Path(os.sys.prefix) / "bin" / "kubernetes-validate")
    result = subprocess.run([tool, "--strict", *map(str, MANIFESTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_deployment_has_what_the_fleet_needs():
    docs = [d for m in MANIFESTS for d in yaml.safe_load_all(m.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    assert deployment["spec"]["replicas"] >= 2
    # clients reach Triton through the proxy container only
    assert "--http-address=127.0.0.1" in container["args"] and "--grpc-address=127.0.0.1" in container["args"]
    proxy = next(c for c in pod["containers"] if c["name"] == "proxy")
    assert {p["name"] for p in proxy["ports"]} == {"http", "grpc", "openai"}
    assert {p["name"] for p in container["ports"]} == {"metrics"}
    # the OpenAI frontend: on the pod's loopback behind the proxy, probed through it, Triton's key
    frontend = next(c for c in pod["containers"] if c["name"] == "openai")
    assert "--host=127.0.0.1" in frontend["args"] and "--triton-url=127.0.0.1:8001" in frontend["args"]
    assert frontend["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "openai"}
    key = next(e for e in frontend["env"] if e["name"] == "CLIP_API_KEY")
    assert key["valueFrom"] == next(e for e in container["env"] if e["name"] == "CLIP_API_KEY")["valueFrom"]
    upstreams = {e["name"]: e["value"] for e in proxy["env"]}
    assert upstreams["OPENAI_UPSTREAM"] == "127.0.0.1:9000"
    service = next(d for d in docs if d["kind"] == "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {
        "http",
        "grpc",
        "metrics",
        "openai",
        "openai-metrics",
    }
    kustomization = yaml.safe_load((REPO_ROOT / "deploy" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == next(v for v in pod["volumes"] if v["name"] == "proxy-template")["configMap"]["name"]
    source = generator["files"][0].split("=", 1)[1]
    assert (REPO_ROOT / "deploy" / source).resolve() == (REPO_ROOT / "deploy" / "proxy" / "nginx.conf.template")
    service = next(d for d in docs if d["kind"] == "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001, 8002, 9000, 9001}
    assert any("restricted" in a for a in container["args"])


def test_every_file_the_images_need_is_in_the_repository():
    """compose's dockerfiles and every COPY source exist in the build context (a fresh clone)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    dockerfiles = [
        REPO_ROOT / s["build"]["context"] / s["build"]["dockerfile"] for s in services.values() if "build" in s
    ]
    assert sorted(dockerfiles) == DOCKERFILES
    for dockerfile in dockerfiles:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                *sources, _ = line.split()[1:]
                for source in sources:
                    assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} is missing"


def restricted_groups(text: str) -> dict[str, set[frozenset]]:
    """The API groups each --http-restricted-api / --grpc-restricted-protocol flag in `text` restricts."""
    groups: dict[str, set[frozenset]] = {"http": set(), "grpc": set()}
    for flag, apis in re.findall(r"--(http-restricted-api|grpc-restricted-protocol)=([a-z,-]+):x-api-key=", text):
        groups[flag[:4]].add(frozenset(apis.split(",")))
    return groups


def test_compose_k8s_and_the_local_runtime_restrict_the_same_apis():
    expected = {frozenset(ADMIN_APIS), frozenset(CLIENT_APIS)}
    local = " ".join(LocalTritonServer(api_key="client-key").command(REPO_ROOT / ".local" / "unused"))
    for name, text in (
        ("docker-compose.yml", COMPOSE.read_text()),
        ("deploy/k8s/deployment.yaml", (REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()),
        ("local runtime", local),
    ):
        assert restricted_groups(text) == {"http": expected, "grpc": expected}, name


def test_compose_closes_the_admin_apis_even_without_keys():
    """The admin group is unconditional (a random key when CLIP_ADMIN_KEY is unset); only the
    client group depends on CLIP_API_KEY."""
    command = " ".join(
        compose_config({"CLIP_API_KEY": "", "CLIP_ADMIN_KEY": ""})["services"]["tritonserver"]["command"]
    )
    command = command.replace("$$", "$")  # compose's escape for a literal $ (the container's shell expands it)
    admin = ",".join(ADMIN_APIS)
    assert f"--http-restricted-api={admin}:x-api-key=$admin" in command
    assert f"--grpc-restricted-protocol={admin}:x-api-key=$admin" in command
    assert "admin=${CLIP_ADMIN_KEY:-$(head -c 32 /dev/urandom" in command
    assert not re.search(r":\+--(http|grpc)-restricted-[a-z]+=model-repository", command)


def test_compose_k8s_and_the_local_runtime_preload_the_cuda_graph_ops_the_build_writes(tmp_path):
    """model_fp16.pt (the GPU default) calls ops from a library the build writes at the repository's
    root (one for every encoder in it); every way of serving preloads that very file (a missing
    one is skipped by the loader)."""
    in_container = cuda_ops_library(Path("/models"))
    assert f"LD_PRELOAD={in_container}" in COMPOSE.read_text()
    docs = [d for m in MANIFESTS for d in yaml.safe_load_all(m.read_text()) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LD_PRELOAD", "value": str(in_container)} in container["env"]
    server = LocalTritonServer(repository=tmp_path)
    assert str(tmp_path) not in server.environment([]).get("LD_PRELOAD", "")  # no build, no preload
    cuda_ops_library(tmp_path).write_bytes(b"")
    assert server.environment([])["LD_PRELOAD"].split(":")[0] == str(cuda_ops_library(tmp_path).resolve())


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({}, ["--checkpoint", "openai/clip-vit-base-patch32"]),
        ({"CLIP_CHECKPOINT": "/ckpt/l14"}, ["--checkpoint", "/ckpt/l14"]),
        (
            {"CLIP_CHECKPOINTS": "clip-vit-b32=openai/clip-vit-base-patch32,clip-vit-l14=/ckpt/l14"},
            ["--model", "clip-vit-b32=openai/clip-vit-base-patch32", "--model", "clip-vit-l14=/ckpt/l14"],
        ),
    ],
    ids=["default", "one", "several"],
)
def test_the_build_image_turns_its_environment_into_the_build_s_arguments(environment, expected, tmp_path):
    """docker/build/entrypoint.sh, run by sh with `python` answering with the arguments it got."""
    (tmp_path / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "python").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", **environment}
    done = subprocess.run(
        ["sh", str(REPO_ROOT / "docker/build/entrypoint.sh")], env=env, capture_output=True, text=True
    )
    args = done.stdout.splitlines()
    assert args[:2] == ["-m", "clip_triton_build"] and "--fp16" in args
    names = [a for a in args if a in ("--checkpoint", "--model")]
    assert [a for i, a in enumerate(args) if a in names or (i and args[i - 1] in names)] == expected
