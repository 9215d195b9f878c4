"""The frontend's settings: the one home of its defaults and limits.

Every field can be set by an environment variable `CLIP_OPENAI_<FIELD>` (upper case): the
workers uvicorn spawns read them there, and `python -m clip_openai` writes its command-line
options there before it spawns them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from clip_triton_contract.traffic import DEFAULT_CLASS, priority_level

ENV_PREFIX = "CLIP_OPENAI_"


@dataclass(frozen=True)
class Settings:
    # Triton's gRPC endpoint and the CLIP ensembles to serve: each one named here, and every model
    # its `models` stamp lists (the checkpoints built into the same repository), by its own name.
    triton_url: str = "127.0.0.1:8001"
    models: tuple[str, ...] = ("clip_text",)
    # Clients send `Authorization: Bearer <key>`; the frontend forwards it to Triton as the
    # inference APIs' x-api-key (clip_triton_contract.access). Empty: no key asked for or sent.
    api_key: str = field(default="", repr=False)
    # OpenAI's own limits on one request: 2048 inputs. Bodies over max_body_bytes are refused
    # while they are read (413), the same bound as the proxy's client_max_body_size: one image at
    # the image models' own limit (20 MB) fits, base64-encoded.
    max_inputs: int = 2048
    max_body_bytes: int = 32 * 1024 * 1024
    # Images (images.py): at most max_images in one request (each is decoded and preprocessed on
    # the server's CPU). Image URLs are fetched only from the hosts listed here (exact names; empty,
    # the default: none, since a fetch is the server's request on a client's behalf), each within
    # image_url_timeout_s and image_url_max_bytes.
    max_images: int = 64
    image_url_hosts: tuple[str, ...] = ()
    image_url_timeout_s: float = 10.0
    image_url_max_bytes: int = 20 * 1024 * 1024
    # Per worker process: requests admitted at once (being read, queued or in Triton), each holding
    # at most max_body_bytes; one more is answered 429 at once.
    max_pending: int = 1024
    # Per worker and model: calls to Triton in flight at once. Requests that arrive while all are
    # busy travel together in the next call (up to the ensemble's max_batch_size texts): under load
    # one gRPC call carries many clients' texts; idle, a request goes out at once.
    calls_in_flight: int = 4
    # gRPC channels (HTTP/2 connections) to Triton per worker, used in turn.
    channels: int = 2
    request_timeout_s: float = 60.0  # the deadline of each request to Triton
    # Readiness embeds one text through each model's whole pipeline; a wedged server fails it.
    ready_timeout_s: float = 5.0
    ready_cache_s: float = 1.0
    # Vectors are unit length unless a request says `"normalize": false` (docs/openai.md says why).
    normalize: bool = True
    # The traffic class (clip_triton_contract.traffic) of a request that names no service_tier:
    # interactive, or bulk for a frontend that serves indexing jobs.
    traffic: str = DEFAULT_CLASS

    def __post_init__(self):
        priority_level(self.traffic)  # ValueError names the classes

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            kind: type = type(f.default)
            if kind is tuple:
                values[f.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            elif kind is bool:
                values[f.name] = raw.strip().lower() in ("1", "true", "yes")
            else:
                values[f.name] = kind(raw)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that make from_env() return these settings."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[ENV_PREFIX + f.name.upper()] = str(value)
        return env


# Where python -m clip_openai listens unless told otherwise (the local runtime and the deployment
# files use the same): the API, and the metrics of all its workers.
DEFAULT_PORT = 9000
DEFAULT_METRICS_PORT = 9001
# A token that names one frontend process (its workers share it), in its health answers: whoever
# started it tells its answer from another frontend's on the same port. Random unless given.
INSTANCE_VARIABLE = ENV_PREFIX + "INSTANCE"


def default_workers() -> int:
    """Worker processes when none are asked for: one per two cores, 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))
