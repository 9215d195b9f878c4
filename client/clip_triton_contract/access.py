"""Who may call which of Triton's APIs (the compose files and the Kubernetes manifests spell the
groups; the unit tests check that they agree).

Triton restricts API groups with `--http-restricted-api` / `--grpc-restricted-protocol`
(`<api>,<api>:<header>=<value>`, one flag per group, each group its own key). Health stays open
for load balancers and probes.
"""

from __future__ import annotations

API_KEY_HEADER = "x-api-key"
# Over gRPC, Triton looks the restricted-protocol header up with this prefix in the call metadata.
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"

# Never open to anonymous callers: loading models, registering shared memory (the CVE-2025-23319
# chain), tracing and logging settings. When the operator gives no admin key, one is generated.
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
# Behind the client key (`CLIPClient(api_key=...)`) when the operator sets one.
CLIENT_APIS = ("inference", "metadata", "model-config", "statistics")


def restricted_api_flags(apis: tuple[str, ...], key: str) -> list[str]:
    """tritonserver flags that put `apis` behind `x-api-key: <key>` over HTTP and gRPC."""
    spec = f"{','.join(apis)}:{API_KEY_HEADER}={key}"
    return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]


def header_arguments(items: list[str]) -> dict[str, str]:
    """Repeated `--header KEY=VALUE` command-line arguments as request headers (the client CLI's
    and clip_triton_ops.deploy's); ValueError names the first malformed one."""
    headers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--header needs KEY=VALUE, got {item!r}")
        headers[key] = value
    return headers


def key_headers(key: str, protocol: str) -> dict[str, str]:
    """Request headers that carry `key` for `protocol` ("http" or "grpc")."""
    return {(API_KEY_HEADER if protocol == "http" else GRPC_HEADER_PREFIX + API_KEY_HEADER): key}
