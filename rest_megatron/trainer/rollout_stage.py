"""The trainer's side of rollouts: services, generation, evaluation, weight sync and HF export.

The driver (global rank 0) owns the inference servers (or connects to `rollout.server_urls`), the
sandbox service (or `sandbox.url`), and one asyncio event loop that runs the agent loop. Generated
trajectories stay on the driver; `scatter_to_dp` sends each rank only its data-parallel share of what
it trains on (the driver assigns shares, `stages.plan_updates`). Weight sync is
collective: every rank takes part in gathering the HF-named tensors (`convert.live`), the driver
writes them as a Hugging Face folder and tells every server to load it.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from rest_megatron.config import SandboxConfig
from rest_megatron.convert.hf_files import copy_metadata
from rest_megatron.convert.live import iter_hf_tensors
from rest_megatron.convert.to_hf import ShardWriter
from rest_megatron.data.prompts import Prompt
from rest_megatron.rollout.agent_loop import AgentLoop, AgentSettings, RolloutPrompt
from rest_megatron.rollout.weight_sync import DiskWeightSync
from rest_megatron.trainer import stages
from rest_megatron.trainer.runtime import Runtime

if TYPE_CHECKING:
    from tools_sandbox.client import SandboxClient


@dataclass
class RolloutServices:
    """What the driver holds to generate: its event loop, the agent loop and the weight-sync target."""

    loop: asyncio.AbstractEventLoop
    agent: AgentLoop
    weight_sync: DiskWeightSync


def start_services(rt: Runtime) -> None:
    """Driver: start (or connect to) the sandbox and the inference servers; others do nothing."""
    if not rt.is_driver:
        return
    from rest_megatron.rollout.clients import make_router
    from rest_megatron.rollout.launch import local_trainer_gpus, start_embedded_servers, start_sglang_servers
    from tools_sandbox.client import local_sandbox_server

    cfg = rt.config
    logs = rt.run_dir / "logs"
    sandbox_url = cfg.sandbox.url
    if sandbox_url is None:
        limits = ["--backend", cfg.sandbox.backend, "--cpu-s", str(cfg.sandbox.cpu_seconds),
                  "--wall-s", str(cfg.sandbox.wall_seconds), "--memory-mb", str(cfg.sandbox.memory_mb),
                  "--max-concurrency", str(cfg.sandbox.max_concurrency), "--max-processes", str(cfg.sandbox.max_processes),
                  "--file-size-mb", str(cfg.sandbox.max_file_mb), "--output-bytes", str(cfg.sandbox.max_output_bytes)]
        sandbox_url = rt.services.enter_context(local_sandbox_server(limits)).base_url
    urls = list(cfg.rollout.server_urls)
    if not urls:
        if cfg.rollout.engine == "embedded":
            servers = start_embedded_servers(rt.hf_dir, cfg.rollout.num_servers, log_dir=logs)
        else:
            servers = start_sglang_servers(rt.hf_dir, cfg.rollout, log_dir=logs,
                                           trainer_gpus=local_trainer_gpus(cfg.launch.device))
        for server in servers:
            rt.services.callback(server.stop)
        urls = [server.base_url for server in servers]
    loop = asyncio.new_event_loop()
    rt.services.callback(loop.close)
    engine = "sglang" if cfg.rollout.engine == "embedded" else cfg.rollout.engine  # ours speaks SGLang's API
    router = make_router(engine, urls, timeout_s=cfg.rollout.request_timeout_s)
    sandbox = sandbox_client(cfg.sandbox, sandbox_url)
    rt.services.callback(lambda: loop.run_until_complete(sandbox.aclose()))
    rt.services.callback(lambda: loop.run_until_complete(router.aclose()))
    agent = AgentLoop(router, rt.tokenizer, sandbox, AgentSettings.from_config(cfg))
    rt.rollout = RolloutServices(loop, agent, DiskWeightSync(router, rt.run_dir / "weights"))


def sandbox_client(sandbox: SandboxConfig, url: str) -> SandboxClient:
    """A client of the sandbox at `url`, sending the shared secret from `sandbox.secret_env` if it is set."""
    from tools_sandbox.client import SandboxClient

    return SandboxClient(url, os.environ.get(sandbox.secret_env) or None, timeout_s=sandbox.wall_seconds + 30)


def _rollout_prompts(prompts: list[Prompt], num_samples: int, tag: str, seed: int | None) -> list[RolloutPrompt]:
    """One request per sample; seeds 1000 apart leave room for the per-turn offsets."""
    return [RolloutPrompt(f"{tag}-{i}-{k}", p.messages, p.tools, render_tools=p.render_tools,
                          seed=None if seed is None else seed + 1000 * (i * num_samples + k))
            for i, p in enumerate(prompts) for k in range(num_samples)]


def sampling_seed(data_seed: int, step: int) -> int:
    """The base sampling seed of a training step: a function of (data.seed, step) only, so resuming
    from a checkpoint replays the very requests of the uninterrupted run."""
    return (data_seed * 1_000_003 + step) % 2**31 * 2**20


def scatter_to_dp(per_dp_rank: list[Any] | None) -> tuple[Any, int]:
    """Collective. The driver passes one entry per data-parallel rank; every rank gets the entry of its
    own DP rank (its tensor and pipeline peers get the same one) and nothing else. Returns the entry and
    the bytes this rank received (0 on the driver, which keeps its own)."""
    from megatron.core import parallel_state

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    dp_ranks = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(dp_ranks, torch.tensor([parallel_state.get_data_parallel_rank()], device=device))
    if dist.get_rank() == 0:
        blobs = {r: pickle.dumps(entry) for r, entry in enumerate(per_dp_rank)}
        for rank in range(1, dist.get_world_size()):
            blob = blobs[int(dp_ranks[rank])]
            dist.send(torch.tensor([len(blob)], dtype=torch.long, device=device), dst=rank)
            dist.send(torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device), dst=rank)
        return per_dp_rank[int(dp_ranks[0])], 0
    size = torch.zeros(1, dtype=torch.long, device=device)
    dist.recv(size, src=0)
    blob = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.recv(blob, src=0)
    return pickle.loads(blob.cpu().numpy().tobytes()), size.numel() * size.element_size() + int(size)


def generate(rt: Runtime, prompts: list[Prompt], num_samples: int, *, tag: str = "train", agent: AgentLoop | None = None,
             seed: int | None = None) -> list[Any] | None:
    """Driver: `num_samples` trajectories per prompt (grouped by prompt). Other ranks: None."""
    if not rt.is_driver:
        return None
    agent = agent or rt.rollout.agent
    requests = _rollout_prompts(prompts, num_samples, tag, seed)
    return rt.rollout.loop.run_until_complete(agent.run_batch(requests))


def evaluate(rt: Runtime) -> float:
    """Driver: mean reward of one greedy trajectory per held-out prompt (NaN on other ranks, which log nothing)."""
    prompts = rt.eval_prompts.batch(0)
    greedy = None
    if rt.is_driver:
        settings = rt.rollout.agent.settings
        greedy = AgentLoop(rt.rollout.agent.client, rt.tokenizer, rt.rollout.agent.executor,
                           AgentSettings(**{**settings.__dict__, "sampling": settings.sampling.replace(temperature=0.0)}))
    trajectories = generate(rt, prompts, 1, tag="eval", agent=greedy)
    if trajectories is None:  # only the driver scores (and logs) the evaluation
        return float("nan")
    rewards, _ = stages.score(trajectories, prompts, reward=rt.config.reward.name, step=0, params=rt.config.reward.params)
    return float(rewards.mean())


def write_hf_folder(rt: Runtime, out: Path, *, max_shard_bytes: int = 5 * 2**30) -> None:
    """Collective: gather the live model's HF-named tensors; the driver writes a complete HF folder at `out`."""
    staging = out.parent / f".{out.name}.partial"
    writer = None
    if rt.is_driver:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        writer = ShardWriter(staging, max_shard_bytes)
    for name, tensor in iter_hf_tensors(rt.actor.network, rt.spec):
        writer.add(name, tensor.cpu())
    if rt.is_driver:
        writer.close()
        copy_metadata(rt.hf_dir, staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    dist.barrier()


def sync_weights(rt: Runtime, version: int) -> None:
    """Export the current policy and make every inference server load it."""
    folder = rt.run_dir / "weights" / f"step-{version:08d}"
    write_hf_folder(rt, folder)
    if rt.is_driver:
        rt.rollout.loop.run_until_complete(rt.rollout.weight_sync.push(version))
    dist.barrier()


def export_hf(rt: Runtime, out: Path) -> None:
    """The final Hugging Face export of the run."""
    write_hf_folder(rt, out)
