"""The embedded engine's side of distributed weight sync: SGLang's two endpoints, over gloo.

    POST /init_weights_update_group {master_address, master_port, rank_offset, world_size, group_name,
                                     backend}
    POST /update_weights_from_distributed {names, dtypes, shapes, group_name, flush_cache, weight_version}

The engine joins the trainer's weight-update group as rank `rank_offset` (it has one "TP rank"), then
per bucket allocates each announced tensor and receives it by broadcast from rank 0, in the announced
order, and copies it into the served model's parameter of that Hugging Face name. The copy runs on
the engine thread as a command, so requests queued before a bucket finish on the old weights. The
last bucket (`flush_cache`) clears the prefix cache and sets the weight version; from then on every
answer carries the new version. This is the trainer path SGLang runs over NCCL, on CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from rest_megatron.rollout.weight_sync import init_custom_process_group


class WeightReceiver:
    """Membership in one weight-update group and the receiving of buckets into a model."""

    def __init__(self) -> None:
        self.group: Any = None
        self.group_name: str | None = None
        self.num_buckets = 0

    def join(self, body: dict[str, Any], timeout_s: float = 600.0) -> str:
        """(any thread) Join the group; blocks until every member has joined."""
        backend = body.get("backend", "nccl")
        if backend != "gloo":
            raise ValueError(
                f"the embedded CPU engine receives weights over gloo, not {backend!r}; the trainer "
                "picks gloo for rollout.engine=embedded (SGLang on GPU uses nccl)"
            )
        missing = [
            k
            for k in ("master_address", "master_port", "rank_offset", "world_size", "group_name")
            if k not in body
        ]
        if missing:
            raise ValueError(f"/init_weights_update_group needs {', '.join(missing)}")
        self.group = init_custom_process_group(
            backend="gloo",
            init_method=f"tcp://{body['master_address']}:{int(body['master_port'])}",
            world_size=int(body["world_size"]),
            rank=int(body["rank_offset"]),
            group_name=str(body["group_name"]),
            timeout_s=timeout_s,
        )
        self.group_name = str(body["group_name"])
        return f"joined {self.group_name} as rank {body['rank_offset']} of {body['world_size']}"

    def check(self, body: dict[str, Any]) -> tuple[list[str], list[torch.dtype], list[list[int]]]:
        """(any thread) Validate one bucket's announcement before the engine thread receives it."""
        if self.group is None:
            raise ValueError("no weight-update group: call /init_weights_update_group first")
        if body.get("group_name", self.group_name) != self.group_name:
            raise ValueError(f"group {body.get('group_name')!r} is not the joined group {self.group_name!r}")
        names, dtypes, shapes = body.get("names"), body.get("dtypes"), body.get("shapes")
        if not (
            isinstance(names, list)
            and isinstance(dtypes, list)
            and isinstance(shapes, list)
            and len(names) == len(dtypes) == len(shapes)
        ):
            raise ValueError("names, dtypes and shapes must be lists of the same length")
        torch_dtypes = []
        for dtype in dtypes:
            value = getattr(torch, str(dtype), None)
            if not isinstance(value, torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use torch's names (float32, bfloat16, ...)")
            torch_dtypes.append(value)
        return [str(n) for n in names], torch_dtypes, [[int(s) for s in shape] for shape in shapes]

    def receive_into(
        self, model: torch.nn.Module, names: list[str], dtypes: list[torch.dtype], shapes: list[list[int]]
    ) -> None:
        """(engine thread) Receive the bucket's tensors from rank 0 and copy each into the model.

        Every announced tensor is received even when one does not fit, so the trainer's broadcasts
        never hang; the error is raised after the whole bucket arrived.
        """
        params = model.state_dict(keep_vars=True)  # tied weights appear under both names, one storage
        problems = []
        for name, dtype, shape in zip(names, dtypes, shapes):
            tensor = torch.empty(shape, dtype=dtype)
            torch.distributed.broadcast(tensor, src=0, group=self.group)
            target = params.get(name)
            if target is None:
                problems.append(f"{name}: not a parameter of the served model")
            elif tuple(target.shape) != tuple(shape):
                problems.append(f"{name}: shape {shape}, the served model has {list(target.shape)}")
            else:
                with torch.no_grad():
                    target.copy_(tensor)
        self.num_buckets += 1
        if problems:
            raise ValueError(
                "weights do not match the served model (fix the Megatron->HF name map): "
                + "; ".join(problems[:5])
            )
