"""Weight sync to an inference server: disk (HF folder written, then loaded) versus distributed
(bucketed broadcast), of the same model to the same server, in one run.

    OMP_NUM_THREADS=1 python benchmarks/weight_sync.py [--model tiny-qwen3|HF_DIR] [--repeats 3]
                                                        [--bucket-mb 512] [--hidden-size 512 --layers 8]

`--hidden-size`/`--layers` widen the built-in model (random weights, its tokenizer) to time a model
whose size, not per-request overhead, dominates.

One embedded CPU engine (a real server process) serves the model. The source tensors are the HF
model's own (`state_dict`), standing in for what `convert.live.iter_hf_tensors` gathers from the
Megatron shards, which both paths share. Each repeat:
- disk: write the tensors as safetensors shards plus the metadata (`ShardWriter`, what
  `rollout_stage.write_hf_folder` does), then `/update_weights_from_disk` (`DiskWeightSync.push`);
- distributed: `DistributedWeightSync.push` over gloo (the group is joined once, before timing).
It prints the median time of each and the ratio disk / distributed. On GPU with SGLang the
broadcast runs over NCCL; this measures the CPU path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers  # noqa: E402

from rest_megatron.convert.hf_files import copy_metadata  # noqa: E402
from rest_megatron.convert.to_hf import ShardWriter  # noqa: E402
from rest_megatron.rollout.clients import SGLangClient  # noqa: E402
from rest_megatron.rollout.embedded_server import resolve_model  # noqa: E402
from rest_megatron.rollout.launch import free_port, start_embedded_servers  # noqa: E402
from rest_megatron.rollout.weight_sync import DiskWeightSync, DistributedWeightSync  # noqa: E402


async def measure(
    url: str, model_dir: Path, work: Path, repeats: int, bucket_mb: float
) -> tuple[list, list, int]:
    tensors = list(transformers.AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items())
    client = SGLangClient(url, timeout_s=600)
    disk = DiskWeightSync(client, work / "weights", num_keep=1)
    dist = DistributedWeightSync(
        [client],
        [1],
        master_address="127.0.0.1",
        master_port=free_port(),
        backend="gloo",
        device="cpu",
        bucket_bytes=int(bucket_mb * 2**20),
    )
    await dist.init_group()
    disk_s, dist_s = [], []
    for step in range(1, repeats + 1):
        started = time.perf_counter()
        writer = ShardWriter(disk.folder(step), 5 * 2**30)
        disk.folder(step).mkdir(parents=True)
        for name, tensor in tensors:
            writer.add(name, tensor)
        writer.close()
        copy_metadata(model_dir, disk.folder(step))
        await disk.push(step)
        disk_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        await dist.push(iter(tensors), weight_version=str(step))
        dist_s.append(time.perf_counter() - started)
    await client.aclose()
    return disk_s, dist_s, sum(t.numel() * t.element_size() for _, t in tensors)


def widened(source: Path, out: Path, hidden_size: int | None, layers: int | None) -> Path:
    """`source`'s architecture with another width/depth, randomly initialized, with its tokenizer."""
    config = transformers.AutoConfig.from_pretrained(source)
    if hidden_size:
        heads = max(1, hidden_size // config.head_dim)
        config.update(
            {
                "hidden_size": hidden_size,
                "intermediate_size": hidden_size * 11 // 4,
                "num_attention_heads": heads,
                "num_key_value_heads": max(1, heads // 2),
            }
        )
    if layers:
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):
            config.layer_types = [config.layer_types[0]] * layers
    copy_metadata(source, out)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-qwen3", help="a built-in tiny model or a HF folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bucket-mb", type=float, default=512.0)
    parser.add_argument("--hidden-size", type=int, default=None, help="widen the model to this hidden size")
    parser.add_argument("--layers", type=int, default=None, help="and to this many layers")
    args = parser.parse_args()
    model_dir = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if args.hidden_size or args.layers:
            model_dir = widened(model_dir, Path(tmp) / "model", args.hidden_size, args.layers)
        server = start_embedded_servers(model_dir, 1, log_dir=tmp, extra={"num_threads": 1}, timeout_s=300)[0]
        try:
            disk_s, dist_s, nbytes = asyncio.run(
                measure(server.base_url, model_dir, Path(tmp), args.repeats, args.bucket_mb)
            )
        finally:
            server.stop()
    disk, dist = statistics.median(disk_s), statistics.median(dist_s)
    shape = f" (hidden {args.hidden_size}, {args.layers} layers)" if args.hidden_size or args.layers else ""
    print(f"model {args.model}{shape}: {nbytes / 2**20:.1f} MiB of weights, median of {args.repeats}")
    print(f"disk sync        {disk:8.3f} s")
    print(f"distributed sync {dist:8.3f} s")
    print(f"ratio disk / distributed: {disk / dist:.2f}x")


if __name__ == "__main__":
    main()
