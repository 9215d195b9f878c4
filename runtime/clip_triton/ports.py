"""The ports a process of the local runtime will listen on: each checked free before the process
starts, and, for one that is taken, what holds it when this machine says so.

A port is only half the story: another server on it answers health checks just as ours would.
So a start also proves the answer comes from the process it started (local.py: tritonserver's
--id; openai_frontend.py: the frontend's instance token), and this module makes the common case,
a port already taken, fail at once and say by what.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from .errors import PortTaken


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (Linux's /proc/net; empty elsewhere)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(inode)
    return inodes


def holder(port: int) -> str | None:
    """'pid N: program args' of the process listening on `port`, when /proc shows it (another
    user's processes it may not). Only the program and its first plain arguments: command lines
    of servers carry keys."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd")
            if any(os.readlink(fds / fd) in inodes for fd in os.listdir(fds)):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                words = [Path(argv[0]).name] + [w for w in argv[1:3] if w and "=" not in w and "key" not in w.lower()]
                return f"pid {pid}: {' '.join(words)}"
    return None


def in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something listens there. SO_REUSEADDR as servers
    set it, so a port in TIME_WAIT from a stopped server counts as free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_free(host: str, ports: dict[str, int]) -> None:
    """Raise PortTaken for the first port of `ports` ({role: port}; 0 means none) in use on `host`."""
    for role, port in ports.items():
        if port and in_use(host, port):
            held = holder(port)
            by = f", held by {held}" if held else ""
            raise PortTaken(f"port {port} ({role}) is already in use{by}: stop that process or choose another port")
