"""`convert from-hf` / `to-hf` command lines: input errors exit 2 with one message, before any rank starts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch.distributed as dist

from rest_megatron.assets import tiny_model_dir
from rest_megatron.convert.cli import from_hf_main, main, to_hf_main


def test_help_says_how_ranks_are_launched(capsys) -> None:
    with pytest.raises(SystemExit):
        from_hf_main(["--help"])
    text = capsys.readouterr().out
    assert "torchrun --nproc-per-node TP*PP -m rest_megatron.convert.cli from-hf" in text
    assert "spawns TP*PP CPU ranks itself" in text and "GlooPool" in text
    with pytest.raises(SystemExit):
        to_hf_main(["--help"])
    assert "--max-shard-size" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


@pytest.mark.parametrize("layout", [["--tp", "2", "--pp", "2"], ["--tp", "1"]])
def test_from_hf_bad_input_exits_2_without_starting_ranks(tmp_path, capsys, layout) -> None:
    source = shutil.copytree(tiny_model_dir("tiny-qwen3"), tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("x")
    assert from_hf_main(["--hf", str(source), "--out", str(out), *layout]) == 2
    assert f"--out {out} is not empty" in capsys.readouterr().err

    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    assert from_hf_main(["--hf", str(source), "--out", str(tmp_path / "new"), *layout]) == 2
    assert "config.json: unsupported architecture ['GPT2LMHeadModel']" in capsys.readouterr().err
    (source / "config.json").write_text(json.dumps(config))

    (source / "model.safetensors").unlink()
    assert from_hf_main(["--hf", str(source), "--out", str(tmp_path / "new"), *layout]) == 2
    assert "has neither model.safetensors.index.json nor model.safetensors" in capsys.readouterr().err
    assert from_hf_main(["--hf", str(tiny_model_dir("tiny-qwen3")), "--out", str(tmp_path / "new"), "--dtype", "int8", *layout]) == 2
    assert "dtype 'int8' is not supported" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not dist.is_initialized()


def test_to_hf_bad_input_exits_2(tmp_path, capsys) -> None:
    assert to_hf_main(["--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "hf")]) == 2
    assert "does not exist; pass a checkpoint root" in capsys.readouterr().err
    assert to_hf_main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "hf"), "--max-shard-size", "lots"]) == 2
    assert "--max-shard-size 'lots' is not a size" in capsys.readouterr().err
    assert not dist.is_initialized()
