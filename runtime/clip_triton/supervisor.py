"""Keeps a local tritonserver serving: restarts it (same ports) when it exits or loses a
Python-backend stub.

Triton 2.51 does not restart a stub that died (its instance then fails every request routed to
it with "Stub process ... is not healthy"); a restart restores every instance. Clients ride it out
with their retries. In production the orchestrator does this job (compose `restart`, k8s probes).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

THREAD_NAME = "tritonserver-supervisor"


def stub_pids(http_port: int) -> list[int]:
    """Python-backend stub processes of the server on `http_port` (the local runtime puts the port
    in the backend directory's path, so the stub's command line holds it)."""
    marker = f"backends-{http_port}/python/triton_python_backend_stub"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def supervise(server, interval: float, stop: threading.Event) -> threading.Thread:
    """Watch `server` (a LocalTritonServer: process, start(), stop(), restarts) every `interval`
    seconds until `stop` is set; restart it when its process exits or a stub is gone."""
    expected = len(stub_pids(server.http_port))

    def loop():
        nonlocal expected
        while not stop.wait(interval):
            alive = server.process is not None and server.process.poll() is None
            if alive and len(stub_pids(server.http_port)) >= expected:
                continue
            if stop.is_set():
                return
            reason = "exited" if not alive else "lost a Python-backend stub"
            print(f"[clip_triton] tritonserver {reason}; restarting it", file=sys.stderr, flush=True)
            server.stop(timeout=10)
            try:
                server.start()
                server.restarts += 1
                expected = len(stub_pids(server.http_port))
            except RuntimeError as exc:  # ServerFailed: keep watching, try again next round
                print(f"[clip_triton] restart failed: {exc}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=loop, name=THREAD_NAME, daemon=True)
    thread.start()
    return thread
