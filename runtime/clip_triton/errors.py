"""The local runtime's one error family: a process it starts did not start, or stopped serving."""

from __future__ import annotations


class ServerFailed(RuntimeError):
    """A process of the local runtime (tritonserver, the OpenAI frontend) did not start or serve;
    the message says why, with the end of its log where there is one."""


class PortTaken(ServerFailed):
    """A port the runtime would listen on is in use: the message names it, its role, and its
    holder when that can be known."""
