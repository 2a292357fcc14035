"""Checkpoints on real gloo ranks: exact resume in a new process, resharding, corruption and fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rest_megatron.algo.weights import get_token_weights
from rest_megatron.assets import tiny_hf_config
from rest_megatron.config import AlgorithmConfig, OptimizerConfig
from rest_megatron.distributed import ParallelLayout, init_model_parallel
from rest_megatron.model.builder import model_spec_from_hf
from rest_megatron.testing.gloo import DistributedRunError, GlooPool
from rest_megatron.trainer.actor import build_actor
from rest_megatron.trainer.checkpoint import load_checkpoint, save_checkpoint
from tests.distributed.test_actor import _global_batch, _local_microbatches

SETTINGS = OptimizerConfig(lr=1e-3, lr_schedule="cosine", num_warmup_steps=1, num_steps=4, min_lr=1e-4)


def _actor(tp: int, pp: int):
    init_model_parallel(ParallelLayout(tp=tp, pp=pp), seed=1234, timeout_s=120)
    spec = model_spec_from_hf(tiny_hf_config("tiny-qwen3"))
    return spec, build_actor(spec, SETTINGS, tp=tp, pp=pp, chunk_size=16)


def _train(actor, spec, steps: range, seed: int) -> None:
    paper = get_token_weights("paper")
    for step in steps:
        microbatches = _local_microbatches(_global_batch(seed + step, spec.vocab_size))
        for mb, st in zip(microbatches, actor.token_stats(microbatches)):
            mb["old_logprobs"] = st.logprob + mb.pop("old_logprob_noise") * mb["loss_mask"]
            mb["weights"] = paper(
                loss_mask=mb["loss_mask"], region_mask=mb["region_mask"], step=step, collision=st.collision
            )
        actor.train_step(microbatches, AlgorithmConfig())


def _weights(actor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in actor.network.state_dict().items() if torch.is_tensor(v)}


def _straight(seed: int) -> dict:
    spec, actor = _actor(2, 1)
    _train(actor, spec, range(4), seed)
    return _weights(actor)


def _first_half(root: str, seed: int) -> None:
    spec, actor = _actor(2, 1)
    _train(actor, spec, range(2), seed)
    save_checkpoint(root, 2, actor.model, actor.optimizer, actor.scheduler, {"data_cursor": 2})


def _second_half(root: str, seed: int) -> dict:
    spec, actor = _actor(2, 1)
    state = load_checkpoint(root, actor.model, actor.optimizer, actor.scheduler)
    assert state["step"] == 2 and state["data_cursor"] == 2
    _train(actor, spec, range(state["step"], 4), seed)
    return _weights(actor)


def test_resume_in_a_new_process_continues_exactly(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    straight = gloo(2).run(_straight, seed)
    root = str(tmp_path / "ckpt")
    gloo(2).run(_first_half, root, seed)
    with GlooPool(2) as fresh:  # new processes: nothing survives but the files
        resumed = fresh.run(_second_half, root, seed)
    for rank in range(2):
        for key, value in straight[rank].items():
            assert torch.allclose(resumed[rank][key], value, rtol=0, atol=1e-6), key


def _logprob_sum(tp: int, pp: int, root: str, seed: int, save: bool, fallback: bool = False) -> dict:
    spec, actor = _actor(tp, pp)
    if save:
        _train(actor, spec, range(1), seed)
        save_checkpoint(root, 1, actor.model, actor.optimizer, actor.scheduler)
        _train(actor, spec, range(1, 2), seed)
        save_checkpoint(root, 2, actor.model, actor.optimizer, actor.scheduler)
        state = {"step": 2, "skipped": []}
    else:
        state = load_checkpoint(root, actor.model, actor.optimizer, actor.scheduler, fallback=fallback)
    microbatches = _local_microbatches(_global_batch(seed + 100, spec.vocab_size))
    total = sum(
        float((st.logprob * mb["loss_mask"]).sum())
        for mb, st in zip(microbatches, actor.token_stats(microbatches))
    )
    from megatron.core import parallel_state

    value = torch.tensor(total, dtype=torch.float64)
    dist.all_reduce(value, group=parallel_state.get_data_parallel_group())
    return {"logprob_sum": float(value), "step": state["step"], "skipped": state["skipped"]}


def test_save_at_tp2_load_at_pp2_and_recover_from_a_truncated_shard(gloo, tmp_path) -> None:
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    root = tmp_path / "ckpt"
    saved = gloo(2).run(_logprob_sum, 2, 1, str(root), seed, True)[0]
    loaded = gloo(2).run(_logprob_sum, 1, 2, str(root), seed, False)[0]
    assert loaded["step"] == 2
    assert loaded["logprob_sum"] == pytest.approx(saved["logprob_sum"], rel=1e-6)

    shard = max((root / "step_00000002" / "model_optim").glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DistributedRunError, match=rf"{shard.name} has \d+ bytes, the manifest says \d+"):
        gloo(2).run(_logprob_sum, 1, 2, str(root), seed, False)
    recovered = gloo(2).run(_logprob_sum, 1, 2, str(root), seed, False, True)[0]
    assert recovered["step"] == 1 and len(recovered["skipped"]) == 1 and shard.name in recovered["skipped"][0]
    assert recovered["logprob_sum"] != pytest.approx(
        saved["logprob_sum"], rel=1e-6
    )  # really the older weights
    assert Path(root / "latest").read_text() == "step_00000002"  # loading never rewrites the pointer


def _save_after_sigterm_to_every_child(root: str) -> int:
    """Save, SIGTERM every process this rank started (what `scancel -s TERM` does to a job step),
    save again."""
    import os
    import signal
    import time

    import psutil

    spec, actor = _actor(1, 1)
    _train(actor, spec, range(1), seed=0)  # an optimizer with state, as in a real run
    save_checkpoint(root, 1, actor.model, actor.optimizer, actor.scheduler)
    children = psutil.Process(os.getpid()).children(recursive=True)
    for child in children:
        os.kill(child.pid, signal.SIGTERM)
    time.sleep(1.0)
    save_checkpoint(root, 2, actor.model, actor.optimizer, actor.scheduler)
    return int(load_checkpoint(root, actor.model, actor.optimizer, actor.scheduler)["step"])


def test_a_checkpoint_saves_after_the_whole_step_got_sigterm(tmp_path) -> None:
    # A fresh rank: the checkpoint writer's helper process is created once per process, at its first save.
    with GlooPool(1) as pool:
        assert pool.run(_save_after_sigterm_to_every_child, str(tmp_path / "ckpt"))[0] == 2


def _save_before_the_first_update_then_resume(root: str) -> float:
    """A checkpoint saved before any optimizer step (every group skipped) loads, and training goes on."""
    spec, actor = _actor(1, 1)
    save_checkpoint(root, 1, actor.model, actor.optimizer, actor.scheduler)
    spec, resumed = _actor(1, 1)
    assert load_checkpoint(root, resumed.model, resumed.optimizer, resumed.scheduler)["step"] == 1
    before = _weights(resumed)
    _train(resumed, spec, range(2), seed=0)  # the first step warms the LR up from 0
    return max(float((_weights(resumed)[k] - v).abs().max()) for k, v in before.items())


def test_a_checkpoint_from_before_the_first_update_resumes(gloo, tmp_path) -> None:
    assert gloo(1).run(_save_before_the_first_update_then_resume, str(tmp_path / "ckpt"))[0] > 0
