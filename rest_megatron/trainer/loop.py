"""The ResT training loop. Each line is one phase; the work lives in the modules it calls.

    prompts ─► rollout (driver: engines + sandbox) ─► rewards ─► advantages ─► mini-batches
                                                                    │ scatter: each rank its DP share
    micro-batches ─► old-policy stats (actor) ─► ResT weights ─► PPO updates (actor, one per mini-batch)
                                                                    │
    weight sync (HF export → engines) ─► eval ─► log ─► checkpoint ◄┘

`rest-megatron train RECIPE [key=value ...]` calls `train_main`; with more than one rank on this
machine it re-launches itself under torchrun. SIGTERM (Slurm preemption) finishes the current step,
saves a checkpoint and exits with 143 so the job can be requeued and resumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from rest_megatron.config import Config, load_config, save_config
from rest_megatron.rollout.trajectory import save_jsonl
from rest_megatron.trainer import stages
from rest_megatron.trainer.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from rest_megatron.trainer.rollout_stage import (
    evaluate,
    generate,
    rollout_status_metrics,
    sampling_seed,
    scatter_to_dp,
    start_services,
    sync_weights,
)
from rest_megatron.trainer.runtime import Runtime, start_runtime, stop_runtime
from rest_megatron.trainer.sft_stage import sft_warm_start

PREEMPTED_EXIT_CODE = 143


def rl_step(rt: Runtime, step: int) -> dict[str, float]:
    """One training step: rollout → rewards → advantages → mini-batches → old-policy stats → weights
    → updates."""
    cfg, timings, metrics, shares = rt.config, {}, {}, None
    started = time.perf_counter()
    prompts = rt.train_prompts.batch(step)
    trajectories = generate(
        rt,
        prompts,
        cfg.rollout.num_samples_per_prompt,  # on the driver only
        seed=sampling_seed(cfg.data.seed, step),
    )
    timings["time/rollout"] = time.perf_counter() - started
    if rt.is_driver:
        metrics, shares = driver_plan(rt, step, prompts, trajectories)
    share, _ = scatter_to_dp(shares)  # each rank: its DP share of every update, or None to skip the step
    if share is None:
        return {**metrics, "skipped": 1.0, **timings}
    started = time.perf_counter()
    updates = [
        stages.microbatches(s, cfg.parallel, pad_id=rt.tokenizer.pad_token_id, device=rt.device)
        for s in share
    ]
    everything = [mb for update in updates for mb in update]
    stats = rt.actor.token_stats(everything)  # the old policy: before the first update
    region_metrics = stages.attach_weights(
        everything, stats, weights=cfg.algorithm.weights, params=cfg.algorithm.weights_params, step=step
    )
    if rt.reference is not None:  # KL to the frozen starting policy
        stages.attach_reference(everything, rt.reference.token_stats(everything))
    timings["time/old_policy"] = time.perf_counter() - started
    started = time.perf_counter()
    update = stages.ppo_updates(rt.actor, updates, cfg.algorithm, epochs=cfg.optimizer.ppo_epochs)
    timings["time/update"] = time.perf_counter() - started
    started = time.perf_counter()
    sync_weights(rt, step + 1)
    timings["time/weight_sync"] = time.perf_counter() - started
    return {**metrics, **region_metrics, **update, **timings}


def driver_plan(
    rt: Runtime, step: int, prompts: list, trajectories: list
) -> tuple[dict[str, float], list | None]:
    """Driver: score and normalize the step's trajectories and assign them to updates and DP ranks.
    Returns the reward metrics and, per DP rank, its shares (a list of None when the step is skipped)."""
    cfg = rt.config
    statuses = rollout_status_metrics(trajectories, cfg.rollout.max_failed_fraction)  # raises past the limit
    if cfg.logging.save_rollouts:  # replayable record of exactly what was trained on
        (rt.run_dir / "rollouts").mkdir(exist_ok=True)
        save_jsonl(trajectories, rt.run_dir / "rollouts" / f"step_{step + 1:08d}.jsonl")
    rewards, reward_parts = stages.score(
        trajectories, prompts, reward=cfg.reward.name, step=step, params=cfg.reward.params
    )
    advantages, keep = stages.advantages(
        rewards,
        group_size=cfg.rollout.num_samples_per_prompt,
        estimator=cfg.algorithm.advantage,
        dynamic_sampling=cfg.algorithm.dynamic_sampling,
    )
    samples = stages.to_samples(trajectories, advantages, keep)
    metrics = {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        **{f"reward/{k}": v for k, v in reward_parts.items()},
        "kept_fraction": float(keep.float().mean()),
        **statuses,
    }
    dp = cfg.data_parallel_size(dist.get_world_size())
    # Every group uniform: nothing to learn, and an Adam step on a zero gradient would still move the
    # weights along its momentum (measured: ~lr per parameter per step, a tiny policy drifted to noise).
    if not samples or not bool((advantages[keep] != 0).any()):
        return metrics, [None] * dp
    shares = stages.plan_updates(
        samples,
        num_updates=cfg.num_updates_per_step // cfg.optimizer.ppo_epochs,
        seed=stages.update_seed(cfg.data.seed, step),
        dp_size=dp,
        micro_batch_size=cfg.parallel.micro_batch_size,
        length_multiple=8 * cfg.parallel.tp,
        packed=cfg.parallel.pack_sequences,
    )
    return metrics, shares


def run(config: Config) -> int:
    """Train on this rank (under torchrun, or alone); returns the process exit code."""
    rt = start_runtime(config)
    try:
        start_step = resume(rt)
        if rt.logger is not None:  # steps after the checkpoint are redone: drop their first records
            rt.logger.truncate_after(start_step if start_step > 0 else -1)
        start_services(rt)
        if start_step == 0 and config.sft.num_steps > 0:
            sft_warm_start(rt)
        if start_step > 0 or config.sft.num_steps > 0:  # else the servers hold the weights they started with
            sync_weights(rt, start_step)
        if start_step == 0 and rt.eval_prompts is not None:
            log(rt, 0, {"eval/reward": evaluate(rt)})
        for step in range(start_step, config.optimizer.num_steps):
            metrics = rl_step(rt, step)
            done = step + 1
            if (
                rt.eval_prompts is not None
                and config.logging.eval_interval
                and (done % config.logging.eval_interval == 0 or done == config.optimizer.num_steps)
            ):
                metrics["eval/reward"] = evaluate(rt)
            log(rt, done, metrics)
            stop = preempted(rt)
            interval = config.checkpoint.save_interval
            if stop or (interval and done % interval == 0) or done == config.optimizer.num_steps:
                save(rt, done)
            if stop:
                return PREEMPTED_EXIT_CODE
        finish(rt)
        return 0
    finally:
        stop_runtime(rt)


def resume(rt: Runtime) -> int:
    """The first step to run: 0, or the step after the newest good checkpoint when resuming."""
    mode = rt.config.checkpoint.resume
    source = checkpoint_root(rt) if mode == "auto" else Path(mode)
    if mode == "never" or (mode == "auto" and not list_checkpoints(source)):
        return 0
    state = load_checkpoint(source, rt.actor.model, rt.actor.optimizer, rt.actor.scheduler, fallback=True)
    return int(state["step"])


def checkpoint_root(rt: Runtime) -> Path:
    return Path(rt.config.checkpoint.dir) if rt.config.checkpoint.dir else rt.run_dir / "checkpoints"


def save(rt: Runtime, step: int) -> None:
    save_checkpoint(
        checkpoint_root(rt),
        step,
        rt.actor.model,
        rt.actor.optimizer,
        rt.actor.scheduler,
        {"data_cursor": step, "hf_source": str(rt.hf_dir)},
        num_keep_last=rt.config.checkpoint.num_keep_last,
    )


def preempted(rt: Runtime) -> bool:
    """Whether any rank received SIGTERM (agreed on by all ranks, so they stop together)."""
    flag = torch.tensor([float(rt.stop_requested)], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def log(rt: Runtime, step: int, metrics: dict[str, float]) -> None:
    """Record every `logging.log_interval` steps, and always an evaluation and the last step."""
    last = step == rt.config.optimizer.num_steps
    if rt.logger is not None and (
        step % rt.config.logging.log_interval == 0 or "eval/reward" in metrics or last
    ):
        rt.logger.log(
            step, {**metrics, "data/skipped_long_prompts": float(rt.train_prompts.num_skipped_long)}
        )


def finish(rt: Runtime) -> None:
    """Export the final policy as a Hugging Face folder and draw the learning curves."""
    from rest_megatron.trainer.rollout_stage import export_hf

    export_hf(rt, rt.run_dir / "hf")
    if rt.logger is not None:
        rt.logger.plot()


def train_main(config: Config) -> int:
    """`rest-megatron train`: run here, or re-launch under torchrun when several local ranks are asked for."""
    if "RANK" in os.environ or config.world_size == 1:
        return run(config)
    path = save_config(config, config.logging.run_dir)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={config.launch.nproc_per_node}",
        "-m",
        "rest_megatron.trainer.loop",
        str(path),
    ]
    return subprocess.call(
        command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    )


if __name__ == "__main__":
    raise SystemExit(run(load_config(sys.argv[1], sys.argv[2:])))
