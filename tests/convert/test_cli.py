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
    assert (
        from_hf_main(
            [
                "--hf",
                str(tiny_model_dir("tiny-qwen3")),
                "--out",
                str(tmp_path / "new"),
                "--dtype",
                "int8",
                *layout,
            ]
        )
        == 2
    )
    assert "dtype 'int8' is not supported" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not dist.is_initialized()


def test_to_hf_bad_input_exits_2(tmp_path, capsys) -> None:
    assert to_hf_main(["--ckpt", str(tmp_path / "missing"), "--out", str(tmp_path / "hf")]) == 2
    assert "does not exist; pass a checkpoint root" in capsys.readouterr().err
    assert (
        to_hf_main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "hf"), "--max-shard-size", "lots"]) == 2
    )
    assert "--max-shard-size 'lots' is not a size" in capsys.readouterr().err
    assert not dist.is_initialized()


def test_from_hf_layout_that_cannot_split_the_model_exits_2_before_any_rank(tmp_path, capsys) -> None:
    config = json.loads((tiny_model_dir("tiny-qwen3") / "config.json").read_text())
    heads, layers = config["num_attention_heads"], config["num_hidden_layers"]
    tp = next(n for n in range(2, 64) if heads % n)
    pp = next(n for n in range(2, 64) if layers % n)
    code = from_hf_main(
        [
            "--hf",
            str(tiny_model_dir("tiny-qwen3")),
            "--out",
            str(tmp_path / "new"),
            "--tp",
            str(tp),
            "--pp",
            str(pp),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--tp={tp} does not divide the model's {heads} attention heads" in err
    assert f"--pp={pp} does not divide the model's {layers} layers" in err
    assert not (tmp_path / "new").exists() and not dist.is_initialized()


def test_a_truncated_safetensors_file_is_named(tmp_path, capsys) -> None:
    source = shutil.copytree(tiny_model_dir("tiny-qwen3"), tmp_path / "src")
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert from_hf_main(["--hf", str(source), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is not a readable safetensors file" in err and "fetch it again" in err


def _fail_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise ValueError("shard 3 of the checkpoint is unreadable; fetch it again")
    dist.barrier()


def test_an_input_error_raised_in_a_spawned_rank_is_one_message() -> None:
    from rest_megatron.convert.cli import _spawn

    with pytest.raises(ValueError, match=r"^shard 3 of the checkpoint is unreadable; fetch it again$"):
        _spawn(2, _fail_on_rank_one)
