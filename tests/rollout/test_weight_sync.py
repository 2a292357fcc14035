"""Weight sync: bucketing, payloads and group layout for NCCL, the full path over gloo, and the disk path."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
import torch

from rest_megatron.assets import tiny_model_dir
from rest_megatron.rollout.clients import SGLangClient
from rest_megatron.rollout.launch import ServerProcess, free_port
from rest_megatron.rollout.types import WeightSyncError
from rest_megatron.rollout.weight_sync import (
    DiskWeightSync,
    DistributedWeightSync,
    TensorMeta,
    bucket_payload,
    check_names,
    group_layout,
    hf_weight_names,
    iter_buckets,
    plan_buckets,
)


def _named(sizes: list[int], dtype: torch.dtype = torch.float32) -> list[tuple[str, torch.Tensor]]:
    return [(f"model.layers.{i}.w", torch.full((n,), float(i), dtype=dtype)) for i, n in enumerate(sizes)]


def test_buckets_keep_order_respect_the_size_and_isolate_big_tensors() -> None:
    named = _named([10, 20, 5, 100, 1, 1])  # float32: 40, 80, 20, 400, 4, 4 bytes
    metas = [TensorMeta.of(n, t) for n, t in named]
    buckets = plan_buckets(metas, bucket_bytes=120)
    assert [[m.name.split(".")[2] for m in b] for b in buckets] == [["0", "1"], ["2"], ["3"], ["4", "5"]]
    assert [sum(m.nbytes for m in b) for b in buckets] == [120, 20, 400, 8]
    streamed = [[n for n, _ in b] for b in iter_buckets(iter(named), bucket_bytes=120)]
    assert streamed == [[m.name for m in b] for b in buckets]
    assert [m.name for b in buckets for m in b] == [n for n, _ in named]
    with pytest.raises(ValueError):
        plan_buckets(metas, 0)


def test_payload_uses_sglang_field_names_and_dtype_spelling() -> None:
    metas = [
        TensorMeta("lm_head.weight", torch.bfloat16, (8, 4)),
        TensorMeta("model.norm.weight", torch.float32, (4,)),
    ]
    payload = bucket_payload(metas, group_name="g", flush_cache=True, weight_version="7")
    assert payload == {
        "names": ["lm_head.weight", "model.norm.weight"],
        "dtypes": ["bfloat16", "float32"],
        "shapes": [[8, 4], [4]],
        "group_name": "g",
        "flush_cache": True,
        "weight_version": "7",
    }
    assert all(getattr(torch, d) in (torch.bfloat16, torch.float32) for d in payload["dtypes"])


def test_group_layout_trainer_is_rank_zero_and_servers_follow() -> None:
    assert group_layout([2, 2, 4]) == (9, [1, 3, 5])
    assert group_layout([1]) == (2, [1])
    with pytest.raises(ValueError):
        group_layout([2, 0])


def test_names_are_checked_against_the_served_model() -> None:
    names = hf_weight_names(tiny_model_dir("tiny-qwen3"))
    assert "model.layers.0.self_attn.q_norm.weight" in names and "lm_head.weight" in names
    check_names(sorted(names), names)
    for bad, match in (
        (sorted(names)[1:], "missing"),
        ([*names, "model.layers.9.mlp.up_proj.weight"], "unknown"),
        ([*names, "lm_head.weight"], "duplicates"),
    ):
        with pytest.raises(ValueError, match=match):
            check_names(bad, names)
    assert "lm_head.weight" not in hf_weight_names(tiny_model_dir("tiny-qwen2"))  # tied embeddings: not sent


def test_distributed_sync_over_gloo_delivers_every_tensor_in_buckets(tmp_path) -> None:
    receivers = []
    try:
        for index in range(2):
            port_file = str(tmp_path / f"r{index}.port")
            receiver = ServerProcess(
                [sys.executable, "-m", "tests.rollout.weight_receiver", "--port-file", port_file],
                port_file=port_file,
                log_path=tmp_path / f"r{index}.log",
            )
            receiver.start()
            receivers.append(receiver)
        urls = [r.wait_healthy(timeout_s=120) for r in receivers]
        named = _named([300, 50, 50, 1000, 7]) + [
            ("lm_head.weight", torch.arange(12, dtype=torch.float16).view(3, 4))
        ]

        async def sync() -> int:
            clients = [SGLangClient(url, timeout_s=60) for url in urls]
            syncer = DistributedWeightSync(
                clients,
                [1, 1],
                master_address="127.0.0.1",
                master_port=free_port(),
                backend="gloo",
                device="cpu",
                bucket_bytes=1600,
            )
            await syncer.init_group()
            count = await syncer.push(iter(named), weight_version="3")
            await asyncio.gather(*(c.aclose() for c in clients))
            return count

        num_buckets = asyncio.run(sync())
        assert num_buckets == 3  # bytes: [1200 + 200 + 200], [4000], [28 + 24]
        for url in urls:
            got = httpx.get(f"{url}/received", timeout=10, trust_env=False).json()
            assert got["buckets"] == num_buckets and got["flushes"] == 1
            assert got["tensors"] == {
                n: [str(t.dtype), list(t.shape), t.double().sum().item()] for n, t in named
            }
    finally:
        for receiver in receivers:
            receiver.stop()


def test_disk_sync_needs_an_export_and_prunes_old_folders(tmp_path) -> None:
    class Recorder:  # the router/client interface, recording what it was asked to load
        def __init__(self) -> None:
            self.loaded: list[tuple[str, str | None]] = []

        async def update_weights_from_disk(self, path: str, version: str | None = None) -> None:
            self.loaded.append((path, version))

    recorder = Recorder()
    sync = DiskWeightSync(recorder, tmp_path, num_keep=2)
    with pytest.raises(WeightSyncError, match="no HF export"):
        asyncio.run(sync.push(1))
    for step in (1, 2, 3):
        sync.folder(step).mkdir(parents=True)
        (sync.folder(step) / "config.json").write_text("{}")
        asyncio.run(sync.push(step))
    assert recorder.loaded == [(str(sync.folder(s)), str(s)) for s in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


def test_auto_broadcasts_only_to_servers_the_trainer_started() -> None:
    from rest_megatron.rollout.weight_sync import resolve_weight_sync

    assert resolve_weight_sync("auto", "embedded", "cpu") == "distributed"
    assert resolve_weight_sync("auto", "embedded", "cpu", own_servers=False) == "disk"  # e.g. Slurm's servers
    assert resolve_weight_sync("distributed", "embedded", "cpu", own_servers=False) == "distributed"
    assert resolve_weight_sync("auto", "sglang", "cpu") == "disk"  # SGLang broadcasts over NCCL only
    assert resolve_weight_sync("auto", "sglang", "cuda") == "distributed"
