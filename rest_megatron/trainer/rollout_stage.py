"""The trainer's side of rollouts: services, generation, evaluation, weight sync and HF export.

The driver (global rank 0) owns the inference servers (or connects to `rollout.server_urls`), the
sandbox service (or `sandbox.url`), and one asyncio event loop that runs the agent loop. Generated
trajectories stay on the driver; `scatter_to_dp` sends each rank only its data-parallel share of what
it trains on (the driver assigns shares, `stages.plan_updates`). Weight sync is collective: every
rank takes part in gathering the HF-named tensors (`convert.live`); the driver broadcasts them to the
servers (`rollout.weight_sync: distributed`) or writes them as a Hugging Face folder that every
server loads (`disk`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import shutil
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from rest_megatron.config import SandboxConfig
from rest_megatron.convert.hf_files import copy_metadata
from rest_megatron.convert.live import iter_hf_tensors
from rest_megatron.convert.to_hf import ShardWriter
from rest_megatron.data.prompts import Prompt
from rest_megatron.rollout.agent_loop import AgentLoop, AgentSettings, RolloutPrompt
from rest_megatron.rollout.clients import InferenceClient, Router
from rest_megatron.rollout.launch import free_port
from rest_megatron.rollout.trajectory import UNTRAINABLE, Trajectory, TrajectoryStatus
from rest_megatron.rollout.types import RolloutFailed, WeightSyncError
from rest_megatron.rollout.weight_sync import (
    DiskWeightSync,
    DistributedWeightSync,
    resolve_weight_sync,
    weight_sync_backend,
)
from rest_megatron.trainer import stages
from rest_megatron.trainer.runtime import Runtime

if TYPE_CHECKING:
    from tools_sandbox.client import SandboxClient

log = logging.getLogger(__name__)


@dataclass
class RolloutServices:
    """What the driver holds to generate: its event loop, the agent loop and the weight-sync target."""

    loop: asyncio.AbstractEventLoop
    agent: AgentLoop
    weight_sync: DiskWeightSync | DistributedWeightSync
    router: Router


def start_services(rt: Runtime) -> None:
    """Driver: start (or connect to) the sandbox and the inference servers; others do nothing."""
    if not rt.is_driver:
        return
    from rest_megatron.rollout.clients import make_router
    from rest_megatron.rollout.launch import (
        local_trainer_gpus,
        start_embedded_servers,
        start_sglang_servers,
        start_vllm_servers,
    )
    from tools_sandbox.client import local_sandbox_server

    cfg = rt.config
    logs = rt.run_dir / "logs"
    sandbox_url = cfg.sandbox.url
    if sandbox_url is None:
        limits = [
            "--backend",
            cfg.sandbox.backend,
            "--cpu-s",
            str(cfg.sandbox.cpu_seconds),
            "--wall-s",
            str(cfg.sandbox.wall_seconds),
            "--memory-mb",
            str(cfg.sandbox.memory_mb),
            "--max-concurrency",
            str(cfg.sandbox.max_concurrency),
            "--max-processes",
            str(cfg.sandbox.max_processes),
            "--file-size-mb",
            str(cfg.sandbox.max_file_mb),
            "--output-bytes",
            str(cfg.sandbox.max_output_bytes),
        ]
        sandbox_url = rt.services.enter_context(local_sandbox_server(limits)).base_url
    urls = list(cfg.rollout.server_urls)
    if not urls:
        if cfg.rollout.engine == "embedded":
            servers = start_embedded_servers(rt.hf_dir, cfg.rollout.num_servers, log_dir=logs)
        elif cfg.rollout.engine == "vllm":
            servers = start_vllm_servers(
                rt.hf_dir, cfg, log_dir=logs, trainer_gpus=local_trainer_gpus(cfg.launch.device)
            )
        else:
            servers = start_sglang_servers(
                rt.hf_dir, cfg.rollout, log_dir=logs, trainer_gpus=local_trainer_gpus(cfg.launch.device)
            )
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
    rt.rollout = RolloutServices(loop, agent, _weight_sync(rt, router, loop), router)


def _weight_sync(
    rt: Runtime, router: Router, loop: asyncio.AbstractEventLoop
) -> DiskWeightSync | DistributedWeightSync:
    """The configured weight sync; the distributed one joins its group with every server now."""
    r = rt.config.rollout
    if (
        resolve_weight_sync(r.weight_sync, r.engine, str(rt.device.type), own_servers=not r.server_urls)
        == "disk"
    ):
        return DiskWeightSync(router, rt.run_dir / "weights")
    router.no_return = (
        "it left the weight-update group (rollout.weight_sync=distributed); restart the run, or "
        "use rollout.weight_sync=disk so that returning servers catch up"
    )
    return _join_group(rt, router.clients, loop, "rest_megatron_weights")


def _join_group(
    rt: Runtime, clients: list[InferenceClient], loop: asyncio.AbstractEventLoop, name: str
) -> DistributedWeightSync:
    """A weight-update group of the trainer's rank 0 and `clients`, joined by all of them."""
    r = rt.config.rollout
    if not clients:
        raise WeightSyncError("no inference server is left to receive the weights; check the servers' logs")
    backend = weight_sync_backend(r.engine, rt.config.launch.device)
    sync = DistributedWeightSync(
        clients,
        [r.server_tp] * len(clients),
        group_name=name,
        master_address=_address_seen_by(clients[0].base_url),
        master_port=free_port(),
        bucket_bytes=max(1, int(r.weight_sync_bucket_mb * 2**20)),
        backend=backend,
        device="cuda" if backend == "nccl" else "cpu",
    )
    loop.run_until_complete(sync.init_group())
    return sync


def _address_seen_by(url: str) -> str:
    """This host's address on the route to the server at `url` (loopback for a local server)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(host), 9))  # UDP connect sends nothing; it only picks the route
        return probe.getsockname()[0]


def sandbox_client(sandbox: SandboxConfig, url: str) -> SandboxClient:
    """A client of the sandbox at `url`, sending the shared secret from `sandbox.secret_env` if it is set."""
    from tools_sandbox.client import SandboxClient

    return SandboxClient(url, os.environ.get(sandbox.secret_env) or None, timeout_s=sandbox.wall_seconds + 30)


def _rollout_prompts(
    prompts: list[Prompt], num_samples: int, tag: str, seed: int | None
) -> list[RolloutPrompt]:
    """One request per sample; seeds 1000 apart leave room for the per-turn offsets."""
    return [
        RolloutPrompt(
            f"{tag}-{i}-{k}",
            p.messages,
            p.tools,
            render_tools=p.render_tools,
            seed=None if seed is None else seed + 1000 * (i * num_samples + k),
        )
        for i, p in enumerate(prompts)
        for k in range(num_samples)
    ]


def sampling_seed(data_seed: int, step: int) -> int:
    """The base sampling seed of a training step: a function of (data.seed, step) only, so resuming
    from a checkpoint replays the very requests of the uninterrupted run."""
    return (data_seed * 1_000_003 + step) % 2**31 * 2**20


Entry = TypeVar("Entry")


def scatter_to_dp(per_dp_rank: list[Entry] | None) -> tuple[Entry, int]:
    """Collective. The driver passes one entry per data-parallel rank; every rank gets the entry of its
    own DP rank (its tensor and pipeline peers get the same one) and nothing else. Returns the entry and
    the bytes this rank received (0 on the driver, which keeps its own)."""
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
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


def generate(
    rt: Runtime,
    prompts: list[Prompt],
    num_samples: int,
    *,
    tag: str = "train",
    agent: AgentLoop | None = None,
    seed: int | None = None,
) -> list[Trajectory] | None:
    """Driver: `num_samples` trajectories per prompt (grouped by prompt). Other ranks: None."""
    if not rt.is_driver:
        return None
    agent = agent or rt.rollout.agent
    requests = _rollout_prompts(prompts, num_samples, tag, seed)
    return rt.rollout.loop.run_until_complete(agent.run_batch(requests))


def rollout_status_metrics(trajectories: list[Trajectory], max_failed_fraction: float) -> dict[str, float]:
    """`rollout/<status>_frac` for every final status; raise RolloutFailed when more than
    `max_failed_fraction` of the trajectories failed or were aborted (with the first one's reason)."""
    counts = Counter(t.status for t in trajectories)
    total = max(1, len(trajectories))
    metrics = {
        f"rollout/{s.value}_frac": counts[s] / total
        for s in TrajectoryStatus
        if s is not TrajectoryStatus.RUNNING
    }
    bad = [t for t in trajectories if t.status in UNTRAINABLE]
    metrics["rollout/untrained_frac"] = len(bad) / total
    if len(bad) / total > max_failed_fraction:
        first = bad[0]
        raise RolloutFailed(
            f"{len(bad)} of {len(trajectories)} trajectories failed or were aborted (more than "
            f"rollout.max_failed_fraction={max_failed_fraction:g}); the first, {first.sample_id}: "
            f"{first.finish_reason}: {'; '.join(first.errors) or 'no error recorded'}"
        )
    return metrics


def evaluate(rt: Runtime) -> float:
    """Driver: mean reward of one greedy trajectory per held-out prompt
    (NaN on other ranks, which log nothing)."""
    prompts = rt.eval_prompts.batch(0)
    greedy = None
    if rt.is_driver:
        settings = rt.rollout.agent.settings
        greedy = AgentLoop(
            rt.rollout.agent.client,
            rt.tokenizer,
            rt.rollout.agent.executor,
            AgentSettings(**{**settings.__dict__, "sampling": settings.sampling.replace(temperature=0.0)}),
        )
    trajectories = generate(rt, prompts, 1, tag="eval", agent=greedy)
    if trajectories is None:  # only the driver scores (and logs) the evaluation
        return float("nan")
    rewards, _ = stages.score(
        trajectories, prompts, reward=rt.config.reward.name, step=0, params=rt.config.reward.params
    )
    return float(rewards.mean())


def write_hf_folder(rt: Runtime, out: Path, *, max_shard_bytes: int = 5 * 2**30) -> None:
    """Collective: gather the live model's HF-named tensors; the driver writes a complete HF folder
    at `out`."""
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
    """Collective: bring every inference server to the current policy, tagged `version`.

    `disk`: export a HF folder that every server loads. `distributed`: stream the HF-named tensors
    (gathered per tensor on the driver) to the servers in broadcast buckets, no file written.
    """
    r = rt.config.rollout
    if (
        resolve_weight_sync(r.weight_sync, r.engine, str(rt.device.type), own_servers=not r.server_urls)
        == "disk"
    ):
        write_hf_folder(rt, rt.run_dir / "weights" / f"step-{version:08d}")
        if rt.is_driver:
            rt.rollout.loop.run_until_complete(rt.rollout.weight_sync.push(version))
    else:
        tensors = iter_hf_tensors(rt.actor.network, rt.spec)
        if rt.is_driver:
            services = rt.rollout
            live = services.router.live
            if len(live) < len(services.weight_sync.clients):
                # A broadcast to a group with a dead member would fail: regroup with the servers left.
                log.warning(
                    "servers %s left; the weight-update group is formed again without them",
                    sorted(services.router.dead),
                )
                services.weight_sync = _join_group(
                    rt, live, services.loop, f"rest_megatron_weights_{version}"
                )
            services.loop.run_until_complete(services.weight_sync.push(tensors, weight_version=str(version)))
        else:
            for _ in tensors:  # collective: the driver gathers each tensor from its holders
                pass
    dist.barrier()


def export_hf(rt: Runtime, out: Path) -> None:
    """The final Hugging Face export of the run."""
    write_hf_folder(rt, out)
