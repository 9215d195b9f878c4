"""clip_triton_contract.names: every model of a checkpoint, by name, in the order Triton loads them,
and a checkpoint's image ensemble found from its text ensemble's name however the repository was
built (default, namespaced, named)."""

import pytest

from clip_triton_contract.names import LOAD_ORDER, all_model_names, image_ensemble_of


@pytest.mark.parametrize(
    "text_model, image_model",
    [
        ("clip_text", "clip_image"),  # the default checkpoint
        ("search_clip_text", "search_clip_image"),  # namespaced for a fleet (clip_triton_build.namespace)
        ("clip-vit-l14", "clip-vit-l14_clip_image"),  # --model NAME=...
        ("search_clip-vit-l14", "search_clip-vit-l14_clip_image"),  # a named checkpoint, namespaced
    ],
)
def test_a_text_ensembles_name_leads_to_its_image_ensemble(text_model, image_model):
    assert image_ensemble_of(text_model) == image_model


def test_every_model_loads_after_the_models_it_calls():
    order = list(LOAD_ORDER)
    assert order.index("clip_tokenizer_python") < order.index("clip_tokenizer")  # its fallback
    assert order.index("clip_image_preprocess") < order.index("clip_image") > order.index("clip_image_encoder")
    assert order[-1] == "clip_text"  # a checkpoint's bare name, last
    assert list(all_model_names("b32").values()) == [
        "b32_clip_tokenizer_python",
        "b32_clip_tokenizer",
        "b32_clip_text_encoder",
        "b32_clip_image_preprocess",
        "b32_clip_image_encoder",
        "b32_clip_image",
        "b32",
    ]
