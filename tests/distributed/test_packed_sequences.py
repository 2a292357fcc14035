"""Packed micro-batches (several trajectories per row) train exactly like padded ones, on real gloo ranks.

The same variable-length trajectories go through `make_microbatches` (one padded row each) and
`pack_microbatches` (back to back in rows of micro_batch_size × the padded length, block-diagonal
causal attention on CPU). Per-token log π, H and Σπ², the ResT-weighted loss, the grad norm and the
updated weights must agree, at TP1 and at TP2×PP2.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from rest_megatron.algo.regions import NUM_REGIONS
from rest_megatron.assets import tiny_hf_config
from rest_megatron.model.builder import model_spec_from_hf
from rest_megatron.trainer.batching import (
    TrainingSample,
    make_microbatches,
    pack_microbatches,
    pack_rows,
    unpack_rows,
)
from rest_megatron.trainer.stages import attach_weights
from tests.distributed.test_actor import OBJECTIVE, STEP, _build

MICRO_BATCH = 2


def _samples(seed: int, vocab: int, count: int = 7) -> list[TrainingSample]:
    """Trajectories of 6 to 30 tokens; `sampling_logprobs` carries a per-token perturbation of the old
    log-probs, so the ratios are not all 1 and clipping happens."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(count):
        n = int(torch.randint(6, 31, (), generator=gen))
        prompt = int(torch.randint(2, n - 2, (), generator=gen))
        loss_mask = [0] * prompt + (torch.rand(n - prompt, generator=gen) > 0.15).int().tolist()
        samples.append(
            TrainingSample(
                token_ids=torch.randint(0, vocab, (n,), generator=gen).tolist(),
                loss_mask=loss_mask,
                sampling_logprobs=(0.2 * torch.randn(n, generator=gen)).tolist(),
                region_mask=(1 << torch.randint(0, NUM_REGIONS, (n,), generator=gen)).tolist(),
                advantage=float(torch.randn((), generator=gen)),
            )
        )
    return samples


def _per_sample(
    microbatches: list[dict], values: list[torch.Tensor], lengths: list[int]
) -> list[torch.Tensor]:
    """Each trajectory's per-token values, in the step's order, from padded rows or packed segments."""
    rows = []
    for mb, value in zip(microbatches, values):
        rows += list(
            unpack_rows(value, mb["cu_seqlens"])[: int(mb["num_trajectories"])]
            if "cu_seqlens" in mb
            else value
        )
    return [row[:n] for row, n in zip(rows, lengths)]


def _step(tp: int, pp: int, init_dir: str, out_dir: str, seed: int, save_init: bool, pack: bool) -> dict:
    from megatron.core import dist_checkpointing, parallel_state

    spec, actor = _build(tp, pp, init_dir, save_init=save_init)
    samples = _samples(seed, spec.vocab_size)
    batching = pack_microbatches if pack else make_microbatches
    microbatches = batching(
        samples,
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
        micro_batch_size=MICRO_BATCH,
        pad_id=0,
        length_multiple=8 * tp,
    )
    stats = actor.token_stats(microbatches)
    attach_weights(microbatches, stats, weights="paper", params={}, step=STEP)
    for mb in microbatches:
        mb["old_logprobs"] = mb["old_logprobs"] + mb["sampling_logprobs"] * mb["loss_mask"]
    lengths = [len(s.token_ids) - 1 for s in samples]
    result = {
        "num_microbatches": len(microbatches),
        **{
            name: _per_sample(microbatches, [getattr(s, name) for s in stats], lengths)
            for name in ("logprob", "entropy", "collision")
        },
        "weights": _per_sample(microbatches, [mb["weights"] for mb in microbatches], lengths),
    }
    result["metrics"] = actor.train_step(microbatches, OBJECTIVE)
    if dist.get_rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
    dist.barrier()
    dist_checkpointing.save(actor.network.sharded_state_dict(), out_dir)
    return result


def _weights_differ(init_dir: str, reference_dir: str, other_dir: str) -> tuple[float, float]:
    """(largest update of the reference step, largest difference between the two updated models)."""
    from megatron.core import dist_checkpointing

    _, actor = _build(1, 1, reference_dir, save_init=False)
    reference = {k: v.detach().clone() for k, v in actor.network.state_dict().items() if torch.is_tensor(v)}
    actor.network.load_state_dict(dist_checkpointing.load(actor.network.sharded_state_dict(), init_dir))
    update = max(float((actor.network.state_dict()[k] - v).abs().max()) for k, v in reference.items())
    actor.network.load_state_dict(dist_checkpointing.load(actor.network.sharded_state_dict(), other_dir))
    differ = max(float((actor.network.state_dict()[k] - v).abs().max()) for k, v in reference.items())
    return update, differ


def _draw_where_packing_saves_rows() -> int:
    """A fresh random seed whose trajectories pack into fewer micro-batches than they pad into at TP1
    (about 97% of draws do; in the others one long trajectory per row leaves nothing to share)."""
    vocab = model_spec_from_hf(tiny_hf_config("tiny-qwen3")).vocab_size
    layout = dict(dp_rank=0, dp_size=1, micro_batch_size=MICRO_BATCH, pad_id=0, length_multiple=8)
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    while len(pack_microbatches(_samples(seed, vocab), **layout)) >= len(
        make_microbatches(_samples(seed, vocab), **layout)
    ):
        seed += 1
    return seed


def test_packed_rows_train_like_padded_rows(gloo, tmp_path) -> None:
    seed = _draw_where_packing_saves_rows()
    init = str(tmp_path / "init")
    padded = gloo(1).run(_step, 1, 1, init, str(tmp_path / "padded"), seed, True, False)[0]
    packed = gloo(1).run(_step, 1, 1, init, str(tmp_path / "packed"), seed, False, True)[0]
    sharded = gloo(4).run(_step, 2, 2, init, str(tmp_path / "packed-tp2pp2"), seed, False, True)
    assert packed["num_microbatches"] < padded["num_microbatches"], f"packing saved no rows, seed {seed}"
    for result in [packed, *sharded]:
        for name in ("logprob", "entropy", "collision", "weights"):
            for ours, ref in zip(result[name], padded[name]):
                torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5, msg=f"{name}, seed {seed}")
        for key in (
            "loss",
            "grad_norm",
            "pg_loss",
            "clip_frac_low",
            "clip_frac_high",
            "entropy",
            "num_tokens",
        ):
            assert result["metrics"][key] == pytest.approx(padded["metrics"][key], rel=1e-5, abs=1e-6), (
                key,
                seed,
            )
    assert padded["metrics"]["clip_frac_low"] + padded["metrics"]["clip_frac_high"] > 0
    for directory in ("packed", "packed-tp2pp2"):
        update, differ = gloo(1).run(
            _weights_differ, init, str(tmp_path / "padded"), str(tmp_path / directory)
        )[0]
        assert update > 5e-4 and differ < 1e-5, (directory, update, differ, seed)


def test_pack_layout_keeps_every_token_once_and_order() -> None:
    samples = _samples(3, 100, count=9)
    rows = pack_microbatches(samples, dp_rank=0, dp_size=1, micro_batch_size=2, pad_id=0)
    length = rows[0]["tokens"].shape[1]
    assert all(r["tokens"].shape == (1, length) and int(r["cu_seqlens"][-1]) == length for r in rows)
    labels = [
        row for r in rows for row in unpack_rows(r["labels"], r["cu_seqlens"])[: int(r["num_trajectories"])]
    ]
    real = [lab[: len(s.token_ids) - 1] for lab, s in zip(labels, samples)]
    assert [x.tolist() for x in real] == [s.token_ids[1:] for s in samples]
    assert sum(int(r["loss_mask"].sum()) for r in rows) == sum(sum(s.loss_mask[1:]) for s in samples)
    positions = rows[0]["position_ids"][0]
    assert positions[0] == 0 and int(positions[int(rows[0]["cu_seqlens"][1])]) == 0  # restarts per segment
    for r in rows:
        torch.testing.assert_close(
            pack_rows(unpack_rows(r["loss_mask"], r["cu_seqlens"]), r["cu_seqlens"]), r["loss_mask"]
        )
    split = [pack_microbatches(samples, dp_rank=k, dp_size=2, micro_batch_size=2, pad_id=0) for k in range(2)]
    assert len(split[0]) == len(split[1]) == -(-len(rows) // 2)


def _stats_on_gpu(seed: int) -> dict:
    """Padded against packed (THD through Transformer Engine) token stats on this rank's GPU."""
    from rest_megatron.config import OptimizerConfig
    from rest_megatron.distributed import ParallelLayout, init_model_parallel
    from rest_megatron.trainer.actor import build_actor

    init_model_parallel(ParallelLayout(tp=1, pp=1), seed=1234, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    actor = build_actor(spec, OptimizerConfig(num_steps=1, lr=1e-3), chunk_size=7)
    samples = _samples(seed, spec.vocab_size)
    lengths = [len(s.token_ids) - 1 for s in samples]
    out = {"packed_format": actor.packed_format}
    for name, batching in (("padded", make_microbatches), ("packed", pack_microbatches)):
        microbatches = [
            {k: v.cuda() for k, v in mb.items()}
            for mb in batching(samples, dp_rank=0, dp_size=1, micro_batch_size=MICRO_BATCH, pad_id=0)
        ]
        stats = actor.token_stats(microbatches)
        out[name] = [t.cpu() for t in _per_sample(microbatches, [s.logprob for s in stats], lengths)]
    return out


@pytest.mark.gpu
def test_packed_rows_use_thd_with_transformer_engine_and_match_padded(gloo) -> None:
    pytest.importorskip("transformer_engine", reason="the THD path needs Transformer Engine")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    result = gloo(1).run(_stats_on_gpu, seed)[0]
    assert result["packed_format"] == "thd"
    for ours, ref in zip(result["packed"], result["padded"]):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4, msg=f"seed {seed}")
