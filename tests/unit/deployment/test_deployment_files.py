"""docker-compose.yml (GPU), docker-compose.cpu.yml, the Dockerfiles, their scripts and the
Kubernetes manifests, checked offline: schema validation, lint, and the settings the fleet relies
on. tests/integration/compose/ brings the CPU flavour up on a real engine."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clip_triton import LocalTritonServer
from clip_triton_build.repository import cuda_ops_library
from clip_triton_contract.access import ADMIN_APIS, CLIENT_APIS
from helpers import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
CPU_COMPOSE = REPO_ROOT / "docker-compose.cpu.yml"
FLAVOURS = {"gpu": COMPOSE, "cpu": CPU_COMPOSE}
DOCKERFILES = sorted([*(REPO_ROOT / "docker").glob("*/Dockerfile"), *(REPO_ROOT / "docker").glob("*/*.Dockerfile")])
START = REPO_ROOT / "docker" / "server" / "start.sh"  # both server images' start command
MANIFESTS = sorted((REPO_ROOT / "deploy" / "k8s").glob("*.yaml"))
REQUIRE_TOOLS = bool(os.environ.get("CI"))


def compose_config(env: dict | None = None, file: Path = COMPOSE) -> dict:
    tool = shutil.which("docker-compose")
    if tool is None:
        if REQUIRE_TOOLS:
            pytest.fail("docker-compose missing: scripts/test.sh installs Debian's docker-compose")
        pytest.skip("docker-compose not installed")
    result = subprocess.run(
        [tool, "-f", str(file), "config"],
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


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_compose_validates_and_binds_loopback_by_default(flavour):
    services = compose_config(file=FLAVOURS[flavour])["services"]
    # HTTP and gRPC only through the proxy; Triton publishes metrics alone
    assert published(services["proxy"]) == {("127.0.0.1", 8000), ("127.0.0.1", 8001), ("127.0.0.1", 9000)}
    assert published(services["tritonserver"]) == {("127.0.0.1", 8002)}
    assert published(services["openai"]) == {("127.0.0.1", 9001)}  # its metrics; the API through the proxy


def test_compose_proxy_serves_the_one_template():
    proxy = compose_config()["services"]["proxy"]
    assert proxy["build"]["dockerfile"] == "docker/proxy/Dockerfile"
    dockerfile = (REPO_ROOT / "docker" / "proxy" / "Dockerfile").read_text()
    assert "COPY deploy/proxy/nginx.conf.template /etc/nginx/templates/" in dockerfile
    assert proxy["environment"]["TRITON_HTTP_UPSTREAM"] == "tritonserver:8000"
    assert proxy["environment"]["TRITON_GRPC_UPSTREAM"] == "tritonserver:8001"
    assert proxy["depends_on"]["tritonserver"]["condition"] == "service_healthy"
    assert proxy["environment"]["OPENAI_UPSTREAM"] == "openai:9000"


def test_the_proxy_image_fills_only_the_variables_that_are_set(tmp_path):
    """docker/proxy/start.sh, with `nginx` answering: the template's ${VARS} from the environment,
    nginx's own $variables untouched."""
    script = (REPO_ROOT / "docker" / "proxy" / "start.sh").read_text()
    template = tmp_path / "clip.conf.template"
    template.write_text("listen ${PROXY_HTTP_PORT}; proxy_set_header Host $host; pass ${TRITON_HTTP_UPSTREAM};\n")
    script = script.replace("/etc/nginx/templates/clip.conf.template", str(template))
    script = script.replace("/etc/nginx/conf.d/clip.conf", str(tmp_path / "clip.conf"))
    (tmp_path / "nginx").write_text('#!/bin/sh\necho nginx "$@"\n')
    (tmp_path / "nginx").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PROXY_HTTP_PORT": "8000", "TRITON_HTTP_UPSTREAM": "tritonserver:8000"}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "nginx -g daemon off;"
    assert (tmp_path / "clip.conf").read_text() == "listen 8000; proxy_set_header Host $host; pass tritonserver:8000;\n"


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
    assert "command" not in server  # the image's own: docker/server/start.sh


def flatten(value, path=()) -> dict[tuple, object]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, (*path, key)).items()}
    return {path: value}


# What only a GPU needs or a CPU lacks, by rendered path: the images (their Dockerfiles, bases and
# names), the device reservations and CUDA's ulimits, the config variant, TensorRT's engine cache.
FLAVOUR_DIFFERENCES = {
    ("services", "build", "build", "args"),
    ("services", "build", "build", "dockerfile"),
    ("services", "build", "image"),
    ("services", "build", "deploy"),
    ("services", "tritonserver", "build", "args"),
    ("services", "tritonserver", "build", "dockerfile"),
    ("services", "tritonserver", "image"),
    ("services", "tritonserver", "deploy"),
    ("services", "tritonserver", "ulimits"),
    ("services", "tritonserver", "environment", "CLIP_CONFIG_NAME"),
    ("services", "tritonserver", "volumes"),
    ("volumes", "trt-cache"),
}


def test_the_gpu_and_cpu_flavours_differ_only_where_they_must():
    gpu, cpu = (flatten(compose_config(file=f)) for f in (COMPOSE, CPU_COMPOSE))
    differing = {p for p in gpu.keys() | cpu.keys() if gpu.get(p) != cpu.get(p)}
    unexpected = {p for p in differing if not any(p[: len(d)] == d for d in FLAVOUR_DIFFERENCES)}
    assert not unexpected, sorted(unexpected)
    # the GPU server mounts the TensorRT cache besides what the CPU one mounts
    volumes = {f: set(compose_config(file=f)["services"]["tritonserver"]["volumes"]) for f in (COMPOSE, CPU_COMPOSE)}
    assert volumes[CPU_COMPOSE] < volumes[COMPOSE]
    assert compose_config(file=CPU_COMPOSE)["services"]["tritonserver"]["environment"]["CLIP_CONFIG_NAME"] == "cpu"
    assert "deploy" not in compose_config(file=CPU_COMPOSE)["services"]["tritonserver"]


PATCHED_RELEASE = "26.10"  # README "Which Triton release": past the published 2025/2026 Triton CVEs


def test_compose_k8s_and_dockerfiles_pin_one_patched_release():
    text = COMPOSE.read_text()
    assert f"TRITON_RELEASE:-{PATCHED_RELEASE}" in text and "TRITON_RELEASE:-24" not in text
    for dockerfile in DOCKERFILES:  # the images built on NGC's; the others take a plain base
        body = dockerfile.read_text()
        if "nvcr.io" in body:
            assert f"ARG TRITON_RELEASE={PATCHED_RELEASE}" in body
        else:
            assert re.search(r"^ARG BASE_IMAGE=\S+$", body, re.M), dockerfile
    images = re.findall(r"image: \S+/clip-text-\S+:(\S+)", " ".join(m.read_text() for m in MANIFESTS))
    assert len(images) == 3 and set(images) == {PATCHED_RELEASE}


def pins(lines) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([\w.+]+)", "\n".join(lines), re.M))


def test_the_cpu_images_pin_what_the_local_runtime_runs():
    """torch, the tritonserver wheel and ONNX Runtime: the CPU images serve what the tests serve."""
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    local = pins(extras["serve"] + extras["build"])
    server = pins((REPO_ROOT / "docker" / "server" / "cpu-requirements.txt").read_text().splitlines())
    assert server and all(local[name] == version for name, version in server.items())
    dockerfile = (REPO_ROOT / "docker" / "build" / "cpu.Dockerfile").read_text()
    build = pins(re.findall(r"(?<![\w-])torch==[\w.+]+", dockerfile))
    assert build == {"torch": local["torch"]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT / "docker")))
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
    """Both flavours' Dockerfiles and every COPY source exist in the build context (a fresh clone),
    and the context's .dockerignore lets each through."""
    dockerfiles = {
        REPO_ROOT / s["build"]["dockerfile"]
        for file in FLAVOURS.values()
        for s in compose_config(file=file)["services"].values()
        if "build" in s
    }
    assert sorted(dockerfiles) == DOCKERFILES
    allowed = [
        line.strip("!/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    for dockerfile in dockerfiles:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                *sources, _ = line.split()[1:]
                for source in sources:
                    assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} is missing"
                    assert any(source.startswith(a) for a in allowed), f"{dockerfile}: .dockerignore drops {source}"


def restricted_groups(text: str) -> dict[str, set[frozenset]]:
    """The API groups each --http-restricted-api / --grpc-restricted-protocol flag in `text` restricts."""
    groups: dict[str, set[frozenset]] = {"http": set(), "grpc": set()}
    for flag, apis in re.findall(r"--(http-restricted-api|grpc-restricted-protocol)=\"?([a-z,-]+):x-api-key=", text):
        groups[flag[:4]].add(frozenset(apis.split(",")))
    return groups


def test_compose_k8s_and_the_local_runtime_restrict_the_same_apis():
    expected = {frozenset(ADMIN_APIS), frozenset(CLIENT_APIS)}
    local = " ".join(LocalTritonServer(api_key="client-key").command(REPO_ROOT / ".local" / "unused"))
    for name, text in (
        ("docker/server/start.sh", START.read_text()),
        ("deploy/k8s/deployment.yaml", (REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()),
        ("local runtime", local),
    ):
        assert restricted_groups(text) == {"http": expected, "grpc": expected}, name


def start_arguments(tmp_path: Path, **env: str) -> list[str]:
    """The arguments docker/server/start.sh gives tritonserver (a stand-in that prints them)."""
    (tmp_path / "tritonserver").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "tritonserver").chmod(0o755)
    done = subprocess.run(
        ["sh", str(START)], env={"PATH": f"{tmp_path}:/usr/bin:/bin", **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_servers_close_the_admin_apis_even_without_keys(tmp_path):
    """The admin group is unconditional (a random key when CLIP_ADMIN_KEY is unset); only the
    client group depends on CLIP_API_KEY."""
    admin, client = ",".join(ADMIN_APIS), ",".join(CLIENT_APIS)
    for env in ({}, {"CLIP_API_KEY": "", "CLIP_ADMIN_KEY": ""}):
        args = start_arguments(tmp_path, **env)
        keys = {a.rsplit("=", 1)[1] for a in args if f"={admin}:x-api-key=" in a}
        assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}", keys.pop())  # one random key for both protocols
        assert not [a for a in args if client in a]
    args = start_arguments(tmp_path, CLIP_API_KEY="client-key", CLIP_ADMIN_KEY="admin-key", CLIP_CONFIG_NAME="cpu")
    for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
        assert f"{flag}={admin}:x-api-key=admin-key" in args and f"{flag}={client}:x-api-key=client-key" in args
    assert args[0] == "--model-repository=/models" and "--model-config-name=cpu" in args
    assert not [a for a in start_arguments(tmp_path, CLIP_CONFIG_NAME="") if "model-config-name" in a]


def test_the_local_runtime_and_the_compose_servers_give_onnx_runtime_one_thread_pool(tmp_path):
    """Every ONNX Runtime session of a server shares one thread pool, set where the server starts,
    so the CPU variant's two encoder instances never oversubscribe the host's cores."""
    from clip_triton_build.repository import ORT_SERVER_CONFIG

    flag = f"--backend-config={ORT_SERVER_CONFIG}"
    assert flag in LocalTritonServer(config_name="cpu").command(Path("/backends"))
    assert flag in start_arguments(tmp_path, CLIP_CONFIG_NAME="cpu")


def test_compose_k8s_and_the_local_runtime_preload_the_cuda_graph_ops_the_build_writes(tmp_path):
    """model_fp16.pt (the GPU default) calls ops from a library the build writes at the repository's
    root (one for every encoder in it); every way of serving preloads that very file (a missing
    one is skipped by the loader)."""
    in_container = cuda_ops_library(Path("/models"))
    assert f"ops={in_container}\n" in START.read_text() and 'export LD_PRELOAD="$ops' in START.read_text()
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
        (
            {"CLIP_ENCODER_LAYOUTS": "1024x3,clip-vit-l14=256x1"},
            [
                "--checkpoint",
                "openai/clip-vit-base-patch32",
                "--encoder-layout",
                "1024x3",
                "--encoder-layout",
                "clip-vit-l14=256x1",
            ],
        ),
    ],
    ids=["default", "one", "several", "layouts"],
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
    assert args[:2] == ["-m", "clip_triton_build"] and "--fp16" in args and "cuda" in args
    names = [a for a in args if a in ("--checkpoint", "--model", "--encoder-layout")]
    assert [a for i, a in enumerate(args) if a in names or (i and args[i - 1] in names)] == expected


def test_the_cpu_build_image_traces_on_the_cpu_without_fp16(tmp_path):
    """cpu.Dockerfile's settings, given to docker/build/entrypoint.sh."""
    dockerfile = (REPO_ROOT / "docker" / "build" / "cpu.Dockerfile").read_text()
    assert "CLIP_TORCHSCRIPT_DEVICE=cpu" in dockerfile and "CLIP_FP16=0" in dockerfile
    (tmp_path / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "python").chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "CLIP_TORCHSCRIPT_DEVICE": "cpu", "CLIP_FP16": "0"}
    done = subprocess.run(
        ["sh", str(REPO_ROOT / "docker/build/entrypoint.sh")], env=env, capture_output=True, text=True
    )
    args = done.stdout.splitlines()
    assert "--fp16" not in args and args[args.index("--torchscript-device") + 1] == "cpu"


def test_every_gpu_server_gives_the_image_pixels_their_cuda_memory_pool():
    """The GPU image path's pixels wait in Triton's CUDA memory pool; the local runtime, the compose
    start script and the k8s server all size it as clip_triton_build says."""
    from clip_triton_build.repository import IMAGE_GPU_POOL_BYTES, IMAGE_GPU_VARIANT

    server = LocalTritonServer(config_name=IMAGE_GPU_VARIANT, gpus=[0, 1])
    flags = [f for f in server.command(Path("/backends")) if f.startswith("--cuda-memory-pool-byte-size")]
    assert flags == [f"--cuda-memory-pool-byte-size={gpu}:{IMAGE_GPU_POOL_BYTES}" for gpu in (0, 1)]
    assert not any("cuda-memory-pool" in f for f in LocalTritonServer(config_name="cpu").command(Path("/b")))
    assert f'--cuda-memory-pool-byte-size="$gpu:{IMAGE_GPU_POOL_BYTES}"' in START.read_text()
    manifests = "\n".join(path.read_text() for path in MANIFESTS)
    assert f"--cuda-memory-pool-byte-size=0:{IMAGE_GPU_POOL_BYTES}" in manifests
