"""A shared fleet: explicit model control next to another team's model, namespaced names,
instance counts without editing files, and access control - against real tritonservers."""

import time

import numpy as np
import pytest
import tritonclient.grpc as grpc
import tritonclient.http as http
from images import embeddable
from tritonclient.utils import InferenceServerException

from clip_triton import LocalTritonServer
from clip_triton_build.namespace import namespaced
from clip_triton_client import AccessDeniedError, CLIPClient
from clip_triton_ops.deploy import deploy, unload
from helpers import REPOSITORY, text_array, triton_infer, url_of

OTHER_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        echo = [pb_utils.get_input_tensor_by_name(r, "IN").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", array)]) for array in echo]
"""
OTHER_CONFIG = """name: "other_team_echo"
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def fleet_repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    names = namespaced(REPOSITORY, root, "search_")
    other = root / "other_team_echo"
    (other / "1").mkdir(parents=True)
    (other / "1" / "model.py").write_text(OTHER_MODEL)
    (other / "config.pbtxt").write_text(OTHER_CONFIG)
    return root, names


def test_namespaced_copy_is_consistent(fleet_repository):
    root, names = fleet_repository
    assert names == [
        "search_clip_tokenizer_python",
        "search_clip_tokenizer",
        "search_clip_text_encoder",
        "search_clip_image_preprocess",
        "search_clip_image_encoder",
        "search_clip_image",
        "search_clip_text",
    ]
    images = (root / "search_clip_image" / "config.pbtxt").read_text()
    assert (
        'model_name: "search_clip_image_preprocess"' in images and 'model_name: "search_clip_image_encoder"' in images
    )
    ensemble = (root / "search_clip_text" / "config.pbtxt").read_text()
    assert 'model_name: "search_clip_tokenizer"' in ensemble and 'model_name: "search_clip_text_encoder"' in ensemble
    # the tokenizer sends non-ASCII texts to the namespaced Python tokenizer, not another team's
    assert (
        'string_value: "search_clip_tokenizer_python"' in (root / "search_clip_tokenizer" / "config.pbtxt").read_text()
    )
    assert (
        'name: "search_clip_text_encoder"' in (root / "search_clip_text_encoder" / "configs" / "cpu.pbtxt").read_text()
    )


def test_explicit_mode_load_unload_next_to_another_model(fleet_repository, server):
    root, names = fleet_repository
    with LocalTritonServer.on_free_ports(repository=root, model_control_mode="explicit") as srv:
        admin = grpc.InferenceServerClient(srv.grpc_url)
        admin.load_model("other_team_echo", headers=srv.admin_headers())
        loaded = deploy(
            srv.grpc_url,
            root,
            "cpu",
            encoder_instances=2,
            tokenizer_instances=3,
            headers=srv.admin_headers(),
            prefix="search_",
            image_preprocess_instances=1,
        )
        assert set(loaded.values()) == {"ready"} and len(loaded) == 7
        config = admin.get_model_config("search_clip_text_encoder", as_json=True)["config"]
        assert config["instance_group"][0]["count"] == 2 and config["instance_group"][0]["kind"] == "KIND_CPU"
        assert (
            admin.get_model_config("search_clip_tokenizer", as_json=True)["config"]["instance_group"][0]["count"] == 3
        )
        texts = ["a photo of a cat", "fleet", "café crème"]  # the last through the namespaced fallback
        with CLIPClient(srv.grpc_url, model="search_clip_text") as c:
            got = c.encode(texts)
            assert c.model_info().weights in ("random-init", "pretrained")  # found through the namespaced steps
        (expected,) = triton_infer("grpc", server.grpc_url, "clip_text", {"TEXT": text_array(texts)}, ["EMBEDDING"])
        assert np.abs(got - expected).max() <= 1e-5
        config = admin.get_model_config("search_clip_image_preprocess", as_json=True)["config"]
        assert config["instance_group"][0]["count"] == 1
        with CLIPClient(srv.grpc_url, model="search_clip_text") as c, CLIPClient(server.grpc_url) as default:
            photo = embeddable()["jpeg"]
            assert np.abs(c.encode_images([photo]) - default.encode_images([photo])).max() <= 1e-5
        unload(srv.grpc_url, headers=srv.admin_headers(), prefix="search_")
        deadline = time.monotonic() + 30  # an unload returns once asked; the model goes when its requests end
        while time.monotonic() < deadline and any(admin.is_model_ready(m) for m in names):
            time.sleep(0.1)
        assert not any(admin.is_model_ready(m) for m in names)
        assert admin.is_model_ready("other_team_echo")
        (out,) = triton_infer("grpc", srv.grpc_url, "other_team_echo", {"IN": np.ones((1, 2), np.float32)}, ["OUT"])
        assert out.tolist() == [[1.0, 1.0]]
        admin.close()


def test_repository_control_api_is_closed_by_default(server):
    client = http.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException, match=r"(?i)restricted|permission|403"):
            client.unload_model("clip_text")  # no admin key
        with pytest.raises(InferenceServerException, match=r"(?i)explicit|not allowed|polling"):
            client.unload_model("clip_text", headers=server.admin_headers("http"))  # mode "none"
        assert client.is_model_ready("clip_text")
    finally:
        client.close()
    # the server's listening sockets are bound to loopback only (the kernel's table, not our flags)
    assert listening_addresses(server.http_port) == {"127.0.0.1"}
    assert listening_addresses(server.grpc_port) == {"127.0.0.1"}


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from the kernel's tables
    (/proc/net/tcp and tcp6; an IPv4-mapped IPv6 address is reported as its IPv4 address)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            found.add(str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip))
    return found


def test_restricted_apis_need_the_key_and_it_never_reaches_the_log(tmp_path):
    key = "k3y-" + "x" * 20
    with LocalTritonServer.on_free_ports(api_key=key) as srv:
        for protocol, url, module in (("http", srv.http_url, http), ("grpc", srv.grpc_url, grpc)):
            with pytest.raises(InferenceServerException):
                triton_infer(protocol, url, "clip_text", {"TEXT": text_array(["no key"])}, ["EMBEDDING"])
            with CLIPClient(url, protocol=protocol) as anonymous:
                with pytest.raises(AccessDeniedError, match="api_key"):
                    anonymous.encode(["no key"])
            with CLIPClient(url, protocol=protocol, api_key="wrong") as wrong:
                with pytest.raises(AccessDeniedError):
                    wrong.encode(["wrong key"])
            with CLIPClient(url, protocol=protocol, api_key=key) as client:
                assert client.encode(["with the key"]).shape == (1, 512)
            with CLIPClient(url, protocol=protocol, api_key=key, wait_ready=10) as client:
                assert client.model_info().dim == 512
            health = module.InferenceServerClient(url)
            assert health.is_server_ready()  # probes need no key
            health.close()
        log = srv.log_path.read_text(errors="replace")
    assert key not in log


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_admin_apis_refuse_anonymous_callers_while_inference_stays_open(server, protocol):
    """Shared memory, repository, trace and logging APIs need the admin key on every server
    (a random one when the operator gives none); inference needs none unless a client key is set."""
    module = http if protocol == "http" else grpc
    anonymous = module.InferenceServerClient(url_of(server, protocol))
    admin_headers = server.admin_headers(protocol)
    calls = {
        "logging": lambda **kw: anonymous.update_log_settings({"log_verbose_level": 1}, **kw),
        "trace": lambda **kw: anonymous.get_trace_settings(**kw),
        "shared-memory": lambda **kw: anonymous.register_system_shared_memory("probe", "/probe", 64, **kw),
        "model-repository": lambda **kw: anonymous.get_model_repository_index(**kw),
    }
    try:
        for name, call in calls.items():
            with pytest.raises(InferenceServerException, match=r"(?i)restricted|permission|403|unauthenticated"):
                call()
        assert anonymous.get_trace_settings(headers=admin_headers)  # the key opens them
        assert anonymous.get_model_repository_index(headers=admin_headers)
        anonymous.update_log_settings({"log_verbose_level": 0}, headers=admin_headers)
    finally:
        anonymous.close()
    (out,) = triton_infer(
        protocol, url_of(server, protocol), "clip_text", {"TEXT": text_array(["open"])}, ["EMBEDDING"]
    )
    assert out.shape == (1, 512)
