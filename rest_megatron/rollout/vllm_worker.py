"""A vLLM worker extension: SGLang's weight-update group, inside every vLLM worker.

vLLM (0.32) loads `--worker-extension-cls rest_megatron.rollout.vllm_worker.WeightUpdateExtension`
into each worker, and its `/collective_rpc` endpoint (served with `VLLM_SERVER_DEV_MODE=1`) calls a
method on every worker. The trainer's `VLLMClient` calls

    rest_init_weights_update_group(json)     join the trainer's group as rank rank_offset + this worker's rank
    rest_update_weights_from_distributed(json)  receive one bucket by broadcast from rank 0, load it

with the same fields as SGLang's `/init_weights_update_group` and `/update_weights_from_distributed`
(`weight_sync.bucket_payload`), so `DistributedWeightSync` drives SGLang, the embedded engine and
vLLM alike. The buckets are held until the last one (`flush_cache`), then loaded through vLLM's
in-place `reload_weights`, which takes Hugging Face names and fuses them (q/k/v, gate/up) as a
checkpoint load does; so a server holds one extra copy of the weights while it receives them. This
module must import with vLLM's packages only: the servers run in their own venv
(`scripts/setup_vllm.sh`) with the repository on PYTHONPATH.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from rest_megatron.rollout.weight_sync import init_custom_process_group


class WeightUpdateExtension:
    """Mixed into vLLM's worker class; `self` is the worker (its `rank`, `device`, `model_runner`)."""

    def rest_init_weights_update_group(self, request: str) -> str:
        body = json.loads(request)
        rank = int(body["rank_offset"]) + int(getattr(self, "rank", 0))
        self._rest_group = init_custom_process_group(
            backend=body["backend"],
            init_method=f"tcp://{body['master_address']}:{int(body['master_port'])}",
            world_size=int(body["world_size"]),
            rank=rank,
            group_name=body["group_name"],
        )
        self._rest_device = torch.device("cpu") if body["backend"] == "gloo" else self.device
        return f"rank {rank} joined {body['group_name']}"

    def rest_update_weights_from_distributed(self, request: str) -> str:
        body = json.loads(request)
        group: Any = getattr(self, "_rest_group", None)
        if group is None:
            raise RuntimeError("no weight-update group: call rest_init_weights_update_group first")
        pending = self.__dict__.setdefault("_rest_pending", [])
        for name, dtype, shape in zip(body["names"], body["dtypes"], body["shapes"]):
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self._rest_device)
            torch.distributed.broadcast(tensor, src=0, group=group)
            pending.append((name, tensor))
        if not body.get("flush_cache"):
            return f"holding {len(pending)} tensors until the last bucket"
        # vLLM's in-place reload wants the whole checkpoint at once: the model's own load_weights
        # after start-up meets parameters that were repacked for the kernels (no weight_loader).
        self._rest_pending = []
        self.reload_weights(weights_iterator=iter(pending))
        return f"reloaded {len(pending)} tensors"
