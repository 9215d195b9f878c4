"""Run the OpenAI frontend (python -m clip_openai) beside a local tritonserver: a process that
calls the server's gRPC endpoint and answers OpenAI's embeddings API."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from clip_openai.settings import DEFAULT_METRICS_PORT, DEFAULT_PORT, INSTANCE_VARIABLE

from .local import ServerFailed, free_port, log_tail, open_log, stop_process
from .paths import STATE_DIR
from .ports import check_free

KEY_VARIABLE = "CLIP_OPENAI_FRONTEND_KEY"  # how the key reaches the frontend: never its command line


@dataclass
class LocalOpenAIFrontend:
    triton_grpc_url: str
    models: list[str]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    workers: int | None = None  # None: clip_openai's default for this host
    api_key: str | None = field(default=None, repr=False)
    options: list[str] = field(default_factory=list)  # more `python -m clip_openai` options
    state_dir: Path = STATE_DIR
    # What the process it starts calls itself in its health answers: readiness is read from the
    # answer that carries it, never from whatever answers on the port.
    instance: str = field(default_factory=lambda: secrets.token_hex(8))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"clip-openai-{self.port}.log"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "clip_openai", "--triton-url", self.triton_grpc_url]
        cmd += [f"--host={self.host}", f"--port={self.port}", f"--metrics-port={self.metrics_port}"]
        for model in self.models:
            cmd += ["--model", model]
        if self.workers:
            cmd.append(f"--workers={self.workers}")
        if self.api_key:
            cmd += ["--api-key-env", KEY_VARIABLE]
        return cmd + list(self.options)

    def start(self, timeout: float = 60.0) -> "LocalOpenAIFrontend":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        check_free(self.host, {"OpenAI API": self.port, "OpenAI metrics": self.metrics_port})
        env = {**os.environ, INSTANCE_VARIABLE: self.instance}
        if self.api_key:
            env[KEY_VARIABLE] = self.api_key
        with open_log(self.log_path) as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def health(self, which: str = "ready") -> tuple[int, dict]:
        """(HTTP status, body) of /health/live or /health/ready; (0, {}) when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/health/{which}", timeout=10) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError:
            return 0, {}
        try:
            return status, json.loads(body or b"{}")
        except ValueError:  # not a frontend's JSON
            return status, {}

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        status: int = 0
        body: dict = {}
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerFailed(f"clip_openai exited with {code}:\n{self.log_tail()}")
            status, body = self.health()
            if status and body.get("instance") != self.instance:
                raise ServerFailed(f"{self.url} answers as another frontend, not the one started here")
            if status == 200:
                return
            time.sleep(0.25)
        raise ServerFailed(f"clip_openai not ready after {timeout:.0f}s ({status} {body}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, signal.SIGTERM, timeout)  # uvicorn finishes the requests in flight

    def __enter__(self):
        return self if self.process else self.start()

    def __exit__(self, *exc):
        self.stop()

    @classmethod
    def on_free_ports(cls, triton_grpc_url: str, models: list[str], **kwargs) -> "LocalOpenAIFrontend":
        return cls(triton_grpc_url, models, port=free_port(), metrics_port=free_port(), **kwargs)
