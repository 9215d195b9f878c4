"""The exported encoder trims each batch to its longest text; that must not change any result."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clip_build.encoder import TrimmedTextEncoder, pooling_positions
from clip_build.spec import CONTEXT_LENGTH
from conftest import REPOSITORY, get_text_features


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(REPOSITORY / "clip_text_encoder" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


def random_ids(rng, lengths):
    ids = np.zeros((len(lengths), CONTEXT_LENGTH), dtype=np.int64)
    for row, n in zip(ids, lengths):
        row[0] = 49406
        row[1 : 1 + n] = rng.integers(0, 49406, n)
        row[1 + n] = 49407
    return ids


@pytest.mark.parametrize("lengths", [[0], [3, 1, 7], [20, 75, 2], [75] * 4, [5] * 8])
def test_trimmed_onnx_equals_full_length_hf(session, hf_model, lengths):
    ids = random_ids(np.random.default_rng(sum(lengths)), lengths)
    (trimmed,) = session.run(["text_embeds"], {"input_ids": ids})
    full = get_text_features(hf_model, ids)  # all 77 positions
    assert np.abs(trimmed - full).max() <= 1e-5


def test_pooling_position_is_first_eot():
    ids = torch.tensor([[49406, 5, 49407, 0, 49407], [49406, 49407, 0, 0, 0]])
    assert pooling_positions(ids, 49407).tolist() == [2, 1]
    assert pooling_positions(ids, 2).tolist() == [2, 1]  # legacy argmax rule agrees


def test_trim_module_matches_untrimmed_in_torch(hf_model):
    ids = torch.from_numpy(random_ids(np.random.default_rng(0), [4, 30, 11]))
    from transformers import CLIPTextModelWithProjection

    tower = CLIPTextModelWithProjection(hf_model.config.text_config).eval()
    tower.text_model.load_state_dict(hf_model.text_model.state_dict())
    tower.text_projection.load_state_dict(hf_model.text_projection.state_dict())
    with torch.no_grad():
        trimmed = TrimmedTextEncoder(tower)(ids)
        full = tower(input_ids=ids).text_embeds
    assert (trimmed - full).abs().max() <= 1e-5
