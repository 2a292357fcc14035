"""Bad Hugging Face input is caught before any conversion work, with the file or key and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rest_megatron.assets import tiny_model_dir
from rest_megatron.convert.hf_files import INDEX, HFWeights, check_empty_output, copy_metadata, read_config


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir(name), tmp_path / name))


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _open(folder: Path) -> HFWeights:
    _, spec, adapter = read_config(folder)
    return HFWeights.open(folder, spec=spec, adapter=adapter)


def _split_in_two(folder: Path) -> list[str]:
    """Re-save model.safetensors as two shards with an index; returns the shard names."""
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(folder / shard), metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    weight_map = {n: shard for shard, members in shards.items() for n in members}
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return list(shards)


def test_sharded_folder_reads_slices(tmp_path) -> None:
    folder = _copy("tiny-qwen2", tmp_path)
    original = load_file(str(folder / "model.safetensors"))
    _split_in_two(folder)
    weights = _open(folder)
    name = "model.layers.2.self_attn.q_proj.weight"
    assert torch.equal(weights.read(name, slice(32, 64), slice(5, 9)), original[name][32:64, 5:9])
    assert torch.equal(
        weights.read("model.layers.2.self_attn.k_proj.bias", slice(3, 7)),
        original["model.layers.2.self_attn.k_proj.bias"][3:7],
    )


def test_missing_shard(tmp_path) -> None:
    folder = _copy("tiny-qwen3", tmp_path)
    missing = _split_in_two(folder)[1]
    (folder / missing).unlink()
    with pytest.raises(
        ValueError, match=f"{missing} is listed in {INDEX} but missing.*fetch the missing shard"
    ):
        _open(folder)


def test_index_and_shard_disagree(tmp_path) -> None:
    folder = _copy("tiny-qwen3", tmp_path)
    _split_in_two(folder)
    index = json.loads((folder / INDEX).read_text())
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    if "model.norm.weight" in load_file(str(folder / "model-00002-of-00002.safetensors")):
        index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    (folder / INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="says model.norm.weight is in .* does not contain it"):
        _open(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"num_attention_heads": 2},
            r"model.layers.0.self_attn.q_proj.weight in model.safetensors has shape \[128, 128\] "
            r"but .*config.json .*num_attention_heads=2.* implies \[64, 128\]",
        ),
        (
            {"num_hidden_layers": 5},
            r"implies the tensor model.layers.4.input_layernorm.weight, which no safetensors file",
        ),
        (
            {"num_hidden_layers": 3},
            r"tensors that .*config.json .* does not account for, e.g. model.layers.3",
        ),
        ({"tie_word_embeddings": False}, r"implies the tensor lm_head.weight"),
        ({"vocab_size": 2048}, r"model.embed_tokens.weight .* has shape \[1544, 128\] but .*vocab_size=2048"),
    ],
)
def test_config_disagrees_with_weights(tmp_path, changes, message) -> None:
    folder = _copy("tiny-qwen2", tmp_path)
    _edit_config(folder, **changes)
    with pytest.raises(ValueError, match=message) as error:
        _open(folder)
    assert "use the config.json that came with" in str(error.value)


def test_unknown_architecture_names_the_file(tmp_path) -> None:
    folder = _copy("tiny-llama", tmp_path)
    _edit_config(folder, architectures=["MistralForCausalLM"], model_type="mistral")
    with pytest.raises(
        ValueError,
        match=r"config.json: unsupported architecture \['MistralForCausalLM'\]; supported: LlamaForCausalLM",
    ):
        read_config(folder)


def test_missing_config_and_pytorch_bin_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json not found: point at a Hugging Face model folder"):
        read_config(tmp_path)
    folder = _copy("tiny-llama", tmp_path)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(
        ValueError,
        match=r"neither model.safetensors.index.json nor model.safetensors "
        r"\(found: pytorch_model.bin\).*safe_serialization=True",
    ):
        _open(folder)


def test_output_must_be_new_or_empty(tmp_path) -> None:
    assert check_empty_output(tmp_path / "new", "--out") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_empty_output(tmp_path / "empty", "--out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(
        ValueError, match=r"--out .*full is not empty; choose a new directory or remove the old one"
    ):
        check_empty_output(tmp_path / "full", "--out")


def test_metadata_files_are_copied(tmp_path) -> None:
    copied = copy_metadata(tiny_model_dir("tiny-qwen3"), tmp_path / "meta", skip=("config.json",))
    assert sorted(copied) == [
        "chat_template.jinja",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == sorted(copied)
