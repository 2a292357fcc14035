"""to-hf pieces that need no checkpoint: sizes, the shard writer, finding the checkpoint and its source."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rest_megatron.assets import tiny_model_dir
from rest_megatron.convert.to_hf import ShardWriter, locate_checkpoint, locate_hf_source, parse_size


def test_parse_size() -> None:
    assert (
        parse_size("5GB") == 5 * 10**9 and parse_size("512MiB") == 512 * 2**20 and parse_size("1.5kb") == 1500
    )
    assert parse_size(123) == 123 and parse_size("77") == 77
    with pytest.raises(ValueError, match="--max-shard-size 'big' is not a size; write e.g. 5GB"):
        parse_size("big")


def test_shard_writer_splits_at_the_limit_and_indexes(tmp_path) -> None:
    writer = ShardWriter(tmp_path, max_bytes=100)
    tensors = {"a": torch.zeros(10), "b": torch.ones(10), "c": torch.full((60,), 2.0), "d": torch.arange(5.0)}
    for name, tensor in tensors.items():  # 40 B, 40 B, 240 B (alone: over the limit), 20 B
        writer.add(name, tensor)
    names = writer.close()
    assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 340
    assert index["weight_map"] == {"a": names[0], "b": names[0], "c": names[1], "d": names[2]}
    for name, shard in index["weight_map"].items():
        assert torch.equal(load_file(str(tmp_path / shard))[name], tensors[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "model.safetensors.index.json"])


def test_locate_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="--ckpt .*nowhere does not exist"):
        locate_checkpoint(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no checkpoint .*pass the run's checkpoint root"):
        locate_checkpoint(tmp_path)


def test_locate_hf_source_order_and_error(tmp_path) -> None:
    step = tmp_path / "run" / "step_00000002"
    step.mkdir(parents=True)
    origin = tiny_model_dir("tiny-qwen3")
    assert locate_hf_source(step, {"hf_source": {"dir": "hf_source", "origin": str(origin)}}, None) == origin
    (tmp_path / "run" / "hf_source").mkdir()
    (tmp_path / "run" / "hf_source" / "config.json").write_text("{}")
    assert locate_hf_source(step, {}, None) == tmp_path / "run" / "hf_source"
    assert locate_hf_source(step, {}, tmp_path / "explicit") == tmp_path / "explicit"  # --hf-source wins
    (tmp_path / "run" / "hf_source" / "config.json").unlink()
    with pytest.raises(
        ValueError, match="does not say which Hugging Face model it came from .*pass --hf-source DIR"
    ):
        locate_hf_source(step, {"hf_source": {"origin": str(tmp_path / "gone")}}, None)
