"""The build refuses a checkpoint it cannot serve, naming the field, before it touches its output
(clip_triton_build.servable): never a repository that builds and then fails at server load."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from checkpoints import Family, save_checkpoint, text_config

from clip_triton_build.__main__ import main as build
from clip_triton_build.repository import BUILT_MARKER

TINY = Family("tiny", 64, 1, 1, 64, 16, "quick_gelu", 2, False, ("vocab", "merges"))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def swap_two_tokens(vocab: dict) -> None:
    vocab["a</w>"], vocab["b</w>"] = vocab["b</w>"], vocab["a</w>"]


def change_a_merge(folder: Path) -> None:
    lines = (folder / "merges.txt").read_text().split("\n")
    lines[500] = "x y"
    (folder / "merges.txt").write_text("\n".join(lines))


REFUSALS = {
    "heads of 32": (dict(num_attention_heads=2), "num_attention_heads", "hidden_size 64 in 2 heads is not heads of 64"),
    "relu": (dict(hidden_act="relu"), "hidden_act", "'relu': the text tower is built for quick_gelu or gelu"),
    "an EOT id of 3": (dict(eos_token_id=3), "eos_token_id", "3: HF's CLIP pools at argmax"),
    "a vocabulary of 1000": (dict(vocab_size=1000), "vocab_size", "1000, not CLIP's BPE vocabulary of 49408"),
    "a context of 64": (dict(max_position_embeddings=64), "max_position_embeddings", "64, not CLIP's context of 77"),
}


@pytest.fixture
def previous_build(tmp_path):
    """An output folder a previous build wrote: a refused build must leave it as it was."""
    output = tmp_path / "repository"
    output.mkdir()
    (output / BUILT_MARKER).write_text("")
    (output / "clip_text").mkdir()
    return output


def refused(checkpoint: Path, output: Path, caplog, fmt: str = "onnx") -> str:
    caplog.set_level(logging.ERROR, logger="clip_triton_build")
    args = ["--checkpoint", str(checkpoint), "--output", str(output), "--format", fmt, "--require-weights"]
    assert build(args) == 2
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_text_config_the_build_cannot_serve_is_refused_naming_its_field(case, tmp_path, previous_build, caplog):
    overrides, field, message = REFUSALS[case]
    checkpoint = save_checkpoint(TINY, tmp_path / "checkpoint", **overrides)
    error = refused(checkpoint, previous_build, caplog)
    assert f"cannot serve {checkpoint}: {field}: {message}" in error
    assert (previous_build / "clip_text").is_dir()  # refused before the output was replaced


def test_a_checkpoint_of_another_model_type_is_refused(tmp_path, previous_build, caplog):
    checkpoint = tmp_path / "siglip"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "siglip_text_model"}))
    error = refused(checkpoint, previous_build, caplog)
    assert "model_type: 'siglip_text_model': the build serves CLIP's text tower" in error
    assert (previous_build / "clip_text").is_dir()


@pytest.mark.parametrize(
    "ships, damage, message",
    [
        (
            ("vocab", "merges"),
            lambda d: edit_json(d / "vocab.json", swap_two_tokens),
            "vocab.json: token 'a</w>' has id",
        ),
        (("vocab", "merges"), change_a_merge, "merges.txt: merge 499 is 'x y', not"),
        (
            ("json",),
            lambda d: edit_json(d / "tokenizer.json", lambda t: t["model"]["merges"].pop()),
            "tokenizer.json: 48893 merges",
        ),
    ],
    ids=["vocab.json", "merges.txt", "tokenizer.json"],
)
def test_a_checkpoint_whose_tokenizer_is_not_clip_s_bpe_is_refused(
    ships, damage, message, tmp_path, previous_build, caplog
):
    checkpoint = save_checkpoint(replace(TINY, tokenizer_files=ships), tmp_path / "checkpoint")
    damage(checkpoint)
    assert message in refused(checkpoint, previous_build, caplog)
    assert (previous_build / "clip_text").is_dir()


def test_a_text_tower_without_projection_is_refused(tmp_path, previous_build, caplog):
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpoint = tmp_path / "no-projection"
    CLIPTextModel(CLIPTextConfig(**text_config(TINY))).save_pretrained(checkpoint)
    error = refused(checkpoint, previous_build, caplog)
    assert f"cannot serve {checkpoint}: text_projection: the checkpoint has no text projection" in error
    assert (previous_build / "clip_text").is_dir()  # refused from its config, before the output is touched


def test_model_names_must_be_triton_names_and_distinct(tmp_path, capsys):
    for argv in (
        ["--model", "bad name=x"],
        ["--model", "a=x", "--model", "a=y"],
        ["--model", "a=x", "--model", "a_clip_tokenizer=y"],
    ):
        with pytest.raises(SystemExit):
            build([*argv, "--output", str(tmp_path)])
    assert "NAME=CHECKPOINT" in capsys.readouterr().err
