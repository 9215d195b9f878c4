"""Where one request's time goes inside Triton, from its trace API (TIMESTAMPS level).

The trace file is a server start-up flag (`--trace-config triton,file=PATH`: Triton refuses to
move it over the network); the level, rate and count are set over HTTP (the admin `trace` API).
With log_frequency = count, Triton writes `PATH.0` once it has `count` traces, `PATH.1` after
the next `count`, and so on for the server's lifetime.

Per ensemble request: the tokenizer's and the encoder's queue and compute time, the rest of the
ensemble's time (scheduling between steps, response assembly), and the gRPC send.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import numpy as np


def server_flags(trace_file: Path) -> list[str]:
    return ["--trace-config", f"triton,file={trace_file}"]


def start(http_url: str, headers: dict[str, str], count: int) -> None:
    """Trace every request from now on, until `count` are traced."""
    body = json.dumps(
        {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": str(count), "log_frequency": str(count)}
    ).encode()
    request = urllib.request.Request(
        f"http://{http_url}/v2/trace/setting", data=body, headers={"Content-Type": "application/json", **headers}
    )
    urllib.request.urlopen(request, timeout=10).close()


def read(trace_file: Path, index: int = 0, timeout: float = 20.0) -> list[dict]:
    """The traces of file number `index`, as {"id", "model", "parent", "ts": {NAME: ns}} records."""
    path = Path(f"{trace_file}.{index}")
    deadline = time.monotonic() + timeout
    while True:  # Triton writes the file after the last traced request returns: wait for all of it
        try:
            entries = json.loads(path.read_text())
            break
        except (FileNotFoundError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    records: dict = defaultdict(lambda: {"ts": {}})
    for entry in entries:
        record = records[entry["id"]]
        if "model_name" in entry:
            record["model"], record["parent"] = entry["model_name"], entry.get("parent_id")
        for stamp in entry.get("timestamps", []):
            record["ts"].setdefault(stamp["name"], stamp["ns"])
    return [dict(record, id=key) for key, record in records.items()]


def breakdown(records: list[dict], ensemble: str, steps: list[str]) -> dict:
    """Median and p99 (microseconds) of each part of an ensemble request."""
    children = defaultdict(dict)
    for record in records:
        if record.get("parent") is not None:
            children[record["parent"]][record.get("model")] = record["ts"]
    parts = defaultdict(list)
    for record in records:
        ts = record["ts"]
        if (
            record.get("model") != ensemble
            or "REQUEST_END" not in ts
            or not all(s in children[record["id"]] for s in steps)
        ):
            continue
        total = ts["REQUEST_END"] - ts["REQUEST_START"]
        accounted = 0
        for step in steps:
            child = children[record["id"]][step]
            queue = child["COMPUTE_START"] - child["QUEUE_START"]
            compute = child["COMPUTE_END"] - child["COMPUTE_START"]
            parts[f"{step}_queue"].append(queue)
            parts[f"{step}_compute"].append(compute)
            if "COMPUTE_INPUT_END" in child and "COMPUTE_OUTPUT_START" in child:
                # compute = inputs gathered (and copied to the device) + the model + outputs read back
                parts[f"{step}_compute_input"].append(child["COMPUTE_INPUT_END"] - child["COMPUTE_START"])
                parts[f"{step}_compute_infer"].append(child["COMPUTE_OUTPUT_START"] - child["COMPUTE_INPUT_END"])
                parts[f"{step}_compute_output"].append(child["COMPUTE_END"] - child["COMPUTE_OUTPUT_START"])
            accounted += queue + compute
        parts["ensemble_rest"].append(total - accounted)
        parts["ensemble_total"].append(total)
        if "GRPC_SEND_END" in ts:
            parts["grpc_send"].append(ts["GRPC_SEND_END"] - ts["GRPC_SEND_START"])
    return {
        name: {
            "p50_us": float(np.percentile(v, 50)) / 1e3,
            "p99_us": float(np.percentile(v, 99)) / 1e3,
            "requests": len(v),
        }
        for name, v in parts.items()
    }
