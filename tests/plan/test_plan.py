"""`rest-megatron plan`: the byte formulas by hand, the layout search, refusals, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rest_megatron.cli import main
from rest_megatron.config import ConfigError
from rest_megatron.model.builder import padded_vocab_size as builder_padded_vocab_size
from rest_megatron.plan.architectures import KNOWN_MODELS, find_model_config
from rest_megatron.plan.main import load_for_plan
from rest_megatron.plan.memory import (
    GIB,
    Architecture,
    Layout,
    Workload,
    estimate,
    estimate_rollout,
    head_bytes,
    padded_vocab_size,
    stage_activation_bytes,
    stage_parameters,
)
from rest_megatron.plan.planner import PlanRefused, make_plan
from rest_megatron.plan.search import valid_parallel_sizes

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
REAL_RECIPES = sorted(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("tiny-"))

# 2 layers, hidden 8, FFN 16, 2 heads of 4, 1 KV group, vocab 30 (padded to 32 with multiple 8), untied.
TINY = Architecture(
    num_layers=2, hidden_size=8, ffn_hidden_size=16, num_attention_heads=2, num_query_groups=1, head_dim=4,
    vocab_size=30, tie_word_embeddings=False,
)  # fmt: skip
# Per layer: q 8·8 + k 8·4 + v 8·4 + o 8·8 = 192, MLP 3·8·16 = 384, two norms 2·8 = 16 -> 592.
LAYER = 192 + 384 + 16
WORK = Workload(micro_batch_size=2, seq_length=16, num_microbatches=4, padded_vocab_multiple=8, head_chunk=8)


def test_parameters_gradients_and_adam_by_hand() -> None:
    layout = Layout(tp=1, pp=1, dp=4)
    params = 2 * LAYER + 32 * 8 + 32 * 8 + 8  # layers, embedding, output layer, final norm = 1704
    assert TINY.num_parameters() == 2 * LAYER + 2 * 30 * 8 + 8  # the model card counts the unpadded vocab
    m = estimate(TINY, layout, WORK)
    assert (m.parameters, m.gradients, m.optimizer) == (2 * params, 4 * params, 12 * params)
    sharded = estimate(TINY, Layout(tp=1, pp=1, dp=4, distributed_optimizer=True), WORK)
    assert sharded.optimizer == 12 * params // 4  # fp32 master + m + v, split over dp
    fp32 = estimate(TINY, layout, Workload(**{**WORK.__dict__, "dtype": "float32"}))
    assert (fp32.parameters, fp32.gradients, fp32.optimizer) == (4 * params, 4 * params, 8 * params)


def test_a_reference_policy_adds_its_weights_only() -> None:
    layout = Layout(tp=1, pp=1, dp=4)
    params = 2 * LAYER + 32 * 8 + 32 * 8 + 8
    without = estimate(TINY, layout, WORK)
    with_ref = estimate(TINY, layout, Workload(**{**WORK.__dict__, "reference_model": True}))
    assert (without.reference, with_ref.reference) == (0, 2 * params)  # bf16 weights, no grads or Adam state
    assert with_ref.total - without.total == 2 * params


def test_kl_puts_the_reference_model_in_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    recipe = str(RECIPES / "qwen3-1.7b-rest.yaml")
    assert main(["plan", recipe, "--gpus", "8", "--gpu-mem", "80"]) == 0
    plain = capsys.readouterr().out
    assert main(["plan", recipe, "algorithm.kl_coef=0.01", "--gpus", "8", "--gpu-mem", "80"]) == 0
    with_kl = capsys.readouterr().out

    def cells(out: str) -> dict[str, str]:
        header = next(line for line in out.splitlines() if line.startswith("layout"))
        row = next(line for line in out.splitlines() if line.startswith("tp1 pp1 dp4"))
        return dict(zip(header.split()[1:], row.split()[3:]))

    plain_row, kl_row = cells(plain), cells(with_kl)
    assert float(plain_row["ref"]) == 0.0 and float(kl_row["ref"]) == pytest.approx(
        float(kl_row["params"]), abs=0.05
    )
    assert float(kl_row["total"]) == pytest.approx(float(plain_row["total"]) + float(kl_row["ref"]), abs=0.15)


def test_tensor_and_pipeline_sharding_by_hand() -> None:
    # tp 2: the matrices split, the norms do not, the vocab shard is 32 / 2 rows.
    tp2 = stage_parameters(TINY, Layout(tp=2, pp=1, dp=1), WORK, first=True, last=True)
    assert tp2 == 2 * ((192 + 384) // 2 + 16) + 2 * 16 * 8 + 8
    # pp 2: the first stage has the embedding, the last the final norm and the output layer; with tied
    # embeddings the last stage still holds its own copy of the shared weight.
    assert stage_parameters(TINY, Layout(tp=1, pp=2, dp=1), WORK, first=True, last=False) == LAYER + 256
    assert stage_parameters(TINY, Layout(tp=1, pp=2, dp=1), WORK, first=False, last=True) == LAYER + 8 + 256
    tied = Architecture(**{**TINY.__dict__, "tie_word_embeddings": True})
    assert (
        stage_parameters(tied, Layout(tp=1, pp=1, dp=1), WORK, first=True, last=True) == 2 * LAYER + 256 + 8
    )
    assert stage_parameters(tied, Layout(tp=1, pp=2, dp=1), WORK, first=False, last=True) == LAYER + 8 + 256


def test_activations_follow_korthikanti() -> None:
    sbh = 16 * 2 * 8
    plain = Layout(tp=1, pp=1, dp=1)
    assert stage_activation_bytes(TINY, plain, WORK, first=True) == 2 * sbh * 34
    unfused = Workload(**{**WORK.__dict__, "flash_attention": False})
    assert stage_activation_bytes(TINY, plain, unfused, first=True) == 2 * (sbh * 34 + 5 * 2 * 16 * 16 * 2)
    assert stage_activation_bytes(TINY, Layout(tp=2, pp=1, dp=1), WORK, first=True) == 2 * sbh * (10 + 12)
    sp = Layout(tp=2, pp=1, dp=1, sequence_parallel=True)
    assert stage_activation_bytes(TINY, sp, WORK, first=True) == 2 * sbh * 34 // 2
    # Full recompute keeps each layer's input and rebuilds one layer at a time in backward.
    recompute = Layout(tp=1, pp=1, dp=1, recompute=True)
    assert stage_activation_bytes(TINY, recompute, WORK, first=True) == 2 * 2 * sbh + sbh * 34
    # 1F1B: the first of 2 stages holds 2 micro-batches of its 1 layer, the last stage one.
    pp2 = Layout(tp=1, pp=2, dp=1)
    assert stage_activation_bytes(TINY, pp2, WORK, first=True) == 2 * sbh * 34
    assert stage_activation_bytes(TINY, pp2, WORK, first=False) == sbh * 34


def test_fused_head_by_hand_and_much_smaller_than_full_logits() -> None:
    tokens, vocab_shard = 2 * 16, 32
    layout = Layout(tp=1, pp=1, dp=1)
    assert head_bytes(TINY, layout, WORK, fused=True) == 8 * vocab_shard * (2 + 4) + 4 * 4 * tokens
    assert head_bytes(TINY, layout, WORK, fused=False) == tokens * vocab_shard * (2 + 4)
    qwen = Architecture(
        num_layers=28, hidden_size=2048, ffn_hidden_size=6144, num_attention_heads=16, num_query_groups=8,
        head_dim=128, vocab_size=151936, tie_word_embeddings=True,
    )  # fmt: skip
    work = Workload(micro_batch_size=4, seq_length=4096, num_microbatches=16)
    fused = head_bytes(qwen, layout, work, fused=True)
    full = head_bytes(qwen, layout, work, fused=False)
    assert full > 10 * fused and fused < 1 * GIB < 10 * GIB < full


def test_padded_vocab_matches_the_model_builder() -> None:
    for vocab, tp, multiple in ((151936, 1, 128), (151936, 2, 128), (128256, 4, 128), (30, 2, 8)):
        assert padded_vocab_size(vocab, tp, multiple) == builder_padded_vocab_size(vocab, tp, multiple)


def test_rollout_server_by_hand() -> None:
    r = estimate_rollout(TINY, server_tp=1, gpu_bytes=GIB, mem_fraction=0.5)
    per_token = 2 * 2 * 1 * 4 * 2  # K and V × layers × KV heads × head dim × bf16
    assert (r.weights, r.kv_bytes_per_token) == (TINY.num_parameters() * 2, per_token)
    assert r.kv_tokens == (GIB // 2 - r.weights) // per_token
    assert (
        estimate_rollout(TINY, server_tp=2, gpu_bytes=GIB, mem_fraction=0.5).kv_bytes_per_token == per_token
    )


def test_layouts_respect_heads_groups_layers_and_batch() -> None:
    llama = Architecture.from_spec(_spec(KNOWN_MODELS["meta-llama/Llama-3.2-3B-Instruct"]))
    sizes = set(valid_parallel_sizes(llama, 8, mini_batch=256, micro_batch=2))
    assert sizes == {
        (1, 1, 8),
        (1, 2, 4),
        (1, 4, 2),
        (2, 1, 4),
        (2, 2, 2),
        (2, 4, 1),
        (4, 1, 2),
        (4, 2, 1),
        (8, 1, 1),
    }
    assert not set(
        valid_parallel_sizes(llama, 12, mini_batch=256, micro_batch=2)
    )  # dp 3/6/12 splits no batch


@pytest.mark.parametrize("recipe", REAL_RECIPES, ids=lambda p: p.name)
def test_every_real_recipe_gets_its_own_layout_on_8_x_80gb(recipe: Path) -> None:
    config, _, source, arch = load_for_plan(str(recipe), [])
    assert source.startswith("built-in table")  # no weights on this machine
    plan = make_plan(config, arch, num_gpus=8, gpu_gib=80)
    assert plan.trainer_gpus + plan.rollout.num_gpus == 8
    assert plan.recipe is not None and plan.recipe.fits(plan.limit)
    assert plan.recommended.layout == plan.recipe.layout


def test_recomputation_weighs_like_a_doubling_of_model_parallelism() -> None:
    config, _, _, arch = load_for_plan(str(RECIPES / "qwen3-8b-rest.yaml"), [])
    plan = make_plan(config, arch, num_gpus=8, gpu_gib=80)
    by_name = {c.layout.name: c for c in plan.rows}
    assert by_name["tp1 pp1 dp4"].layout.recompute and by_name["tp1 pp1 dp4"].fits(plan.limit)
    assert plan.recommended.layout.name == "tp2 pp1 dp2" and not plan.recommended.layout.recompute


def test_model_shape_comes_from_a_local_config_before_the_table(tmp_path: Path) -> None:
    hf, source = find_model_config("models/Qwen3-8B")
    assert hf["hidden_size"] == 4096 and source.startswith("built-in table (Qwen/Qwen3-8B")
    assert find_model_config("Qwen/Qwen3-8B")[0] == hf
    local = tmp_path / "Qwen3-8B"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({**hf, "num_hidden_layers": 2}))
    assert find_model_config(str(local)) == ({**hf, "num_hidden_layers": 2}, f"{local}/config.json")
    with pytest.raises(ConfigError, match="does not exist and is not a known architecture"):
        find_model_config(str(tmp_path / "Mystery-7B"))


def test_rollout_servers_that_take_every_gpu_are_refused() -> None:
    config, _, _, arch = load_for_plan(str(RECIPES / "qwen3-1.7b-rest.yaml"), [])
    with pytest.raises(PlanRefused, match="take 4 GPUs .* of the 4 given, leaving none for the trainer"):
        make_plan(config, arch, num_gpus=4, gpu_gib=80)


def _fake_70b(tmp_path: Path) -> Path:
    """A Llama-3-70B-shaped config.json: the plan reads only the shape, no weights."""
    model = tmp_path / "fake-70b"
    model.mkdir()
    hf = {
        "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 131072, "tie_word_embeddings": False,
    }  # fmt: skip
    (model / "config.json").write_text(json.dumps(hf))
    return model


def test_cli_refuses_a_70b_model_on_one_24gb_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = str(RECIPES / "qwen3-1.7b-rest.yaml")
    external = 'rollout.server_urls=["http://rollout:30000"]'  # servers elsewhere: the one GPU trains
    args = ["plan", recipe, f"model.path={_fake_70b(tmp_path)}", external, "launch.nproc_per_node=1"]
    assert main([*args, "--gpus", "1", "--gpu-mem", "24"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rest-megatron plan: does not fit: nothing fits on 1 × 24 GiB (1 for the trainer)")
    assert "GiB over the 21.6 GiB limit" in err and "70.55 B parameters" in err
    assert "needs at least 55 GPUs of this size" in err and "lower parallel.micro_batch_size" in err


def test_cli_prints_the_table_and_the_recommendation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(RECIPES / "qwen3-1.7b-rest.yaml"), "--gpus", "8", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "model    Qwen3ForCausalLM from built-in table (Qwen/Qwen3-1.7B" in out
    assert "trainer  4 GPUs; limit 72.0 GiB per GPU (80 GiB less 10% headroom)" in out
    assert any(
        line.startswith("tp1 pp1 dp4") and line.endswith("fits  recipe  recommended")
        for line in out.splitlines()
    )
    assert "savers at tp1 pp1 dp4: optimizer 19.2 GiB without, 4.8 GiB with the distributed optimizer" in out
    assert out.rstrip().endswith("recommended: tp1 pp1 dp4, the recipe's layout")


def test_cli_suggests_the_overrides_when_the_recipe_layout_does_not_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe = str(RECIPES / "qwen3-1.7b-rest.yaml")
    assert main(["plan", recipe, "--gpus", "8", "--gpu-mem", "40"]) == 0
    out = capsys.readouterr().out
    assert "tp1 pp1 dp4" in out and "recipe" in out
    assert "set parallel.tp=" in out.splitlines()[-1]


def test_cli_config_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(RECIPES / "qwen3-1.7b-rest.yaml"), "parallel.tp=3", "--gpus", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rest-megatron plan: config error:")
    assert "parallel.tp=3 does not divide the model's 16 attention heads" in err


def _spec(hf: dict):
    from rest_megatron.model.builder import model_spec_from_hf

    return model_spec_from_hf(hf)
