"""The models run on C++ backends (the encoder on the ones NGC's image ships, the tokenizer on its own),
and their settings are real."""

import re
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpc
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from clip_triton import LocalTritonServer
from clip_triton_build.repository import ORT_CPU_PARAMETERS, read_config
from clip_triton_contract.names import ENCODER_MODEL, PLAIN_SYMBOLS_PARAMETER, TOKENIZER_MODEL
from helpers import REPOSITORY


def log_of(srv) -> str:
    return Path(srv.log_path).read_text(errors="replace")


def test_the_onnx_encoder_is_served_by_the_cxx_onnxruntime_backend(server):
    log = log_of(server)
    assert re.search(r'onnxruntime\.cc:\d+\] "TRITONBACKEND_Initialize: onnxruntime"', log)
    assert re.search(
        r'onnxruntime\.cc:\d+\] "TRITONBACKEND_ModelInstanceInitialize: clip_text_encoder_0_0 '
        r'\(CPU device 0\)"',
        log,
    )
    backend_dir = Path(re.search(r'"backend-directory":"([^"]+)"', log).group(1))
    assert (backend_dir / "onnxruntime" / "libtriton_onnxruntime.so").is_file()
    assert not (backend_dir / "onnxruntime" / "model.py").exists()  # no Python-based stand-in


def test_the_torchscript_encoder_is_served_by_the_cxx_libtorch_backend(torchscript_server):
    log = log_of(torchscript_server)
    assert re.search(r'libtorch\.cc:\d+\] "TRITONBACKEND_Initialize: pytorch"', log)
    assert re.search(
        r'libtorch\.cc:\d+\] "TRITONBACKEND_ModelInstanceInitialize: clip_text_encoder_0_0 '
        r'\(CPU device 0\)"',
        log,
    )


def test_the_cpu_variant_declares_its_onnxruntime_settings():
    config = read_config(REPOSITORY / ENCODER_MODEL / "configs" / "cpu.pbtxt")
    assert {k: config.parameters[k].string_value for k in ORT_CPU_PARAMETERS} == ORT_CPU_PARAMETERS
    assert config.optimization.HasField("graph")


@pytest.fixture(scope="module")
def explicit_server():
    with LocalTritonServer.on_free_ports(model_control_mode="explicit") as srv:
        yield srv


def load(srv, config_path: Path, **parameters) -> None:
    """Load the model of the config at `config_path`, with `parameters` set in it."""
    config = read_config(config_path)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    client = grpc.InferenceServerClient(srv.grpc_url)
    try:
        client.load_model(
            config.name,
            headers=srv.admin_headers(),
            config=json_format.MessageToJson(config, preserving_proto_field_name=True),
        )
    finally:
        client.close()


def unload(srv, model: str) -> None:
    client = grpc.InferenceServerClient(srv.grpc_url)
    try:
        client.unload_model(model, headers=srv.admin_headers())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.is_model_ready(model):
            time.sleep(0.1)
    finally:
        client.close()


def load_encoder(srv, **parameters) -> None:
    load(srv, REPOSITORY / ENCODER_MODEL / "configs" / "cpu.pbtxt", **parameters)


def unload_encoder(srv) -> None:
    unload(srv, ENCODER_MODEL)


def threads(srv) -> int:
    time.sleep(0.5)  # let the session's thread pool come up
    return len(list(Path(f"/proc/{srv.process.pid}/task").iterdir()))


def test_every_onnx_session_runs_on_the_servers_one_thread_pool(explicit_server):
    """The server starts ONNX Runtime with one pool for all sessions (ORT_SERVER_CONFIG): an
    encoder loaded with intra_op_thread_count=9 starts no pool of its own, so it adds no more
    threads than one loaded with 1 (the first load also starts threads of its own, once). Two
    instances with pools of their own would add sixteen."""
    added = {}
    for count in ("1", "9"):
        before = threads(explicit_server)
        load_encoder(explicit_server, intra_op_thread_count=count)
        added[count] = threads(explicit_server) - before
        unload_encoder(explicit_server)
    assert added["9"] <= added["1"] + 2, added


def test_the_backend_refuses_a_bad_execution_mode(explicit_server):
    with pytest.raises(InferenceServerException, match=r"execution_mode are 0 or 1"):
        load_encoder(explicit_server, execution_mode="7")
    load_encoder(explicit_server)  # the declared settings load
    unload_encoder(explicit_server)


@pytest.mark.parametrize(
    "plain_symbols, item",
    [("200D 1F300-1F2FF", "1F300-1F2FF"), ("1F300 200D", "200D"), ("41", "41"), ("1F3XX", "1F3XX")],
    ids=["a range upside down", "out of order", "ASCII", "not hex"],
)
def test_the_tokenizer_backend_refuses_malformed_plain_symbols_and_names_the_item(explicit_server, plain_symbols, item):
    """clip_bpe reads plain_symbols at load: hexadecimal non-ASCII code points and ranges,
    ascending and disjoint. Anything else fails the load, naming the item."""
    with pytest.raises(InferenceServerException, match=f"plain_symbols: '{item}'"):
        load(explicit_server, REPOSITORY / TOKENIZER_MODEL / "config.pbtxt", **{PLAIN_SYMBOLS_PARAMETER: plain_symbols})


def test_the_tokenizer_backend_loads_its_declared_plain_symbols(explicit_server):
    load(explicit_server, REPOSITORY / TOKENIZER_MODEL / "config.pbtxt")
    unload(explicit_server, TOKENIZER_MODEL)
