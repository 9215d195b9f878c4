"""The encoder's exports (text_tower, export) against HF's CLIPTextModelWithProjection, in-process
on a small model of CLIP's text architecture: the trim, the length groups, the packed tower with
its fused add and norm, and what its CUDA graphs capture must not change any result."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clip_triton_build.encoder.export import (
    TrimmedTextEncoder,
    export_onnx,
    export_packed,
    export_torchscript,
    pack,
)
from clip_triton_build.encoder.text_tower import CLIPTextTower, in_vocabulary, pooling_positions
from clip_triton_build.spec import PAD_ID, VIT_B32_TEXT_CONFIG
from clip_triton_contract.names import CONTEXT_LENGTH

SOT_ID, EOT_ID = VIT_B32_TEXT_CONFIG["bos_token_id"], VIT_B32_TEXT_CONFIG["eos_token_id"]
VOCAB_SIZE = VIT_B32_TEXT_CONFIG["vocab_size"]
EMBED_DIM = 32  # the small model's projection


@pytest.fixture(scope="module")
def model():
    """CLIP's text tower at a small size (2 layers, width 64, heads of 32), seeded, with every
    layer norm and bias of its own: random init leaves every norm the identity (weight 1, bias 0)
    and every bias 0, which would hide a residual add paired with the wrong norm, or a bias lost."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        **{
            **VIT_B32_TEXT_CONFIG,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": EMBED_DIM,
        }
    )
    torch.manual_seed(3)
    model = CLIPTextModelWithProjection(config).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".layer_norm" in name or "final_layer_norm" in name:
                parameter.copy_((name.endswith("weight")) + 0.5 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith("bias"):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def features(model, ids) -> np.ndarray:
    """HF's get_text_features: the projected pooled output, all 77 positions."""
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids)).text_embeds.numpy()


@pytest.fixture(scope="module")
def session(model, tmp_path_factory):
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def random_ids(rng, lengths):
    ids = np.zeros((len(lengths), CONTEXT_LENGTH), dtype=np.int64)
    for row, n in zip(ids, lengths):
        row[0] = SOT_ID
        row[1 : 1 + n] = rng.integers(0, SOT_ID, n)  # any token below the two special ones
        row[1 + n] = EOT_ID
    return ids


@pytest.mark.parametrize("lengths", [[0], [3, 1, 7], [20, 75, 2], [75] * 4, [5] * 8])
def test_trimmed_onnx_equals_full_length_hf(session, model, lengths):
    ids = random_ids(np.random.default_rng(sum(lengths)), lengths)
    (trimmed,) = session.run(["text_embeds"], {"input_ids": ids})
    full = features(model, ids)  # all 77 positions
    assert np.abs(trimmed - full).max() <= 1e-5


def test_pooling_position_is_first_eot():
    ids = torch.tensor([[SOT_ID, 5, EOT_ID, 0, EOT_ID], [SOT_ID, EOT_ID, 0, 0, 0]])
    assert pooling_positions(ids, EOT_ID).tolist() == [2, 1]
    assert pooling_positions(ids, 2).tolist() == [2, 1]  # legacy argmax rule agrees


def test_trim_module_matches_untrimmed_in_torch(model):
    ids = torch.from_numpy(random_ids(np.random.default_rng(0), [4, 30, 11]))
    tower = model
    with torch.no_grad():
        trimmed = TrimmedTextEncoder(tower)(ids)
        full = tower(input_ids=ids).text_embeds
    assert (trimmed - full).abs().max() <= 1e-5


@pytest.mark.parametrize("lengths", [[0], [3, 1, 7], [75, 2], [12] * 5])
def test_export_tower_equals_hf_get_text_features(model, lengths):
    """The fused-QKV, SDPA tower that both exports run is HF's computation."""
    ids = random_ids(np.random.default_rng(len(lengths)), lengths)
    with torch.no_grad():
        ours = CLIPTextTower(model)(torch.from_numpy(ids)).numpy()
    assert np.abs(ours - features(model, ids)).max() <= 1e-5


def test_ids_outside_the_vocabulary_read_as_pad():
    ids = torch.tensor([[SOT_ID, -1, VOCAB_SIZE, 10**9, 5, EOT_ID]])
    assert in_vocabulary(ids, VOCAB_SIZE).tolist() == [[SOT_ID, PAD_ID, PAD_ID, PAD_ID, 5, EOT_ID]]


@pytest.fixture(scope="module")
def torchscript_module(model, tmp_path_factory):
    path = export_torchscript(model, tmp_path_factory.mktemp("torchscript") / "model.pt")
    return torch.jit.load(str(path), map_location="cpu")


def test_torchscript_export_names_no_device(torchscript_module):
    """A device in the graph (HF's forward under trace bakes in `device=cuda:0`) breaks serving
    on any other GPU; the export must carry none."""
    import re

    module = torchscript_module
    code = module.code + module.inner.code + str(module.inner.graph)
    assert not re.search(r"cuda:|device\s*=", code)  # asking `is_cuda` names none


# (most rows per group, cost of a pass in padded positions): cut at every length, groups of 1
# row, cuts by rows only, cuts by padding only, both
@pytest.mark.parametrize("group_rows, pass_cost", [(1000, 0), (1, 10**9), (5, 10**9), (1000, 256), (16, 2000)])
def test_torchscript_length_groups_give_each_row_its_one_pass_result(torchscript_module, group_rows, pass_cost):
    """Big batches run in length-sorted groups (cut where padding would cost more than a pass);
    each row must come back in its place with the result it gets from one pass over the batch."""
    module = torchscript_module
    rng = np.random.default_rng(group_rows + pass_cost)
    lengths = rng.integers(0, 76, 37).tolist() + [3] * 12 + [75] * 3  # a run of equal lengths, a long tail
    ids = torch.from_numpy(random_ids(rng, rng.permutation(lengths).tolist()))
    with torch.no_grad():
        module.cpu_group_rows, module.cpu_pass_cost = 1000, 10**9
        one_pass = module(ids)
        module.cpu_group_rows, module.cpu_pass_cost = group_rows, pass_cost
        grouped = module(ids)
    assert grouped.shape == (len(lengths), EMBED_DIM)
    assert (grouped - one_pass).abs().max().item() <= 1e-5


@pytest.fixture(scope="module")
def packed_module(model, encoder_ops, tmp_path_factory):
    """The fp16 GPU file's structure (packed tokens, fused add and norm, CUDA graphs for small
    batches: `export_packed`) exported on the CPU in fp32, with the attention kernel's reference
    math ("masked"): off the GPU it runs every batch packed, and its graphs' `_tower` can be run
    eagerly."""
    path = tmp_path_factory.mktemp("packed") / "model_packed.pt"
    export_packed(model, path, device="cpu", half=False, attention="masked")
    return torch.jit.load(str(path), map_location="cpu")


@pytest.mark.parametrize("lengths", [[0], [3, 1, 7], [75, 2, 40, 0, 11], [12] * 9])
def test_packed_export_equals_hf_features(model, packed_module, lengths):
    """One pass over the batch's real tokens, each text attending only to its own: every row
    gets HF's result, in its place, at batch sizes and lengths the trace never saw."""
    ids = random_ids(np.random.default_rng(len(lengths) + 100), lengths)
    with torch.no_grad():
        ours = packed_module(torch.from_numpy(ids)).numpy()
    assert ours.shape == (len(lengths), EMBED_DIM)
    assert np.abs(ours - features(model, ids)).max() <= 1e-5


def test_packed_export_reads_ids_outside_the_vocabulary_as_pad_and_pools_rows_without_eot(model, packed_module):
    ids = random_ids(np.random.default_rng(7), [5, 9])
    ids[0, 2], ids[0, 3] = -4, VOCAB_SIZE + 3
    ids[1, 10] = 0  # row 1 loses its EOT: it pools where HF pools it (its largest id)
    with torch.no_grad():
        ours = packed_module(torch.from_numpy(ids)).numpy()
    expected = features(model, in_vocabulary(torch.from_numpy(ids), VOCAB_SIZE).numpy())
    assert np.abs(ours - expected).max() <= 1e-5


def test_the_packed_export_fuses_every_add_with_the_norm_after_it(model, packed_module):
    """The embeddings' add, then two adds a layer, the last one's without a norm after it."""
    layers = model.config.num_hidden_layers
    assert str(packed_module.inner.inlined_graph).count("clip_kernels::add_layer_norm") == 2 * layers


def test_pack_puts_each_row_s_tokens_up_to_its_eot_one_after_another():
    ids = torch.tensor([[SOT_ID, 5, 6, EOT_ID, 0], [SOT_ID, EOT_ID, 0, 0, 0]])
    tokens, positions, cu_seqlens, last = pack(ids, EOT_ID)
    assert tokens.tolist() == [SOT_ID, 5, 6, EOT_ID, SOT_ID, EOT_ID]
    assert positions.tolist() == [0, 1, 2, 3, 0, 1]
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.tolist() == [0, 4, 6]
    assert last.tolist() == [3, 5]


def test_the_graph_export_keeps_every_capture_op_through_scripting(packed_module, encoder_ops):
    """TorchScript drops calls it thinks pure; the capture bracket and the switch to the urgent stream
    must survive scripting whole."""
    assert set(encoder_ops) == {"stage", "captured", "enter", "capture_begin", "capture_end", "replay", "urgent"}
    for op in encoder_ops:
        assert f"ops.clip_cuda_graphs.{op}(" in packed_module.code, op


# (texts' lengths between SOT and EOT, the row bucket, the token bucket forward picks): one text
# alone; zero rows and filler tokens; a long text among short ones; 64 texts of 77 tokens, the
# largest bucket, with no filler
@pytest.mark.parametrize(
    "lengths, rows, tokens", [([0], 1, 16), ([3, 1, 7], 4, 32), ([75, 2, 40, 0, 11], 8, 192), ([75] * 64, 64, 4928)]
)
def test_a_graph_runs_its_batch_packed_to_the_bucket_with_hf_s_result(model, packed_module, lengths, rows, tokens):
    """What a CUDA graph of the fp16 export captures (`_ScriptedGraphs._tower`), run eagerly on the
    CPU with the kernel's reference math: the batch with zero rows up to its row bucket, packed to
    the token bucket forward picks for it (`_bucket_tokens`); every real row still gets HF's
    result, in its place. (The graphs themselves need CUDA: the GPU run checks them against the
    CPU reference.)"""
    scripted = packed_module
    ids = random_ids(np.random.default_rng(len(lengths) + rows), lengths)
    assert scripted._bucket_tokens(torch.from_numpy(ids), rows) == tokens
    static = np.zeros((rows, CONTEXT_LENGTH), dtype=np.int64)
    static[: len(lengths)] = ids
    with torch.no_grad():
        ours = scripted._tower(torch.from_numpy(static), tokens)[: len(lengths)].numpy()
    assert np.abs(ours - features(model, ids)).max() <= 1e-5


def test_every_torchscript_export_hands_its_embeddings_back_in_host_memory(torchscript_module, packed_module):
    """Embeddings left on the GPU cost every response a device buffer and, in the ensemble, a copy
    to the host with a stream synchronisation; the files copy a batch's rows to the host once.
    (Here on the CPU that copy is a no-op; the GPU run checks where a GPU batch's rows land.)"""
    for module in (torchscript_module, packed_module):
        assert "._output(" in module.forward.code
        assert "torch.cpu(embeds)" in module._output.code


def test_a_batch_goes_to_the_smallest_graph_bucket_that_holds_it():
    from clip_triton_build.encoder.export import GRAPH_ROWS, GRAPH_TOKENS, _bucket

    assert [_bucket(list(GRAPH_ROWS), rows) for rows in (1, 3, 4, 33, 64)] == [1, 4, 4, 64, 64]
    assert [_bucket(list(GRAPH_TOKENS), n) for n in (2, 16, 17, 200, 4000)] == [16, 16, 32, 256, 4928]
    # the largest batch a graph takes, every text 77 tokens, fits the last token bucket
    assert GRAPH_TOKENS[-1] == GRAPH_ROWS[-1] * CONTEXT_LENGTH


def variant(model, **config):
    """The small model's weights under another config."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    other = CLIPTextModelWithProjection(CLIPTextConfig(**{**model.config.to_dict(), **config})).eval()
    other.load_state_dict(model.state_dict())
    return other


# LAION's checkpoints: exact gelu, EOT id 49407 (HF pools at the first EOT id); OpenAI's: quick_gelu,
# the legacy EOT id 2 (HF pools at argmax(ids))
CONVENTIONS = {
    "laion": dict(hidden_act="gelu", eos_token_id=EOT_ID),
    "openai": dict(hidden_act="quick_gelu", eos_token_id=2),
}


@pytest.mark.parametrize("family", CONVENTIONS)
def test_every_export_follows_the_activation_and_the_eot_convention(family, model, encoder_ops, tmp_path):
    checkpoint = variant(model, **CONVENTIONS[family])
    ids = random_ids(np.random.default_rng(11), [3, 40, 0, 75, 6])
    ids[0, 9] = EOT_ID  # a second EOT after the first: pooling stays at the first
    ids[4, 7] = 0  # no EOT at all: each convention pools this row where HF does
    expected = features(checkpoint, ids)
    other = {"laion": "openai", "openai": "laion"}[family]
    assert np.abs(expected - features(variant(model, **CONVENTIONS[other]), ids)).max() > 1e-3  # they differ here
    onnx = export_onnx(checkpoint, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    packed = torch.jit.load(
        str(export_packed(checkpoint, tmp_path / "p.pt", device="cpu", half=False, attention="masked"))
    )
    trimmed = torch.jit.load(str(export_torchscript(checkpoint, tmp_path / "t.pt")))
    with torch.no_grad():
        results = {
            "tower": CLIPTextTower(checkpoint)(torch.from_numpy(ids)).numpy(),
            "onnx": session.run(["text_embeds"], {"input_ids": ids})[0],
            "packed": packed(torch.from_numpy(ids)).numpy(),
            "torchscript": trimmed(torch.from_numpy(ids)).numpy(),
        }
    for name, got in results.items():
        assert np.abs(got - expected).max() <= 1e-5, name


def test_the_tower_refuses_an_activation_it_was_not_built_for(model):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    relu = CLIPTextModelWithProjection(CLIPTextConfig(**{**model.config.to_dict(), "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="quick_gelu or gelu, not 'relu'"):
        CLIPTextTower(relu)
