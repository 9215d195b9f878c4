"""Run the real tritonserver that ships inside the `nvidia-pytriton` wheel against this repository.

What it takes to run that binary outside NGC's image:
- a backend directory holding the Python backend, with the Python-backend stub for the running
  interpreter copied in, and Triton's C++ `onnxruntime` and `pytorch` backends, built from the
  r24.10 sources by `clip_triton.cxx_backends` (the backends NGC's image ships);
- this virtualenv's bin/ first on PATH (the stub finds its packages through it), and the wheel's
  bundled libraries and libtorch's on LD_LIBRARY_PATH;
- in a GPU build, the encoder's ops (clip_triton_build.encoder.cuda_ops) in LD_PRELOAD.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from clip_triton_build.repository import (
    IMAGE_GPU_POOL_BYTES,
    IMAGE_GPU_VARIANT,
    ORT_SERVER_CONFIG,
    PYTHON_FIRST_SUFFIX,
    UnknownName,
    check_variant,
    cuda_ops_library,
)
from clip_triton_contract.access import ADMIN_APIS, CLIENT_APIS, key_headers, restricted_api_flags
from clip_triton_ops.deploy import deploy

from . import cxx_backends, supervisor
from .errors import ServerFailed
from .paths import BUILT_REPOSITORY, LOGS_KEPT, STATE_DIR, pytriton_paths
from .ports import check_free


def prepare_backend_dir(dest: Path, built: Path) -> list[str]:
    """backends/python (+ the stub for this Python) and the C++ backends of `built`; returns the
    folders the server needs on LD_LIBRARY_PATH."""
    try:
        server_dir, _ = pytriton_paths()
    except FileNotFoundError as exc:
        raise ServerFailed(str(exc)) from None
    version = os.environ.get("CLIP_STUB_PYTHON_VERSION") or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerFailed(f"nvidia-pytriton ships no Python-backend stub for Python {version}")
    if dest.exists():
        shutil.rmtree(dest)
    python_dir = dest / "python"
    python_dir.mkdir(parents=True)
    for item in (server_dir / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(stub, python_dir / stub.name)
    return cxx_backends.install_into(dest, built)


def open_log(path: Path):
    """`path` opened for appending a process's output, after deleting all but the LOGS_KEPT - 1
    newest other logs beside it (a server's log outlives it, for a look after it stopped)."""
    others = sorted((p for p in path.parent.glob("*.log") if p != path), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[LOGS_KEPT - 1 :]:
        old.unlink(missing_ok=True)
    return open(path, "ab")


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a process's log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen | None, sig: int, timeout: float) -> int | None:
    """Send `sig` (the process's own clean stop), wait up to `timeout`, then kill its process
    group (started with start_new_session). Its exit code; None if it was never started."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalTritonServer:
    """A tritonserver process serving `repository`. Use as a context manager or start()/stop()."""

    repository: Path = BUILT_REPOSITORY
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    config_name: str | None = "cpu"  # --model-config-name: the encoder's KIND_CPU variant
    state_dir: Path = STATE_DIR
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)
    # Instance counts / GPU ids for this run without editing any config: the server starts in
    # explicit model-control mode and clip_triton_ops.deploy loads the models with overrides.
    encoder_instances: int | None = None
    gpus: list[int] | None = None
    tokenizer_instances: int | None = None
    encoder_max_batch_size: int | None = None
    image_encoder_instances: int | None = None
    image_preprocess_instances: int | None = None
    # Access control (clip_triton_contract.access): the admin APIs (repository, shared memory, trace,
    # logging) always need `x-api-key: <admin_key>`, a random one unless given; with `api_key`,
    # inference and metadata need that key too. Keys go on the command line, never into our logs.
    api_key: str | None = field(default=None, repr=False)
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    model_control_mode: str | None = None  # "explicit" for a fleet; default: Triton's "none"
    prefix: str = ""  # model name prefix of a namespaced repository (clip_triton_build.namespace)
    env: dict[str, str] = field(default_factory=dict)
    # Which build of the C++ backends to serve with (None: the GPU build where one exists).
    gpu_backends: bool | None = None
    # What the server calls itself (--id; its metadata's name): readiness is read from the answer
    # that carries it, never from whatever answers on the port.
    server_id: str = field(default_factory=lambda: f"clip-triton-{secrets.token_hex(8)}")
    process: subprocess.Popen | None = None
    restarts: int = 0  # how often the supervisor restarted the server

    # -- supervision (clip_triton.supervisor) -----------------------------------------------
    def stub_pids(self) -> list[int]:
        """Python-backend stub processes of this server."""
        return supervisor.stub_pids(self.http_port)

    def supervise(self, interval: float = 1.0) -> threading.Thread:
        """Restart the server (same ports) when it exits or loses a Python-backend stub."""
        self._stop_supervising = threading.Event()
        return supervisor.supervise(self, interval, self._stop_supervising)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"tritonserver-{self.http_port}.log"

    def command(self, backend_dir: Path) -> list[str]:
        server_dir, _ = pytriton_paths()
        cmd = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--log-verbose={self.log_verbose}",
            f"--id={self.server_id}",
            "--exit-timeout-secs=5",
            f"--backend-config={ORT_SERVER_CONFIG}",
        ]
        if self.config_name:
            cmd.append(f"--model-config-name={self.config_name}")
        if self.config_name in (IMAGE_GPU_VARIANT, IMAGE_GPU_VARIANT + PYTHON_FIRST_SUFFIX):
            cmd += [f"--cuda-memory-pool-byte-size={gpu}:{IMAGE_GPU_POOL_BYTES}" for gpu in self.gpus or [0]]
        mode = "explicit" if self.uses_overrides else self.model_control_mode
        if mode:
            cmd.append(f"--model-control-mode={mode}")
        cmd += restricted_api_flags(ADMIN_APIS, self.admin_key)
        if self.api_key:
            cmd += restricted_api_flags(CLIENT_APIS, self.api_key)
        return cmd + list(self.extra_args)

    def headers(self, protocol: str = "grpc") -> dict[str, str] | None:
        """Raw request headers carrying the client key, if the server has one."""
        return key_headers(self.api_key, protocol) if self.api_key else None

    def admin_headers(self, protocol: str = "grpc") -> dict[str, str]:
        """Raw request headers for the admin APIs (repository, shared memory, trace, logging)."""
        return key_headers(self.admin_key, protocol)

    @property
    def uses_overrides(self) -> bool:
        return any(
            v is not None
            for v in (
                self.encoder_instances,
                self.gpus,
                self.tokenizer_instances,
                self.encoder_max_batch_size,
                self.image_encoder_instances,
                self.image_preprocess_instances,
            )
        )

    def environment(self, library_path: list[str]) -> dict[str, str]:
        _, libs = pytriton_paths()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(libs), *library_path, env.get("LD_LIBRARY_PATH", "")) if p)
        # The stub's packages come from the python3 first on PATH: this virtualenv, unless
        # CLIP_STUB_BIN names another environment's bin/ (one with numpy<2, say).
        stub_bin = os.environ.get("CLIP_STUB_BIN") or str(Path(sys.prefix) / "bin")
        env["PATH"] = f"{stub_bin}:{env.get('PATH', '')}"
        # The CUDA-graph ops model_fp16.pt calls (a GPU build writes them): Triton's pytorch backend
        # finds custom TorchScript ops only in libraries preloaded into the server.
        graphs = cuda_ops_library(Path(self.repository))
        if graphs.exists():
            env["LD_PRELOAD"] = ":".join(p for p in (str(graphs.resolve()), env.get("LD_PRELOAD", "")) if p)
        env.update(self.env)
        return env

    def start(self, timeout: float = 180.0) -> "LocalTritonServer":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            check_variant(Path(self.repository), self.config_name)
        except UnknownName as exc:
            raise ServerFailed(str(exc)) from None
        check_free(self.host, self.ports)
        try:
            built = cxx_backends.find_built(self.gpu_backends)
        except cxx_backends.NativeBuildError as exc:
            raise ServerFailed(str(exc)) from None
        library_path = prepare_backend_dir(self.backend_dir, built)
        log = open_log(self.log_path)
        self.process = subprocess.Popen(
            self.command(self.backend_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environment(library_path),
            start_new_session=True,  # Ctrl-C in a terminal reaches us; we stop the server ourselves
        )
        log.close()
        try:
            self.wait_ready(timeout)
            if self.uses_overrides:
                deploy(
                    self.grpc_url,
                    Path(self.repository),
                    self.config_name,
                    self.encoder_instances,
                    self.gpus,
                    self.tokenizer_instances,
                    self.admin_headers("grpc"),
                    self.prefix,
                    self.encoder_max_batch_size,
                    image_encoder_instances=self.image_encoder_instances,
                    image_preprocess_instances=self.image_preprocess_instances,
                )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def ports(self) -> dict[str, int]:
        """The ports it listens on, by role."""
        return {"Triton HTTP": self.http_port, "Triton gRPC": self.grpc_port, "Triton metrics": self.metrics_port}

    def is_ready(self) -> bool:
        """Ready, and answering as this server: its metadata carries our --id."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as resp:
                if resp.status != 200:
                    return False
            request = urllib.request.Request(f"http://{self.http_url}/v2", headers=self.headers("http") or {})
            with urllib.request.urlopen(request, timeout=2) as resp:
                name = json.loads(resp.read()).get("name")
        except (OSError, ValueError):
            return False
        if name != self.server_id:
            raise ServerFailed(
                f"http://{self.http_url} answers as another server ({name!r}), not the tritonserver started here"
            )
        return True

    @property
    def started_process(self) -> subprocess.Popen:
        """The current tritonserver process (the supervisor replaces it on a restart)."""
        if self.process is None:
            raise ServerFailed("tritonserver was never started: call start()")
        return self.process

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.started_process.poll() is not None:
                raise ServerFailed(f"tritonserver exited with {self.started_process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerFailed(f"tritonserver not ready after {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def backend_dir(self) -> Path:
        """The server's --backend-directory while it runs (the supervisor finds its stubs by it)."""
        return self.state_dir / f"backends-{self.http_port}"

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 30.0) -> int | None:
        if (
            getattr(self, "_stop_supervising", None) is not None
            and threading.current_thread().name != supervisor.THREAD_NAME
        ):
            self._stop_supervising.set()
        code = stop_process(self.process, signal.SIGINT, timeout)  # tritonserver unloads models, stops its stubs
        if self.process is not None and self.process.poll() is not None:
            shutil.rmtree(self.backend_dir, ignore_errors=True)
        return code

    def __enter__(self):
        return self if self.process else self.start()

    def __exit__(self, *exc):
        self.stop()

    @classmethod
    def on_free_ports(cls, **kwargs) -> "LocalTritonServer":
        return cls(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), **kwargs)
