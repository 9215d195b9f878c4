"""A real Docker engine for the compose tests, set up the way a new user (or CI, as root) would:

- Debian's `docker.io`, `docker-compose` and `debootstrap` are installed with apt where missing;
- `dockerd` is started where none answers, and stopped again by whoever started it;
- the images' base: the compose file's default where the engine has it or can pull it, else a
  Debian bookworm made with `debootstrap --variant=minbase` and `docker import`, carrying this host's
  CA certificates (so pip inside the builds trusts what this host trusts);
- the images are built from the compose file's own build definitions (`docker-compose config`),
  one `docker build` each, so that a failure names its image with the build's last lines;
- a compose project on ports of our choosing, all on 127.0.0.1, brought up, waited on (a service
  that never turns healthy is reported with its last log lines) and taken down with its volumes.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from helpers import REPO_ROOT

DEBIAN_MIRROR = "http://deb.debian.org/debian"
LOCAL_BASE = "clip-debian:bookworm"  # what debootstrap makes when no registry gives a base
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_IMAGE = "/etc/ssl/host-ca-certificates.crt"  # a path no Debian package rewrites
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_COMPOSE = REPO_ROOT / "docker-compose.cpu.yml"


class EngineError(RuntimeError):
    """Something the deployment needs failed; the message says what, with the output that shows why."""


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(cmd: list[str], what: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd`; an EngineError naming `what` (and the last lines of its output) if it fails."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{what}: no result after {timeout:.0f}s\n{tail(str(exc.stdout or ''))}") from None
    except FileNotFoundError:
        raise EngineError(f"{what}: {cmd[0]} is not installed") from None
    if done.returncode != 0:
        raise EngineError(f"{what} failed (exit {done.returncode}):\n{tail(done.stdout + done.stderr)}")
    return done


def reachable(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except OSError:
        return False


# -- the engine -----------------------------------------------------------------------------------
def install_missing_tools() -> None:
    need = [
        package
        for tool, package in (
            ("dockerd", "docker.io"),
            ("docker-compose", "docker-compose"),
            ("debootstrap", "debootstrap"),
        )
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not need:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineError(f"missing {', '.join(need)}: install them (Debian: apt-get install {' '.join(need)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], f"apt-get install {need}", env=env)


def engine_within_reach() -> str | None:
    """None where an engine answers or this user can install and start one; else why not."""
    if shutil.which("docker") and shutil.which("docker-compose") and engine_answers():
        return None
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return None
    return "no Docker engine answers, and only root can install and start one here"


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def docker_engine(log_dir: Path):
    """A Docker engine that answers; one started here is stopped on the way out."""
    install_missing_tools()
    started = None
    if not engine_answers():
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        log = open(log_dir / "dockerd.log", "ab")
        started = subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while not engine_answers():
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                raise EngineError(f"dockerd did not start:\n{tail((log_dir / 'dockerd.log').read_text())}")
            time.sleep(0.5)
    try:
        yield
    finally:
        if started is not None:
            started.terminate()
            try:
                started.wait(60)
            except subprocess.TimeoutExpired:
                started.kill()


def has_image(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def base_image(wanted: str, work: Path) -> str:
    """`wanted` where the engine has it or can pull it, else the debootstrap base (made once)."""
    if has_image(wanted) or subprocess.run(["docker", "pull", wanted], capture_output=True).returncode == 0:
        return wanted
    if not has_image(LOCAL_BASE):
        rootfs = work / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR], "debootstrap bookworm")
        changes = ['CMD ["/bin/bash"]']
        if HOST_CA.is_file():
            (rootfs / CA_IN_IMAGE.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)  # minbase has no /etc/ssl
            shutil.copy2(HOST_CA, rootfs / CA_IN_IMAGE.lstrip("/"))
            changes += [f"ENV {v}={CA_IN_IMAGE}" for v in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(
            ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", LOCAL_BASE],
            f"docker import {LOCAL_BASE}",
            stdin=tar.stdout,
        )
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
    return LOCAL_BASE


@contextlib.contextmanager
def torch_index(pin: str, work: Path):
    """PyTorch's CPU index where it is reachable; else this host's torch wheel (what its virtualenv
    installed), served to the build on 127.0.0.1 (the builds run on the host's network)."""
    if reachable(f"{TORCH_INDEX}/torch/"):
        yield TORCH_INDEX
        return
    wheels = work / "wheels"
    run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"torch=={pin}", "-d", str(wheels / "torch")],
        f"pip download torch=={pin}",
    )
    handler = functools.partial(QuietHandler, directory=str(wheels))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


# -- images and the project ---------------------------------------------------------------------
def compose(files: list[Path], project: str, env: dict[str, str], *args: str, timeout: float = 600, what=None):
    cmd = ["docker-compose", "-p", project, *(a for f in files for a in ("-f", str(f))), *args]
    what = what or f"docker-compose {' '.join(args)}"
    return run(cmd, what, timeout=timeout, env={**os.environ, **env}, cwd=REPO_ROOT)


def build_images(config: dict, build_args: dict[str, str] | None = None) -> dict[str, float]:
    """`docker build` each image of a rendered compose config with its own context, Dockerfile
    and arguments (on the host's network); returns the seconds each took."""
    seconds = {}
    for name, service in config["services"].items():
        spec = service.get("build")
        if not spec:
            continue
        args = {**spec.get("args", {}), **(build_args or {})}
        started = time.monotonic()
        run(
            [
                "docker",
                "build",
                "--network=host",
                "-f",
                str(Path(spec["context"]) / spec["dockerfile"]),
                *(a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")),
                "-t",
                service["image"],
                spec["context"],
            ],
            f"image {service['image']} (service {name}, {spec['dockerfile']})",
            timeout=1500,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the engine's own builder: no buildx needed
        )
        seconds[service["image"]] = time.monotonic() - started
    return seconds


def port_taken(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


STATE = "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"


@dataclass
class Project:
    """One compose project: its files, name and environment (the published ports among it)."""

    files: list[Path]
    name: str
    env: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, what=None):
        return compose(self.files, self.name, self.env, *args, timeout=timeout, what=what)

    def config(self) -> dict:
        return yaml.safe_load(self.compose("config", what="docker-compose config").stdout)

    def check_ports(self, variables: list[str]) -> None:
        for variable in variables:
            port = int(self.env[variable])
            if port_taken(port):
                raise EngineError(f"port 127.0.0.1:{port} ({variable}) is already taken: free it or choose another")

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        if not ids:
            raise EngineError(f"service {service} has no container")
        return ids[0]

    def inspect(self, service: str, template: str) -> str:
        done = run(["docker", "inspect", "-f", template, self.container(service)], f"docker inspect {service}")
        return done.stdout.strip()

    def logs(self, service: str, lines: int = 40) -> str:
        done = subprocess.run(
            ["docker", "logs", "--tail", str(lines), self.container(service)], capture_output=True, text=True
        )
        return done.stdout + done.stderr

    def wait_healthy(self, service: str, timeout: float) -> float:
        """Seconds until `service` is healthy; an EngineError with its state and last log lines if it
        never is (or stops)."""
        started = time.monotonic()
        while True:
            state = self.inspect(service, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}")
            if state.endswith("healthy") and not state.endswith("unhealthy"):
                return time.monotonic() - started
            stopped = state.startswith(("exited", "dead"))
            if stopped or state.endswith("unhealthy") or time.monotonic() - started > timeout:
                raise EngineError(
                    f"service {service} never turned healthy ({state or 'no state'} after "
                    f"{time.monotonic() - started:.0f}s); its last log lines:\n{self.logs(service)}"
                )
            time.sleep(1)

    def up(self, services: list[str]) -> None:
        """`up -d` (compose waits on the build and the healthchecks the services depend on); on a
        failure, which service failed and its last log lines."""
        try:
            self.compose("up", "-d", "--no-build", timeout=900)
        except EngineError as exc:
            for service in services:
                try:
                    state = self.inspect(service, STATE)
                except EngineError:
                    continue
                status, code, *health = state.split()
                if (status == "exited" and code != "0") or health == ["unhealthy"] or status in ("created", "dead"):
                    raise EngineError(
                        f"service {service} failed ({state}); its last log lines:\n{self.logs(service)}\n\n{exc}"
                    ) from None
            raise

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.name}"
        everything = ["-a"]  # stopped containers too
        return {
            kind: run(
                ["docker", kind, "ls", "-q", *(everything if kind == "container" else []), "--filter", label], kind
            ).stdout.split()
            for kind in ("container", "network", "volume")
        }
