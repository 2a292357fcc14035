"""A stand-in for SGLang's receiving side of NCCL weight sync, on gloo, for `test_weight_sync.py`.

It implements `/init_weights_update_group` and `/update_weights_from_distributed` the way SGLang's
model runner does (join the group with the given rank offset; per bucket, allocate each announced
tensor from its dtype name and shape and receive it by broadcast from rank 0), plus `/received` so
the test can read back what arrived. Run: python -m tests.rollout.weight_receiver --port-file F.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from rest_megatron.rollout.weight_sync import init_custom_process_group


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()
    app = FastAPI()
    state: dict = {"group": None, "received": {}, "flushes": 0, "buckets": 0}

    @app.get("/health")
    async def health() -> dict:
        return {}

    @app.post("/init_weights_update_group")
    async def init(body: dict) -> dict:
        state["group"] = await asyncio.to_thread(
            init_custom_process_group,
            backend=body["backend"],
            world_size=body["world_size"],
            rank=body["rank_offset"],
            init_method=f"tcp://{body['master_address']}:{body['master_port']}",
            group_name=body["group_name"],
            timeout_s=60,
        )
        return {"success": True, "message": "joined"}

    @app.post("/update_weights_from_distributed")
    async def update(body: dict) -> dict:
        def receive() -> None:
            for name, dtype, shape in zip(body["names"], body["dtypes"], body["shapes"]):
                tensor = torch.empty(shape, dtype=getattr(torch, dtype))
                torch.distributed.broadcast(tensor, src=0, group=state["group"])
                state["received"][name] = tensor

        await asyncio.to_thread(receive)
        state["buckets"] += 1
        state["flushes"] += bool(body["flush_cache"])
        return {"success": True, "message": f"{len(body['names'])} tensors"}

    @app.get("/received")
    async def received() -> dict:
        return {
            "buckets": state["buckets"],
            "flushes": state["flushes"],
            "tensors": {
                k: [str(v.dtype), list(v.shape), v.double().sum().item()]
                for k, v in state["received"].items()
            },
        }

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    Path(args.port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
