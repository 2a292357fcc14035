"""Hugging Face <-> Megatron conversion on real gloo ranks, verified by logits.

- For each tiny family: `convert from-hf` at TP2×PP2 on 4 ranks (the entry torchrun runs); the
  reloaded Megatron model's logits equal transformers' (max abs diff <= 1e-4, float32); the live
  gather (`iter_hf_tensors`) and `convert to-hf` both give the source tensors bitwise, and the
  export loads with `AutoModelForCausalLM.from_pretrained`.
- A model trained two ResT steps at TP2×PP2 (tied embeddings across pipeline stages), saved with
  its optimizer, exports to a folder whose transformers logits equal Megatron's; the export equals
  the live gather bitwise.
- A single-process `convert from-hf --pp 2` spawns its own ranks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from rest_megatron.assets import tiny_model_dir
from rest_megatron.convert.cli import from_hf_main, to_hf_main
from rest_megatron.convert.from_hf import convert_from_hf
from rest_megatron.convert.live import iter_hf_tensors
from rest_megatron.model.builder import load_hf_config, model_spec_from_hf

FAMILIES = ("tiny-qwen3", "tiny-qwen2", "tiny-llama")
TOLERANCE = 1e-4


def _prompts(vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 13), generator=torch.Generator().manual_seed(seed))  # [B, S]


def _megatron_logits(model: torch.nn.Module, tokens: torch.Tensor, vocab: int) -> torch.Tensor | None:
    """Full-vocabulary logits [B, S, vocab] on the last pipeline stage (None elsewhere)."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    def forward_step(batches, chunk):
        batch = next(batches)
        positions = torch.arange(batch.shape[1]).expand_as(batch)
        output = chunk(batch, positions, None)  # [B, S, V_padded / TP] on the last stage

        def collect(logits: torch.Tensor):
            return torch.zeros(()), {
                "logits": gather_from_tensor_model_parallel_region(logits)[..., :vocab].detach()
            }

        return output, collect

    model.eval()
    with torch.no_grad():
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter([tokens]),
            model=[model],
            num_microbatches=1,
            seq_length=tokens.shape[1],
            micro_batch_size=tokens.shape[0],
            forward_only=True,
        )
    model.train()
    return outputs[0]["logits"].clone() if parallel_state.is_pipeline_last_stage() else None


def _build_tp2pp2(source: str):
    from rest_megatron.model.builder import build_gpt_model, padded_vocab_size, transformer_config

    spec = model_spec_from_hf(load_hf_config(source))
    config = transformer_config(spec, tp=2, pp=2)
    return spec, build_gpt_model(spec, config, padded_vocab=padded_vocab_size(spec.vocab_size, 2))


def _import_each_family(sources: dict[str, str], root: str, seed: int) -> dict:
    """On 4 ranks: from-hf at TP2×PP2 via the CLI, reload into a fresh model, logits, live gather."""
    from rest_megatron.trainer.checkpoint import load_checkpoint

    results = {}
    for name, source in sources.items():
        ckpt = f"{root}/{name}/ckpt"
        code = from_hf_main(["--hf", source, "--out", ckpt, "--tp", "2", "--pp", "2"])
        spec, gpt = _build_tp2pp2(source)
        state = load_checkpoint(ckpt, gpt)
        padding = None
        if hasattr(gpt, "embedding"):  # first stage: vocab rows beyond the tokenizer's are zero padding
            table = gpt.embedding.word_embeddings.weight  # [V_padded / TP, H]
            start = gpt.embedding.word_embeddings.vocab_start_index
            rows = table[max(0, spec.vocab_size - start) :]
            padding = (rows.shape[0], float(rows.abs().max()) if rows.numel() else 0.0)
        results[name] = {
            "code": code,
            "hf_source": state["hf_source"],
            "logits": _megatron_logits(gpt, _prompts(spec.vocab_size, seed), spec.vocab_size),
            "live": dict(iter_hf_tensors(gpt, spec)),
            "padding": padding,
        }
    return results


def _export(pairs: list[tuple[str, str]], extra: list[str]) -> list[int]:
    return [to_hf_main(["--ckpt", ckpt, "--out", out, *extra]) for ckpt, out in pairs]


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(str(folder / shard)))
    assert sorted(tensors) == sorted(index["weight_map"])
    return tensors


def _source_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        return model(tokens).logits


def _assert_bitwise(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(actual) == sorted(expected), (what, sorted(set(actual) ^ set(expected)))
    different = [
        k for k in expected if actual[k].dtype != expected[k].dtype or not torch.equal(actual[k], expected[k])
    ]
    assert not different, (what, different[:5])


def test_each_family_imports_at_tp2pp2_with_hf_logits_and_round_trips(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    sources = {name: str(tiny_model_dir(name)) for name in FAMILIES}
    ranks = gloo(4).run(_import_each_family, sources, str(tmp_path), seed)
    pairs = [(str(tmp_path / name / "ckpt"), str(tmp_path / name / "hf")) for name in FAMILIES]
    assert gloo(1).run(_export, pairs, ["--max-shard-size", "400KB"])[0] == [0, 0, 0]

    for name in FAMILIES:
        source = Path(sources[name])
        assert [r[name]["code"] for r in ranks] == [0, 0, 0, 0]
        # 1544 tokens padded to 1792 at TP2: TP rank 1 holds the 248 zero rows.
        assert ranks[0][name]["padding"] == (0, 0.0) and ranks[1][name]["padding"] == (248, 0.0), name
        assert ranks[0][name]["hf_source"]["origin"] == str(source.resolve())
        tokens = _prompts(load_hf_config(source)["vocab_size"], seed)
        reference = _hf_logits(source, tokens)
        megatron = ranks[3][name]["logits"]
        assert torch.equal(megatron, ranks[2][name]["logits"]) and ranks[0][name]["logits"] is None
        assert (megatron - reference).abs().max() <= TOLERANCE, (
            name,
            float((megatron - reference).abs().max()),
        )

        expected = _source_tensors(source)
        _assert_bitwise(ranks[0][name]["live"], expected, f"{name} live gather")
        assert all(not r[name]["live"] for r in ranks[1:])  # only the destination rank receives
        exported = tmp_path / name / "hf"
        assert len(list(exported.glob("model-*-of-*.safetensors"))) > 1  # the 400KB limit split it
        _assert_bitwise(_read_folder(exported), expected, f"{name} to-hf")
        for file in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            assert (exported / file).is_file(), file
        assert (tmp_path / name / "ckpt" / "hf_source" / "tokenizer.json").is_file()
        assert (_hf_logits(exported, tokens) - megatron).abs().max() <= TOLERANCE


def _train_rest_steps(source: str, root: str, seed: int) -> dict:
    """Import at TP2×PP2, two ResT steps, save with optimizer state; logits and live gather after."""
    from rest_megatron.algo.weights import get_token_weights
    from rest_megatron.config import AlgorithmConfig, OptimizerConfig
    from rest_megatron.trainer.actor import build_actor
    from rest_megatron.trainer.checkpoint import load_checkpoint, save_checkpoint
    from tests.distributed.test_actor import _global_batch, _local_microbatches

    convert_from_hf(source, f"{root}/init", tp=2, pp=2)
    spec = model_spec_from_hf(load_hf_config(source))
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-3), tp=2, pp=2, chunk_size=16)
    state = load_checkpoint(f"{root}/init", actor.model)  # weights only: a fresh run has no optimizer state
    initial = {k: v.detach().clone() for k, v in actor.network.state_dict().items() if torch.is_tensor(v)}
    paper = get_token_weights("paper")
    metrics = []
    for step in range(2):
        microbatches = _local_microbatches(_global_batch(seed + step, spec.vocab_size))
        for mb, st in zip(microbatches, actor.token_stats(microbatches)):
            mb["old_logprobs"] = st.logprob + mb.pop("old_logprob_noise") * mb["loss_mask"]
            mb["weights"] = paper(
                loss_mask=mb["loss_mask"], region_mask=mb["region_mask"], step=step, collision=st.collision
            )
        metrics.append(actor.train_step(microbatches, AlgorithmConfig()))
    save_checkpoint(
        f"{root}/run", 2, actor.model, actor.optimizer, actor.scheduler, {"hf_source": state["hf_source"]}
    )
    moved = max(float((actor.network.state_dict()[k] - v).abs().max()) for k, v in initial.items())
    return {
        "moved": moved,
        "grad_norm": [m["grad_norm"] for m in metrics],
        "logits": _megatron_logits(actor.model, _prompts(spec.vocab_size, seed), spec.vocab_size),
        "live": dict(iter_hf_tensors(actor.model, spec)),  # through the DDP wrapper
    }


def test_model_trained_with_rest_exports_with_equal_logits(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    source = tiny_model_dir("tiny-qwen2")  # tied embeddings: the output copy lives on the last stage
    ranks = gloo(4).run(_train_rest_steps, str(source), str(tmp_path), seed)
    assert min(r["moved"] for r in ranks) > 5e-4 and all(g > 0 for g in ranks[0]["grad_norm"])
    # The run root has no hf_source/ of its own: to-hf finds the origin recorded in the trainer state.
    pairs = [(str(tmp_path / "run"), str(tmp_path / "hf"))]
    assert gloo(1).run(_export, pairs, ["--dtype", "float32"])[0] == [0]

    exported = _read_folder(tmp_path / "hf")
    _assert_bitwise(exported, ranks[0]["live"], "to-hf of the trained checkpoint vs live gather")
    assert not torch.equal(
        exported["model.embed_tokens.weight"], _source_tensors(source)["model.embed_tokens.weight"]
    )
    tokens = _prompts(load_hf_config(source)["vocab_size"], seed)
    megatron = ranks[3]["logits"]
    difference = float((_hf_logits(tmp_path / "hf", tokens) - megatron).abs().max())
    assert difference <= TOLERANCE, difference
    assert (
        float((_hf_logits(source, tokens) - megatron).abs().max()) > 10 * TOLERANCE
    )  # training changed them


@pytest.fixture(scope="module")
def llama_pp2(tmp_path_factory) -> Path:
    """tiny-llama converted by a single-process `convert from-hf --pp 2` (which spawns its 2 ranks)."""
    ckpt = tmp_path_factory.mktemp("llama-pp2") / "ckpt"
    assert not dist.is_initialized()
    assert (
        from_hf_main(
            ["--hf", str(tiny_model_dir("tiny-llama")), "--out", str(ckpt), "--tp", "1", "--pp", "2"]
        )
        == 0
    )
    assert not dist.is_initialized()
    return ckpt


def test_single_process_from_hf_spawns_its_ranks(gloo, llama_pp2, tmp_path) -> None:
    assert gloo(1).run(_export, [(str(llama_pp2), str(tmp_path / "hf"))], [])[0] == [0]
    _assert_bitwise(
        _read_folder(tmp_path / "hf"), _source_tensors(tiny_model_dir("tiny-llama")), "tiny-llama via pp=2"
    )


def test_to_hf_rejects_bad_input(llama_pp2, tmp_path, capsys) -> None:
    """Each case exits 2 with the file or key and the fix; none needs a process group."""
    out = str(tmp_path / "hf")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert to_hf_main(["--ckpt", str(llama_pp2), "--out", str(tmp_path / "full")]) == 2
    assert "is not empty; choose a new directory" in capsys.readouterr().err

    # A config of another family, and one whose sizes disagree with the checkpoint.
    assert (
        to_hf_main(["--ckpt", str(llama_pp2), "--out", out, "--hf-source", str(tiny_model_dir("tiny-qwen3"))])
        == 2
    )
    assert (
        "the checkpoint has no tensor decoder.layers.self_attention.q_layernorm.weight"
        in capsys.readouterr().err
    )
    other = Path(shutil.copytree(llama_pp2 / "hf_source", tmp_path / "other"))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "intermediate_size": 512}))
    assert to_hf_main(["--ckpt", str(llama_pp2), "--out", out, "--hf-source", str(other)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint tensor decoder.layers.mlp.linear_fc1.weight has shape [4, 512, 128] but" in err
    assert "implies [4, 1024, 128]: the config does not belong to this checkpoint" in err

    # A truncated shard of the distributed checkpoint is named by the manifest check.
    broken = Path(shutil.copytree(llama_pp2, tmp_path / "broken"))
    victim = sorted((broken / "step_00000000" / "model_optim").glob("*.distcp"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert to_hf_main(["--ckpt", str(broken), "--out", out]) == 2
    assert f"{victim} has 100 bytes, the manifest says" in capsys.readouterr().err
    assert not Path(out).exists() and not dist.is_initialized()
